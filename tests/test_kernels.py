"""The CPU path never runs a kernel known to corrupt memory: the kernel probe over every module we
build, and the pointwise convolution that keeps strided 1x1 convolutions off oneDNN's defective kernel."""
import copy

import pytest
import torch
import torch.nn as nn

from genotypes import load_architecture
from model import NetworkCIFAR
from operations import FactorizedReduce, PointwiseConv2d, ReLUConvBN
from scripts import run_script


def _probe(*flags: str, timeout: float) -> None:
    done = run_script("tests/kernel_probe.py", *flags, timeout=timeout)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "0 failed" in done.stdout


def test_every_op_stem_and_head_passes_the_probe_in_the_format_auto_picks():
    # each case forward and backward in a process of its own, checked against float64 (tests/kernel_probe.py)
    _probe("--memory_format", "auto", timeout=900)


@pytest.mark.slow
def test_the_wide_sweep_passes_in_both_formats():
    # 4,317 cases per format, ~15 min each on 2 shared cores
    _probe("--wide", "--memory_format", "both", timeout=3 * 3600)


def _plain_conv(conv: PointwiseConv2d) -> nn.Conv2d:
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=False)
    plain.weight = nn.Parameter(conv.weight.detach().clone())
    return plain


def _plain(module: nn.Module) -> nn.Module:
    """A copy whose PointwiseConv2d are plain strided nn.Conv2d, as in the DARTS code."""
    if isinstance(module, PointwiseConv2d):
        return _plain_conv(module)
    plain = copy.deepcopy(module)
    for parent in list(plain.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PointwiseConv2d):
                setattr(parent, name, _plain_conv(child))
    return plain


@pytest.mark.parametrize("build", [lambda: PointwiseConv2d(6, 4, stride=2), lambda: FactorizedReduce(6, 8),
                                   lambda: ReLUConvBN(6, 4, 1, 2, 0)], ids=["conv", "factorized_reduce", "relu_conv_bn"])
@pytest.mark.parametrize("size", [8, 9])
def test_subsampling_then_a_stride_1_conv_is_the_strided_conv(build, size):
    torch.manual_seed(0)
    ours = build()
    plain = _plain(ours)
    assert any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) and type(m) is nn.Conv2d for m in plain.modules())
    x = torch.randn(3, 6, size, size)
    grad = torch.randn_like(ours(x))
    results = []
    for module in (ours, plain):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        out.backward(grad)
        results.append([out, xi.grad, *(p.grad for p in module.parameters())])
        module.zero_grad()
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_a_darts_state_dict_loads_strictly_and_gives_the_same_logits():
    torch.manual_seed(0)
    ours = NetworkCIFAR(8, 10, 5, True, load_architecture("DARTS_V2")).eval()
    darts = _plain(ours)
    n_strided = sum(type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (2, 2) for m in darts.modules())
    assert n_strided == 4       # FactorizedReduce in the two cells after a reduction, two convolutions each
    fresh = NetworkCIFAR(8, 10, 5, True, load_architecture("DARTS_V2")).eval()
    fresh.load_state_dict(darts.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh(x)[0], darts(x)[0])
