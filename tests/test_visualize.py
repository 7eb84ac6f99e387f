"""Cell diagrams: rendered files are real images, per-cell genotypes get one file per gene,
the CLI answers bad input and a missing `dot` the way the house rules say, and --run draws a
search run's derived cells and weights at chosen epochs."""
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import search_figures
import visualize
from cli import FlagError
from genotypes import PRIMITIVE_SETS, CellGenes, Edge, load_architecture
from scripts import run_script
from cell_diagram import cell_graph
from visualize import draw_architecture

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


# ------------------------------------------------------------------------------------------ --run

DARTS_OPS = list(PRIMITIVE_SETS["DARTS"])


def search_run_folder(root: Path, weights_by_epoch: dict, **args) -> Path:
    """A run folder as train_search.py leaves it: args.json and weights/epoch_NNN.npy."""
    settings = {"primitives": "DARTS", "steps": 2, "multiplier": 2, "layout": "shared", "parse_method": "darts",
                "op_threshold": 0.85, **args}
    (root / "weights").mkdir(parents=True)
    (root / "args.json").write_text(json.dumps({"args": settings}))
    for epoch, weights in weights_by_epoch.items():
        np.save(root / "weights" / f"epoch_{epoch:03d}.npy", np.asarray(weights, dtype=np.float64))
    return root


def cell_weights(strongest: dict[int, tuple[str, float]]) -> np.ndarray:
    """(5 edges, 8 ops) of a two-step cell: 0.01 everywhere but the given (op, weight) per edge."""
    w = np.full((5, len(DARTS_OPS)), 0.01)
    for edge, (op, value) in strongest.items():
        w[edge, DARTS_OPS.index(op)] = value
    return w


# edges: 0->2, 1->2, 0->3, 1->3, 2->3
NORMAL = cell_weights({0: ("sep_conv_3x3", 0.9), 1: ("skip_connect", 0.8), 2: ("none", 0.99),
                       3: ("max_pool_3x3", 0.7), 4: ("dil_conv_3x3", 0.95)})


def test_run_cells_follow_the_parse_rule_of_the_run(tmp_path):
    darts = search_figures.RunSettings(tuple(DARTS_OPS), 2, 2, "shared", "darts", 0.85)
    cell = search_figures.derived_cell(NORMAL, darts)
    # node 2 keeps both its inputs, strongest first; node 3 its two strongest ('none' never counts)
    assert cell.edges == (Edge("sep_conv_3x3", 2, 0), Edge("skip_connect", 2, 1), Edge("dil_conv_3x3", 3, 2),
                          Edge("max_pool_3x3", 3, 1))
    assert cell.concat == (2, 3)
    sparse = search_figures.RunSettings(tuple(DARTS_OPS), 2, 2, "per_cell", "threshold_sparse", 0.85)
    cell = search_figures.derived_cell(NORMAL, sparse)
    assert cell.edges == (Edge("sep_conv_3x3", 2, 0), Edge("dil_conv_3x3", 3, 2)) and cell.concat == (2, 3)
    assert search_figures.derived_cell(np.full((5, 8), 0.5), sparse).edges == ()   # early in a threshold search
    assert search_figures.set_names(sparse, 5) == ["cell 0", "cell 1 (reduction)", "cell 2", "cell 3 (reduction)", "cell 4"]
    assert search_figures.edge_labels(2) == ["c_{k-2} → 0", "c_{k-1} → 0", "c_{k-2} → 1", "c_{k-1} → 1", "0 → 1"]


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


@needs_dot
def test_run_draws_chosen_epochs_into_one_image_each(tmp_path):
    run = search_run_folder(tmp_path / "run", {1: [NORMAL, NORMAL], 2: [NORMAL, NORMAL[::-1]], 3: [NORMAL, NORMAL]})
    result = run_script("cnn/visualize.py", "--run", str(run), "--epochs", "1,3")   # forked: --run imports torch
    assert result.returncode == 0, result.stderr
    cells, weights = run / "figures" / "cells_epochs_1-3.png", run / "figures" / "weights_epochs_1-3.png"
    assert result.stdout.split() == [str(cells), str(weights)]
    one_epoch = search_figures.draw_run(run, "1", tmp_path / "one")
    assert [p.name for p in one_epoch] == ["cells_epochs_1.png", "weights_epochs_1.png"]
    (width, height), (width_1, height_1) = png_size(cells), png_size(one_epoch[0])
    assert width >= width_1 and height > 1.8 * height_1     # two rows of cells, not one
    assert png_size(weights)[1] > png_size(one_epoch[1])[1]
    default = search_figures.draw_run(run, None, tmp_path / "default")   # first, middle and last epoch
    assert [p.name for p in default] == ["cells_epochs_1-2-3.png", "weights_epochs_1-2-3.png"]


