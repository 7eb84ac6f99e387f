"""Search strategies as registered objects: what holds for every method, the hooks a method plugs
into (options, stop rules, selection), collapse made visible, and the loop that runs them all."""
import inspect
import json
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cli
import lean_ops
import paths
import run_dir
import train_search
from architect import ArchConfig, Architect, ArchTerms
from genotypes import PRIMITIVE_SETS, RangeLiteral, darts_record, nested_record
from model_search import CellResult, EdgeWeights, SearchNetwork, make_spec, parameter_free
from runtime import Precision
from search_run import EpochRecord, StopRule
from search_strategy import Flag, SearchOption
from strategies import OPTIONS, STRATEGIES
from strategies.base import CellSearchConfig
from strategies.darts import Darts
from scripts import assert_train_py_trains
from test_search import search
from weight_report import WeightTable, colour, heatmap_png

CPU = Precision(torch.device("cpu"), False)
TINY = ["--init_channels", "8", "--layers", "3", "--steps", "2", "--multiplier", "2", "--batch_size", "4",
        "--seed", "1"]
VARIANTS = [(name, variant, flags) for name, cls in STRATEGIES.items() for variant, flags in cls.variants().items()]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_engine(method: str, flags: tuple[str, ...]):
    args = train_search.parse_args(["--method", method, *flags, *TINY])
    strategy, _ = train_search.make_strategy(args)
    torch.manual_seed(0)
    return strategy, train_search.build_engine(strategy, 10, "cifar", torch.device("cpu"), CPU, "contiguous")


