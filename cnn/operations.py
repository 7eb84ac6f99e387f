"""Primitive operations of the DARTS family, grouped by op family.

DARTS and D-DARTS share one family (`darts`); sharpDARTS reuses several DARTS names for
different modules (its `sep_conv_*`/`dil_conv_*` are SharpSepConv blocks, its average pool
counts padding), so it is a family of its own (`sharp`) whose missing names fall back to
`darts`. The family is part of a model's specification: the same genotype text builds
different networks in different families, and nothing switches families silently.

Module layouts (attribute names, Sequential indices) follow the original code bases so
their checkpoints load without conversion. Where the original code is wrong we differ:
`FactorizedReduce` pads odd inputs (DARTS fails on them), `bottleneck_1x5x1` pads by 2 and
`dil_flood_conv_5x5` by 4 so that they keep the spatial size (D-DARTS and sharpDARTS pad
too little). Parameter counts are unchanged by these fixes. Strided 1x1 convolutions
(`FactorizedReduce`, `simple_conv_1x1` on reduction edges) subsample, then convolve with stride 1:
the same parameters and numbers, without the oneDNN kernel that corrupts memory on channels_last
CPU tensors (`PointwiseConv2d`).

To add a primitive, add one factory to `OPS[family]`; search and training pick it up by name.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError

OpFactory = Callable[[int, int, bool, int], nn.Module]
"""Builds an op from (channels, stride, affine, mid_channels); mid_channels is used by choke ops."""

OPS: dict[str, dict[str, OpFactory]] = {"darts": {}, "sharp": {}}
FAMILY_FALLBACK = {"sharp": "darts"}
DEFAULT_MID_CHANNELS = 32


class OpError(UserError, KeyError):
    """An op name that the chosen family does not define."""

    def __str__(self) -> str:
        return str(self.args[0])


def family_op_names(family: str) -> list[str]:
    """Every op name usable in `family`, fallbacks included."""
    names = set(OPS[family])
    if family in FAMILY_FALLBACK:
        names |= set(family_op_names(FAMILY_FALLBACK[family]))
    return sorted(names)


def build_op(name: str, C: int, stride: int, affine: bool = True, family: str = "darts",
             mid_channels: int = DEFAULT_MID_CHANNELS) -> nn.Module:
    """Instantiate primitive `name` of `family` on C channels."""
    if family not in OPS:
        raise OpError(f"unknown op family '{family}': choose one of {', '.join(OPS)}")
    current: str | None = family
    while current is not None:
        if name in OPS[current]:
            return OPS[current][name](C, stride, affine, mid_channels)
        current = FAMILY_FALLBACK.get(current)
    others = [f for f in OPS if f != family and name in family_op_names(f)]
    hint = f" (it exists in the '{others[0]}' family: pass --ops {others[0]})" if others else ""
    raise OpError(f"op '{name}' is not defined in the '{family}' op family{hint}; "
                  f"known ops: {', '.join(family_op_names(family))}")


# ---------------------------------------------------------------------------- building blocks

class Zero(nn.Module):
    """The `none` op: zeros of the output shape (strided for reduction edges)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class PointwiseConv2d(nn.Conv2d):
    """A bias-free 1x1 convolution that takes its stride by subsampling its input first.

    The same parameters (names and shapes) and the same math as ``nn.Conv2d(C_in, C_out, 1,
    stride)``, but it never runs a strided 1x1 kernel: oneDNN's weight gradient of that kernel
    corrupts the heap on channels_last CPU tensors (README, "A CPU kernel that corrupts memory").
    """

    def __init__(self, C_in: int, C_out: int, stride: int = 1):
        super().__init__(C_in, C_out, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
        return pointwise_conv(x, self.weight)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
    """A bias-free stride-1 1x1 convolution as one matrix product in x's memory layout, or in add_to's,
    added to it in place by the product itself when `add_to` is given (a backward summing the input
    gradients of several readers).

    Why: on a CPU, oneDNN's 1x1 kernels are up to 2x slower than the product at the widths of a search
    (C=16-64), forward and backward; a DARTS training step runs ~4% faster with it. Autograd
    differentiates it like any product, twice too (the exact hypergradient). The weight goes to MKL as a
    dense (C, C_out) matrix: with the transposed view its product runs 12-40% slower at these shapes.
    """
    (N, C, H, W), C_out = x.shape, weight.shape[0]
    w = weight.reshape(C_out, C)
    if (x if add_to is None else add_to).stride(1) == 1:
        # channels innermost (channels_last): the pixels are rows of an (N*H*W, C) matrix
        rows = x.permute(0, 2, 3, 1).reshape(N * H * W, C)
        if add_to is None:
            return (rows @ w.t().contiguous()).view(N, H, W, C_out).permute(0, 3, 1, 2)
        add_to.permute(0, 2, 3, 1).view(N * H * W, C_out).addmm_(rows, w.t().contiguous())
        return add_to
    if add_to is None:
        return torch.bmm(w.expand(N, C_out, C), x.reshape(N, C, H * W)).view(N, C_out, H, W)
    add_to.view(N, C_out, H * W).baddbmm_(w.expand(N, C_out, C), x.reshape(N, C, H * W))
    return add_to


def pointwise_weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight gradient of ``pointwise_conv(x, weight)`` for the output gradient `grad`."""
    (N, C, H, W), C_out = x.shape, grad.shape[1]
    if x.stride(1) == 1:
        rows = grad.permute(0, 2, 3, 1).reshape(N * H * W, C_out)
        g = rows.t() @ x.permute(0, 2, 3, 1).reshape(N * H * W, C)
    else:
        g = torch.bmm(grad.reshape(N, C_out, H * W), x.reshape(N, C, H * W).transpose(1, 2)).sum(0)
    return g.view(C_out, C, 1, 1)


class DepthwiseConv2d(nn.Conv2d):
    """A bias-free depthwise convolution (groups = channels) with faster dilated cases.

    The same parameters and math as ``nn.Conv2d(C, C, k, stride, padding, dilation, groups=C)``; only
    the kernels differ (``depthwise_conv``), because oneDNN's CPU backward of a dilated depthwise
    convolution is 5-100x slower than that of an undilated one of the same size.
    """

    def __init__(self, C: int, kernel_size: int, stride: int, padding: int, dilation: int = 1):
        super().__init__(C, C, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.weight, self.stride[0], self.padding[0], self.dilation[0])


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """A depthwise convolution; dilated ones with a square odd kernel and 'same' padding
    ``dilation * (k - 1) / 2`` avoid oneDNN's slow dilated backward.

    A dilation-d kernel reads only input pixels of one phase (row and column index modulo d), so with
    stride d it is the undilated kernel on the input subsampled by d; with stride 1 its backward runs on
    the phases (``depthwise_conv_backward``).
    """
    C, k = weight.shape[0], weight.shape[-1]
    if _phased(weight, padding, dilation) and stride == dilation:
        return F.conv2d(x[:, :, ::dilation, ::dilation], weight, padding=(k - 1) // 2, groups=C)
    if _phased(weight, padding, dilation) and stride == 1 and torch.is_grad_enabled() and _onednn_workarounds_apply(x):
        return _DilatedDepthwise.apply(x, weight, padding, dilation)
    return F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=C)


def _onednn_workarounds_apply(x: torch.Tensor) -> bool:
    """Whether the faster depthwise backwards (phases, columns) apply: on a CPU (cuDNN's kernels are not
    slow there) and outside autocast (their convolutions would meet the bf16 gradient with the fp32 weight)."""
    return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")


def _phased(weight: torch.Tensor, padding: int, dilation: int) -> bool:
    k = weight.shape[-1]
    return dilation > 1 and k % 2 == 1 and weight.shape[-2] == k and padding == dilation * (k - 1) // 2


def depthwise_conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                            dilation: int, need: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(input gradient, weight gradient) of ``depthwise_conv``, each only if `need` says so.

    Stride-1 dilated: the input gradient is the same convolution of `grad` with the kernel flipped, and
    the weight gradient that of the undilated kernel over the d * d phases stacked along the batch (for
    sides divisible by d). Both are 3-10x faster than oneDNN's dilated backward on a CPU. The weight
    gradient of an undilated kernel (or of a dilated one on its phases) wider than 3 columns runs 3 columns
    at a time where that pays (``_weight_grad_by_columns``).
    """
    C, k = weight.shape[0], weight.shape[-1]
    if _phased(weight, padding, dilation) and stride == dilation:
        g_sub, g_w = _undilated_backward(grad, x[:, :, ::dilation, ::dilation], weight, 1, (k - 1) // 2, need)
        g_x = None
        if need[0]:
            g_x = torch.zeros_like(x)
            g_x[:, :, ::dilation, ::dilation] = g_sub
        return g_x, g_w
    if dilation == 1:
        return _undilated_backward(grad, x, weight, stride, padding, need)
    if not (_phased(weight, padding, dilation) and stride == 1):
        g_x, g_w, _ = torch.ops.aten.convolution_backward(grad, x, weight, None, [stride] * 2, [padding] * 2,
                                                          [dilation] * 2, False, [0, 0], C, [*need, False])
        return g_x, g_w
    g_x = F.conv2d(grad, weight.flip(-2, -1), padding=padding, dilation=dilation, groups=C) if need[0] else None
    g_w = None
    if need[1] and x.shape[-2] % dilation == 0 and x.shape[-1] % dilation == 0:
        g_w = _undilated_backward(_to_phases(grad, dilation), _to_phases(x, dilation), weight, 1, (k - 1) // 2,
                                  (False, True))[1]
    elif need[1]:
        g_w = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [padding] * 2, [dilation] * 2,
                                                  False, [0, 0], C, [False, True, False])[1]
    return g_x, g_w


def _undilated_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                        need: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(input gradient, weight gradient) of an undilated depthwise convolution, each only if `need` says
    so; a wide kernel's weight gradient by columns where that pays (``_weight_grad_by_columns``)."""
    by_columns = need[1] and _columns_pay(grad, weight)
    native = [need[0], need[1] and not by_columns, False]
    g_x = g_w = None
    if any(native):
        g_x, g_w, _ = torch.ops.aten.convolution_backward(grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1],
                                                          False, [0, 0], weight.shape[0], native)
    if by_columns:
        g_w = _weight_grad_by_columns(grad, x, weight, stride, padding)
    return g_x, g_w


