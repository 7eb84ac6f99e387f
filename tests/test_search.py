"""Search engine: supernet, architect (first/second order, D-DARTS losses), train_search.py."""
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

import architect as architect_module
import cli
import ddarts_losses
import genotypes
import lean_ops
import paths
import run_dir
import train_search
from architect import Architect, ArchConfig, search_iteration
from data import DeviceLoader
from ddarts_losses import DDartsLosses, separation_terms
from distributed import Dist
from genotypes import PRIMITIVE_SETS, format_genotype, load_architecture, read_genotype_file
from model import NetworkCIFAR
from model_search import SearchError, SearchNetwork, load_baseline, make_spec, op_coefficients
from operations import OPS
from runtime import Precision
from scripts import assert_one_sentence_error, run_ok, run_script
from search_strategy import StrategyError
from strategies import dartopti

CPU = Precision(torch.device("cpu"), False)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run folders and written genotypes go to tmp_path, in this process and in the searches it starts."""
    monkeypatch.setattr(run_dir, "LOGS_DIR", tmp_path / "logs")
    gdir = tmp_path / "genotypes"
    gdir.mkdir()
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", gdir)
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    return tmp_path


def search(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> None:
    """train_search.py in a child process (a native crash fails this test only), writing its genotype
    to the sandbox's genotypes/ (the tests' GENOTYPE_OUTPUT_DIR); it must exit 0."""
    run_ok("tests/patched_script.py", "--genotypes_to", str(train_search.GENOTYPE_OUTPUT_DIR), "--",
           "cnn/train_search.py", *args, env=env, timeout=timeout)


def tiny(layout="shared", weighting="softmax", primitives="DARTS", layers=2, steps=2, C=4, init="randn"):
    spec = make_spec(10, C, layers, steps, steps, PRIMITIVE_SETS[primitives], weighting, layout)
    return SearchNetwork(spec, init)


# ---------------------------------------------------------------------------------- supernet

def test_ddarts_supernet_has_the_reference_parameter_count():
    # ../shared/reference/README.md: C=16, 8 layers, 7 ops without none: 1,930,618 params, 8 x (14, 7)
    spec = make_spec(10, 16, 8, 4, 4, PRIMITIVE_SETS["DDARTS_7"], "sigmoid", "per_cell")
    net = SearchNetwork(spec, "zeros")
    assert sum(p.numel() for p in net.weight_parameters()) == 1_930_618
    assert [tuple(a.shape) for a in net.arch_parameters()] == [(14, 7)] * 8


def test_weight_and_arch_parameters_are_separate():
    net = tiny()
    arch = {id(a) for a in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert len(arch) == 2 and not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}


def test_weightings():
    alphas = torch.randn(14, 8)
    soft = F.softmax(alphas, dim=-1)
    assert torch.allclose(op_coefficients(alphas, "softmax"), soft)
    assert torch.equal(op_coefficients(alphas, "scalar"), op_coefficients(alphas, "softmax"))
    max_w = op_coefficients(alphas, "max_w")
    assert torch.allclose(max_w, 1 - soft.max(dim=-1, keepdim=True).values + soft)
    assert torch.allclose(max_w.max(dim=-1).values, torch.ones(14))
    assert torch.allclose(op_coefficients(alphas, "sigmoid"), torch.sigmoid(alphas))


def test_a_newly_registered_op_is_searchable(monkeypatch):
    class Scale(nn.Module):
        def __init__(self, C, stride):
            super().__init__()
            self.conv = nn.Conv2d(C, C, 1, stride=stride, bias=False)

        def forward(self, x):
            return self.conv(x)
    monkeypatch.setitem(OPS["darts"], "my_conv_1x1", lambda C, stride, affine, mid: Scale(C, stride))
    spec = make_spec(10, 4, 2, 2, 2, ("skip_connect", "my_conv_1x1"), "softmax", "shared")
    net = SearchNetwork(spec)
    assert any(isinstance(m, Scale) for m in net.modules())
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert "my_conv_1x1" in format_genotype(net.genotype("darts"))


def test_dartopti_starts_from_the_baseline_and_shares_weights_per_gene():
    baseline = load_baseline("ResNet50")
    prims = PRIMITIVE_SETS["DDARTS_12"]
    spec = make_spec(10, 4, 99, 99, 4, prims, "sigmoid", "baseline", baseline=baseline)
    assert (spec.layers, spec.steps, spec.layer_sets, spec.reductions) == (4, 6, (0, 1, 2, 0), (1, 2, 3))
    net = SearchNetwork(spec, baseline.alphas(prims))
    assert len(net.arch_parameters()) == 3
    w = net.probabilities()
    gene0 = baseline.arch.cells[0]
    for op, to_node, from_node in gene0.edges:
        row = sum(i + 2 for i in range(to_node - 2)) + from_node
        assert w[0, row, prims.index(op)] > 0.9999
    assert np.isclose(w, 0.5).sum() == w.size - sum(len(c.edges) for c in baseline.arch.cells)
    # layers 0 and 3 use gene 0: the same tensor
    per_layer = net.probabilities()[list(net.spec.layer_sets)]
    assert per_layer[0].tolist() == per_layer[3].tolist()


def test_genotype_of_per_cell_weights_keeps_the_real_reductions():
    net = tiny("per_cell", "sigmoid", "DDARTS_7", layers=5, init="zeros")
    with torch.no_grad():
        for a in net.arch_parameters():
            a.fill_(3.0)   # sigmoid 0.95 > 0.85: every parse keeps edges
    record = net.genotype("threshold_sparse", 0.85)
    assert record.kind == "Genotype_nested"
    assert list(record.get("reductions")) == [1, 3]
    arch = genotypes.to_architecture(record, "x")
    NetworkCIFAR(4, 10, None, False, arch)(torch.randn(2, 3, 16, 16))


# ---------------------------------------------------------------------------------- second order

def _reference_unrolled(model, x_t, y_t, x_v, y_v, opt, eta, momentum, wd):
    """DARTS's formula written out on deep copies of the network (what the architect avoids)."""
    names = [n for n, _ in model.named_weight_parameters()]

    def copy_with(weights):
        clone = copy.deepcopy(model)
        with torch.no_grad():
            for n, w in zip(names, weights):
                clone.get_parameter(n).copy_(w)
        return clone

    W = [p.detach().clone() for p in model.weight_parameters()]
    net = copy_with(W)
    g = torch.autograd.grad(F.cross_entropy(net(x_t), y_t), net.weight_parameters())
    buf = [opt.state[p]["momentum_buffer"] for p in model.weight_parameters()]
    w_prime = [w - eta * (momentum * b + gi + wd * w) for w, b, gi in zip(W, buf, g)]
    unrolled = copy_with(w_prime)
    loss = F.cross_entropy(unrolled(x_v), y_v)
    grads = torch.autograd.grad(loss, unrolled.arch_parameters() + unrolled.weight_parameters())
    dalpha, v = grads[:2], grads[2:]
    r = 0.01 / torch.cat([t.flatten() for t in v]).norm()
    plus = copy_with([w + r * t for w, t in zip(W, v)])
    minus = copy_with([w - r * t for w, t in zip(W, v)])
    gp = torch.autograd.grad(F.cross_entropy(plus(x_t), y_t), plus.arch_parameters())
    gm = torch.autograd.grad(F.cross_entropy(minus(x_t), y_t), minus.arch_parameters())
    return [da - eta * (p - m) / (2 * r) for da, p, m in zip(dalpha, gp, gm)]


