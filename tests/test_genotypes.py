"""Genotype text format, safety, conversion to the architecture representation, lookup."""
import os
import subprocess
import sys
import time

import pytest

import genotypes as G
from paths import GENOTYPES_DIR, REPO_ROOT
from shipped_genotypes import SHIPPED, SHIPPED_RECURRENT

# The published cell genotypes shipped as genotypes/NAME.txt (one literal each).
PUBLISHED = [
    "DARTS_V1", "DARTS_V2", "NASNet", "AmoebaNet", "PC_DARTS_cifar", "PC_DARTS_image", "PDARTS",
    "ENASNet", "SNAS", "MdeNAS", "FairDARTS_a", "FairDARTS_b", "FairDARTS_c", "FairDARTS_d",
    "FairDARTS_e", "FairDARTS_f", "FairDARTS_g", "GDAS_V1", "DrNAS_cifar10", "DrNAS_imagenet",
    "SDARTS_RS", "SDARTS_ADV", "SGAS_Cri1_CIFAR_3", "SGAS_Cri2_CIFAR_3",
    "DARTS_MINUS_cifar10_s0_0", "SHARPSEPCONV_DARTS", "SHARP_DARTS", "SHARPSEPCONV_DARTS_MAX_W",
    "SHARP_DARTS_MAX_W",
]
DARTOPTI = ["ResNet18", "ResNet50", "Xception"]
DDARTS_FILES = [
    f"D-DARTS_threshold_{how}{data}_0.85_50"
    for how in ("edge", "sparse") for data in ("_cifar10", "_abl0.5_fair7_cifar100")
] + [
    f"{net}_{data}_threshold_{how}_0.85"
    for net in ("ResNet18", "ResNet50", "Xception")
    for data in ("cifar10", "cifar100")
    for how in ("edge", "sparse")
]
# Where the published reference data lives in this workplace (absent elsewhere: skipped).
REFERENCE = REPO_ROOT.parent / "shared" / "reference"



def _text(name):
    return (GENOTYPES_DIR / f"{name}.txt").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ files shipped

def test_every_expected_genotype_is_shipped():
    expected = set(PUBLISHED) | set(DARTOPTI) | set(DDARTS_FILES) | {"DARTS"}
    assert len(DDARTS_FILES) == 16
    assert expected == set(SHIPPED) and len(SHIPPED) == len(expected)
    assert set(SHIPPED) <= set(G.list_genotypes())
    assert "README" not in G.list_genotypes()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_parses_converts_and_is_canonical(name):
    text = _text(name)
    record = G.parse_genotype(text, f"genotypes/{name}.txt")
    arch = G.to_architecture(record, name)
    assert arch.name == name and arch.cells
    if name in DDARTS_FILES:
        # published by D-DARTS as is: mostly without a final newline
        assert G.format_genotype(record).rstrip("\n") == text.rstrip("\n")
        assert record.kind == "Genotype_nested"
    else:
        assert G.format_genotype(record) == text
        assert text.startswith("# source: ")


def test_darts_alias_is_darts_v2():
    assert _text("DARTS") == _text("DARTS_V2")
    a, b = G.load_architecture("DARTS"), G.load_architecture("DARTS_V2")
    assert a.cells == b.cells and a.name == "DARTS"


@pytest.mark.skipif(not (REFERENCE / "published_genotypes.txt").is_file(),
                    reason="published reference data not present")