def snapshot(params):
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("name,variant,flags", VARIANTS, ids=[v for _, v, _ in VARIANTS])
def test_no_weight_is_updated_by_the_other_optimizer(name, variant, flags):
    strategy, engine = tiny_engine(name, flags)
    model = engine.model
    weights, arch = model.weight_parameters(), model.arch_parameters()
    ids = lambda params: [id(p) for p in params]  # noqa: E731
    assert ids(p for g in engine.optimizer.param_groups for p in g["params"]) == ids(weights)
    assert sorted(ids(p for g in engine.architect.optimizer.param_groups for p in g["params"])) == sorted(ids(arch))
    assert not set(ids(weights)) & set(ids(arch))
    assert set(ids(weights)) | set(ids(arch)) == set(ids(model.parameters()))
    torch.manual_seed(1)
    batch = (torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    search_batch = (torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    engine.step(batch, lambda: search_batch, False)          # a network step first: momentum buffers exist
    if arch:
        w_before, a_before = snapshot(weights), snapshot(arch)
        engine.architect.step(batch, search_batch, engine.optimizer)     # the architecture step alone
        assert all(torch.equal(a, b) for a, b in zip(w_before, weights)), "the architecture step moved a weight"
        assert any(not torch.equal(a, b) for a, b in zip(a_before, arch))
    w_before, a_before = snapshot(weights), snapshot(arch)
    engine.step(batch, lambda: search_batch, False)          # the network step alone
    assert all(torch.equal(a, b) for a, b in zip(a_before, arch)), "the network step moved an architecture weight"
    assert any(not torch.equal(a, b) for a, b in zip(w_before, weights))
    assert strategy.derive(model).text()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_method_says_where_its_defaults_come_from_and_is_in_the_readme_table(name):
    cls = STRATEGIES[name]
    assert cls.SOURCE and cls.SUMMARY
    readme = (paths.REPO_ROOT / "README.md").read_text()
    assert re.search(rf"^\| `--method {name}`", readme, re.M), f"README's table of methods lacks --method {name}"
    flags = next(iter(cls.variants().values()), ())   # random search has none: nothing to time
    args = train_search.parse_args(["--method", name, *flags])
    for key, value in cls.DEFAULTS.items():
        if f"--{key}" not in flags:
            assert getattr(args, key) == (list(value) if isinstance(value, tuple) else value), key


# DARTS-, beta-DARTS, SDARTS and DrNAS; the older methods have theirs in test_search.py and test_pcdarts.py
SEARCHED_HERE = ["darts_minus", "beta_darts", "sdarts_rs", "sdarts_adv", "drnas"]


@pytest.mark.parametrize("name", SEARCHED_HERE)
def test_a_method_searches_an_epoch_on_digits_and_writes_a_genotype_that_train_py_trains(tmp_path, monkeypatch,
                                                                                         name):
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    search("--method", name, "--dataset", "digits", *TINY, "--batch_size", "16", "--epochs", "1",
           "--pretrain_epochs", "0", "--max_steps", "1", "--report_freq", "0", "--genotype_name", name)
    run = next((tmp_path / "logs" / "search").iterdir())
    assert f"method {name} (--method)" in (run / "log.txt").read_text()
    assert_train_py_trains(tmp_path / "genotypes" / f"{name}.txt", tmp_path / "logs")


def test_a_flag_of_an_option_that_is_off_is_refused_in_one_sentence(capsys):
    with pytest.raises(SystemExit):
        cli.run(lambda: train_search.main(["--method", "darts", "--early_stop_patience", "3"]))
    assert capsys.readouterr().err.strip() == ("error: --early_stop_patience belongs to option early_stop, which "
                                               "--early_stop switches on; add that flag or drop this one")
    assert train_search.parse_args(["--early_stop", "--early_stop_patience", "3"]).early_stop_patience == 3


def test_a_flag_of_another_method_is_refused_in_one_sentence(capsys):
    with pytest.raises(SystemExit):
        cli.run(lambda: train_search.main(["--method", "darts", "--partial_channels", "2"]))
    assert capsys.readouterr().err.strip() == "error: --partial_channels is a flag of --method pcdarts, not of --method darts"


def test_the_search_loop_is_short_and_has_no_switch_on_the_search_space():
    source = inspect.getsource(train_search)
    assert "spec is None" not in source and "isinstance(" not in source
    assert len(inspect.getsource(train_search.search).splitlines()) <= 25
    assert len(inspect.getsource(train_search.SearchRun.epoch).splitlines()) <= 45


# ---------------------------------------------------------------------------------- collapse made visible

def test_parameter_free_ops_are_found_by_building_them():
    free = [op for op in PRIMITIVE_SETS["DARTS"] if parameter_free(op, "darts", 32)]
    assert free == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
    assert not parameter_free("sep_conv_3x3", "sharp", 32)


def test_collapse_counts_skips_and_parameter_free_ops_of_the_normal_cells():
    spec = make_spec(10, 4, 3, 2, 2, PRIMITIVE_SETS["DARTS"], "softmax", "shared")
    normal = [("skip_connect", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("sep_conv_3x3", 2)]
    reduce = [("skip_connect", 0)] * 4       # the reduction cell does not count
    record = darts_record(normal, RangeLiteral(2, 4), reduce, RangeLiteral(2, 4))
    assert CellResult(record, spec, "darts", 0.85).collapse() == {"skip_connections": 2.0, "param_free_ops": 3.0}
    genes = [[("skip_connect", 2, 0), ("avg_pool_3x3", 2, 1)], [("skip_connect", 2, 0)], [("sep_conv_3x3", 2, 0)]]
    nested = nested_record(genes, RangeLiteral(2, 4), [1])      # normal cells 0 and 2: 1 and 0 skips
    assert CellResult(nested, spec, "threshold_sparse", 0.85).collapse() == {"skip_connections": 0.5,
                                                                            "param_free_ops": 1.0}


def test_the_heatmap_colours_each_weight_by_its_value(tmp_path):
    values = np.array([[0.0, 0.5], [0.25, 1.0]])
    path = tmp_path / "weights.png"
    heatmap_png(path, {"normal": WeightTable(values, ["0-2", "1-2"], ["skip_connect", "sep_conv_3x3"])}, "title")
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    for value in values.flatten():
        assert (np.abs(image - np.array(colour(value))).sum(axis=2) == 0).sum() > 200, value   # its cell's pixels
    assert colour(0.0) == (68, 1, 84) and colour(1.0) == (253, 231, 37)


def test_a_search_logs_plots_and_draws_the_collapse_of_its_normal_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    search("--dataset", "digits", *TINY, "--batch_size", "16", "--epochs", "2", "--max_steps", "1",
           "--report_freq", "0", "--genotype_name", "collapse")
    run = next((tmp_path / "logs" / "search").iterdir())
    log = (run / "log.txt").read_text()
    counts = [tuple(map(float, m)) for m in
              re.findall(r"normal cell: ([\d.]+) skip connections, ([\d.]+) parameter-free ops", log)]
    assert len(counts) == 2
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    plotted = [tuple(events.Scalars(f"collapse/{key}")[e].value for key in ("skip_connections", "param_free_ops"))
               for e in range(2)]
    assert plotted == counts
    for epoch in (1, 2):
        image = Image.open(run / "weights" / f"epoch_{epoch:03d}.png")
        assert image.format == "PNG" and image.size[0] > 400


# ---------------------------------------------------------------------------------- options: stop rules, selection

class StopAtEpoch(StopRule):
    def __init__(self, epoch):
        self.epoch, self.seen = epoch, []

    def observe(self, record: EpochRecord, log) -> str | None:
        self.seen.append(record.epoch)
        record.scalars["seen"] = float(len(self.seen))
        return "the test rule fired" if record.epoch == self.epoch else None

    def state_dict(self):
        return {"seen": list(self.seen)}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])


@dataclass(frozen=True)
class ProbeConfig:
    probe: bool


def test_an_option_adds_a_stop_rule_and_a_selection_to_any_method(tmp_path, monkeypatch):
    calls = {}

    class Probe(SearchOption):
        name, config_type, ENABLED_BY, selects = "probe", ProbeConfig, "probe", True
        FLAGS = (Flag("--probe", {"action": "store_true"}),)

        def stop_rules(self, model, strategy):
            return [StopAtEpoch(2)]

        def select(self, context):
            before = context.accuracy()
            ones = [type(w)(torch.ones_like(w.ops)) for w in context.engine.model.coefficients()]
            calls["accuracies"] = (before, context.accuracy(ones))
            weights = [p.detach().clone() for p in context.engine.model.weight_parameters()]
            context.tune(1)
            calls["tuned"] = any(not torch.equal(a, b) for a, b in zip(weights, context.engine.model.weight_parameters()))
            return context.engine.strategy.derive(context.engine.model)

    monkeypatch.setitem(OPTIONS, "probe", Probe)
    monkeypatch.setattr(run_dir, "LOGS_DIR", tmp_path / "logs")
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    flags = ["--dataset", "digits", *TINY, "--batch_size", "16", "--epochs", "5", "--max_steps", "1",
             "--report_freq", "0", "--device", "cpu", "--genotype_name", "probed", "--probe"]
    train_search.main(flags)
    run = next((tmp_path / "logs" / "search").iterdir())
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["stopped_early"] == "the test rule fired"
    assert state["stop_rules"] == [{"seen": [1, 2]}]
    assert "the test rule fired: search stopped early" in (run / "log.txt").read_text()
    assert all(0 <= a <= 100 for a in calls["accuracies"]) and calls["tuned"]
    assert (tmp_path / "genotypes" / "probed.txt").exists()
    cost = json.loads((run / "cost.json").read_text())
    assert [(e["phase"], e["epoch"]) for e in cost["sessions"][0]["epochs"]] == [("search", 1), ("search", 2),
                                                                                 ("selection", 1)]


# ---------------------------------------------------------------------------------- hooks of the supernet and architect

def test_a_forward_can_run_exactly_one_op_per_edge_and_still_train_the_alphas():
    # GDAS's contract: hard one-hot coefficients (straight-through) and the index of the op to run
    torch.manual_seed(0)
    net = SearchNetwork(make_spec(10, 4, 3, 2, 2, PRIMITIVE_SETS["DARTS"], "softmax", "shared"))
    calls = []
    for cell in net.cells:
        for edge in cell._ops:
            for k, op in enumerate(edge._ops):
                op.register_forward_hook(lambda m, i, o, k=k, edge=edge: calls.append((id(edge), k)))
    sampled = []
    for a in net.alphas:
        soft = torch.softmax(a, dim=-1)
        index = torch.tensor([1 + e % 7 for e in range(a.shape[0])])    # never 'none', which is not an op call
        hard = torch.nn.functional.one_hot(index, a.shape[1]).float()
        sampled.append(EdgeWeights(hard - soft.detach() + soft, active=tuple(index.tolist())))
    with lean_ops.plain():      # hooks see module calls; the lean mixed op (tests/test_lean_ops.py) makes none
        net(torch.randn(2, 3, 8, 8), coefficients=sampled).sum().backward()
    edges = [id(edge) for cell in net.cells for edge in cell._ops]
    assert sorted(e for e, _ in calls) == sorted(edges)           # one op call per edge, no more
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alphas)