def _exact_hypergradient(model, x_t, y_t, x_v, y_v, opt, eta, momentum, wd):
    """d L_val(w'(a), a) / da with autograd through the virtual SGD step (plain mixed ops: it
    differentiates twice)."""
    with lean_ops.plain():
        return _exact_hypergradient_of(model, x_t, y_t, x_v, y_v, opt, eta, momentum, wd)


def _exact_hypergradient_of(model, x_t, y_t, x_v, y_v, opt, eta, momentum, wd):
    named = model.named_weight_parameters()
    names, W = [n for n, _ in named], [p for _, p in named]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    loss = F.cross_entropy(functional_call(model, buffers, (x_t,)), y_t)
    g = torch.autograd.grad(loss, W, create_graph=True)
    buf = [opt.state[p]["momentum_buffer"] for p in W]
    w_prime = [w.detach() - eta * (momentum * b + gi + wd * w.detach()) for w, b, gi in zip(W, buf, g)]
    logits = functional_call(model, {**buffers, **dict(zip(names, w_prime))}, (x_v,))
    return torch.autograd.grad(F.cross_entropy(logits, y_v), model.arch_parameters())


def _second_order_setup(smooth=False):
    torch.manual_seed(0)
    if smooth:
        # No kinks: SiLU for ReLU, no max pool. ReLU and max-pool switches make DARTS's finite
        # difference (r = 0.01 / ||v||) coarse on a network this small, not wrong.
        prims = ("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
        model = SearchNetwork(make_spec(10, 4, 3, 2, 2, prims, "softmax", "shared")).double()
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.ReLU):
                    setattr(module, name, nn.SiLU())
    else:
        model = tiny(layers=3, steps=2, C=4).double()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    x_t, x_v = torch.randn(16, 3, 8, 8, dtype=torch.float64), torch.randn(16, 3, 8, 8, dtype=torch.float64)
    y_t, y_v = torch.randint(0, 10, (16,)), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    F.cross_entropy(model(x_t), y_t).backward()      # one real step: a momentum buffer exists
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, x_t, y_t, x_v, y_v, opt