def test_published_lines_round_trip_byte_for_byte():
    seen = []
    for line in (REFERENCE / "published_genotypes.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, rest = line.split(" = ", 1)
        literal = rest.split("  # ", 1)[0]
        record = G.parse_genotype(literal, name)
        assert G.format_genotype(record) == literal + "\n"
        # the shipped file holds exactly that literal, edge order included
        assert G.read_genotype_file(GENOTYPES_DIR / f"{name}.txt").fields == record.fields
        assert _text(name).splitlines()[-1] == literal
        seen.append(name)
    assert seen == PUBLISHED


@pytest.mark.skipif(not (REFERENCE / "ddarts_genotypes").is_dir(),
                    reason="published reference data not present")
def test_ddarts_files_are_byte_identical_to_published():
    published = sorted((REFERENCE / "ddarts_genotypes").glob("*.txt"))
    assert sorted(p.stem for p in published) == sorted(DDARTS_FILES)
    for p in published:
        assert (GENOTYPES_DIR / p.name).read_bytes() == p.read_bytes()


@pytest.mark.skipif(not (REFERENCE / "sharpdarts_multichannel_paths.txt").is_file(),
                    reason="published reference data not present")
def test_sharpdarts_raw_weight_literals_round_trip_but_are_not_cells():
    count = 0
    for line in (REFERENCE / "sharpdarts_multichannel_paths.txt").read_text().splitlines():
        name, _, rest = line.partition(" = ")
        if not rest.startswith("Genotype("):
            continue
        record = G.parse_genotype(rest, name)
        assert G.format_genotype(record) == rest + "\n"    # floats round trip
        with pytest.raises(G.GenotypeError, match="not a cell genotype"):
            G.to_architecture(record, name)
        count += 1
    assert count == 2


# ------------------------------------------------------------------------------ safety

UNSAFE = [
    ("__import__('os').system('touch x')", "1:0", "a call to '__import__'"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=eval('1'), "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", "1:74",
     "a call to 'eval'"),
    ("DARTS_V2", "1:0", "the name 'DARTS_V2'"),
    ("# a comment\n\nGenotype(normal=open('x', 'w'), normal_concat=[2], reduce=[], "
     "reduce_concat=[2])", "3:16", "a call to 'open'"),
]


@pytest.mark.parametrize("text, position, found", UNSAFE)
def test_code_in_a_genotype_file_is_refused_not_run(tmp_path, monkeypatch, text, position, found):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.txt"
    path.write_text(text)
    with pytest.raises(G.GenotypeError) as info:
        G.read_genotype_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{position}: ")
    assert "only Genotype(...), Genotype_nested(...), Genotype_opt(...) literals are allowed" \
        in message
    assert found in message
    assert "\n" not in message
    assert not (tmp_path / "x").exists()
    with pytest.raises(G.GenotypeError):
        G.load_architecture(str(path))
    assert not (tmp_path / "x").exists()


PAIRS = "[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)]"


@pytest.mark.parametrize("text, fragment", [
    (f"Genotype(normal={PAIRS}, normal_concat=[0]*4, reduce={PAIRS}, reduce_concat=[2])",
     "arithmetic"),
    (f"Genotype(normal={PAIRS}, normal_concat=(lambda: 2)(), reduce={PAIRS}, reduce_concat=[2])",
     "found a call to"),
    (f"Genotype(normal={PAIRS}, normal_concat=[n for n in [2]], reduce={PAIRS}, "
     "reduce_concat=[2])", "list comprehension"),
    (f"Genotype(normal={PAIRS}, normal_concat=[2][0:1], reduce={PAIRS}, reduce_concat=[2])",
     "subscript"),
    (f"Genotype(normal={PAIRS}, normal_concat=[2], reduce={PAIRS}, reduce_concat=[f'{{2}}'])",
     "f-string"),
    (f"Genotype(normal={PAIRS}, normal_concat=os.sep, reduce={PAIRS}, reduce_concat=[2])",
     "attribute"),
    (f"Genotype(normal={PAIRS}, normal_concat=[True], reduce={PAIRS}, reduce_concat=[2])",
     "the constant True"),
    (f"Genotype(normal={PAIRS}, normal_concat=[2], reduce={PAIRS}, reduce_concat=[2], **x)",
     "'**'"),
    (f"Genotype(normal={PAIRS}, normal_concat=[2], reduce={PAIRS}, reduce_concat=[2], colour=1)",
     "no field 'colour'"),
    (f"Genotype(normal={PAIRS}, normal_concat=[2], reduce={PAIRS})", "missing the field"),
    (f"Genotype(normal={PAIRS}, normal_concat=[2], reduce={PAIRS}, reduce_concat=[2], "
     "normal_concat=[2])", "given twice"),
    (f"Genotype({PAIRS}, [2], {PAIRS}, [2], 'cell', 7)", "at most 5"),
    (f"Genotype(normal=[('sep_conv_3x3', 0, 1, 2)], normal_concat=[2], reduce={PAIRS}, "
     "reduce_concat=[2])", "must be a tuple"),
    (f"Genotype(normal=[('sep_conv_3x3', 'zero')], normal_concat=[2], reduce={PAIRS}, "
     "reduce_concat=[2])", "must be ints"),
    (f"Genotype(normal=[('sep_conv_3x3', -1)], normal_concat=[2], reduce={PAIRS}, "
     "reduce_concat=[2])", "negative"),
    (f"Genotype(normal=[(3, 0)], normal_concat=[2], reduce={PAIRS}, reduce_concat=[2])",
     "non-empty string"),
    (f"Genotype(normal=[('a', 0), ('b', 2, 1)], normal_concat=[2], reduce={PAIRS}, "
     "reduce_concat=[2])", "mixes"),
    (f"Genotype(normal={PAIRS}, normal_concat=range(2, 6, 0), reduce={PAIRS}, "
     "reduce_concat=[2])", "step must not be zero"),
    (f"Genotype(normal={PAIRS}, normal_concat=range(stop=6), reduce={PAIRS}, "
     "reduce_concat=[2])", "range("),
    (f"Genotype(normal={PAIRS}, normal_concat=range(2.0, 6), reduce={PAIRS}, "
     "reduce_concat=[2])", "ints"),
    (f"Genotype(normal={PAIRS}, normal_concat=[2, 1e400], reduce={PAIRS}, reduce_concat=[2])",
     "finite"),
    ("Genotype_nested(genes=[[('a', 2, 0)]], concat=[2], reductions=[-1])", "negative"),
    ("Genotype_nested(genes=[[('a', 2)]], concat=[2], reductions=[1])", "(op, to_node, from_node)"),
    ("Genotype_opt(genes=[[('a', 2, 0)]], seq='0', concat=[2], reductions=[1])", "seq"),
    ("Genotype(normal=[", "invalid genotype syntax"),
    ("Genotype(a=1)\nGenotype(b=2)", "invalid genotype syntax"),
    ("# only a comment\n", "holds no genotype"),
    ("Genotype_nested(genes=[], concat=[], reductions=[]) + 1", "arithmetic"),
])
def test_bad_literals_are_refused_with_a_position(text, fragment):
    with pytest.raises(G.GenotypeError) as info:
        G.parse_genotype(text, "bad.txt")
    message = str(info.value)
    assert message.startswith("bad.txt")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("concat, offset, fragment", [
    ("[0, 2]", 1, "reduce_concat names node 0, an input of the cell; it lists computed nodes, numbered from 2"),
    ("range(2, )", 0, "reduce_concat names node 0, an input of the cell; it lists computed nodes, numbered from 2"),
    ("[2, 1]", 4, "reduce_concat names node 1, an input of the cell; it lists computed nodes, numbered from 2"),
    ("[2, 3, 2]", 7, "reduce_concat names node 2 twice"),
    ("[" + "2, " * 999 + "2]", 4, "reduce_concat names node 2 twice"),
])
def test_concat_naming_an_input_or_a_node_twice_is_refused_with_file_and_position(tmp_path, concat, offset,
                                                                                 fragment):
    path = tmp_path / "hand.txt"
    last_line = "    reduce=[('a', 0), ('b', 1), ('c', 2), ('d', 0)], reduce_concat="
    path.write_text(f"# hand-made\nGenotype(normal={PAIRS}, normal_concat=[2],\n{last_line}{concat})\n")
    with pytest.raises(G.GenotypeError) as info:
        G.load_architecture(str(path))
    assert str(info.value) == f"{path}:3:{len(last_line) + offset}: {fragment}"


def test_huge_files_and_long_lists_are_refused_before_they_cost_time(tmp_path):
    big = tmp_path / "big.txt"
    literal = (f"Genotype(normal={PAIRS}, normal_concat=[" + "2, " * 5_000_000
               + f"2], reduce={PAIRS}, reduce_concat=[2])")
    big.write_text(literal)
    started = time.perf_counter()
    with pytest.raises(G.GenotypeError, match=rf"^{big}: holds {len(literal)} characters, more than a genotype may "
                                              r"\(262144;"):
        G.load_architecture(str(big))
    assert time.perf_counter() - started < 2.0
    with pytest.raises(G.GenotypeError, match=r"^text:1:74: a list or range of more than 1000 items is too long"):
        G.parse_genotype(f"Genotype(normal={PAIRS}, normal_concat=[" + "2, " * 1000 + f"2], reduce={PAIRS}, "
                         "reduce_concat=[2])", "text")
    for huge in ("range(0, 100000000000000000000000000000)", "range(10**3)", "range(2, 1003)"):
        with pytest.raises(G.GenotypeError):
            G.parse_genotype(f"Genotype(normal={PAIRS}, normal_concat={huge}, reduce={PAIRS}, reduce_concat=[2])")
    at_the_bound = f"Genotype(normal={PAIRS}, normal_concat=[2], reduce={PAIRS}, reduce_concat=range(2, 1002))"
    assert G.parse_genotype(at_the_bound).get("reduce_concat") == G.RangeLiteral(2, 1002)


def test_error_position_points_at_the_offending_value():
    text = ("Genotype(\n"
            "  normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)],\n"
            "  normal_concat=[2],\n"
            "  reduce=[('max_pool_3x3', 0), ('max_pool_3x3', -1)],\n"
            "  reduce_concat=[2],\n"
            ")\n")
    col = text.splitlines()[3].index("-1")
    assert col == 48
    with pytest.raises(G.GenotypeError, match=rf"^g\.txt:4:{col}: node numbers in reduce"):
        G.parse_genotype(text, "g.txt")
    # an indented first line still parses, and positions count the indent
    with pytest.raises(G.GenotypeError, match=r"^g\.txt:1:2: only Genotype"):
        G.parse_genotype("  print(1)", "g.txt")
    assert G.parse_genotype("  " + _text("DARTS_V2").splitlines()[-1]).kind == "Genotype"


def test_parse_keeps_comments_field_order_and_ranges():
    text = ("# source: test\n#   second line  \n\n"
            "Genotype_nested(genes=[[('a', 2, 0), ('b', 2, 1)]], reductions=[2, 6], "
            "concat=range(2, 6))")
    record = G.parse_genotype(text)
    assert record.comments == ("# source: test", "#   second line")
    assert [k for k, _ in record.fields] == ["genes", "reductions", "concat"]
    assert record.get("concat") == G.RangeLiteral(2, 6)
    assert record.get("nope", 42) == 42
    assert record.get("genes") == [[("a", 2, 0), ("b", 2, 1)]]
    assert G.format_genotype(record) == (
        "# source: test\n#   second line\n"
        "Genotype_nested(genes=[[('a', 2, 0), ('b', 2, 1)]], reductions=[2, 6], "
        "concat=range(2, 6))\n")


def test_positional_arguments_map_to_namedtuple_fields():
    record = G.parse_genotype("Genotype_opt([[('a', 2, 0)]], [0, 0], concat=range(2, 3), "
                              "reductions=range(1))")
    assert record.fields == (("genes", [[("a", 2, 0)]]), ("seq", [0, 0]),
                             ("concat", G.RangeLiteral(2, 3)), ("reductions", G.RangeLiteral(0, 1)))
    assert G.format_genotype(record) == ("Genotype_opt(genes=[[('a', 2, 0)]], seq=[0, 0], "
                                         "concat=range(2, 3), reductions=range(0, 1))\n")


def test_format_writes_repr_style_values():
    record = G.GenotypeRecord("Genotype", (
        ("normal", [("it's", 0), ("b", 1)]), ("normal_concat", G.RangeLiteral(2, 6, 2)),
        ("reduce", [("c", 0), ("d", 1)]), ("reduce_concat", (2,)), ("layout", "cell")))
    text = G.format_genotype(record)
    assert text == ("Genotype(normal=[(\"it's\", 0), ('b', 1)], normal_concat=range(2, 6, 2), "
                    "reduce=[('c', 0), ('d', 1)], reduce_concat=(2,), layout='cell')\n")
    assert G.parse_genotype(text) == record
    raw = ("Genotype(normal=[[-0.5, 1.25e-07]], normal_concat=[], reduce=[[0.1]], "
           "reduce_concat=(), layout='raw_weights')\n")
    assert G.format_genotype(G.parse_genotype(raw)) == raw
    with pytest.raises(G.GenotypeError):
        G.format_genotype(G.GenotypeRecord("Genotype_nested", (("genes", {1: 2}),)))


def test_module_does_not_import_torch():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import genotypes; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "core")], check=True)


