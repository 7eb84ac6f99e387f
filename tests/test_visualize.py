"""Cell diagrams: rendered files are real images, per-cell genotypes get one file per gene,
and the CLI answers bad input and a missing `dot` the way the house rules say."""
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from genotypes import CellGenes, Edge, load_architecture
from visualize import cell_graph, draw_architecture

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "cnn" / "visualize.py"
SVG_NS = "{http://www.w3.org/2000/svg}"

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")


def svg_texts(path: Path) -> list[str]:
    return [el.text for el in ET.parse(path).getroot().iter(f"{SVG_NS}text") if el.text]


def svg_groups(path: Path, kind: str) -> int:
    return sum(1 for el in ET.parse(path).getroot().iter(f"{SVG_NS}g") if el.get("class") == kind)


def run_cli(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


@needs_dot
def test_png_files_are_decodable_images(tmp_path):
    paths = draw_architecture(load_architecture("DARTS_V2"), tmp_path, "png")
    assert [p.name for p in paths] == ["DARTS_V2_normal.png", "DARTS_V2_reduce.png"]
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(path) as image:
            image.load()
            assert image.width > 0 and image.height > 0
    assert sorted(tmp_path.iterdir()) == sorted(paths), "intermediate .gv sources must be removed"


@needs_dot
def test_svg_has_every_op_node_and_edge_of_the_normal_cell(tmp_path):
    arch = load_architecture("DARTS_V2")
    normal_svg = draw_architecture(arch, tmp_path, "svg")[0]
    normal = arch.cells[0]
    texts = svg_texts(normal_svg)
    for edge in normal.edges:
        assert edge.op in texts
    for name in ("c_{k-2}", "c_{k-1}", "c_{k}", "0", "1", "2", "3"):
        assert name in texts
    assert svg_groups(normal_svg, "node") == 2 + 4 + 1
    assert svg_groups(normal_svg, "edge") == len(normal.edges) + len(normal.concat)


@needs_dot
def test_node_without_input_is_still_drawn(tmp_path):
    # Node 2 (drawn as "0") has no incoming edge, as in FairDARTS_a.
    cell = CellGenes(edges=(Edge("skip_connect", 3, 0), Edge("max_pool_3x3", 3, 1)), concat=(2, 3))
    svg = tmp_path / "cell.svg"
    cell_graph(cell, "orphan").render(outfile=svg, cleanup=True)
    assert {"0", "1", "orphan"} <= set(svg_texts(svg))
    assert svg_groups(svg, "node") == 2 + 2 + 1
    # FairDARTS_a's normal cell: node 3 (drawn as "1") has neither input nor output.
    fair_arch = load_architecture("FairDARTS_a")
    fair = fair_arch.cells[0]
    fair_svg = draw_architecture(fair_arch, tmp_path / "fair", "svg")[0]
    assert "1" in svg_texts(fair_svg)
    assert svg_groups(fair_svg, "node") == 2 + 4 + 1
    assert svg_groups(fair_svg, "edge") == len(fair.edges) + len(fair.concat)


def test_cell_graph_is_deterministic():
    cell = load_architecture("DARTS_V2").cells[1]
    assert cell_graph(cell, "x").source == cell_graph(cell, "x").source
    assert "rankdir=LR" in cell_graph(cell, "x").source


@needs_dot
@pytest.mark.parametrize("name, genes", [("D-DARTS_threshold_sparse_cifar10_0.85_50", 8),
                                         ("ResNet50", 3)])
def test_per_cell_genotype_gives_one_pdf_per_distinct_gene(tmp_path, name, genes):
    arch = load_architecture(name)
    paths = draw_architecture(arch, tmp_path, "pdf")
    assert [p.name for p in paths] == [f"{name}_cell{k}.pdf" for k in range(genes)]
    for path in paths:
        assert path.read_bytes().startswith(b"%PDF")


@needs_dot
def test_per_cell_labels_name_layers_and_reductions(tmp_path):
    arch = load_architecture("ResNet50")
    assert (arch.layer_genes, arch.reductions) == ((0, 1, 2, 0), (1, 2, 3))
    titles = [svg_texts(path)[0] for path in draw_architecture(arch, tmp_path, "svg")]
    assert titles == ["ResNet50: gene 0: layers 0, 3 (reduction at layer 3)",
                      "ResNet50: gene 1: layer 1 (reduction)",
                      "ResNet50: gene 2: layer 2 (reduction)"]


@needs_dot
def test_keep_source_leaves_gv_files(tmp_path):
    paths = draw_architecture(load_architecture("SHARP_DARTS"), tmp_path, "svg", keep_source=True)
    assert {p.name for p in paths} == {"SHARP_DARTS_normal.svg", "SHARP_DARTS_reduce.svg",
                                       "SHARP_DARTS_normal.gv", "SHARP_DARTS_reduce.gv"}
    assert all(p.exists() for p in paths)


@needs_dot
def test_cli_from_repo_root_and_from_cnn(tmp_path):
    root_out, cnn_out = tmp_path / "root", tmp_path / "cnn"
    for args, cwd, out in ((("cnn/visualize.py",), REPO_ROOT, root_out),
                           (("visualize.py",), REPO_ROOT / "cnn", cnn_out)):
        result = run_cli(*args, "DARTS_V2", "--out", str(out), "--format", "svg", cwd=cwd)
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in out.iterdir()) == ["DARTS_V2_normal.svg", "DARTS_V2_reduce.svg"]
        assert str(out / "DARTS_V2_normal.svg") in result.stdout


def test_cli_unknown_name_is_one_sentence_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(SCRIPT), "DARTS_V3", "--out", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "DARTS_V2" in result.stderr
    assert not out.exists()


def test_cli_unparsable_file_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Genotype(normal=__import__('os').system('true'))\n")
    out = tmp_path / "out"
    result = run_cli(str(SCRIPT), str(bad), "--out", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(bad) in result.stderr
    assert not out.exists()


def test_cli_without_dot_writes_sources_and_hint(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    out = tmp_path / "out"
    result = run_cli(str(SCRIPT), "DARTS_V2", "--out", str(out), "--format", "png",
                     env={**os.environ, "PATH": str(empty_bin)})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["DARTS_V2_normal.gv", "DARTS_V2_reduce.gv"]
    assert "digraph" in (out / "DARTS_V2_normal.gv").read_text()
    assert "apt-get install graphviz" in result.stderr
    assert "Traceback" not in result.stderr


@needs_dot
def test_op_names_utf8_cannot_write_are_drawn_as_their_escapes(tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("Genotype(normal=[('\\ud800', 0), ('a\\\\b', 1)], normal_concat=[2], "
                   "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])\n")
    assert load_architecture(str(odd)).cells[0].edges[0].op == "\ud800"
    out = tmp_path / "out"
    result = run_cli(str(SCRIPT), str(odd), "--out", str(out), "--format", "svg")
    assert result.returncode == 0, result.stderr
    texts = svg_texts(out / "odd_normal.svg")
    assert "\\ud800" in texts and "a\\b" in texts


def test_cli_does_not_draw_recurrent_genotypes_as_cells(tmp_path):
    out = tmp_path / "out"
    for arch, words in (("ENAS", "unknown genotype 'ENAS'"),
                        (str(REPO_ROOT / "genotypes" / "recurrent" / "ENAS.txt"), "is a recurrent cell (for rnn/)")):
        result = run_cli(str(SCRIPT), arch, "--out", str(out))
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and words in result.stderr
    assert not out.exists()