def test_given_coefficients_replace_the_weighting_for_one_forward():
    # SDARTS (perturbed weights for the network step) and DARTS-PT (projected weights) pass their own
    torch.manual_seed(0)
    net = SearchNetwork(make_spec(10, 4, 3, 2, 2, PRIMITIVE_SETS["DARTS"], "softmax", "shared")).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, coefficients=net.coefficients()))
        other = [EdgeWeights(torch.rand_like(w.ops)) for w in net.coefficients()]
        assert not torch.allclose(net(x), net(x, coefficients=other))


def test_a_penalty_adds_its_gradient_to_the_architecture_step_in_first_and_second_order():
    # beta-DARTS, DrNAS: a term of the architecture loss that depends on the architecture parameters only
    torch.manual_seed(0)
    net = SearchNetwork(make_spec(10, 4, 2, 2, 2, PRIMITIVE_SETS["DARTS"], "softmax", "shared")).double()
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))
    penalty = lambda m: 0.5 * sum(torch.logsumexp(a, dim=-1).mean() for a in m.alphas)  # noqa: E731
    plain = Architect(net, ArchConfig(), CPU)
    with_penalty = Architect(net, ArchConfig(), CPU, terms=lambda m, loss, evaluate: ArchTerms(penalty=penalty(m)))
    for first_order in (True, False):
        if first_order:
            (a, _, _), (b, _, _) = plain.objective_gradients((x, y)), with_penalty.objective_gradients((x, y))
        else:
            opt = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9)
            (a, _), (b, _) = (arch.unrolled_gradients((x, y), (x, y), opt) for arch in (plain, with_penalty))
        expected = torch.autograd.grad(penalty(net), net.arch_parameters())
        for ga, gb, gp in zip(a, b, expected):
            torch.testing.assert_close(gb - ga, gp)