# ------------------------------------------------------------------------------ conversion

def test_darts_v2_conversion():
    arch = G.load_architecture("DARTS_V2")
    normal, reduce = arch.cells
    assert arch.shared and arch.layer_genes is None and arch.reductions is None
    assert not arch.nested and arch.ops == "darts"
    assert normal.edges == (
        G.Edge("sep_conv_3x3", 2, 0), G.Edge("sep_conv_3x3", 2, 1),
        G.Edge("sep_conv_3x3", 3, 0), G.Edge("sep_conv_3x3", 3, 1),
        G.Edge("sep_conv_3x3", 4, 1), G.Edge("skip_connect", 4, 0),
        G.Edge("skip_connect", 5, 0), G.Edge("dil_conv_3x3", 5, 2),
    )
    assert normal.concat == (2, 3, 4, 5) and reduce.concat == (2, 3, 4, 5)
    assert reduce.edges[2] == G.Edge("skip_connect", 3, 2)
    assert reduce.edges[-1] == G.Edge("max_pool_3x3", 5, 1)
    assert normal.edges[0].op == normal.edges[0][0] == "sep_conv_3x3"


def test_nasnet_and_amoebanet_concat_subsets():
    nasnet = G.load_architecture("NASNet")
    assert nasnet.cells[0].concat == (2, 3, 4, 5, 6) and nasnet.cells[1].concat == (4, 5, 6)
    amoeba = G.load_architecture("AmoebaNet")
    assert amoeba.cells[1].concat == (3, 4, 6)
    assert amoeba.cells[1].edges[-1] == G.Edge("sep_conv_3x3", 6, 5)