def _flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


def _relative_error(got, exact):
    return float((_flat(got) - _flat(exact)).norm() / _flat(exact).norm())


def test_second_order_gradient_equals_the_finite_difference_formula():
    model, x_t, y_t, x_v, y_v, opt = _second_order_setup()
    arch = Architect(model, ArchConfig(unrolled=True, network_momentum=0.9, network_weight_decay=3e-4), CPU)
    got, _ = arch.unrolled_gradients((x_t, y_t), (x_v, y_v), opt)
    formula = _reference_unrolled(model, x_t, y_t, x_v, y_v, opt, 0.1, 0.9, 3e-4)
    for a, b in zip(got, formula):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_second_order_gradient_approximates_the_exact_hypergradient(monkeypatch):
    # On a smooth supernet, DARTS's r = 0.01 / ||v|| is close; the first-order gradient is not.
    model, x_t, y_t, x_v, y_v, opt = _second_order_setup(smooth=True)
    arch = Architect(model, ArchConfig(unrolled=True, network_momentum=0.9, network_weight_decay=3e-4), CPU)
    exact = _exact_hypergradient(model, x_t, y_t, x_v, y_v, opt, 0.1, 0.9, 3e-4)
    got, _ = arch.unrolled_gradients((x_t, y_t), (x_v, y_v), opt)
    assert _relative_error(got, exact) < 1e-3
    first = torch.autograd.grad(F.cross_entropy(model(x_v), y_v), model.arch_parameters())
    assert _relative_error(first, exact) > 0.1
    # On the DARTS supernet (ReLU, max pool) it converges to the exact value as r shrinks.
    model, x_t, y_t, x_v, y_v, opt = _second_order_setup()
    monkeypatch.setattr(architect_module, "HVP_SCALE", 1e-6)
    arch = Architect(model, ArchConfig(unrolled=True, network_momentum=0.9, network_weight_decay=3e-4), CPU)
    got, _ = arch.unrolled_gradients((x_t, y_t), (x_v, y_v), opt)
    assert _relative_error(got, _exact_hypergradient(model, x_t, y_t, x_v, y_v, opt, 0.1, 0.9, 3e-4)) < 1e-7


def test_second_order_step_leaves_the_network_untouched():
    model, x_t, y_t, x_v, y_v, opt = _second_order_setup()
    before = copy.deepcopy(model.state_dict())
    arch = Architect(model, ArchConfig(unrolled=True), CPU)
    arch.step((x_t, y_t), (x_v, y_v), opt)
    after = model.state_dict()
    for key, value in before.items():
        if not key.startswith("alphas."):
            assert torch.equal(value, after[key]), key       # weights and BatchNorm statistics
    assert all(p.grad is None for p in model.weight_parameters())
    assert not torch.equal(before["alphas.0"], after["alphas.0"])


# ---------------------------------------------------------------------------------- D-DARTS losses

