"""The search's mixed op as one memory-lean autograd function per edge.

Why: a DARTS supernet keeps every intermediate of every op of every edge for backward, about 25
tensors of its input's size per edge, and that bounds the batch a search can use. ``LeanEdge`` runs
the ops it knows in one function that keeps only what BatchNorm needs anyway, the output of each
pointwise convolution (and each FactorizedReduce), and recomputes in backward what the gradients
asked for need: nothing but ReLU masks for the architecture step (network weights frozen, see
core/architect.py), the depthwise convolutions, ReLUs and normalizations for the weight step. Pools
are recomputed. The math is that of the plain modules (their own weights, strides, paddings, BatchNorm
statistics updated once per forward); tests/test_lean_ops.py compares both.

Ops it knows: a chain of *stages* (depthwise conv, 1x1 conv, non-affine BatchNorm; a ReLU between
stages) after a ReLU, i.e. DARTS's and sharpDARTS's separable and dilated convolutions; a parameter-free
module followed by a non-affine BatchNorm (the search's pools); ``FactorizedReduce``. Other ops run as
they are, outside the function.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from operations import (DepthwiseConv2d, FactorizedReduce, ReLUFirst, depthwise_conv, depthwise_conv_backward,
                        factorized_halves)

aten = torch.ops.aten


@dataclass(frozen=True)
class ConvChain:
    """ReLU, then stages (depthwise, pointwise) each followed by a BatchNorm, with ReLUs between them."""
    depthwise: tuple[DepthwiseConv2d, ...]
    pointwise: tuple[nn.Conv2d, ...]
    norms: tuple[nn.BatchNorm2d, ...]


@dataclass(frozen=True)
class NormedHead:
    """A parameter-free module (a pool) followed by a non-affine BatchNorm."""
    head: nn.Module
    norm: nn.BatchNorm2d


@dataclass(frozen=True)
class Reduce:
    """``FactorizedReduce`` (the skip connection of a reduction edge)."""
    op: FactorizedReduce


_ENABLED = [True]


@contextmanager
def plain() -> Iterator[None]:
    """Run every mixed op as its plain modules: for code that differentiates a search network twice
    (``create_graph``), which ``LeanEdge``'s backward does not support."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


def enabled() -> bool:
    return _ENABLED[-1]


def _plain_norm(m: nn.Module) -> bool:
    """A non-affine BatchNorm of this very class (not a synchronized subclass, whose statistics are global)."""
    return type(m) is nn.BatchNorm2d and not m.affine


def plan(op: nn.Module) -> ConvChain | NormedHead | Reduce | None:
    """How `op` runs in ``LeanEdge``, or None if it runs as it is. Classes are matched exactly: a
    subclass may compute something else."""
    layers = list(op.op) if type(getattr(op, "op", None)) is ReLUFirst else None
    if layers is not None and type(layers[0]) is nn.ReLU and len(layers) % 4 == 0:
        blocks = [layers[i:i + 4] for i in range(1, len(layers), 4)]
        blocks[-1] = blocks[-1] + [nn.ReLU()]
        if all(type(dw) is DepthwiseConv2d and type(pw) is nn.Conv2d and pw.kernel_size == (1, 1)
               and pw.stride == (1, 1) and pw.groups == 1 and pw.bias is None and _plain_norm(bn)
               and type(relu) is nn.ReLU for dw, pw, bn, relu in blocks):
            return ConvChain(*(tuple(b[i] for b in blocks) for i in range(3)))
    if type(op) is nn.Sequential and len(op) == 2 and _plain_norm(op[1]) \
            and not any(True for _ in op[0].parameters()):
        return NormedHead(op[0], op[1])
    if type(op) is FactorizedReduce and type(op.relu) is nn.ReLU and _plain_norm(op.bn):
        return Reduce(op)
    return None