def test_fairdarts_triples_use_dco_node_semantics():
    arch = G.load_architecture("FairDARTS_a")
    normal, reduce = arch.cells
    assert arch.shared and arch.nested and arch.ops == "darts"
    assert normal.edges == (
        G.Edge("sep_conv_3x3", 2, 0), G.Edge("sep_conv_5x5", 2, 1),
        G.Edge("max_pool_3x3", 4, 0), G.Edge("sep_conv_3x3", 5, 0),
    )
    # node 3 has no input: FairDARTS's DCOCell concatenates only the nodes it computes
    assert 3 not in {e.to_node for e in normal.edges}
    assert normal.concat == (2, 4, 5) and normal.nodes == (2, 4, 5)
    assert reduce.concat == (2, 3, 4, 5)
    assert reduce.edges[-1] == G.Edge("skip_connect", 5, 1)


def test_sharpdarts_genotypes_ask_for_sharp_ops():
    assert G.load_architecture("SHARP_DARTS").ops == "sharp"
    assert G.load_architecture("SHARPSEPCONV_DARTS").ops == "sharp"
    assert G.load_architecture("PDARTS").ops == "darts"
    raw = G.parse_genotype("Genotype(normal=[[[0.5, 0.25]]], normal_concat=[], reduce=[[0.1]], "
                           "reduce_concat=[], layout='raw_weights')")
    with pytest.raises(G.GenotypeError, match="'raw_weights' is not a cell genotype"):
        G.to_architecture(raw, "multi")