_COLUMNS = 3      # the widest depthwise kernel whose weight gradient oneDNN runs fast on a CPU


def _columns_pay(grad: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``_weight_grad_by_columns`` pays: a kernel wider than 3 columns, on a CPU outside autocast,
    in channels_last, and an output at least 8 pixels wide (at 4 it measured slower than the whole kernel)."""
    return weight.shape[-1] > _COLUMNS and grad.shape[-1] >= 8 and memory_layout(grad) == torch.channels_last \
        and _onednn_workarounds_apply(grad)


def _weight_grad_by_columns(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int,
                            padding: int) -> torch.Tensor:
    """The weight gradient of an undilated depthwise convolution, 3 kernel columns at a time.

    Why: oneDNN's fast CPU kernel for a depthwise weight gradient takes kernels up to 3 columns wide (at
    16x16x32x32 in channels_last: 5x3 0.37 ms, 3x5 1.9 ms, 5x5 2.8 ms); pieces of 3 columns on the input
    padded sideways (the last piece overlapping the one before) take 1.2-2.4x less time for a 5x5 kernel
    (within 5% on one stride-2 shape), with the allocator keeping freed memory (runtime.keep_freed_memory).
    """
    C, k = weight.shape[0], weight.shape[-1]
    span = stride * (grad.shape[-1] - 1) + _COLUMNS
    g_w = torch.empty_like(weight)
    for j in sorted({*range(0, k - _COLUMNS, _COLUMNS), k - _COLUMNS}):
        # the input columns j - padding ... j - padding + span - 1 that columns j ... j + 2 read, zeros outside
        piece = F.pad(x, (padding - j, j - padding + span - x.shape[-1]))
        g_w[..., j:j + _COLUMNS] = torch.ops.aten.convolution_backward(
            grad, piece, weight[..., j:j + _COLUMNS], None, [stride] * 2, [padding, 0], [1, 1], False, [0, 0], C,
            [False, True, False])[1]
    return g_w


class _DilatedDepthwise(torch.autograd.Function):
    """Stride-1 dilated depthwise convolution with 'same' padding and the faster backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (1, padding, dilation)
        return F.conv2d(x, weight, padding=padding, dilation=dilation, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        return *depthwise_conv_backward(grad, x, weight, *ctx.conv, tuple(ctx.needs_input_grad[:2])), None, None


def _to_phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """(N, C, H, W) -> (d*d*N, C, H/d, W/d): pixel (i, j) of phase (a, b) is x[..., d*i + a, d*j + b];
    in x's memory layout (channels_last stays channels_last)."""
    N, C, H, W = x.shape
    if memory_layout(x) == torch.channels_last:
        t = x.permute(0, 2, 3, 1).reshape(N, H // d, d, W // d, d, C).permute(2, 4, 0, 1, 3, 5)
        return t.reshape(d * d * N, H // d, W // d, C).permute(0, 3, 1, 2)
    t = x.reshape(N, C, H // d, d, W // d, d).permute(3, 5, 0, 1, 2, 4)
    return t.reshape(d * d * N, C, H // d, W // d)


def concat_channels(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along the channels, whose backward hands each part a gradient in that part's own memory
    layout. torch.cat's gradients are strided views of the output's gradient, and the CPU BatchNorm
    backward of a channels_last input with such a gradient is ~80x slower than with a dense one."""
    if not torch.is_grad_enabled():
        return torch.cat(parts, dim=1)
    return _ConcatChannels.apply(*parts)


def memory_layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format x is dense in: channels_last, else contiguous."""
    return torch.channels_last if x.dim() == 4 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class _ConcatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *parts: torch.Tensor) -> torch.Tensor:
        ctx.widths = [x.shape[1] for x in parts]
        ctx.layouts = [memory_layout(x) for x in parts]
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(g.contiguous(memory_format=layout)
                     for g, layout in zip(grad.split(ctx.widths, dim=1), ctx.layouts))


def takes_relu(op: nn.Module) -> bool:
    """Whether `op` starts with a ReLU and offers `after_relu`: a cell then applies one ReLU per state."""
    return callable(getattr(op, "after_relu", None))


class ReLUFirst(nn.Sequential):
    """A sequential whose first layer is a ReLU. `after_relu` runs the other layers on an input that is
    already ReLU'd, so a cell applies one ReLU to a state that several ops read; the layout, and so the
    state_dict keys, are those of the plain nn.Sequential of the original code."""

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        for i in range(1, len(self)):
            r = self[i](r)
        return r


class ReLUOp(nn.Module):
    """An op made of one ReLUFirst sequential, `op` (the attribute name of the original code)."""
    op: ReLUFirst

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        return self.op.after_relu(r)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset 1x1 convolutions; odd sizes are padded first."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise OpError(f"a reduction needs an even number of channels, got {C_out}: use an even --init_channels")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = PointwiseConv2d(C_in, C_out // 2, stride=2)
        self.conv_2 = PointwiseConv2d(C_in, C_out // 2, stride=2)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(self.relu(x))

    def after_relu(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pre_norm(x))

    def pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The two convolutions of a ReLU'd input, before the BatchNorm."""
        return _FactorizedHalves.apply(x, self.conv_1.weight, self.conv_2.weight)


def factorized_halves(x: torch.Tensor, weight_1: torch.Tensor, weight_2: torch.Tensor) -> torch.Tensor:
    """FactorizedReduce's convolutions with these weights: 1x1 on the even pixels and on the odd ones
    (odd sides padded first), concatenated along the channels."""
    shifted = _padded_to_even(x)
    return torch.cat([pointwise_conv(x[:, :, ::2, ::2], weight_1), pointwise_conv(shifted[:, :, 1::2, 1::2], weight_2)],
                     dim=1)


def _padded_to_even(x: torch.Tensor) -> torch.Tensor:
    """x with a zero row and column appended where its side is odd, so both pixel phases have ceil(side / 2)."""
    H, W = x.shape[-2:]
    return F.pad(x, (0, W % 2, 0, H % 2)) if H % 2 or W % 2 else x


def factorized_halves_backward(grad: torch.Tensor, x: torch.Tensor, weight_1: torch.Tensor, weight_2: torch.Tensor,
                               need: tuple[bool, bool, bool]) -> list[torch.Tensor | None]:
    """The gradients of ``factorized_halves`` for x, weight_1 and weight_2, each only if `need` says so."""
    half, (H, W) = weight_1.shape[0], x.shape[-2:]
    shifted = _padded_to_even(x)
    g_1, g_2 = grad[:, :half], grad[:, half:]
    g_x = None
    if need[0]:
        g_x = torch.zeros_like(shifted)
        g_x[:, :, ::2, ::2] = pointwise_conv(g_1, weight_1.transpose(0, 1))
        g_x[:, :, 1::2, 1::2] = pointwise_conv(g_2, weight_2.transpose(0, 1))
        g_x = g_x[:, :, :H, :W]
    return [g_x, pointwise_weight_grad(g_1, x[:, :, ::2, ::2]) if need[1] else None,
            pointwise_weight_grad(g_2, shifted[:, :, 1::2, 1::2]) if need[2] else None]


class _FactorizedHalves(torch.autograd.Function):
    """``factorized_halves`` with ``factorized_halves_backward`` as its backward.

    Why: autograd's backward of the strided slices ``x[:, :, ::2, ::2]`` makes its zero gradients in the
    contiguous layout, so a channels-last network got a contiguous input gradient here and added it to
    channels-last ones (a DARTS_V2 training step on an AMD EPYC got 2-5% faster without them, A/B at 1
    and 2 threads). The backward is made of differentiable operations, so a second derivative
    (create_graph) still flows through it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight_1: torch.Tensor, weight_2: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight_1, weight_2)
        return factorized_halves(x, weight_1, weight_2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        x, weight_1, weight_2 = ctx.saved_tensors
        return tuple(factorized_halves_backward(grad, x, weight_1, weight_2, ctx.needs_input_grad))


class ReLUConvBN(ReLUOp):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__()
        pointwise = kernel_size == 1 and padding == 0
        self.op = ReLUFirst(
            nn.ReLU(inplace=False),
            PointwiseConv2d(C_in, C_out, stride) if pointwise else
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(ReLUOp):
    """DARTS dilated separable conv: one depthwise dilated conv, one pointwise conv."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True):
        super().__init__()
        self.op = ReLUFirst(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C_in, kernel_size, stride, padding, dilation),
            PointwiseConv2d(C_in, C_out),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(ReLUOp):
    """Separable conv: two depthwise-pointwise blocks; the first may stride, dilate and change the width.

    With C_mid = C_in and no dilation it is the DARTS SepConv; sharpDARTS's SharpSepConv sets
    C_mid (flood: 4x wider, choke: narrower) and dilates the first block for its dil_conv ops.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int = 1, affine: bool = True, C_mid: int | None = None):
        super().__init__()
        C_mid = C_in if C_mid is None else C_mid
        self.op = ReLUFirst(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C_in, kernel_size, stride, padding, dilation),
            PointwiseConv2d(C_in, C_mid),
            nn.BatchNorm2d(C_mid, affine=affine),
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C_mid, kernel_size, 1, (kernel_size - 1) // 2),
            PointwiseConv2d(C_mid, C_out),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class RectConv(ReLUOp):
    """Factorised k1 x k2 then k2 x k1 convolution (D-DARTS `conv_3x1_1x3`)."""

    def __init__(self, C: int, k1: int, k2: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = ReLUFirst(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (k1, k2), stride=(1, stride), padding=(0, padding), bias=False),
            nn.Conv2d(C, C, (k2, k1), stride=(stride, 1), padding=(padding, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class ResConv(ReLUOp):
    """D-DARTS bottleneck: 1x1, kxk, 1x1 expanding to C_wide, then a 1x1 back to C."""

    def __init__(self, C: int, C_wide: int, stride: int, kernel_size: int, affine: bool = True):
        super().__init__()
        self.op = ReLUFirst(
            nn.ReLU(inplace=False),
            PointwiseConv2d(C, C),
            nn.BatchNorm2d(C, affine=affine),
            nn.Conv2d(C, C, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(C, affine=affine),
            PointwiseConv2d(C, C_wide),
            nn.BatchNorm2d(C_wide, affine=affine),
            nn.ReLU(inplace=False),
            PointwiseConv2d(C_wide, C),
            nn.BatchNorm2d(C, affine=affine),
        )


def conv_7x1_1x7(C: int, stride: int, affine: bool, bn_eps: float = 1e-5) -> ReLUFirst:
    """A factorised 7x7 conv; a bare sequential, as in DARTS (its state_dict keys depend on it)."""
    return ReLUFirst(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C, eps=bn_eps, affine=affine),
    )


def skip_connect(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


# ---------------------------------------------------------------------------- darts family
# DARTS primitives, then the D-DARTS (DARTOpti) additions.

_darts = OPS["darts"]
_darts["none"] = lambda C, stride, affine, mid: Zero(stride)
_darts["avg_pool_3x3"] = lambda C, stride, affine, mid: nn.AvgPool2d(
    3, stride=stride, padding=1, count_include_pad=False)
_darts["max_pool_3x3"] = lambda C, stride, affine, mid: nn.MaxPool2d(3, stride=stride, padding=1)
_darts["skip_connect"] = lambda C, stride, affine, mid: skip_connect(C, stride, affine)
_darts["sep_conv_3x3"] = lambda C, stride, affine, mid: SepConv(C, C, 3, stride, 1, affine=affine)
_darts["sep_conv_5x5"] = lambda C, stride, affine, mid: SepConv(C, C, 5, stride, 2, affine=affine)
_darts["sep_conv_7x7"] = lambda C, stride, affine, mid: SepConv(C, C, 7, stride, 3, affine=affine)
_darts["dil_conv_3x3"] = lambda C, stride, affine, mid: DilConv(C, C, 3, stride, 2, 2, affine)
_darts["dil_conv_5x5"] = lambda C, stride, affine, mid: DilConv(C, C, 5, stride, 4, 2, affine)
_darts["conv_7x1_1x7"] = lambda C, stride, affine, mid: conv_7x1_1x7(C, stride, affine)
_darts["conv_3x1_1x3"] = lambda C, stride, affine, mid: RectConv(C, 1, 3, stride, 1, affine)
_darts["simple_conv_1x1"] = lambda C, stride, affine, mid: ReLUConvBN(C, C, 1, stride, 0, affine)
_darts["simple_conv_3x3"] = lambda C, stride, affine, mid: ReLUConvBN(C, C, 3, stride, 1, affine)
_darts["simple_conv_5x5"] = lambda C, stride, affine, mid: ReLUConvBN(C, C, 5, stride, 2, affine)
_darts["bottleneck_1x3x1"] = lambda C, stride, affine, mid: ResConv(C, 4 * C, stride, 3, affine)
_darts["bottleneck_1x5x1"] = lambda C, stride, affine, mid: ResConv(C, 4 * C, stride, 5, affine)

# ---------------------------------------------------------------------------- sharp family
# sharpDARTS: every separable conv (dilated ones too) is a two-block SepConv; flood ops widen the middle 4x, choke ops
# narrow it to mid_channels; its average pool counts the zero padding.

_sharp = OPS["sharp"]
_sharp["avg_pool_3x3"] = lambda C, stride, affine, mid: nn.AvgPool2d(
    3, stride=stride, padding=1, count_include_pad=True)
_sharp["sep_conv_3x3"] = lambda C, stride, affine, mid: SepConv(C, C, 3, stride, 1, 1, affine)
_sharp["sep_conv_5x5"] = lambda C, stride, affine, mid: SepConv(C, C, 5, stride, 2, 1, affine)
_sharp["sep_conv_7x7"] = lambda C, stride, affine, mid: SepConv(C, C, 7, stride, 3, 1, affine)
_sharp["dil_conv_3x3"] = lambda C, stride, affine, mid: SepConv(C, C, 3, stride, 2, 2, affine)
_sharp["dil_conv_5x5"] = lambda C, stride, affine, mid: SepConv(C, C, 5, stride, 4, 2, affine)
_sharp["flood_conv_3x3"] = lambda C, stride, affine, mid: SepConv(
    C, C, 3, stride, 1, 1, affine, C_mid=4 * C)
_sharp["flood_conv_5x5"] = lambda C, stride, affine, mid: SepConv(
    C, C, 5, stride, 2, 1, affine, C_mid=4 * C)
_sharp["dil_flood_conv_3x3"] = lambda C, stride, affine, mid: SepConv(
    C, C, 3, stride, 2, 2, affine, C_mid=4 * C)
_sharp["dil_flood_conv_5x5"] = lambda C, stride, affine, mid: SepConv(
    C, C, 5, stride, 4, 2, affine, C_mid=4 * C)
_sharp["choke_conv_3x3"] = lambda C, stride, affine, mid: SepConv(
    C, C, 3, stride, 1, 1, affine, C_mid=mid)
_sharp["dil_choke_conv_3x3"] = lambda C, stride, affine, mid: SepConv(
    C, C, 3, stride, 2, 2, affine, C_mid=mid)
_sharp["conv_7x1_1x7"] = lambda C, stride, affine, mid: conv_7x1_1x7(C, stride, affine, bn_eps=1e-3)
