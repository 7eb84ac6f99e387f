"""The search's mixed op as one memory-lean autograd function per edge.

Why: a DARTS supernet keeps every intermediate of every op of every edge for backward, about 25
tensors of its input's size per edge, and that bounds the batch a search can use. ``LeanEdge`` runs
the ops it knows in one function that keeps only what BatchNorm needs anyway, the output of each
pointwise convolution (and each FactorizedReduce), and recomputes in backward what the gradients
asked for need: nothing but ReLU masks for the architecture step (network weights frozen, see
core/architect.py), the depthwise convolutions, ReLUs and normalizations for the weight step. A pool
and its BatchNorm run as ``NormedPool``, which keeps its input and recomputes the pool in backward; in a
search cell (``shared_pools``) the edges that read the same state share one: a pool of a normalized
state is the same tensor on every edge. The math is that of the plain modules (their own weights,
strides, paddings, BatchNorm statistics updated once per forward); tests/test_lean_ops.py compares both.

Ops it knows: a chain of *stages* (depthwise conv, 1x1 conv, BatchNorm; a ReLU between stages) after a
ReLU, i.e. DARTS's and sharpDARTS's separable and dilated convolutions; a max or average pool followed
by a non-affine BatchNorm (the search's pools); ``FactorizedReduce``; the identity (a term of the edge's
sum, as the pools' outputs are). Other ops run as they are, outside the function. Training networks
(cnn/model.py) run their chains, with affine BatchNorms, through ``LeanChains`` the same way.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

import lanes
from operations import (DepthwiseConv2d, FactorizedReduce, PointwiseConv2d, ReLUFirst, depthwise_conv,
                        depthwise_conv_backward, factorized_halves, factorized_halves_backward, memory_layout,
                        pointwise_conv, pointwise_weight_grad)

aten = torch.ops.aten


@dataclass(frozen=True)
class ConvChain:
    """ReLU, then stages (depthwise, pointwise) each followed by a BatchNorm, with ReLUs between them."""
    depthwise: tuple[DepthwiseConv2d, ...]
    pointwise: tuple[PointwiseConv2d, ...]
    norms: tuple[nn.BatchNorm2d, ...]


@dataclass(frozen=True)
class NormedHead:
    """A max or average pool followed by a non-affine BatchNorm (the search's pools)."""
    head: nn.MaxPool2d | nn.AvgPool2d
    norm: nn.BatchNorm2d

    def key(self) -> tuple:
        """Heads with equal keys compute the same tensor from the same input."""
        return type(self.head), self.head.extra_repr(), self.norm.eps

    def backward(self, grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor
                 ) -> torch.Tensor:
        """x's gradient from the BatchNorm output's gradient: the pool recomputed once, with its indices for a
        max pool."""
        h = self.head
        pool = [_pair(h.kernel_size), _pair(h.stride), _pair(h.padding)]
        if isinstance(h, nn.MaxPool2d):
            z, indices = aten.max_pool2d_with_indices(x, *pool, _pair(h.dilation), h.ceil_mode)
            g_z = _norm_backward(grad, z, mean, invstd, self.norm.eps)[0]
            return aten.max_pool2d_with_indices_backward(g_z, x, *pool, _pair(h.dilation), h.ceil_mode, indices)
        g_z = _norm_backward(grad, h(x), mean, invstd, self.norm.eps)[0]
        return aten.avg_pool2d_backward(g_z, x, *pool, h.ceil_mode, h.count_include_pad, h.divisor_override)


@dataclass(frozen=True)
class Reduce:
    """``FactorizedReduce`` (the skip connection of a reduction edge)."""
    op: FactorizedReduce

    @property
    def norm(self) -> nn.BatchNorm2d:
        return self.op.bn

    def pre_norm(self, relu_x: torch.Tensor, params) -> torch.Tensor:
        return factorized_halves(relu_x, *params)

    def pre_norm_backward(self, grad, relu_x, params, needs, bn_args) -> tuple:
        """(the ReLU'd input's gradient, the weights' gradients, sum of grad * normalized input)."""
        z = factorized_halves(relu_x, *params)
        g_z, dot = _scaled_norm_backward(grad, z, *bn_args)
        g_r, *grads = factorized_halves_backward(g_z, relu_x, *params, (True, *needs))
        return g_r, grads, dot


@dataclass(frozen=True)
class Skip:
    """The identity (a normal edge's skip_connect): ``LeanEdge`` adds its term ``w[k] * x`` to the sum."""


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


def enabled(x: torch.Tensor) -> bool:
    """Whether a forward on `x` may run lean: not inside ``plain()``, and not under autocast (the
    recomputations in backward would run outside it, in other precisions; AMP runs the plain modules)."""
    return _ENABLED[-1] and not torch.is_autocast_enabled(x.device.type)


def runs(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether `module` runs this file's functions on `x`: training with gradients, ``enabled``, and not
    being compiled (dynamo traces the plain modules)."""
    return module.training and torch.is_grad_enabled() and enabled(x) and not torch.compiler.is_compiling()


def _norm(m: nn.Module) -> bool:
    """A BatchNorm of this very class (not a synchronized subclass, whose statistics are global)."""
    return type(m) is nn.BatchNorm2d


def _plain_norm(m: nn.Module) -> bool:
    return _norm(m) and not m.affine


def plan(op: nn.Module) -> ConvChain | NormedHead | Reduce | Skip | None:
    """How `op` runs lean (a chain or FactorizedReduce in ``LeanEdge``, a pool as ``NormedPool``, the identity
    as a term of LeanEdge's sum), or None if it runs as it is. Classes are matched exactly: a subclass may
    compute something else."""
    if type(op) is nn.Identity:
        return Skip()
    layers = list(op.op) if type(getattr(op, "op", None)) is ReLUFirst else None
    if layers is not None and type(layers[0]) is nn.ReLU and len(layers) % 4 == 0:
        blocks = [layers[i:i + 4] for i in range(1, len(layers), 4)]
        blocks[-1] = blocks[-1] + [nn.ReLU()]
        if all(type(dw) is DepthwiseConv2d and type(pw) is PointwiseConv2d and pw.stride == (1, 1) and _norm(bn)
               and type(relu) is nn.ReLU for dw, pw, bn, relu in blocks):
            return ConvChain(*(tuple(b[i] for b in blocks) for i in range(3)))
    if type(op) is nn.Sequential and len(op) == 2 and type(op[0]) in (nn.MaxPool2d, nn.AvgPool2d) \
            and not getattr(op[0], "return_indices", False) and _plain_norm(op[1]):
        return NormedHead(op[0], op[1])
    if type(op) is FactorizedReduce and type(op.relu) is nn.ReLU and _plain_norm(op.bn):
        return Reduce(op)
    return None


def _params(step) -> list[torch.Tensor]:
    """The tensors of one planned op that take gradients (read at call time: functional_call's)."""
    if isinstance(step, ConvChain):    # per stage: depthwise, pointwise, BatchNorm weight and bias (None if not affine)
        return [t for dw, pw, bn in zip(step.depthwise, step.pointwise, step.norms)
                for t in (dw.weight, pw.weight, bn.weight, bn.bias)]
    if isinstance(step, Reduce):
        return [step.op.conv_1.weight, step.op.conv_2.weight]
    return []


def lean_edge(x: torch.Tensor, w: torch.Tensor, steps: list[tuple[int, object]]) -> torch.Tensor:
    """``sum_k w[k] * op_k(x)`` over the planned ops ``(k, plan)`` of one edge, as one ``LeanEdge``: its chains
    and FactorizedReduce inside it, the pools' outputs (``NormedPool``, shared between edges) and the
    identity's input as terms of its sum."""
    convs = [(k, step) for k, step in steps if isinstance(step, (ConvChain, Reduce))]
    pools = [(k, step) for k, step in steps if isinstance(step, NormedHead)]
    skips = tuple(k for k, step in steps if isinstance(step, Skip))
    params = [t for _, step in convs for t in _params(step)]
    ys = [normed_pool(x, head) for _, head in pools]
    return LeanEdge.apply(x, w, convs, tuple(k for k, _ in pools), skips, *params, *ys)


_SHARED: list[dict | None] = [None]


@contextmanager
def shared_pools() -> Iterator[None]:
    """Within: a planned pool that several edges apply to the same input tensor (a search cell's edges
    from one state) is computed once; each edge's BatchNorm still counts the batch in its running
    statistics."""
    _SHARED.append({})
    try:
        yield
    finally:
        _SHARED.pop()


def normed_pool(x: torch.Tensor, head: NormedHead) -> torch.Tensor:
    """The head's output on `x`, taken from ``shared_pools`` when an equal head already ran on this `x`."""
    cache, key = _SHARED[-1], (id(x), head.key())
    if cache is not None and key in cache and cache[key][0] is x:
        _, y, mean, invstd = cache[key]
        _count_batch(head.norm, mean, invstd, y.numel() // y.shape[1])
        return y
    y, mean, invstd = NormedPool.apply(x, head)
    if cache is not None:
        cache[key] = (x, y, mean, invstd)
    return y


def lean_chains(inputs: list[torch.Tensor], chains: list[ConvChain]) -> tuple[torch.Tensor, ...]:
    """Planned chains' outputs on inputs that are already ReLU'd (a training cell's shared ReLUs): one function
    for the chains of a cell that can run at once, which run in core/lanes.py's lanes, backward too."""
    return LeanChains.apply(tuple(chains), *inputs, *(t for chain in chains for t in _params(chain)))


def shared_pointwise(r: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Stride-1 1x1 convolutions of one input by several weights (a training network's cell output is read by
    the preprocessing of the next two cells). Why: backward then sums the input's gradients in one buffer,
    each product added in place, where autograd would write one gradient the size of the input per reader and
    add them (a cell output is four times as wide as a node)."""
    return SharedPointwise.apply(r, *weights)


class SharedPointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, *weights):
        ctx.save_for_backward(r, *weights)
        ctx.set_materialize_grads(False)     # an output that reaches no loss gives its weight no gradient
        return tuple(pointwise_conv(r, w) for w in weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        r, *weights = ctx.saved_tensors
        grad_r = None
        for g, w in zip(grads, weights):
            if g is not None and ctx.needs_input_grad[0]:
                grad_r = pointwise_conv(g, w.transpose(0, 1), add_to=grad_r)
        return grad_r, *(pointwise_weight_grad(g, r) if g is not None and need else None
                         for g, need in zip(grads, ctx.needs_input_grad[1:]))


def relu_concat(parts: list[torch.Tensor]) -> torch.Tensor:
    """ReLU(torch.cat(parts, dim=1)), a training cell's output as the next cells read it. The ReLU runs in
    place on the concatenation; backward masks the whole gradient in one dense pass, then copies each
    part's slice into a dense tensor in that part's layout (see ``operations.concat_channels`` for why
    dense). Masking each part's strided slice straight into its dense tensor, one pass fewer, was 1.3-1.8x
    slower on an AMD EPYC (4 parts of 36 channels at 32 px, batch 32: 9.2 against 6.0 ms on 1 thread)."""
    return ReLUConcat.apply(*parts)


class ReLUConcat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *parts):
        y = torch.cat(parts, dim=1).relu_()
        ctx.widths, ctx.layouts = [p.shape[1] for p in parts], [memory_layout(p) for p in parts]
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        masked = aten.threshold_backward(grad, y, 0)
        return tuple(part.contiguous(memory_format=layout)
                     for part, layout in zip(masked.split(ctx.widths, dim=1), ctx.layouts))


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


def _count_batch(bn: nn.BatchNorm2d, mean: torch.Tensor, invstd: torch.Tensor, n: int) -> None:
    """Update bn's running statistics with a batch of `n` values per channel normalized by another
    BatchNorm (mean, 1 / sqrt(biased variance + eps)), as its own training-mode forward would."""
    running_mean, running_var, momentum, eps = _norm_args(bn)
    _update_running(running_mean, running_var, momentum, mean, invstd.pow(-2) - eps, n)


def _update_running(running_mean, running_var, momentum: float, mean: torch.Tensor, var: torch.Tensor,
                    n: int) -> None:
    """Running statistics (None if not tracked) moved towards a batch's mean and biased variance of `n`
    values per channel, the variance made unbiased as nn.BatchNorm2d does."""
    if running_mean is None:
        return
    running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    running_var.mul_(1 - momentum).add_(var, alpha=momentum * n / max(n - 1, 1))


def _normalize(z: torch.Tensor, bn: nn.BatchNorm2d, weight=None, bias=None) -> tuple[torch.Tensor, ...]:
    """Training-mode BatchNorm with this weight and bias: (output, batch mean, inverse std); updates the
    running statistics."""
    running_mean, running_var, momentum, eps = _norm_args(bn)
    if not _folds(z):
        return torch.native_batch_norm(z, weight, bias, running_mean, running_var, True, momentum, eps)
    c = z.shape[1]
    mean_rows, var_rows = torch.batch_norm_update_stats(_folded_rows(z), None, None, 0.0)
    means = mean_rows.view(_FOLD, c)
    mean = means.mean(0)
    # the pooled variance of _FOLD equal groups of pixels: mean of the variances plus variance of the means
    var = var_rows.view(_FOLD, c).mean(0) + (means - mean).square().mean(0)
    _update_running(running_mean, running_var, momentum, mean, var, z.numel() // c)
    invstd = (var + eps).rsqrt()
    return _affine(z, mean, invstd, weight, bias), mean, invstd


# PyTorch's CPU BatchNorm kernels for channels-last tensors get slower, not faster, on a second thread
# when a channel row does not fill whole 64-byte cache lines (36 float32 channels at a 32x32 batch of 32:
# forward 1.7 -> 2.3 ms, backward 2.0 -> 3.5 ms; 16, 48, 64 and 144 channels scale). The same kernels on
# the tensor read as rows of 4 pixels (144 values per row) scale, and at 32 px are faster on one thread
# too (at 16 px its backward is ~10% slower on one thread and 1.8x faster on two).
_FOLD = 4


def _folds(z: torch.Tensor) -> bool:
    """Whether z's BatchNorm runs on rows of _FOLD pixels: a dense channels-last CPU tensor whose channel
    count is 4 times an odd number (the rows of _FOLD pixels fill whole cache lines; at 8 times an odd
    number, 72 channels, it measured no faster)."""
    c = z.shape[1]
    return (c % 8 == 4 and z.dim() == 4 and z.device.type == "cpu" and (z.numel() // c) % _FOLD == 0
            and z.is_contiguous(memory_format=torch.channels_last))


def _folded_rows(t: torch.Tensor) -> torch.Tensor:
    """A dense channels-last tensor viewed as rows of _FOLD pixels' channels (no copy)."""
    return t.permute(0, 2, 3, 1).view(-1, _FOLD * t.shape[1])


def _dense(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`grad` dense in like's memory layout: oneDNN's BatchNorm backward is many times slower otherwise."""
    return grad.contiguous(memory_format=memory_layout(like))


def _norm_backward(grad: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, eps: float,
                   weight=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gradient of z, per-channel sums of grad * normalized z and of grad) of a training-mode BatchNorm:
    the gradients of its weight and bias. Without a weight, ones stand in: CUDA's kernel for contiguous
    tensors allocates the sums like the weight, and fails on a missing one."""
    grad = _dense(grad, z)
    if _folds(z):
        return _folded_norm_backward(grad, z, mean, invstd, eps, weight)
    if weight is None:
        weight = z.new_ones(z.shape[1])
    return aten.native_batch_norm_backward(grad, z, weight, None, None, mean, invstd, True, eps, [True, True, True])


def _folded_norm_backward(grad, z, mean, invstd, eps, weight) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_norm_backward`` on rows of _FOLD pixels (see _folds): the sums from the native kernel on the rows, the
    gradient of z from them, ``scale * (grad - sum_grad / n - normalized_z * sum_dot / n)``, in two passes."""
    c, n = z.shape[1], z.numel() // z.shape[1]
    _, dot, total = aten.native_batch_norm_backward(_folded_rows(grad), _folded_rows(z), None, None, None,
                                                    mean.repeat(_FOLD), invstd.repeat(_FOLD), True, eps,
                                                    [False, True, True])
    dot, total = dot.view(_FOLD, c).sum(0), total.view(_FOLD, c).sum(0)
    scale = invstd if weight is None else invstd * weight
    slope = -scale * invstd * dot / n
    g_z = torch.addcmul(_channel(-scale * total / n - slope * mean), z, _channel(slope))
    return g_z.addcmul_(grad, _channel(scale)), dot, total


def _relu_renormalized(z, mean, invstd, weight, bias) -> torch.Tensor:
    """The ReLU of the training-mode BatchNorm output again, from its input and batch statistics (in backward,
    every pass over a large tensor counts; ~10% of a training step's time went to four of them here)."""
    return _affine(z, mean, invstd, weight, bias).relu_()


def _affine(z, mean, invstd, weight, bias) -> torch.Tensor:
    """The training-mode BatchNorm output from its input and batch statistics: one multiply-add with
    per-channel factors."""
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return torch.addcmul(_channel(shift), z, _channel(scale))


def _channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


# ---------------------------------------------------------------------------- the function

class LeanEdge(torch.autograd.Function):
    """``sum_k w[k] * op_k(x)`` over planned chains and FactorizedReduces, plus the terms ``w[k] * y`` of given
    pool outputs and ``w[k] * x`` of identities; keeps x, the pool outputs, the pre-BatchNorm tensors and
    their statistics. Why the terms: as autograd's multiplications and sums they cost two passes and a new
    tensor each way, here one pass forward (added in place) and one product backward."""

    @staticmethod
    def forward(ctx, x, w, steps, pools, skips, *tensors):
        spans = _param_spans([step for _, step in steps])
        params, ys = tensors[:len(tensors) - len(pools)], tensors[len(tensors) - len(pools):]
        relu_x = F.relu(x) if steps else None

        def step_forward(i: int) -> tuple:
            step, ps = steps[i][1], params[spans[i]]
            if isinstance(step, ConvChain):
                y, kept = _chain_forward(relu_x, step, ps)
                return y, kept, [bn.eps for bn in step.norms]
            y, mean, invstd = _normalize(step.pre_norm(relu_x, ps), step.norm)
            return y, [None, mean, invstd], [step.norm.eps]     # the pre-BatchNorm tensor is recomputed in backward

        out, kept, eps = None, [], []
        for (k, _), (y, step_kept, step_eps) in zip(steps, _in_lanes(step_forward, steps, x)):
            out = y * w[k] if out is None else out.addcmul_(y, w[k])
            kept += step_kept
            eps += step_eps
        for k, y in zip(pools + skips, (*ys, *[x] * len(skips))):
            out = y * w[k] if out is None else out.addcmul_(y, w[k])
        ctx.steps, ctx.spans, ctx.eps, ctx.terms = steps, spans, eps, (pools, skips)
        ctx.save_for_backward(x, w, *params, *ys, *kept)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, w, *rest = ctx.saved_tensors
        steps, spans, (pools, skips) = ctx.steps, ctx.spans, ctx.terms
        n_params = spans[-1].stop if spans else 0
        params, ys, kept = rest[:n_params], rest[n_params:n_params + len(pools)], rest[n_params + len(pools):]
        needs = ctx.needs_input_grad[5:5 + n_params]
        firsts = _first_norms([step for _, step in steps])
        grad = _dense(grad, x)
        # The ReLU'd input is read by weight gradients and by FactorizedReduce's recomputation only.
        relu_x = F.relu(x) if any(needs) or any(isinstance(s, Reduce) for _, s in steps) else None

        def step_backward(i: int) -> tuple:
            (k, step), ps, need = steps[i], params[spans[i]], needs[spans[i]]
            norms = range(firsts[i], firsts[i + 1])
            eps = [ctx.eps[j] for j in norms]
            if isinstance(step, ConvChain):
                saved = [tuple(kept[3 * j:3 * j + 3]) for j in norms]
                return _chain_backward(grad, w[k], step, saved, eps, x, relu_x, ps, need)
            _, mean, invstd = kept[3 * firsts[i]:3 * firsts[i] + 3]
            return step.pre_norm_backward(grad, relu_x, ps, need, (mean, invstd, eps[0], w[k]))

        grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        grad_r, grad_params = None, []
        for (k, _), (g_r, g_params, dot) in zip(steps, _in_lanes(step_backward, steps, x)):
            if grad_w is not None:
                grad_w[k] = dot
            grad_r = _accumulate(grad_r, g_r)
            grad_params += g_params
        if grad_w is not None:
            for k, y in zip(pools + skips, (*ys, *[x] * len(skips))):
                grad_w[k] = _dot(grad, y)
        grad_x = None if grad_r is None else aten.threshold_backward(grad_r, x, 0)
        for k in skips:
            grad_x = grad * w[k] if grad_x is None else grad_x.addcmul_(grad, w[k])
        return grad_x, grad_w, None, None, None, *grad_params, *(grad * w[k] for k in pools)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum()`` as one product, without the tensor a * b; both read in a's memory order."""
    order = (0, 2, 3, 1) if memory_layout(a) == torch.channels_last else tuple(range(a.dim()))
    return torch.dot(a.permute(order).reshape(-1), b.permute(order).reshape(-1))


def _param_spans(plans: list) -> list[slice]:
    """Each planned op's slice of the parameters passed to LeanEdge or LeanChains."""
    spans, p = [], 0
    for plan in plans:
        spans.append(slice(p, p + _n_params(plan)))
        p = spans[-1].stop
    return spans


def _first_norms(plans: list) -> list[int]:
    """Each planned op's first BatchNorm among those kept for backward (three tensors each), and their count."""
    firsts = [0]
    for plan in plans:
        firsts.append(firsts[-1] + (len(plan.norms) if isinstance(plan, ConvChain) else 1))
    return firsts


def _in_lanes(step_work, steps, x: torch.Tensor) -> list:
    """``step_work(i)`` for each step i, in core/lanes.py's two lanes where they apply."""
    order = _longest_first([step for _, step in steps])
    return lanes.run([partial(step_work, i) for i in range(len(steps))], order, x.device)


def _longest_first(plans: list) -> list[int]:
    """Indices of planned chains and FactorizedReduces, the longest to compute first: most stages, then the
    widest kernel (a DARTS edge: sep_conv_5x5, 3x3, dil_conv_5x5, 3x3, then FactorizedReduce)."""
    def size(i: int) -> tuple[int, int]:
        plan = plans[i]
        return (len(plan.depthwise), plan.depthwise[0].kernel_size[0]) if isinstance(plan, ConvChain) else (0, 0)
    return sorted(range(len(plans)), key=size, reverse=True)


class NormedPool(torch.autograd.Function):
    """A planned pool and its BatchNorm; keeps the input and the batch statistics, recomputes the pool in
    backward. Also returns the statistics (no gradient), for the other BatchNorms of a shared pool."""

    @staticmethod
    def forward(ctx, x, head):
        y, mean, invstd = _normalize(head.head(x), head.norm)
        ctx.head = head
        ctx.save_for_backward(x, mean, invstd)
        ctx.mark_non_differentiable(mean, invstd)
        return y, mean, invstd

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _mean, _invstd):
        x, mean, invstd = ctx.saved_tensors
        return ctx.head.backward(grad, x, mean, invstd), None


def _n_params(step) -> int:
    return 4 * len(step.depthwise) if isinstance(step, ConvChain) else 2


def _accumulate(total: torch.Tensor | None, part: torch.Tensor | None) -> torch.Tensor | None:
    return part if total is None else total if part is None else total.add_(part)


def _scaled_norm_backward(grad, z, mean, invstd, eps, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of z, sum of grad * normalized z) of a non-affine training-mode BatchNorm whose output is
    scaled by `scale` (a mixed op's coefficient) before `grad` reaches it."""
    g_z, dot, _ = _norm_backward(grad, z, mean, invstd, eps)
    return g_z.mul_(scale), dot.sum()


def _conv(dw: DepthwiseConv2d) -> tuple[int, int, int]:
    return dw.stride[0], dw.padding[0], dw.dilation[0]


def _chain_forward(u: torch.Tensor, step: ConvChain, params) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The chain's output on a ReLU'd input, and what backward keeps: each stage's pre-BatchNorm tensor
    and batch statistics."""
    kept = []
    for i, dw in enumerate(step.depthwise):
        dw_weight, pw_weight, weight, bias = params[4 * i:4 * i + 4]
        if i:
            u = y.relu_()
        z = pointwise_conv(depthwise_conv(u, dw_weight, *_conv(dw)), pw_weight)
        y, mean, invstd = _normalize(z, step.norms[i], weight, bias)
        kept += [z, mean, invstd]
    return y, kept


def _chain_backward(grad, scale, step: ConvChain, saved, eps, x, relu_x, params, needs):
    """(gradient of the ReLU'd input, gradients of the chain's parameters, None where not needed, and
    the sum of grad * output) for the output's gradient `grad`, times `scale` if given (a mixed op's
    coefficient). Without parameter gradients (the architecture step) nothing is recomputed but ReLU masks."""
    n = len(step.depthwise)
    z, mean, invstd = saved[-1]
    g_z, g_weight, g_bias = _norm_backward(grad, z, mean, invstd, eps[-1], params[4 * n - 2])
    dot = None
    if scale is not None:
        weight, bias = params[4 * n - 2:4 * n]
        dot = g_weight.sum() if weight is None else (g_weight * weight + g_bias * bias).sum()
        g_z.mul_(scale)
        g_weight, g_bias = g_weight * scale, g_bias * scale
    grads: list[torch.Tensor | None] = []
    for i in reversed(range(n)):
        dw_weight, pw_weight = params[4 * i], params[4 * i + 1]
        need_dw, need_pw, need_weight, need_bias = needs[4 * i:4 * i + 4]
        norm_grads = [g_weight if need_weight else None, g_bias if need_bias else None]
        if i:
            z_in, m_in, s_in = saved[i - 1]
            weight_in, bias_in = params[4 * i - 2:4 * i]
            u = _relu_renormalized(z_in, m_in, s_in, weight_in, bias_in) \
                if need_dw or need_pw or weight_in is not None else None
        else:
            z_in, u = x, relu_x
        conv = _conv(step.depthwise[i])
        g_pw = pointwise_weight_grad(g_z, depthwise_conv(u, dw_weight, *conv)) if need_pw else None
        g_d = pointwise_conv(g_z, pw_weight.transpose(0, 1))
        # Without a weight gradient only the input's shape is read: z_in stands in for u.
        g_u, g_dw = depthwise_conv_backward(g_d, u if need_dw else z_in, dw_weight, *conv, (True, need_dw))
        grads[:0] = [g_dw, g_pw, *norm_grads]
        if not i:
            return g_u, grads, dot
        # Without u, its ReLU's mask: a non-affine BatchNorm's output is positive where z_in exceeds the mean.
        # The ReLU's mask applied in place: g_u is a fresh tensor of this backward.
        g_y = aten.threshold_backward.grad_input(g_u, u if u is not None else z_in - _channel(m_in), 0, grad_input=g_u)
        g_z, g_weight, g_bias = _norm_backward(g_y, z_in, m_in, s_in, eps[i - 1], weight_in)


class LeanChains(torch.autograd.Function):
    """Planned chains, each on its ReLU'd input (training networks, affine BatchNorms allowed); keeps the
    inputs, the pre-BatchNorm tensors and their statistics."""

    @staticmethod
    def forward(ctx, chains, *tensors):
        n = len(chains)
        inputs, params, spans = tensors[:n], tensors[n:], _param_spans(chains)
        results = lanes.run([partial(_chain_forward, inputs[i], chains[i], params[spans[i]]) for i in range(n)],
                            _longest_first(chains), inputs[0].device)
        ctx.chains, ctx.spans = chains, spans
        ctx.save_for_backward(*tensors, *(t for _, kept in results for t in kept))
        ctx.set_materialize_grads(False)        # an output that reaches no loss gives its chain no gradient
        return tuple(y for y, _ in results)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        chains, spans, n = ctx.chains, ctx.spans, len(ctx.chains)
        saved = ctx.saved_tensors
        inputs, params, kept = saved[:n], saved[n:n + spans[-1].stop], saved[n + spans[-1].stop:]
        firsts = _first_norms(chains)
        needs = ctx.needs_input_grad[1 + n:]

        def chain_backward(i: int) -> tuple:
            stages = range(firsts[i], firsts[i + 1])
            saved_i = [tuple(kept[3 * j:3 * j + 3]) for j in stages]
            eps = [bn.eps for bn in chains[i].norms]
            return _chain_backward(grads[i], None, chains[i], saved_i, eps, inputs[i], inputs[i], params[spans[i]],
                                   needs[spans[i]])

        order = [i for i in _longest_first(chains) if grads[i] is not None]
        results = lanes.run([partial(chain_backward, i) for i in range(n)], order, inputs[0].device)
        grad_params = [g for r, span in zip(results, spans)
                       for g in (r[1] if r else [None] * (span.stop - span.start))]
        return None, *(r[0] if r else None for r in results), *grad_params