@pytest.mark.parametrize("make, flags, words", [
    (lambda root: root, ["--epochs", "1"], "has no weights/ folder"),
    (lambda root: search_run_folder(root / "r", {1: [NORMAL, NORMAL]}), ["--epochs", "1,5"],
     "epoch 5 has no weights in this run; it recorded epochs 1 to 1"),
    (lambda root: search_run_folder(root / "r", {1: [NORMAL, NORMAL]}), ["--epochs", "last"],
     "--epochs takes epoch numbers separated by commas"),
    (lambda root: search_run_folder(root / "r", {1: [NORMAL, NORMAL]}, steps=3), [],
     "holds weights of shape (2, 5, 8), but the run's args.json gives (sets, 9, 8)"),
    (lambda root: search_run_folder(root / "r", {1: [NORMAL, NORMAL]}, primitives="NO_SUCH_SET"), [],
     "is not the args.json of a train_search.py run"),
])
@needs_dot
def test_run_refuses_bad_folders(tmp_path, make, flags, words):
    run = make(tmp_path)
    with pytest.raises(search_figures.RunError) as refused:
        visualize.main(["--run", str(run), *flags])
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert not (run / "figures").exists()


@needs_dot
def test_run_refusal_is_one_sentence_on_the_command_line(tmp_path):
    result = run_script("cnn/visualize.py", "--run", str(tmp_path))
    assert result.returncode == 2 and result.stderr == f"error: {tmp_path} has no weights/ folder: --run takes a " \
        "train_search.py run folder such as logs/search/<run>\n"


@pytest.mark.parametrize("args, words", [(["DARTS_V2", "--epochs", "1"], "--epochs chooses the epochs of a search run"),
                                         ([], "give a genotype to draw, or --run"),
                                         (["DARTS_V2", "--run", "x"], "give a genotype to draw, or --run"),
                                         (["--run", "x", "--format", "svg"], "--run writes PNG images")])
def test_run_flags_are_checked(args, words):
    with pytest.raises(FlagError, match=words):
        visualize.parse_args(args)


def test_a_folder_given_as_the_genotype_points_to_run(tmp_path):
    with pytest.raises(FlagError, match=f"{tmp_path} is a folder, not a genotype: to draw a search run, give --run"):
        visualize.parse_args([str(tmp_path)])


@pytest.mark.slow   # a search; the quick end-to-end test of --run is in test_summarize_results.py
@needs_dot
def test_run_of_a_real_per_cell_search_draws_every_cell(tmp_path):
    env = {"DARTS_LOGS_DIR": str(tmp_path / "logs")}
    done = run_script("tests/patched_script.py", "--genotypes_to", tmp_path, "--", "cnn/train_search.py",
                      "--method", "ddarts", "--dataset", "digits", "--init_channels", "4", "--layers", "3", "--steps",
                      "2", "--multiplier", "2", "--epochs", "2", "--max_steps", "1", "--batch_size", "16",
                      "--report_freq", "0", "--op_threshold", "0.3", "--genotype_name", "per_cell", env=env)
    assert done.returncode == 0, done.stderr
    [run] = list((tmp_path / "logs" / "search").iterdir())
    settings = search_figures.run_settings(run)
    assert (settings.layout, settings.parse_method, settings.op_threshold) == ("per_cell", "threshold_sparse", 0.3)
    weights = np.load(run / "weights" / "epoch_002.npy")
    assert weights.shape == (3, 5, len(PRIMITIVE_SETS["DDARTS_7"]))
    done = run_script("cnn/visualize.py", "--run", run, "--epochs", "1,2")
    assert done.returncode == 0, done.stderr
    for path in done.stdout.split():
        width, height = png_size(Path(path))
        assert 200 <= width <= 5000 and 200 <= height <= 5000
