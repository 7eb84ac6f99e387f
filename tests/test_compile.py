"""train.py and train_search.py --compile: what compiles, and that the compiled network trains (and searches)
as the eager one does."""
import argparse
import copy

import pytest
import torch
import torch.nn as nn
from torch._dynamo.utils import counters

import train_search
from model import ModelSpec
from runtime import Precision, compile_module
from scripts import assert_one_sentence_error, run_script
from training import make_optimizer, train_step

SGD = argparse.Namespace(learning_rate=0.025, momentum=0.9, weight_decay=3e-4)


def _tiny_network() -> nn.Module:
    """Two cells (both reduce; the auxiliary head reads the second): tracing time grows with the cells."""
    torch.manual_seed(0)
    spec = ModelSpec.resolve("DARTS_V2", "cifar", 10, init_channels=4, layers=2, auxiliary=True)
    return spec.build().to(memory_format=torch.channels_last)


def _epochs(net: nn.Module, drop_probs: list[float]) -> list[dict]:
    """Epochs as train.py runs them (drop path probability set per epoch, two full batches and a short
    last one, then evaluation); per epoch the losses, the evaluation logits and the compiled graphs."""
    optimizer = make_optimizer(net.parameters(), SGD)
    precision, criterion = Precision(torch.device("cpu"), False), nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (10,), generator=generator)
    results = []
    for epoch, drop in enumerate(drop_probs):
        net.train()
        net.drop_path_prob = drop
        torch.manual_seed(epoch)
        losses = [train_step(net, x[i:i + 4], y[i:i + 4], optimizer, criterion, precision, auxiliary_weight=0.4,
                             grad_clip=5.0)[0] for i in (0, 4, 8)]
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(x[i:i + 4])[0] for i in (0, 4, 8)])
        results.append({"losses": torch.stack(losses), "logits": logits,
                        "graphs": counters["stats"]["unique_graphs"]})
    return results


def _compiled_epochs(backend: str, drop_probs: list[float]) -> list[dict]:
    torch._dynamo.reset()
    counters.clear()
    return _epochs(compile_module(_tiny_network(), backend=backend), drop_probs)


def test_compiled_training_stops_compiling_after_the_first_epochs(one_thread):
    # epoch 1 compiles training and evaluation for full and short batches, epoch 2 once more for the
    # first nonzero drop path; from then on a new drop path probability compiles nothing
    epochs = _compiled_epochs("eager", [0.0, 0.1, 0.2])
    graphs = [e["graphs"] for e in epochs]
    assert 0 < graphs[0] < graphs[1] == graphs[2]


@pytest.mark.slow
def test_inductor_compiled_training_matches_eager(one_thread):
    drop_probs = [0.0, 0.2]
    compiled = _compiled_epochs("inductor", drop_probs)
    eager = _epochs(_tiny_network(), drop_probs)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got["losses"], want["losses"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["logits"], want["logits"], rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------------------ the search

# One (reduction) cell of one node, two mixed-op edges: tracing takes nearly all of a compiled search test's time,
# about 5 s per edge on a core
TINY_SEARCH = ["--init_channels", "4", "--layers", "1", "--steps", "1", "--multiplier", "1", "--batch_size", "4",
               "--seed", "1"]


def search_engine(unrolled: bool, backend: str | None, device: torch.device = torch.device("cpu"),
                  ) -> train_search.Engine:
    """A tiny DARTS supernet as train_search.py builds it, compiled with `backend` (None: eager)."""
    args = train_search.parse_args(["--method", "darts", *(["--unrolled"] if unrolled else []), *TINY_SEARCH])
    strategy, _ = train_search.make_strategy(args)
    torch.manual_seed(0)
    engine = train_search.build_engine(strategy, 10, "cifar", device, Precision(device, False))
    if backend is not None:
        torch._dynamo.reset()
        counters.clear()
        compile_module(engine.model, backend=backend)
    return engine


def search_iterations(engine: train_search.Engine, count: int = 3) -> dict:
    """`count` search iterations on random batches: per iteration the training and architecture losses,
    the architecture weights after it and the graphs compiled so far."""
    device = engine.model.arch_parameters()[0].device
    generator = torch.Generator().manual_seed(2)
    losses, arch_losses, alphas, graphs = [], [], [], []
    for _ in range(count):
        x, xs = (torch.randn(4, 3, 32, 32, generator=generator).to(device, memory_format=engine.memory_format)
                 for _ in range(2))
        y, ys = (torch.randint(0, 10, (4,), generator=generator).to(device) for _ in range(2))
        loss, _, stats = engine.step((x, y), lambda: (xs, ys), True)
        losses.append(loss.clone())                  # a CUDA graph's outputs are overwritten by its next replay
        arch_losses.append(stats["arch_loss"].clone())
        alphas.append(torch.cat([a.detach().flatten() for a in engine.model.arch_parameters()]))
        graphs.append(counters["stats"]["unique_graphs"])
    return {"losses": torch.stack(losses), "arch_losses": torch.stack(arch_losses), "alphas": torch.stack(alphas),
            "graphs": graphs}


def assert_same_search(got: dict, want: dict, rtol: float, atol: float) -> None:
    for key in ("losses", "arch_losses", "alphas"):
        torch.testing.assert_close(got[key], want[key], rtol=rtol, atol=atol, msg=key)


def _compiled_search_matches_eager(unrolled: bool, graphs: int) -> None:
    # AOTAutograd traces forward and backward as inductor does, then runs the traced graphs op by op
    # (inductor itself takes about ten minutes for this supernet on a CPU core: measured by hand, it gave
    # losses within 3e-7 and architecture weights within 3e-9 of eager; tests/test_cuda.py compares it)
    compiled = search_iterations(search_engine(unrolled, "aot_eager"))
    assert compiled["graphs"] == [graphs] * 3          # all compiled in the first iteration, none after
    assert_same_search(compiled, search_iterations(search_engine(unrolled, None)), rtol=1e-5, atol=1e-6)


def test_compiled_first_order_search_compiles_once_and_matches_eager(one_thread):
    # the architecture step (network weights frozen, core/architect.py) and the network step (architecture
    # weights frozen) trace one graph each
    _compiled_search_matches_eager(unrolled=False, graphs=2)


@pytest.mark.slow   # about 30 s on one loaded core
def test_compiled_second_order_search_compiles_three_graphs_once_and_matches_eager(one_thread):
    # the forward at the real weights with the architecture weights frozen (the virtual step's gradient and
    # the network step), and, through functional_call, those at the virtual (w') and the perturbed
    # (w +- r v) weights: three graphs, none of them compiled again in later iterations
    _compiled_search_matches_eager(unrolled=True, graphs=3)


def test_compile_without_a_cpp_compiler_is_one_sentence(tmp_path):
    done = run_script("cnn/train_search.py", "--compile", "--dataset", "digits", *TINY_SEARCH, "--epochs", "1",
                      env={"PATH": str(tmp_path), "DARTS_LOGS_DIR": str(tmp_path / "logs")})
    assert_one_sentence_error(done, "--compile needs a C++ compiler")
    assert not (tmp_path / "logs").exists()