def _ddarts(abl=0.7, sep="l2"):
    torch.manual_seed(0)
    model = tiny("per_cell", "sigmoid", "DDARTS_7", layers=3, steps=2, init="zeros")
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_(0, 1.0)
    cfg = ArchConfig(learning_rate=3e-3, betas=(0.9, 0.999), per_tensor=True)
    losses = DDartsLosses(sep_loss=sep, aux_loss_weight=9.0, cell_loss="ablation_loss" if abl else "none",
                          abl_loss_weight=abl)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    return model, Architect(model, cfg, CPU, terms=losses), x, y


def _gradients(model, arch, x, y, seed=1):
    torch.manual_seed(seed)
    grads, _, stats = arch.objective_gradients((x, y))
    return grads, stats


def test_each_cell_gets_the_gradient_of_its_own_loss_only():
    model, arch, x, y = _ddarts()
    grads, stats = _gradients(model, arch, x, y)
    # Rebuild every cell's loss as a graph: CE + 9 sep_c + 0.7 (mc_c - mean) / |mean|, where the
    # deactivated losses (CE - mc) and the mean are statistics of the batch.
    alphas = model.arch_parameters()
    ce = F.cross_entropy(model(x), y)
    sep = separation_terms(model, "l2")
    without = ce.detach() - stats["marginal"]
    mean = stats["marginal"].mean()
    own = []
    for c in range(len(alphas)):
        loss_c = ce + 9.0 * sep[c] + 0.7 * ((ce - without[c]) - mean) / mean.abs()
        assert torch.allclose(loss_c.detach(), stats["cell_losses"][c])
        own.append(torch.autograd.grad(loss_c, alphas[c], retain_graph=True)[0])
    for g, o in zip(grads, own):
        assert torch.allclose(g, o, rtol=1e-5, atol=1e-7)
    # D-DARTS back-propagates every cell's loss through the shared graph: that is not what we do
    leaky = torch.autograd.grad(sum(F.cross_entropy(model(x), y) + 9.0 * s for s in separation_terms(model, "l2")),
                                alphas)
    assert not torch.allclose(leaky[0], grads[0], rtol=1e-3)
    # and nothing reaches the network weights
    arch.step((x, y), (x, y), None)
    assert all(p.grad is None for p in model.weight_parameters())


def test_a_cells_loss_changes_only_that_cells_gradient(monkeypatch):
    model, arch, x, y = _ddarts()
    grads, _ = _gradients(model, arch, x, y)

    def louder_first_cell(m, kind):
        terms = separation_terms(m, kind)
        return terms * torch.tensor([5.0] + [1.0] * (len(terms) - 1))
    monkeypatch.setattr(ddarts_losses, "separation_terms", louder_first_cell)
    changed, _ = _gradients(model, arch, x, y)
    assert not torch.allclose(changed[0], grads[0])
    for a, b in zip(changed[1:], grads[1:]):
        assert torch.equal(a, b)


def test_the_ablation_term_carries_gradient():
    model, arch, x, y = _ddarts(abl=0.7)
    grads, stats = _gradients(model, arch, x, y)
    assert stats["ablation"].abs().sum() > 0 and torch.isfinite(stats["ablation"]).all()
    plain_model, plain, _, _ = _ddarts(abl=0.0)
    plain_grads, _ = _gradients(plain_model, plain, x, y)
    for g, p in zip(grads, plain_grads):
        assert (g - p).abs().max() > 1e-6
    # d abl_c / d alpha_c = dCE/d alpha_c / |mean mc|, nonzero
    ce = F.cross_entropy(model(x), y)
    abl0 = ((ce - (ce.detach() - stats["marginal"][0])) - stats["marginal"].mean()) / stats["marginal"].mean().abs()
    assert torch.autograd.grad(abl0, model.arch_parameters()[0])[0].abs().sum() > 0


def test_per_cell_sets_have_their_own_optimizer_state_and_schedule():
    model, arch, x, y = _ddarts()
    assert len(arch.optimizer.param_groups) == len(model.arch_parameters()) == 3
    lr = arch.learning_rates()
    arch.step((x, y), (x, y), None)
    arch.end_epoch()
    assert all(b < a for a, b in zip(lr, arch.learning_rates()))


