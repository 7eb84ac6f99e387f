"""Random search: uniform draws under the DARTS rules, reproducible from the seed, written as
genotype files that train.py trains."""
from collections import Counter

import numpy as np
import pytest

import run_dir
import train_search
from genotypes import PRIMITIVE_SETS, load_architecture
from scripts import assert_train_py_trains
from search_strategy import StrategyError
from strategies.random_search import random_weights

DARTS = PRIMITIVE_SETS["DARTS"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_node_takes_two_distinct_earlier_inputs_with_an_op_other_than_none():
    rng = np.random.default_rng(0)
    draws = [random_weights(rng, 2, 4, DARTS) for _ in range(200)]
    ops, inputs = Counter(), Counter()
    for w in draws:
        assert w.shape == (2, 14, 8) and set(np.unique(w)) == {0.0, 1.0}
        assert (w.sum(axis=2) <= 1).all() and w[:, :, DARTS.index("none")].sum() == 0
        for s in range(2):
            start = 0
            for i in range(4):
                chosen = np.flatnonzero(w[s, start:start + i + 2].sum(axis=1))
                assert len(chosen) == 2         # two distinct inputs among the i + 2 before node i + 2
                inputs.update((i, int(j)) for j in chosen)
                start += i + 2
        ops.update(DARTS[k] for k in np.nonzero(w)[2])
    # uniform: 200 draws x 2 cells x 8 edges = 3200 ops over 7 kinds (457 each), and node 5's 5 inputs 160 each
    assert set(ops) == set(DARTS) - {"none"} and all(abs(n - 3200 / 7) < 80 for n in ops.values())
    assert all(abs(inputs[(3, j)] - 160) < 45 for j in range(5)) and inputs[(0, 0)] == inputs[(0, 1)] == 400


def test_the_seed_fixes_the_draws():
    same = [random_weights(np.random.default_rng(7), 2, 4, DARTS) for _ in range(2)]
    other = random_weights(np.random.default_rng(8), 2, 4, DARTS)
    assert np.array_equal(*same) and not np.array_equal(same[0], other)


def test_samples_belongs_to_random_search():
    assert train_search.parse_args(["--method", "random"]).samples == 8
    with pytest.raises(StrategyError, match="--samples is a flag of --method random"):
        train_search.parse_args(["--method", "darts", "--samples", "3"])


def test_a_random_search_writes_n_genotypes_that_train_py_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(run_dir, "LOGS_DIR", tmp_path / "logs")
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    texts = []
    for name in ("first", "again"):
        train_search.main(["--method", "random", "--samples", "3", "--dataset", "digits", "--init_channels", "4",
                           "--device", "cpu", "--seed", "1", "--genotype_name", name])
        files = sorted((tmp_path / "genotypes").glob(f"{name}_*.txt"))
        assert [f.name for f in files] == [f"{name}_{i}.txt" for i in range(3)]
        texts.append([[line for line in f.read_text().splitlines() if not line.startswith("#")] for f in files])
    assert texts[0] == texts[1] and len({str(t) for t in texts[0]}) == 3     # the seed fixes the draws
    run = sorted((tmp_path / "logs" / "search").iterdir())[0]
    log = (run / "log.txt").read_text()
    assert "method random" in log and "epoch 1/" not in log and not (run / "checkpoint.pt").exists()
    path = tmp_path / "genotypes" / "first_1.txt"
    arch = load_architecture(str(path))
    assert arch.shared and all(len(cell.edges) == 8 for cell in arch.cells)
    assert_train_py_trains(path, tmp_path / "logs")