def test_ddarts_nested_concat_is_distinct_targets_in_first_appearance_order():
    record = G.parse_genotype("Genotype_nested(genes=[[('a', 3, 0), ('b', 2, 1), ('c', 3, 2), "
                              "('d', 5, 3)], [('e', 2, 0)]], concat=range(2, 6), reductions=[1])")
    arch = G.to_architecture(record, "toy")
    assert arch.nested and not arch.shared and arch.ops == "darts"
    assert arch.cells[0].concat == (3, 2, 5)       # written concat is ignored, as in D-DARTS
    assert arch.cells[1].concat == (2,)
    assert arch.cells[0].edges[0] == G.Edge("a", 3, 0)
    assert arch.layer_genes == (0, 1) and arch.reductions == (1,)
    # published: ResNet50 files say concat=range(4, 8) but every node 2..7 is computed
    resnet50 = G.load_architecture("ResNet50_cifar10_threshold_sparse_0.85")
    assert G.read_genotype_file(GENOTYPES_DIR / "ResNet50_cifar10_threshold_sparse_0.85.txt") \
        .get("concat") == G.RangeLiteral(4, 8)
    assert resnet50.cells[0].concat == (2, 3, 4, 5, 6, 7)
    assert resnet50.layer_genes == (0, 1, 2, 3) and resnet50.reductions == (1, 2, 3)
    dd = G.load_architecture("D-DARTS_threshold_sparse_cifar10_0.85_50")
    assert len(dd.cells) == 8 and dd.reductions == (2, 6)
    assert dd.cells[0].edges[0] == G.Edge("sep_conv_3x3", 2, 1)


def test_dartopti_baselines():
    resnet18 = G.load_architecture("ResNet18")
    assert resnet18.layer_genes == (0, 0, 0, 0) and resnet18.reductions == (1, 2, 3)
    assert len(resnet18.cells) == 1 and resnet18.cells[0].concat == (2, 3, 4, 5)
    resnet50 = G.load_architecture("ResNet50")
    assert resnet50.layer_genes == (0, 1, 2, 0)
    assert [c.concat for c in resnet50.cells] == [(2, 3, 4), (2, 3, 4, 5), (2, 3, 4, 5, 6, 7)]
    assert resnet50.reductions == (1, 2, 3) and resnet50.nested
    xception = G.load_architecture("Xception")
    assert xception.reductions == (1, 2, 11, 12)
    assert xception.layer_genes == (0, 0, 0) + (1,) * 8 + (0, 2)
    assert xception.cells[0].concat == (4, 2, 3)   # D-DARTS computes node 4 first
    assert xception.cells[2].edges == (G.Edge("sep_conv_3x3", 2, 0), G.Edge("sep_conv_3x3", 3, 2))


@pytest.mark.parametrize("text, fragment", [
    ("Genotype(normal=[('a', 0), ('b', 1), ('c', 0)], normal_concat=[2], "
     "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])", "two per node"),
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2, 3], "
     "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])", "node 3"),
    ("Genotype(normal=[('a', 0), ('b', 2)], normal_concat=[2], "
     "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])", "not computed before it"),
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[], "
     "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])", "empty"),
    ("Genotype(normal=[], normal_concat=[2], reduce=[('a', 0), ('b', 1)], reduce_concat=[2])",
     "no edges"),
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], "
     "reduce=[('a', 2, 0)], reduce_concat=[2])", "both use"),
    ("Genotype_nested(genes=[[('a', 2, 2)]], concat=[2], reductions=[1])", "to itself"),
    ("Genotype_nested(genes=[[('a', 1, 0)]], concat=[2], reductions=[1])", "cell inputs"),
    ("Genotype_nested(genes=[], concat=[2], reductions=[1])", "genes is empty"),
    ("Genotype_nested(genes=[[]], concat=[2], reductions=[1])", "no edges"),
    ("Genotype_opt(genes=[[('a', 2, 0)]], seq=[0, 1], concat=[2], reductions=[1])",
     "seq[1] = 1"),
])
def test_conversion_refuses_impossible_cells(text, fragment):
    record = G.parse_genotype(text)
    with pytest.raises(G.GenotypeError) as info:
        G.to_architecture(record, "toy")
    assert str(info.value).startswith("genotype 'toy': ")
    assert fragment in str(info.value)


