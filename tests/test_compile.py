"""train.py --compile: what compiles, and that the compiled network trains as the eager one does."""
import argparse
import copy

import pytest
import torch
import torch.nn as nn
from torch._dynamo.utils import counters

from model import ModelSpec
from runtime import Precision, compile_module
from training import make_optimizer, train_step

SGD = argparse.Namespace(learning_rate=0.025, momentum=0.9, weight_decay=3e-4)


def _tiny_network() -> nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec.resolve("DARTS_V2", "cifar", 10, init_channels=4, layers=3, auxiliary=True)
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
