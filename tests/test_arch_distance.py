"""The D-DARTS architecture distance against its published figures."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import arch_distance as AD
from derive import edge_count
from genotypes import PRIMITIVE_SETS, load_architecture
from shipped_genotypes import SHIPPED
from paths import REPO_ROOT

DDARTS_12 = PRIMITIVE_SETS["DDARTS_12"]
DDARTS_7 = PRIMITIVE_SETS["DDARTS_7"]
DARTS = PRIMITIVE_SETS["DARTS"]
REFERENCE = REPO_ROOT.parent / "shared" / "reference"

# D-DARTS reference README: the distances between its hand-made baselines.
PUBLISHED = [
    ("ResNet18", "ResNet50", 0.0836299697),
    ("ResNet18", "Xception", 0.0841555475),
    ("ResNet50", "Xception", 0.1385269409),
]
# Every shipped genotype whose ops all have an op statistic (the D-DARTS files, the
# hand-made baselines, and the classic DARTS-space genotypes).
MEASURABLE = [n for n in SHIPPED
              if all(e.op in DDARTS_12 for c in load_architecture(n).cells for e in c.edges)]


def arch(name):
    return load_architecture(name)


@pytest.mark.parametrize("a, b, published", PUBLISHED)
def test_published_distances(a, b, published):
    d = AD.architecture_distance(arch(a), arch(b))
    assert f"{d:.10f}" == f"{published:.10f}"
    assert abs(d - published) < 1e-10


def test_published_distances_to_the_bit():
    # Summed as np.average sums (D-DARTS's scipy); these are the float64 results.
    got = [AD.architecture_distance(arch(a), arch(b)) for a, b, _ in PUBLISHED]
    assert got == [0.08362996966788812, 0.08415554752898546, 0.13852694085580394]


def test_symmetric_and_zero_on_itself():
    assert len(MEASURABLE) > 30
    archs = {n: arch(n) for n in MEASURABLE}
    for name, a in archs.items():
        assert AD.architecture_distance(a, a) == 0.0
    names = sorted(archs)
    for a, b in zip(names, names[1:] + names[:1]):
        d = AD.architecture_distance(archs[a], archs[b])
        assert d == AD.architecture_distance(archs[b], archs[a])
        assert 0.0 <= d <= 1.0


def test_genotype_matrix_as_ddarts_builds_it():
    m18 = AD.genotype_matrix(arch("ResNet18"))
    assert m18.shape == (1, 14, 12)           # one distinct gene, 4 steps
    assert sorted(set(m18.ravel())) == [0.0, 10.0]
    conv, skip = DDARTS_12.index("simple_conv_3x3"), DDARTS_12.index("skip_connect")
    assert m18[0, 0, conv] == 10.0            # ('simple_conv_3x3', 2, 0)
    assert m18[0, 2 + 0, skip] == 10.0        # ('skip_connect', 3, 0)
    assert m18[0, 9 + 4, conv] == 10.0        # ('simple_conv_3x3', 5, 4)
    assert (m18 > 0).sum() == 6
    # ResNet50: three distinct genes (not seq's four layers), nodes up to 7 -> 6 steps; an
    # edge with two ops is one row with two entries.
    m50 = AD.genotype_matrix(arch("ResNet50"))
    assert m50.shape == (3, edge_count(6), 12)
    assert (m50[0, 0] > 0).sum() == 2
    assert AD.genotype_matrix(arch("DARTS_V2")).shape == (2, 14, 12)   # normal, reduce


def test_op_stats_are_the_published_ones():
    stats = AD.load_op_stats()
    assert stats.shape == (12,) and stats[DDARTS_12.index("sep_conv_5x5")] == 84.97416410115558
    stats[:] = 0                              # a fresh array each call
    assert AD.load_op_stats().min() > 81
    published = REFERENCE / "ddarts_op_stats.json"
    if published.is_file():
        data = json.loads(published.read_text())
        assert list(AD.load_op_stats()) == [data[op] for op in DDARTS_12]


def test_published_table_rows_we_can_reconstruct():
    """ddarts_distances.csv, rounded to 3 decimals.

    Its ResNet18C10 / ResNet50C100 ... are D-DARTS searches started from those baselines on
    CIFAR-10 / CIFAR-100; the shipped threshold_edge genotypes (the form D-DARTS parses to
    for this metric) fit best, but only the rows below round to the published value. The
    others differ by 0.001 to 0.08 (e.g. ResNet18C100-ResNet50C10: 0.21 published, 0.290
    here; 0.188 and 0.21 are averages over four cells of 1/6 and 1/4 mismatches), so the
    table was computed from genotypes other than the ones published.
    """
    table = REFERENCE / "ddarts_distances.csv"
    if not table.is_file():
        pytest.skip("the reference data is not in this checkout")
    rows = {(r["arch1"], r["arch2"]): float(r["distance"]) for r in csv.DictReader(table.open())}
    files = {"ResNet18": "ResNet18", "ResNet50": "ResNet50",
             "ResNet18C10": "ResNet18_cifar10_threshold_edge_0.85",
             "ResNet50C100": "ResNet50_cifar100_threshold_edge_0.85"}
    reconstructed = [("ResNet18", "ResNet50"), ("ResNet50", "ResNet18C10"),
                     ("ResNet18C10", "ResNet50C100")]
    reconstructed += [(b, a) for a, b in reconstructed]
    reconstructed += [(n, n) for n in sorted({a for a, _ in rows})]
    for a, b in reconstructed:
        name_a, name_b = files.get(a), files.get(b)
        if name_a is None:   # the diagonal of the other searches: 0 whatever the genotype
            assert rows[a, b] == 0
            continue
        d = AD.architecture_distance(arch(name_a), arch(name_b))
        assert round(d, 3) == rows[a, b], (a, b, d)


# ----------------------------------------------------------------------------------------
# weights_distance
# ----------------------------------------------------------------------------------------

def sigmoid_like(matrix, primitives=DDARTS_12, rng=None):
    """Weights a search could end with: > 0.85 for the chosen ops, < 0.85 elsewhere."""
    rng = rng or np.random.default_rng(0)
    chosen = np.stack([matrix[..., DDARTS_12.index(op)] for op in primitives], axis=-1) > 0
    low = rng.uniform(0.0, 0.8, chosen.shape)
    return np.where(chosen, rng.uniform(0.86, 1.0, chosen.shape), low)


def test_weights_distance_matches_the_genotypes():
    for a, b, published in PUBLISHED:
        ma, mb = AD.genotype_matrix(arch(a)), AD.genotype_matrix(arch(b))
        expected = AD.architecture_distance(arch(a), arch(b))
        assert AD.weights_distance(ma, mb) == expected          # matrices pass through
        assert AD.weights_distance(sigmoid_like(ma), sigmoid_like(mb)) == expected
    assert AD.weights_distance(sigmoid_like(ma), sigmoid_like(ma, rng=np.random.default_rng(1))) == 0


def test_weights_distance_other_primitive_orders():
    # D-DARTS's 7-op set and the DARTS set (with 'none') map onto the 12 columns by name.
    m = AD.genotype_matrix(arch("D-DARTS_threshold_sparse_cifar10_0.85_50"))
    ref = AD.genotype_matrix(arch("D-DARTS_threshold_edge_cifar10_0.85_50"))
    expected = AD.matrix_distance(m, ref)
    w7, ref7 = sigmoid_like(m, DDARTS_7), sigmoid_like(ref, DDARTS_7)
    assert AD.weights_distance(w7, ref7, primitives=DDARTS_7) == expected

    def with_none(w, value):                  # DARTS order: 'none' first, then D-DARTS's 7
        assert DARTS[1:] == DDARTS_7
        return np.concatenate([np.full(w.shape[:-1] + (1,), value), w], axis=-1)

    assert AD.weights_distance(with_none(w7, 0.99), with_none(ref7, 0.0),
                               primitives=DARTS) == expected


@pytest.mark.parametrize("call, message", [
    (lambda: AD.architecture_distance(arch("ResNet18"), arch("SHARP_DARTS")),
     "op 'choke_conv_3x3' of the normal cell is not one of the primitives"),
    (lambda: AD.weights_distance(np.zeros((2, 13, 12)), np.zeros((2, 14, 12))),
     "a has 13 edges, which no number of steps gives"),
    (lambda: AD.weights_distance(np.zeros((14, 12)), np.zeros((2, 14, 12))),
     "a must have shape (n_cells, n_edges, n_ops)"),
    (lambda: AD.weights_distance(np.zeros((1, 14, 8)), np.zeros((1, 14, 8))),
     "8 op columns but 12 primitives"),
    (lambda: AD.weights_distance(np.zeros((1, 14, 2)), np.zeros((1, 14, 2)),
                                 primitives=["none", "choke_conv_3x3"]),
     "'choke_conv_3x3' is not in DDARTS_12"),
    (lambda: AD.matrix_distance(np.zeros((1, 14, 7)), np.zeros((1, 14, 12))),
     "a has 7 op columns"),
])
def test_bad_input(call, message):
    with pytest.raises(AD.DistanceError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------

def run_cli(*args, cwd=REPO_ROOT):
    script = "arch_distance.py" if cwd == REPO_ROOT / "cnn" else "cnn/arch_distance.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_from_root_and_from_cnn():
    out = run_cli("ResNet18", "ResNet50")
    assert out.returncode == 0 and out.stderr == ""
    assert float(out.stdout) == 0.08362996966788812
    out = run_cli("ResNet50", str(REPO_ROOT / "genotypes" / "Xception.txt"), cwd=REPO_ROOT / "cnn")
    assert out.returncode == 0 and abs(float(out.stdout) - 0.1385269409) < 1e-10


@pytest.mark.parametrize("args, message", [
    (("ResNet18", "NoSuchNet"), "unknown genotype 'NoSuchNet'"),
    (("ResNet18", "SHARP_DARTS"), "is not one of the primitives"),
])
def test_cli_errors_are_one_sentence(args, message):
    out = run_cli(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: ") and message in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_numpy_only():
    code = ("import sys, arch_distance, derive; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT / "cnn",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