def test_single_level_iteration_updates_both_without_a_search_batch():
    model, arch, x, y = _ddarts()
    opt = torch.optim.SGD(model.weight_parameters(), 0.05, momentum=0.9)
    before = [a.detach().clone() for a in model.arch_parameters()]
    w_before = model.classifier.weight.detach().clone()

    def no_batch():
        raise AssertionError("single level must not draw a search batch")
    search_iteration(model, arch, opt, CPU, (x, y), no_batch, grad_clip=5.0, single_level=True)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.arch_parameters()))
    assert not torch.equal(w_before, model.classifier.weight)


# ---------------------------------------------------------------------------------- train_search.py

SEED_LINES = {
    "ddarts": "--batch_size 96 --pretrain_epochs 0 --init_channels 16 --amp --no_arch_metric",
    "dartopti": "--batch_size 96 --arch_baseline ResNet18 --amp",
    "sharp": "--dataset cifar10 --batch_size 48 --layers_of_cells 8 --layers_in_cells 4 --save NAME "
             "--init_channels 16 --epochs 120 --cutout --autoaugment --seed 22 --weighting_algorithm max_w "
             "--primitives DARTS_PRIMITIVES",
    "darts": "--unrolled",
}


@pytest.mark.parametrize("method,line", SEED_LINES.items())
def test_the_seed_command_lines_parse_to_their_method(method, line):
    args = train_search.parse_args(line.split())
    assert args.method == method
    if method == "sharp":
        assert (args.layers, args.steps, args.weighting_algorithm, args.ops, args.auto_aug) == (8, 4, "max_w",
                                                                                               "sharp", True)
    if method == "ddarts":
        assert (args.layout, args.weighting_algorithm, args.primitives) == ("per_cell", "sigmoid", "DDARTS_7")


def test_conflicting_method_flags_ask_for_method():
    with pytest.raises(StrategyError, match="--method"):
        train_search.parse_args(["--weighting_algorithm", "max_w", "--cell_loss", "none"])
    assert train_search.parse_args(["--method", "sharp", "--cell_loss", "none"]).method == "sharp"


COMMON = "--dataset digits --init_channels 4 --batch_size 16 --epochs 1 --max_steps 2 --report_freq 0 --seed 3"
STRATEGIES = {
    "darts_first_order": "--layers 3 --steps 2 --multiplier 2",
    "darts_second_order": "--layers 3 --steps 2 --multiplier 2 --unrolled",
    "sharp_scalar": "--layers_of_cells 3 --layers_in_cells 2 --multiplier 2 --weighting_algorithm scalar "
                    "--primitives DARTS_PRIMITIVES",
    "sharp_max_w": "--layers_of_cells 3 --layers_in_cells 2 --multiplier 2 --weighting_algorithm max_w "
                   "--primitives DARTS_PRIMITIVES",
    "ddarts_nested": "--layers 3 --steps 2 --multiplier 2 --pretrain_epochs 0 --no_arch_metric --op_threshold 0.3",
    "dartopti_resnet18": "--arch_baseline ResNet18 --pretrain_epochs 0",
}


def _run(sandbox, line):
    search(*line.split())
    runs = sorted((sandbox / "logs" / "search").iterdir(), key=lambda p: p.stat().st_mtime)
    return runs[-1]


@pytest.mark.parametrize("name", STRATEGIES)
def test_each_strategy_runs_an_epoch_and_writes_a_genotype_that_builds(sandbox, name):
    run = _run(sandbox, f"{COMMON} {STRATEGIES[name]} --genotype_name g_{name}")
    for item in ("log.txt", "command.txt", "args.json", "checkpoint.pt", "weights/epoch_001.npy", "tensorboard"):
        assert (run / item).exists(), item
    log = (run / "log.txt").read_text()
    assert re.search(r"method (darts|sharp|ddarts|dartopti) \(", log)
    arch = load_architecture(str(sandbox / "genotypes" / f"g_{name}.txt"))
    family = "sharp" if name.startswith("sharp") else "darts"
    assert arch.ops == family
    net = NetworkCIFAR(4, 10, None if not arch.shared else 3, False, arch, family=family)
    assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)
    if name.startswith("ddarts") or name.startswith("dartopti"):
        assert "ablation values" in log
    if name.startswith("dartopti"):
        assert "architecture distance to ResNet18" in log


