"""Checks that need a CUDA device; skipped without one. bench/gpu_check.sh runs them (pytest -m cuda)."""
import argparse

import pytest
import torch
import torch.nn as nn

from data import DeviceLoader, build_datasets
from model import ModelSpec
from runtime import Precision, compile_module
from sampling import ShardedOrder
import train_search
from test_compile import TINY_SEARCH, assert_same_search, search_engine, search_iterations
from training import make_optimizer, memory_format, train_step

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is absent")]

SGD = argparse.Namespace(learning_rate=0.025, momentum=0.9, weight_decay=3e-4)


def _network(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec.resolve("DARTS_V2", "cifar", 10, init_channels=16, layers=8, auxiliary=True)
    return spec.build().to(device, memory_format=memory_format("auto", device)).train()


def _batch(device: torch.device, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=generator).to(device, memory_format=memory_format("auto", device))
    return x, torch.randint(0, 10, (n,), generator=generator).to(device)


def _steps(net: nn.Module, precision: Precision, count: int = 3) -> torch.Tensor:
    x, y = _batch(precision.device)
    optimizer = make_optimizer(net.parameters(), SGD)
    return torch.stack([train_step(net, x, y, optimizer, nn.CrossEntropyLoss(), precision, auxiliary_weight=0.4,
                                   grad_clip=5.0)[0].float() for _ in range(count)])


def _precision(dtype: torch.dtype | None) -> Precision:
    precision = Precision(torch.device("cuda"), dtype is not None)
    if dtype is not None:       # the default is bf16 where supported; fp16 is asked for here
        precision.dtype = dtype
        precision.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return precision


@pytest.mark.parametrize("dtype,rtol", [(torch.bfloat16, 3e-2), (torch.float16, 1e-2)])
def test_amp_training_steps_agree_with_fp32(dtype, rtol):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    device = torch.device("cuda")
    want = _steps(_network(device), _precision(None))
    got = _steps(_network(device), _precision(dtype))
    torch.testing.assert_close(got, want, rtol=rtol, atol=1e-3)


def test_amp_defaults_to_bf16_where_supported():
    assert Precision(torch.device("cuda"), True).dtype == (
        torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def test_compiled_training_steps_agree_with_eager():
    device = torch.device("cuda")
    torch.backends.cudnn.deterministic = True
    want = _steps(_network(device), _precision(None))
    got = _steps(compile_module(_network(device)), _precision(None))
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


def test_compiled_search_iterations_agree_with_eager():
    # first order, the tiny supernet of tests/test_compile.py: compiled in the first iteration, then no more.
    # How many graphs depends on the torch of the GPU machine (two on the CPU's pinned torch, one seen with
    # torch 2.11): the count is pinned by tests/test_compile.py, not here
    device = torch.device("cuda")
    torch.backends.cudnn.deterministic = True
    got = search_iterations(search_engine(False, "inductor", device))
    assert got["graphs"][0] >= 1 and got["graphs"] == got["graphs"][:1] * 3
    assert_same_search(got, search_iterations(search_engine(False, None, device)), rtol=1e-3, atol=1e-4)


def test_a_cuda_search_lets_cudnn_pick_its_fastest_convolutions():  # runtime.tune_runtime
    torch.backends.cudnn.benchmark = False
    search_engine(False, None, torch.device("cuda"))
    assert torch.backends.cudnn.benchmark


def test_device_loader_on_cuda_gives_the_cpu_batches(tmp_path):
    from tiny_datasets import make_cifar10
    make_cifar10(tmp_path, n_train=20, n_test=10)
    train, _ = build_datasets("cifar10", tmp_path, download=False, cutout_length=16)
    order = ShardedOrder(len(train), seed=0, batch_size=8)
    on_gpu = list(DeviceLoader(train, 8, torch.device("cuda"), sampler=order))
    on_cpu = list(DeviceLoader(train, 8, torch.device("cpu"), sampler=order))
    for (x, y), (x_cpu, y_cpu) in zip(on_gpu, on_cpu, strict=True):
        assert torch.equal(y.cpu(), y_cpu)
        torch.testing.assert_close(x.cpu(), x_cpu, rtol=0, atol=1e-6)


def _graphed_search(unrolled: bool, graphs: bool) -> list[dict]:
    """The tiny DARTS search of tests/test_compile.py, eager or with --cuda_graphs: six iterations (three eager
    warm-ups, the capture, two replays), one of a smaller batch (eager), an epoch boundary with a new learning
    rate (captured again), then three more."""
    device = torch.device("cuda")
    args = train_search.parse_args(["--method", "darts", *(["--unrolled"] if unrolled else []), *TINY_SEARCH,
                                    *(["--cuda_graphs"] if graphs else [])])
    strategy, _ = train_search.make_strategy(args)
    torch.manual_seed(0)
    engine = train_search.build_engine(strategy, 10, "cifar", device, Precision(device, False), cuda_graphs=graphs)
    assert (engine.graphs is not None) == graphs
    parts = [search_iterations(engine, 6)]
    generator = torch.Generator().manual_seed(3)
    x, xs = (torch.randn(2, 3, 32, 32, generator=generator).to(device, memory_format=engine.memory_format)
             for _ in range(2))
    y, ys = (torch.randint(0, 10, (2,), generator=generator).to(device) for _ in range(2))
    loss, _, stats = engine.step((x, y), lambda: (xs, ys), True)
    parts.append({"losses": loss.clone()[None], "arch_losses": stats["arch_loss"].clone()[None],
                  "alphas": torch.cat([a.detach().flatten() for a in engine.model.arch_parameters()])[None]})
    for group in engine.optimizer.param_groups:
        group["lr"] *= 0.5
    if graphs:
        engine.graphs.reset()
    parts.append(search_iterations(engine, 3))
    return parts


@pytest.mark.parametrize("unrolled", [False, True])
def test_cuda_graph_search_iterations_agree_with_eager(unrolled):
    torch.backends.cudnn.deterministic = True
    for got, want in zip(_graphed_search(unrolled, True), _graphed_search(unrolled, False), strict=True):
        assert_same_search(got, want, rtol=1e-4, atol=1e-5)