@dataclass(frozen=True)
class ProbeStrategyConfig(CellSearchConfig):
    probe_weight: float = 0.0


class ProbeStrategy(Darts):
    """Every hook a method overrides, each leaving a trace: a schedule, a penalty, its own network
    loss, and two results."""
    name, config_type = "probe", ProbeStrategyConfig
    DEFAULTS = {**Darts.DEFAULTS, "probe_weight": 0.25}
    FLAGS = (Flag("--probe_weight", {"type": float}),)
    network_steps = 0

    def begin_epoch(self, epoch):
        self.temperature = 10.0 - epoch
        return {"temperature": self.temperature}

    def arch_terms(self, model, loss, evaluate):
        penalty = self.config.probe_weight * self.temperature * sum(a.square().sum() for a in model.alphas)
        return ArchTerms(penalty=penalty, stats={"probe_penalty": penalty.detach()})

    def network_loss(self, model, batch):
        ProbeStrategy.network_steps += 1
        return super().network_loss(model, batch)

    def results(self, model):
        return {"": self.derive(model), "_second": self.derive(model)}


def test_a_strategys_hooks_run_in_the_one_search_loop(tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES, "probe", ProbeStrategy)
    monkeypatch.setattr(run_dir, "LOGS_DIR", tmp_path / "logs")
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    train_search.main(["--method", "probe", "--dataset", "digits", *TINY, "--batch_size", "16", "--epochs", "2",
                       "--max_steps", "2", "--report_freq", "0", "--device", "cpu", "--genotype_name", "probed"])
    run = next((tmp_path / "logs" / "search").iterdir())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("schedule/temperature")] == [10.0, 9.0]
    penalties = [e.value for e in events.Scalars("probe_penalty")]
    assert len(penalties) == 2 and all(p > 0 for p in penalties)
    assert ProbeStrategy.network_steps == 4
    assert "epoch 2/2 lr" in (run / "log.txt").read_text() and "| temperature 9" in (run / "log.txt").read_text()
    assert sorted(p.name for p in (tmp_path / "genotypes").iterdir()) == ["probed.txt", "probed_second.txt"]
    with pytest.raises(SystemExit):
        cli.run(lambda: train_search.main(["--method", "darts", "--probe_weight", "1"]))


class NoTraining(Darts):
    """A method without supernet training (random search): no epoch runs, its results are written."""
    name = "no_training"
    total_epochs = 0

    def results(self, model):
        return {f"_{i}": self.derive(model) for i in range(3)}


def test_a_method_without_supernet_training_writes_its_results(tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES, "no_training", NoTraining)
    monkeypatch.setattr(run_dir, "LOGS_DIR", tmp_path / "logs")
    monkeypatch.setattr(train_search, "GENOTYPE_OUTPUT_DIR", tmp_path / "genotypes")
    train_search.main(["--method", "no_training", "--dataset", "digits", *TINY, "--device", "cpu",
                       "--genotype_name", "sampled"])
    assert sorted(p.name for p in (tmp_path / "genotypes").iterdir()) == ["sampled_0.txt", "sampled_1.txt",
                                                                          "sampled_2.txt"]
    run = next((tmp_path / "logs" / "search").iterdir())
    assert not (run / "checkpoint.pt").exists() and "epoch 1/" not in (run / "log.txt").read_text()
