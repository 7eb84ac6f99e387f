"""DARTS-PT: the op kept is the one whose removal hurts the held-out accuracy most, the inputs kept
those whose removal hurts most, and a digits search selected this way writes a genotype."""
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import run_dir
import train_search
from genotypes import PRIMITIVE_SETS, load_architecture
from model_search import SearchError, SearchNetwork, make_spec
from runtime import Precision
from strategies.base import SelectionContext
from strategies.darts_pt import Projection, as_coefficients, forward_weights, node_edges

DARTS = PRIMITIVE_SETS["DARTS"]

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_made(seed=0):
    """Two sets of a 2-node cell (5 edges): weights whose largest entry is a pool on every edge, and
    what each (set, edge, op) adds to the accuracy when present (a different op is worth most)."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.05, 0.1, (2, 5, len(DARTS)))
    weights[:, :, DARTS.index("avg_pool_3x3")] = 0.4
    worth = rng.uniform(0.0, 1.0, (2, 5, len(DARTS)))
    worth[:, :, DARTS.index("avg_pool_3x3")] = 0.0
    return weights, worth


def accuracy(worth, calls=None):
    """The held-out accuracy of the hand-made supernet: 50% plus what the ops still present add."""
    def score(w):
        if calls is not None:
            calls.append(w.copy())
        return 50.0 + float((worth * (w > 0)).sum())
    return score


def test_each_edge_keeps_the_op_whose_removal_hurts_most_not_the_largest_weight():
    weights, worth = hand_made()
    projection = Projection(weights, 2, DARTS)
    calls = []
    kept = [[projection.choose_op(s, e, accuracy(worth, calls)) for e in range(5)] for s in range(2)]
    expected = [[1 + int(np.argmax(worth[s, e, 1:])) for e in range(5)] for s in range(2)]   # 'none' is no candidate
    assert kept == expected
    assert all(k != DARTS.index("avg_pool_3x3") for row in kept for k in row)       # the largest weight everywhere
    assert len(calls) == 2 * 5 * 7
    first = calls[0]                       # removing 'max_pool_3x3' (the first candidate) from edge 0 of set 0
    assert first[0, 0, 1] == 0 and (first[0, 0, 2:] == weights[0, 0, 2:]).all() and (first[1] == weights[1]).all()
    w = projection.weights()               # decided edges are projected to one-hot
    assert all(w[s, e, k] == 1 and w[s, e].sum() == 1 for s in range(2) for e, k in enumerate(kept[s]))


PARAMETRIC = ("none", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def test_on_a_real_supernet_the_op_that_carries_the_signal_is_kept_over_the_largest_weight():
    # one reduction cell, one node fed by two edges; every op but edge 0's sep_conv_3x3 has its weights zeroed
    # and frozen, so it outputs exactly 0, while dil_conv_5x5 has the largest architecture weight everywhere
    torch.manual_seed(0)
    net = SearchNetwork(make_spec(2, 4, 1, 1, 1, PARAMETRIC, "softmax", "shared"))
    with torch.no_grad():
        for a in net.alphas:
            a.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0]).repeat(2, 1))
    edges = net.cells[0]._ops
    for e, edge in enumerate(edges):
        for k, op in enumerate(edge._ops):
            if (e, PARAMETRIC[k]) != (0, "sep_conv_3x3"):
                for p in op.parameters():
                    p.detach().zero_()
                    p.requires_grad_(False)
    # two classes told apart by the sign of the image's mean: the live op learns them
    x = torch.randn(512, 3, 8, 8) + torch.tensor([-0.5, 0.5]).repeat(256)[:, None, None, None]
    y = torch.tensor([0, 1]).repeat(256)
    optimizer = torch.optim.Adam([p for p in net.weight_parameters() if p.requires_grad], lr=0.01)
    for step in range(60):
        batch = slice(64 * (step % 8), 64 * (step % 8 + 1))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
        optimizer.step()
    engine = SimpleNamespace(model=net, precision=Precision(torch.device("cpu"), False),
                             memory_format=torch.contiguous_format)
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    context = SelectionContext(engine, loader, None, loader, torch.device("cpu"), None, logging.getLogger("test"))
    like = net.alphas[0]
    full = context.accuracy()
    assert full > 90
    projection = Projection(forward_weights(net), 1, PARAMETRIC)
    assert projection.base[1, 0].argmax() == PARAMETRIC.index("dil_conv_5x5")
    scores = []

    def score(w):
        scores.append(context.accuracy(as_coefficients(w, like)))
        return scores[-1]
    assert PARAMETRIC[projection.choose_op(1, 0, score)] == "sep_conv_3x3"
    assert scores[0] <= 55 and scores[1:] == [full] * 3         # without it: one class for every image; else no change


def test_each_node_keeps_the_two_inputs_whose_removal_hurts_most():
    weights, _ = hand_made()
    edge_worth = {5: 3.0, 6: 1.0, 7: 4.0, 8: 2.0}

    def score(w):
        return 50.0 + sum(v for e, v in edge_worth.items() if w[0, e].any())
    # a 3-node cell: node 4 takes edges 5..8
    projection = Projection(np.pad(weights, ((0, 0), (0, 4), (0, 0)), constant_values=0.1), 3, DARTS)
    assert projection.choose_edges(0, 2, score) == [5, 7]
    assert projection.dropped == {(0, 6), (0, 8)} and not projection.weights()[0, [6, 8]].any()
    assert [list(r) for r in node_edges(3)] == [[0, 1], [2, 3, 4], [5, 6, 7, 8]]


def test_pt_needs_a_method_with_architecture_weights():
    assert train_search.parse_args(["--selection", "pt"]).selection == "pt"
    with pytest.raises(SearchError, match="--selection needs the architecture weights of a cell supernet, "
                                          "and --method random trains none"):
        train_search.parse_args(["--method", "random", "--selection", "pt"])


def test_a_digits_search_selected_by_pt_writes_the_genotype_of_its_decisions(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "LOGS_DIR", tmp_path / "logs")
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    train_search.main(["--dataset", "digits", "--init_channels", "4", "--layers", "3", "--steps", "2",
                       "--multiplier", "2", "--batch_size", "8", "--epochs", "1", "--max_steps", "1",
                       "--report_freq", "0", "--device", "cpu", "--seed", "1", "--genotype_name", "pt",
                       "--selection", "pt", "--pt_tune_steps", "1"])
    log = (next((tmp_path / "logs" / "search").iterdir()) / "log.txt").read_text()
    # 5 edges then 1 node (node 3's 3 inputs); per set 5 x 7 op removals and 3 edge removals
    assert re.search(r"DARTS-PT selection: 6 decisions, 76 evaluations, 1 tuning steps between two", log)
    ops = dict(re.findall(r"(normal edge \d-\d) keeps (\w+)", log))
    inputs = re.search(r"normal node 3 keeps \['(\d)-3', '(\d)-3'\]", log).groups()
    arch = load_architecture(str(tmp_path / "genotypes" / "pt.txt"))
    normal = [(e.op, e.from_node, e.to_node) for e in arch.cells[0].edges]
    expected = [(ops[f"normal edge {j}-{n}"], int(j), n) for j, n in (("0", 2), ("1", 2), *((i, 3) for i in inputs))]
    assert sorted(normal) == sorted(expected)


def test_a_tie_in_accuracy_is_decided_by_the_weights():
    weights, _ = hand_made()
    projection = Projection(weights, 2, DARTS)

    def flat(w):
        return 80.0
    assert DARTS[projection.choose_op(0, 0, flat)] == "avg_pool_3x3"        # the largest weight
    weights[0, 2:5] = [[0.1] * 8, [0.3] * 8, [0.2] * 8]                    # node 3's inputs 0, 1, 2
    assert Projection(weights, 2, DARTS).choose_edges(0, 1, flat) == [3, 4]   # the weakest input, 0, dropped