def test_to_architecture_checks_records_built_in_python():
    record = G.GenotypeRecord("Genotype_nested", (("genes", [[("a", 2, -1)]]), ("concat", [2]),
                                                  ("reductions", [1])))
    with pytest.raises(G.GenotypeError, match=r"genes\[0\]\[0\]\[2\]: node numbers .* negative"):
        G.to_architecture(record, "toy")


# ------------------------------------------------------------------------------ lookup

def test_lookup_by_name_path_and_txt_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # found relative to the repository, not the current dir
    assert G.genotype_path("DARTS_V2") == GENOTYPES_DIR / "DARTS_V2.txt"
    assert G.genotype_path("DARTS_V2.txt") == GENOTYPES_DIR / "DARTS_V2.txt"
    assert G.genotype_path(str(GENOTYPES_DIR / "PDARTS.txt")) == GENOTYPES_DIR / "PDARTS.txt"
    own = tmp_path / "mine.txt"
    own.write_text(_text("PDARTS"))
    assert G.load_architecture(str(own)).name == "mine"
    assert G.load_architecture("mine.txt").cells == G.load_architecture("PDARTS").cells


def test_unknown_name_suggests_close_names():
    with pytest.raises(G.GenotypeError) as info:
        G.genotype_path("DARTS_V3")
    message = str(info.value)
    assert "'DARTS_V3'" in message and "DARTS_V2" in message and "\n" not in message
    with pytest.raises(G.GenotypeError, match="did you mean FairDARTS_"):
        G.load_architecture("FairDARTS_z")
    with pytest.raises(G.GenotypeError, match="known names"):
        G.genotype_path("zzzzzzzzzzzz")


def test_load_architecture_names_the_file_on_conversion_errors(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_text("Genotype_opt(genes=[[('a', 2, 0)]], seq=[3], concat=[2], reductions=[1])\n")
    with pytest.raises(G.GenotypeError, match=rf"^{path}: seq\[0\] = 3"):
        G.load_architecture(str(path))


def test_read_refuses_binary_and_missing_files(tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(G.GenotypeError, match="bin.txt"):
        G.read_genotype_file(path)
    with pytest.raises(G.GenotypeError, match="cannot be read"):
        G.read_genotype_file(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------ writing

def test_write_read_round_trip(tmp_path):
    record = G.parse_genotype(_text("Xception"))
    target = tmp_path / "sub" / "Xception_copy.txt"
    G.write_genotype_file(target, record)
    assert target.read_text() == _text("Xception")
    assert G.read_genotype_file(target) == record
    assert os.listdir(target.parent) == ["Xception_copy.txt"]      # no temporary left behind
    # overwriting replaces the file whole
    G.write_genotype_file(target, G.parse_genotype(_text("DARTS_V1")))
    assert target.read_text() == _text("DARTS_V1")
    assert os.listdir(target.parent) == ["Xception_copy.txt"]


def test_write_refuses_unwritable_values_and_leaves_nothing(tmp_path):
    bad = G.GenotypeRecord("Genotype_nested", (("genes", [[("a", 2, 0)]]), ("concat", [None]),
                                               ("reductions", [1])))
    with pytest.raises(G.GenotypeError):
        G.write_genotype_file(tmp_path / "bad.txt", bad)
    missing = G.GenotypeRecord("Genotype_nested", (("genes", [[("a", 2, 0)]]),))
    with pytest.raises(G.GenotypeError, match="missing"):
        G.write_genotype_file(tmp_path / "bad.txt", missing)
    assert os.listdir(tmp_path) == []


def test_darts_record_for_searches(tmp_path):
    normal = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 2)]
    reduce = [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["avg_pool_3x3", 0]]
    record = G.darts_record(normal, range(2, 4), reduce, [2, 3])
    text = G.format_genotype(record)
    assert text == ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
                    "('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=range(2, 4), "
                    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
                    "('avg_pool_3x3', 0)], reduce_concat=[2, 3])\n")
    assert G.parse_genotype(text) == record
    arch = G.to_architecture(record, "found")
    assert arch.cells[0].edges[3] == G.Edge("dil_conv_3x3", 3, 2)
    assert arch.cells[1].concat == (2, 3)
    G.write_genotype_file(tmp_path / "found.txt", record)
    assert G.load_architecture(str(tmp_path / "found.txt")).cells == arch.cells
    with pytest.raises(G.GenotypeError, match="darts_record"):
        G.darts_record([("a", -1)], [2], reduce, [2])