def _params(step) -> list[torch.Tensor]:
    """The tensors of one planned op that take gradients (read at call time: functional_call's)."""
    if isinstance(step, ConvChain):
        return [t for dw, pw in zip(step.depthwise, step.pointwise) for t in (dw.weight, pw.weight)]
    if isinstance(step, Reduce):
        return [step.op.conv_1.weight, step.op.conv_2.weight]
    return []


def lean_edge(x: torch.Tensor, w: torch.Tensor, steps: list[tuple[int, object]]) -> torch.Tensor:
    """``sum_k w[k] * op_k(x)`` over the planned ops ``(k, plan)`` of one edge."""
    params = [t for _, step in steps for t in _params(step)]
    return LeanEdge.apply(x, w, steps, *params)


# ---------------------------------------------------------------------------- BatchNorm pieces

def _norm_args(bn: nn.BatchNorm2d) -> tuple:
    """(running mean, running var, momentum, eps) of one training-mode forward of `bn`, counting the
    batch as nn.BatchNorm2d does (its momentum None means a cumulative average)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    return bn.running_mean, bn.running_var, momentum, bn.eps


def _normalize(z: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-affine training-mode BatchNorm: (output, batch mean, inverse std); updates the running stats."""
    running_mean, running_var, momentum, eps = _norm_args(bn)
    return torch.native_batch_norm(z, None, None, running_mean, running_var, True, momentum, eps)