def test_a_genotype_without_edges_is_refused_with_a_command_that_derives_it_again(sandbox):
    patched = ["tests/patched_script.py", "--genotypes_to", str(train_search.GENOTYPE_OUTPUT_DIR), "--"]
    # two steps leave the per-cell weights near uniform: none reaches the 0.85 threshold
    done = run_script(*patched, "cnn/train_search.py", *COMMON.split(), "--layers", "3", "--steps", "2",
                      "--multiplier", "2", "--method", "ddarts", "--genotype_name", "empty")
    assert_one_sentence_error(done, "the derived genotype cannot be trained", "gene 0 has no edges")
    command = done.stderr.split("derive it again with a lower --op_threshold: ")[1].split()
    assert command[:3] == ["python", "cnn/train_search.py", "--resume"] and Path(command[3]).is_dir()
    run_ok(*patched, *command[1:-1], "0.1")     # the command as given, with a threshold these weights pass
    assert load_architecture(str(sandbox / "genotypes" / "empty.txt")).name == "empty"


@pytest.mark.parametrize("extra", [
    "--layers 3 --steps 2 --multiplier 2",
    "--layers 3 --steps 2 --multiplier 2 --method ddarts --op_threshold 0.3",
    "--layers 3 --steps 2 --multiplier 2 --data_on_device",
])
def test_a_resumed_search_ends_exactly_like_an_uninterrupted_one(sandbox, extra):
    line = f"{COMMON.replace('--epochs 1', '--epochs 2')} {extra}"
    straight = _run(sandbox, f"{line} --genotype_name straight")
    stopped = _run(sandbox, f"{line} --genotype_name resumed --stop_epoch 1")
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["epoch"] == 1
    search("--resume", str(stopped))
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    gdir = sandbox / "genotypes"
    strip = lambda p: read_genotype_file(p).fields  # noqa: E731 (comments name the run)
    assert strip(gdir / "straight.txt") == strip(gdir / "resumed.txt")
    charged = [[(e["phase"], e["epoch"]) for e in session["epochs"]]             # cost.json: each epoch once
               for session in json.loads((stopped / "cost.json").read_text())["sessions"]]
    assert charged == [[("search", 1)], [("search", 2)]]


def test_search_batches_come_from_one_persistent_stream():
    data = torch.utils.data.TensorDataset(torch.arange(10).float().view(10, 1), torch.arange(10))
    stream = train_search.SearchStream(data, 4, 0, seed=0, device=torch.device("cpu"))
    first_pass = [stream()[1] for _ in range(3)]              # 4 + 4 + 2 samples
    assert sorted(torch.cat(first_pass).tolist()) == list(range(10))
    state = stream.state_dict()
    nxt = stream()[1]
    assert stream.sampler.pass_index == 1
    other = train_search.SearchStream(data, 4, 0, seed=0, device=torch.device("cpu"))
    other.load_state_dict(state)
    assert torch.equal(other()[1], nxt)


def test_data_on_device_gives_the_loaders_samples_in_their_order():
    flags = ["--dataset", "digits", "--batch_size", "64", "--seed", "3"]
    cpu = torch.device("cpu")
    loaded = train_search.search_data(train_search.parse_args(flags), Dist(), cpu, torch.contiguous_format)
    held = train_search.search_data(train_search.parse_args(flags + ["--data_on_device"]), Dist(), cpu,
                                    torch.contiguous_format)
    assert all(isinstance(loader, DeviceLoader) for loader in (held.train_loader, held.valid_loader, held.stream.loader))
    batches = 0
    for (x, y), (x_held, y_held) in zip(loaded.valid_loader, held.valid_loader, strict=True):   # unaugmented
        assert torch.equal(y_held, y)
        torch.testing.assert_close(x_held, x, rtol=0, atol=1e-6)
        batches += 1
    assert batches == 12                                        # 719 held-out digits in batches of 64
    # augmented halves: the same samples in the same order (each side draws its own crops)
    for (_, y), (_, y_held) in zip(loaded.train_loader, held.train_loader, strict=True):
        assert torch.equal(y_held, y)
    for _ in range(13):                                         # past the end of a pass of the search stream
        assert torch.equal(held.stream()[1], loaded.stream()[1])