def test_nested_record_for_searches():
    genes = [[("sep_conv_3x3", 2, 0), ("skip_connect", 2, 1), ("max_pool_3x3", 3, 2)],
             [("dil_conv_5x5", 2, 1)]]
    record = G.nested_record(genes, range(2, 6), [1])
    text = G.format_genotype(record)
    assert text == ("Genotype_nested(genes=[[('sep_conv_3x3', 2, 0), ('skip_connect', 2, 1), "
                    "('max_pool_3x3', 3, 2)], [('dil_conv_5x5', 2, 1)]], concat=range(2, 6), "
                    "reductions=[1])\n")
    assert G.parse_genotype(text) == record
    arch = G.to_architecture(G.parse_genotype(text), "n")
    assert [c.concat for c in arch.cells] == [(2, 3), (2,)]
    assert arch.layer_genes == (0, 1) and arch.reductions == (1,)
    with pytest.raises(G.GenotypeError, match="nested_record"):
        G.nested_record([[("a", 2)]], [2], [1])


# ------------------------------------------------------------------------------ primitives

def test_primitive_sets():
    sets = G.PRIMITIVE_SETS
    assert set(sets) == {"DARTS", "DDARTS_7", "DDARTS_12", "PRIMITIVES", "SHARPER_PRIMITIVES",
                         "DARTS_PRIMITIVES"}
    assert sets["DARTS"] == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    assert sets["DDARTS_7"] == sets["DARTS"][1:]
    assert len(sets["DDARTS_12"]) == 12
    assert sets["DDARTS_12"][0] == "conv_3x1_1x3" and sets["DDARTS_12"][-1] == "bottleneck_1x3x1"
    assert set(sets["DDARTS_7"]) < set(sets["DDARTS_12"])
    assert sets["DARTS_PRIMITIVES"] == sets["DARTS"]
    assert len(sets["PRIMITIVES"]) == 9 and "choke_conv_3x3" in sets["PRIMITIVES"]
    assert len(sets["SHARPER_PRIMITIVES"]) == 12
    assert "dil_flood_conv_5x5" not in sets["SHARPER_PRIMITIVES"]
    for ops in sets.values():
        assert isinstance(ops, tuple) and len(set(ops)) == len(ops)


def test_shipped_genotypes_use_ops_of_their_family():
    ddarts = set(G.PRIMITIVE_SETS["DDARTS_12"])
    sharp = set(G.PRIMITIVE_SETS["PRIMITIVES"]) | set(G.PRIMITIVE_SETS["SHARPER_PRIMITIVES"])
    for name in DDARTS_FILES + DARTOPTI:
        arch = G.load_architecture(name)
        assert {e.op for c in arch.cells for e in c.edges} <= ddarts, name
    for name in ("SHARP_DARTS", "SHARP_DARTS_MAX_W", "SHARPSEPCONV_DARTS"):
        arch = G.load_architecture(name)
        assert {e.op for c in arch.cells for e in c.edges} <= sharp, name


# ------------------------------------------------------------------------------ recurrent cells

