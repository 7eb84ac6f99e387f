"""GDAS: one sampled op per edge per forward, straight-through gradients to the alphas, the
Gumbel-max distribution and the temperature schedule."""
import re

import numpy as np
import pytest
import torch

import lean_ops
import run_dir
import train_search
from genotypes import PRIMITIVE_SETS, load_architecture
from model_search import SearchError, make_spec
from scripts import assert_train_py_trains
from strategies.gdas import GdasNetwork, gumbel_sample

DARTS = PRIMITIVE_SETS["DARTS"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed=0):
    torch.manual_seed(seed)
    return GdasNetwork(make_spec(10, 4, 3, 2, 2, DARTS, "softmax", "shared"), tau=10.0)


def op_calls(net):
    """(edge, op index) of every op call, appended as they happen."""
    calls = []
    for cell in net.cells:
        for edge in cell._ops:
            for k, op in enumerate(edge._ops):
                op.register_forward_hook(lambda m, i, o, k=k, edge=edge: calls.append((id(edge), k)))
    return calls


@pytest.mark.parametrize("training", [True, False])
def test_a_forward_calls_exactly_one_op_per_edge_the_sampled_one(training):
    net = tiny().train(training)
    calls = op_calls(net)
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(3)
    sample = net.coefficients()
    torch.manual_seed(3)
    with lean_ops.plain():      # hooks see module calls; the lean mixed op (tests/test_lean_ops.py) makes none
        net(x)
    expected = [(id(edge), sample[int(cell.reduction)].active[e]) for cell in net.cells
                for e, edge in enumerate(cell._ops)]          # each edge runs the op its set's sample names
    assert len(calls) == 3 * 5 and sorted(calls) == sorted(expected)    # 3 cells of 5 edges: 15 calls, not 15 x 7
    if not training:   # evaluation: every edge's strongest op
        assert [list(s.active) for s in sample] == [a.argmax(-1).tolist() for a in net.alphas]


def test_the_coefficients_are_one_hot_forward_and_softmax_backward():
    net = tiny()
    torch.manual_seed(1)
    weights = net.coefficients()
    for w in weights:
        hot = torch.nn.functional.one_hot(torch.tensor(w.active), len(DARTS)).float()
        torch.testing.assert_close(w.ops, hot, atol=1e-6, rtol=0)
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(1)
    net(x).sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alphas)
    # the gradient of an edge's alphas is that of its Gumbel-softmax probabilities (straight-through)
    alphas = torch.zeros(1, 4, requires_grad=True)
    torch.manual_seed(2)
    sampled = gumbel_sample(alphas, tau=0.5)
    (sampled.ops[0, sampled.active[0]] * 3.0).backward()
    torch.manual_seed(2)
    exponential = torch.empty(1, 4).exponential_()
    probs = torch.softmax((torch.log_softmax(torch.zeros(1, 4), -1) - exponential.log()) / 0.5, -1)[0]
    k = sampled.active[0]
    expected = 3.0 * probs[k] * ((torch.arange(4) == k).float() - probs) / 0.5
    torch.testing.assert_close(alphas.grad[0], expected)


def test_the_sampled_op_is_distributed_as_the_softmax_of_the_alphas_at_any_temperature():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    alphas = p.log().repeat(4000, 1)
    torch.manual_seed(0)
    for tau in (10.0, 0.1):
        counts = np.bincount(gumbel_sample(alphas, tau).active, minlength=4) / 4000
        np.testing.assert_allclose(counts, p.numpy(), atol=0.03)


def test_the_temperature_falls_linearly_from_10_to_01_over_the_search_epochs():
    args = train_search.parse_args(["--method", "gdas", "--pretrain_epochs", "2", "--epochs", "5",
                                    "--init_channels", "4", "--layers", "2"])
    assert (args.batch_size, args.epochs, args.tau_max, args.tau_min) == (256, 5, 10.0, 0.1)
    strategy, _ = train_search.make_strategy(args)
    model = strategy.build_supernet(10, "cifar")
    taus = [strategy.begin_epoch(e)["tau"] for e in range(7)]
    np.testing.assert_allclose(taus, [10, 10, 10, 7.525, 5.05, 2.575, 0.1])
    assert model.tau == pytest.approx(0.1)


def test_a_gdas_search_on_digits_logs_its_temperature_and_writes_a_genotype_that_train_py_trains(tmp_path,
                                                                                                 monkeypatch):
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(run_dir, "LOGS_DIR", tmp_path / "logs")
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    train_search.main(["--method", "gdas", "--dataset", "digits", "--init_channels", "8", "--layers", "3",
                       "--steps", "2", "--multiplier", "2", "--batch_size", "16", "--epochs", "3", "--max_steps", "2",
                       "--report_freq", "0", "--device", "cpu", "--seed", "1", "--genotype_name", "gdas_digits"])
    log = (next((tmp_path / "logs" / "search").iterdir()) / "log.txt").read_text()
    assert [float(t) for t in re.findall(r"epoch \d/3 lr .* \| tau ([\d.]+)", log)] == [10.0, 5.05, 0.1]
    path = tmp_path / "genotypes" / "gdas_digits.txt"
    assert load_architecture(str(path)).shared
    assert_train_py_trains(path, tmp_path / "logs")


def test_compile_is_refused_in_one_sentence():
    """A host-side draw per forward would make torch.compile trace a graph per draw (measured: a new graph
    every iteration until dynamo's recompile limit, then eager with a warning)."""
    with pytest.raises(SearchError, match="without --compile"):
        train_search.parse_args(["--method", "gdas", "--compile"])
    assert train_search.parse_args(["--method", "gdas"]).compile is False