def _dense(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`grad` dense in like's memory layout: oneDNN's BatchNorm backward is many times slower otherwise."""
    fmt = torch.channels_last if like.dim() == 4 and not like.is_contiguous() else torch.contiguous_format
    return grad.contiguous(memory_format=fmt)


def _norm_backward(grad: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of z, per-channel sum of grad * normalized z) of a non-affine BatchNorm."""
    grad_z, dot, _ = aten.native_batch_norm_backward(_dense(grad, z), z, None, None, None, mean, invstd, True, eps,
                                                     [True, True, False])
    return grad_z, dot


def _channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


# ---------------------------------------------------------------------------- the function

class LeanEdge(torch.autograd.Function):
    """``sum_k w[k] * op_k(x)`` over planned ops; keeps x, the pre-BatchNorm tensors and their statistics."""

    @staticmethod
    def forward(ctx, x, w, steps, *params):
        relu_x = F.relu(x) if any(not isinstance(s, NormedHead) for _, s in steps) else None
        out, kept, eps = None, [], []
        for k, step in steps:
            if isinstance(step, ConvChain):
                u = relu_x
                for i, (dw, pw) in enumerate(zip(step.depthwise, step.pointwise)):
                    if i:
                        u = y.relu_()
                    z = F.conv2d(depthwise_conv(u, dw.weight, *_conv(dw)), pw.weight)
                    y, mean, invstd = _normalize(z, step.norms[i])
                    kept += [z, mean, invstd]
                eps += [bn.eps for bn in step.norms]
            else:
                z = step.head(x) if isinstance(step, NormedHead) else factorized_halves(relu_x, *_params(step))
                norm = step.norm if isinstance(step, NormedHead) else step.op.bn
                y, mean, invstd = _normalize(z, norm)
                kept += [None, mean, invstd]     # recomputed in backward
                eps.append(norm.eps)
            out = y * w[k] if out is None else out.addcmul_(y, w[k])
        ctx.steps, ctx.eps = steps, eps
        ctx.save_for_backward(x, w, *params, *kept)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, w, *rest = ctx.saved_tensors
        n_params = len(rest) - 3 * len(ctx.eps)
        params, kept = rest[:n_params], iter(rest[n_params:])
        needs = ctx.needs_input_grad[3:]
        eps = iter(ctx.eps)
        grad = _dense(grad, x)
        grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        grad_x, grad_r, grad_params = None, None, []
        relu_x = F.relu(x) if any(needs) else None
        p = 0
        for k, step in ctx.steps:
            if isinstance(step, ConvChain):
                n = len(step.depthwise)
                saved = [(next(kept), next(kept), next(kept)) for _ in range(n)]
                g_r, g_params = _chain_backward(grad, w[k], step, saved, [next(eps) for _ in range(n)], x, relu_x,
                                                params[p:p + 2 * n], needs[p:p + 2 * n], grad_w, k)
                p += 2 * n
                grad_r = g_r if grad_r is None else grad_r.add_(g_r)
                grad_params += g_params
            else:
                _, mean, invstd = next(kept), next(kept), next(kept)
                n = 2 if isinstance(step, Reduce) else 0
                weights = [t.detach().requires_grad_(need) for t, need in zip(params[p:p + n], needs[p:p + n])]
                with torch.enable_grad():
                    if isinstance(step, NormedHead):
                        source = x.detach().requires_grad_()
                        h = step.head(source)
                    else:
                        source = (relu_x if relu_x is not None else F.relu(x)).detach().requires_grad_()
                        h = factorized_halves(source, *weights)
                g_h, dot = _norm_backward(grad, h.detach(), mean, invstd, next(eps))
                if grad_w is not None:
                    grad_w[k] = dot.sum()
                leaves = [source] + [t for t in weights if t.requires_grad]
                grads = torch.autograd.grad(h, leaves, g_h.mul_(w[k]))
                if isinstance(step, NormedHead):
                    grad_x = grads[0] if grad_x is None else grad_x.add_(grads[0])
                else:
                    grad_r = grads[0] if grad_r is None else grad_r.add_(grads[0])
                    it = iter(grads[1:])
                    grad_params += [next(it) if need else None for need in needs[p:p + n]]
                    p += n
        if grad_r is not None:
            g = aten.threshold_backward(grad_r, x, 0)
            grad_x = g if grad_x is None else grad_x.add_(g)
        return grad_x, grad_w, None, *grad_params


def _conv(dw: DepthwiseConv2d) -> tuple[int, int, int]:
    return dw.stride[0], dw.padding[0], dw.dilation[0]


def _chain_backward(grad, w_k, step: ConvChain, saved, eps, x, relu_x, params, needs, grad_w, k):
    """Gradient of the ReLU'd input and of the chain's weights (None where not needed)."""
    z, mean, invstd = saved[-1]
    g_z, dot = _norm_backward(grad, z, mean, invstd, eps[-1])
    if grad_w is not None:
        grad_w[k] = dot.sum()
    g_z.mul_(w_k)
    grads: list[torch.Tensor | None] = []
    for i in reversed(range(len(step.depthwise))):
        dw_weight, pw_weight = params[2 * i], params[2 * i + 1]
        need_dw, need_pw = needs[2 * i], needs[2 * i + 1]
        if i:
            z_in, m_in, s_in = saved[i - 1]
            u = F.relu((z_in - _channel(m_in)) * _channel(s_in)) if need_dw or need_pw else None
        else:
            z_in, u = x, relu_x
        if need_pw:
            g_d, g_pw, _ = aten.convolution_backward(g_z, depthwise_conv(u, dw_weight, *_conv(step.depthwise[i])),
                                                     pw_weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                     [True, True, False])
        else:
            g_d, g_pw = F.conv2d(g_z, pw_weight.transpose(0, 1)), None
        # Without a weight gradient only the input's shape is read: z_in stands in for u.
        g_u, g_dw = depthwise_conv_backward(g_d, u if need_dw else z_in, dw_weight, *_conv(step.depthwise[i]),
                                            (True, need_dw))
        grads[:0] = [g_dw, g_pw]
        if i:
            g_y = aten.threshold_backward(g_u, u, 0) if u is not None else torch.where(z_in > _channel(m_in), g_u, 0.0)
            g_z = _norm_backward(g_y, z_in, m_in, s_in, eps[i - 1])[0]
        else:
            return g_u, grads