def test_a_search_with_data_on_device_writes_a_genotype(sandbox):
    run = _run(sandbox, f"{COMMON} --layers 3 --steps 2 --multiplier 2 --data_on_device --genotype_name held")
    assert '"data_on_device": true' in (run / "log.txt").read_text()
    assert load_architecture(str(sandbox / "genotypes" / "held.txt")).shared


def test_bad_input_is_one_sentence(sandbox, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: train_search.main(f"{COMMON} --arch_baseline DARTS_V2".split()))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Genotype_opt" in err and "\n" not in err
    shipped = (paths.GENOTYPES_DIR / "DARTS_V2.txt").read_text()
    (sandbox / "genotypes" / "mine.txt").write_text(shipped)      # a genotype no search wrote
    with pytest.raises(SystemExit):
        cli.run(lambda: train_search.main(f"{COMMON} --genotype_name mine".split()))
    assert "was not written by a search" in capsys.readouterr().err
    assert (sandbox / "genotypes" / "mine.txt").read_text() == shipped


def test_resuming_a_finished_search_derives_the_genotype_again(sandbox):
    run = _run(sandbox, f"{COMMON} {STRATEGIES['ddarts_nested']} --genotype_name first")
    search("--resume", str(run), "--parse_method", "threshold_edge", "--genotype_name", "again")
    first = read_genotype_file(sandbox / "genotypes" / "first.txt")
    again = read_genotype_file(sandbox / "genotypes" / "again.txt")
    assert sum(map(len, again.get("genes"))) > sum(map(len, first.get("genes")))   # every edge, two ops each


@pytest.mark.slow   # about a minute on 2 cores; a DARTOpti epoch stays in the quick suite (test_each_strategy_runs_an_epoch)
def test_dartopti_stops_early_when_the_distance_stays_put(sandbox):
    run = _run(sandbox, f"{COMMON.replace('--epochs 1', '--epochs 20').replace('--max_steps 2', '--max_steps 1')} "
                        "--arch_baseline ResNet18 --pretrain_epochs 0 --arch_learning_rate 0 --genotype_name early")
    assert "search stopped early" in (run / "log.txt").read_text()
    # the distance counts after the warm-up epochs; PATIENCE epochs within the tolerance, then one more to stop
    stop = dartopti.METRIC_WARMUP_EPOCHS + dartopti.METRIC_PATIENCE + 1
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == stop
    assert (sandbox / "genotypes" / "early.txt").exists()


# The README's quick search (2 CPU cores: about 3 minutes) and its training command.
QUICK_SEARCH = "--dataset digits --init_channels 8 --layers 5 --epochs 6 --arch_learning_rate 0.003"
QUICK_TRAIN = "--dataset digits --init_channels 12 --layers 6 --epochs 20 --learning_rate 0.05"


@pytest.mark.slow
def test_the_quick_digits_search_finds_a_genotype_that_trains_to_95_percent(sandbox):
    import json

    two_threads = {"OMP_NUM_THREADS": "2"}
    search(*f"{QUICK_SEARCH} --genotype_name digits_search".split(), env=two_threads, timeout=1800)
    run = next((sandbox / "logs" / "search").iterdir())
    assert "epoch 6/6" in (run / "log.txt").read_text()
    path = sandbox / "genotypes" / "digits_search.txt"
    run_ok("cnn/train.py", "--arch", str(path), *QUICK_TRAIN.split(), env=two_threads, timeout=1800)
    results = sorted((sandbox / "logs" / "eval").glob("*/results.json"))[-1]
    assert json.loads(results.read_text())["final"]["test_top1"] >= 95.0


@pytest.mark.slow
@pytest.mark.parametrize("method", SEED_LINES)
def test_the_seed_command_lines_run_verbatim(sandbox, method):
    # The published lines at their full sizes on a tiny CIFAR-10, one step of one epoch.
    from tiny_datasets import make_cifar10
    root = make_cifar10(sandbox / "data", n_train=20, n_test=10)
    extra = " --pretrain_epochs 0" if method == "dartopti" else ""
    run = _run(sandbox, f"{SEED_LINES[method]} --data {root} --epochs 1 --max_steps 1 --op_threshold 0.0 "
                        f"--genotype_name seed_{method}{extra}")
    assert f"method {method} (" in (run / "log.txt").read_text()
    assert load_architecture(str(sandbox / "genotypes" / f"seed_{method}.txt"))