def test_shipped_recurrent_genotypes_parse_and_are_canonical():
    assert SHIPPED_RECURRENT == ["DARTS_V1", "DARTS_V2", "ENAS"]
    assert set(SHIPPED_RECURRENT) <= set(G.list_recurrent_genotypes())
    for name in SHIPPED_RECURRENT:
        text = (G.RECURRENT_GENOTYPES_DIR / f"{name}.txt").read_text(encoding="utf-8")
        record = G.parse_genotype(text, name)
        assert record.kind == G.RECURRENT and text.startswith("# source: quark0/darts rnn/genotypes.py")
        assert G.format_genotype(record) == text
        assert G.to_recurrent(record, name) == G.load_recurrent_genotype(name)
    enas = G.load_recurrent_genotype("ENAS")
    assert len(enas.steps) == 11 and enas.concat == (2, 5, 6, 9, 10, 11)
    assert enas.steps[7] == ("relu", 7) and enas.steps[-1] == ("relu", 8)
    v2 = G.load_recurrent_genotype("DARTS_V2")
    assert v2.name == "DARTS_V2" and v2.concat == tuple(range(1, 9))
    assert v2.steps == (("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2),
                        ("sigmoid", 5), ("tanh", 3), ("relu", 5))
    assert len(G.load_recurrent_genotype("DARTS_V1").steps) == 8


@pytest.mark.skipif(not (REFERENCE / "published_rnn_genotypes.txt").is_file(),
                    reason="published reference data not present")
def test_recurrent_files_hold_the_published_literals():
    names = []
    for line in (REFERENCE / "published_rnn_genotypes.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, rest = line.split(" = ", 1)
        literal = rest.split("  # ", 1)[0]
        assert G.format_genotype(G.parse_genotype(literal, name)) == literal + "\n"
        assert (G.RECURRENT_GENOTYPES_DIR / f"{name}.txt").read_text().splitlines()[-1] == literal
        names.append(name)
    assert names == SHIPPED_RECURRENT


def test_cell_commands_never_pick_up_recurrent_genotypes(tmp_path):
    assert "ENAS" not in G.list_genotypes() and "recurrent" not in G.list_genotypes()
    assert G.genotype_path("DARTS_V2") == GENOTYPES_DIR / "DARTS_V2.txt"
    assert G.load_architecture("DARTS_V2").cells[0].edges[0] == G.Edge("sep_conv_3x3", 2, 0)
    with pytest.raises(G.GenotypeError, match="unknown genotype 'ENAS'"):
        G.load_architecture("ENAS")
    enas = G.RECURRENT_GENOTYPES_DIR / "ENAS.txt"
    with pytest.raises(G.GenotypeError, match=rf"^{enas}: is a recurrent cell \(for rnn/\), not a cell genotype"):
        G.load_architecture(str(enas))
    with pytest.raises(G.GenotypeError, match=r"^genotype 'x': is a recurrent cell"):
        G.to_architecture(G.read_genotype_file(enas), "x")
    pdarts = GENOTYPES_DIR / "PDARTS.txt"
    with pytest.raises(G.GenotypeError, match=rf"^{pdarts}: is a cell genotype \(Genotype\), not a recurrent"):
        G.load_recurrent_genotype(str(pdarts))
    with pytest.raises(G.GenotypeError, match="genotypes/recurrent/; did you mean DARTS_V2"):
        G.load_recurrent_genotype("DARTS_V3")


STEPS = "[('tanh', 0), ('relu', 1), ('sigmoid', 1)]"


@pytest.mark.parametrize("text, position, fragment", [
    ("Genotype(recurrent=[('tanh', 1)], concat=[1])", "1:29", "step 0 computes state 1 from state 1, which is not "
                                                             "computed before it (states 0 to 0 are)"),
    ("Genotype(recurrent=[('tanh', 0), ('relu', 3)], concat=[1])", "1:42", "step 1 computes state 2 from state 3"),
    (f"Genotype(recurrent={STEPS}, concat=[0, 1])", "1:71", "concat names node 0, an input of the cell"),
    (f"Genotype(recurrent={STEPS}, concat=range(1, 5))", "1:70", "concat names node 4, but the cell computes "
                                                                 "nodes 1 to 3"),
    (f"Genotype(recurrent={STEPS}, concat=[1, 3, 3])", "1:77", "concat names node 3 twice"),
    ("Genotype(recurrent=[], concat=[1])", "1:19", "recurrent has no steps"),
    ("Genotype(recurrent=[('tanh', 0, 1)], concat=[1])", "1:20", "must be a tuple (op, from_node)"),
    ("Genotype(recurrent=[('tanh', -1)], concat=[1])", "1:29", "must not be negative"),
    (f"Genotype(recurrent={STEPS}, concat=[1], normal=[])", "1:82", "Genotype has no field 'normal'; its fields "
                                                                    "are recurrent, concat"),
    (f"Genotype(recurrent={STEPS})", "1:0", "a recurrent Genotype is missing the field(s) concat"),
    (f"Genotype(recurrent={STEPS}, concat=__import__('os').getpid())", "1:70", "a call to '__import__'"),
])
def test_bad_recurrent_genotypes_are_refused_with_a_position(text, position, fragment):
    with pytest.raises(G.GenotypeError) as info:
        G.parse_genotype(text, "cell.txt")
    message = str(info.value)
    assert message.startswith(f"cell.txt:{position}: ") and fragment in message and "\n" not in message


def test_recurrent_record_for_searches(tmp_path):
    record = G.recurrent_record([("tanh", 0), ["relu", 1], ("identity", 0)], range(1, 4))
    text = G.format_genotype(record)
    assert text == "Genotype(recurrent=[('tanh', 0), ('relu', 1), ('identity', 0)], concat=range(1, 4))\n"
    assert G.parse_genotype(text) == record
    G.write_genotype_file(tmp_path / "found.txt", record)
    found = G.load_recurrent_genotype(str(tmp_path / "found.txt"))
    assert found == G.RecurrentGenotype("found", (("tanh", 0), ("relu", 1), ("identity", 0)), (1, 2, 3))
    with pytest.raises(G.GenotypeError, match=r"^recurrent_record: recurrent\[1\]\[1\]: step 1 computes state 2"):
        G.recurrent_record([("tanh", 0), ("relu", 2)], [1])
