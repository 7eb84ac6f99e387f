"""PC-DARTS: partial channels with the channel shuffle, edge betas, genotypes from alpha times beta."""

import numpy as np
import pytest
import torch

import cli
import lean_ops
import train_search
from genotypes import PRIMITIVE_SETS, load_architecture
from model_search import make_spec
from runtime import Precision
from scripts import assert_train_py_trains
from strategies.pcdarts import PartialChannelMixedOp, PCDartsNetwork, channel_shuffle
from test_search import search

DARTS = PRIMITIVE_SETS["DARTS"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stride", [1, 2])
def test_exactly_c_over_k_channels_pass_through_the_ops(stride):
    C, k = 16, 4
    edge = PartialChannelMixedOp(C, stride, DARTS, "darts", 32, k=k)
    seen = []
    for op in edge.mixed._ops:
        op.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0].shape[1], output.shape[1])))
    x = torch.randn(2, C, 8, 8)
    with lean_ops.plain():      # hooks see module calls; the lean mixed op (tests/test_lean_ops.py) makes none
        out = edge(x, torch.softmax(torch.randn(len(DARTS)), 0))
    assert out.shape == (2, C, 8 // stride, 8 // stride)
    assert seen == [(C // k, C // k)] * (len(DARTS) - 1)       # every op but 'none' (never computed) sees C/K
    bypass = x[:, C // k:] if stride == 1 else torch.nn.functional.max_pool2d(x[:, C // k:], 2)
    for g in range(1, k):                  # channel g * C/K + j of the concatenation lands at j * K + g
        for j in range(C // k):
            assert torch.equal(out[:, j * k + g], bypass[:, (g - 1) * (C // k) + j])


@pytest.mark.parametrize("stride", [1, 2])
def test_with_k_1_every_channel_passes_through_the_ops(stride):
    edge = PartialChannelMixedOp(8, stride, DARTS, "darts", 32, k=1)
    x, coefficients = torch.randn(2, 8, 8, 8), torch.softmax(torch.randn(len(DARTS)), 0)
    out = edge(x, coefficients)
    assert out.shape == (2, 8, 8 // stride, 8 // stride) and torch.equal(out, edge.mixed(x, coefficients))


def test_channel_shuffle_is_the_same_permutation_in_either_memory_layout():
    x = torch.randn(2, 12, 5, 5)
    expected = torch.stack([x[:, g * 4 + j] for j in range(4) for g in range(3)], dim=1)
    assert torch.equal(channel_shuffle(x, 3), expected)
    last = channel_shuffle(x.contiguous(memory_format=torch.channels_last), 3)
    assert torch.equal(last, expected) and last.is_contiguous(memory_format=torch.channels_last)


def tiny(seed=0):
    torch.manual_seed(seed)
    spec = make_spec(10, 4, 3, 2, 2, DARTS, "softmax", "shared")
    return PCDartsNetwork(spec, mixed_op=lambda *a: PartialChannelMixedOp(*a, k=2))


def test_betas_are_declared_architecture_parameters_normalized_over_each_nodes_inputs():
    net = tiny()
    arch = {id(p) for p in net.arch_parameters()}
    assert {id(b) for b in net.betas} <= arch and len(arch) == 4
    assert not arch & {id(p) for p in net.weight_parameters()}
    with torch.no_grad():
        net.betas[0].copy_(torch.tensor([1.0, 2.0, 0.0, 1.0, 3.0]))
    edges = net.coefficients()[0].edges
    torch.testing.assert_close(edges[:2], torch.softmax(torch.tensor([1.0, 2.0]), 0))
    torch.testing.assert_close(edges[2:], torch.softmax(torch.tensor([0.0, 1.0, 3.0]), 0))
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in net.betas)   # the betas scale the edges


def test_the_genotype_ranks_edges_by_alpha_times_beta():
    net = tiny()
    # node 3's edges from 0, 1, 2: strongest op weight 0.6, 0.5, 0.4, and betas normalized to 0.1, 0.3, 0.6,
    # so the products are 0.06, 0.15, 0.24: alpha alone keeps the edges from 0 and 1, alpha times beta 2 and 1
    best = {0: ("sep_conv_3x3", 0.9), 1: ("skip_connect", 0.8), 2: ("dil_conv_3x3", 0.6), 3: ("sep_conv_5x5", 0.5),
            4: ("max_pool_3x3", 0.4)}
    rows = np.array([[(1 - p) / (len(DARTS) - 1)] * len(DARTS) for _, p in best.values()])
    for e, (op, p) in best.items():
        rows[e, DARTS.index(op)] = p
    node3 = np.log([0.1, 0.3, 0.6])
    with torch.no_grad():
        for s in range(2):
            net.alphas[s].copy_(torch.tensor(np.log(rows)))
            net.betas[s].copy_(torch.tensor([0.0, 0.0, *node3]))
    probabilities = net.probabilities()
    np.testing.assert_allclose(probabilities[0, 2:].max(axis=1), [0.06, 0.15, 0.24], rtol=1e-6)
    normal = net.genotype().get("normal")
    assert normal == [("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 2), ("sep_conv_5x5", 1)]
    plain = net.genotype(weights=np.stack([rows, rows])).get("normal")        # by alpha alone, for contrast
    assert plain[2:] == [("dil_conv_3x3", 0), ("sep_conv_5x5", 1)]


def test_partial_channels_belong_to_pcdarts_and_must_divide_the_width(capsys):
    args = train_search.parse_args(["--method", "pcdarts"])
    assert (args.partial_channels, args.batch_size, args.learning_rate, args.learning_rate_min) == (4, 256, 0.1, 0.0)
    assert (args.arch_learning_rate, args.pretrain_epochs, args.epochs) == (6e-4, 15, 35)
    for flags, message in ((["--method", "pcdarts", "--partial_channels", "3"], "--partial_channels 3 must divide "
                                                                               "--init_channels 16"),
                           (["--partial_channels", "2"], "--partial_channels is a flag of --method pcdarts")):
        with pytest.raises(SystemExit):
            cli.run(lambda: train_search.main(flags))
        assert message in capsys.readouterr().err


def test_an_architecture_step_moves_alphas_and_betas():
    net = tiny()
    from architect import ArchConfig, Architect
    architect = Architect(net, ArchConfig(learning_rate=0.01), Precision(torch.device("cpu"), False))
    before = [p.detach().clone() for p in net.arch_parameters()]
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    architect.step(batch, batch, torch.optim.SGD(net.weight_parameters(), lr=0.01))
    assert all(not torch.equal(a, b) for a, b in zip(before, net.arch_parameters()))


def test_a_pcdarts_search_on_digits_writes_a_genotype_that_train_py_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    search("--method", "pcdarts", "--dataset", "digits", "--init_channels", "8", "--layers", "3", "--batch_size", "16",
           "--pretrain_epochs", "1", "--epochs", "1", "--max_steps", "2", "--report_freq", "0",
           "--genotype_name", "pc_digits")
    run = next((tmp_path / "logs" / "search").iterdir())
    log = (run / "log.txt").read_text()
    assert "method pcdarts (--method)" in log and "epoch 1/2 (pretrain)" in log and "epoch 2/2 lr" in log
    saved = np.load(run / "weights" / "epoch_002.npy")             # alpha times beta: rows no longer sum to 1
    assert saved.shape == (2, 14, 8) and (saved.sum(axis=2) < 0.99).all()
    path = tmp_path / "genotypes" / "pc_digits.txt"
    assert load_architecture(str(path)).shared
    assert_train_py_trains(path, tmp_path / "logs")
