"""The search's lean mixed op (cnn/lean_ops.py) and the faster depthwise convolutions (cnn/operations.py):
the same numbers as the plain modules, for less memory."""
import copy
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lean_ops
from architect import Architect, ArchConfig
from genotypes import PRIMITIVE_SETS
from model import ModelSpec
from model_search import MixedOp, SearchNetwork, make_spec
from operations import (FactorizedReduce, SepConv, depthwise_conv, depthwise_conv_backward, pointwise_conv,
                        pointwise_weight_grad)
from runtime import Precision
from test_search import _second_order_setup

CPU = Precision(torch.device("cpu"), False)
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
FAMILIES = {"darts": "DARTS", "sharp": "SHARPER_PRIMITIVES"}


@pytest.mark.parametrize("fmt, kernel, dilation, stride, side", itertools.product(
    FORMATS, (3, 5), (1, 2), (1, 2), (6, 7)))
def test_depthwise_conv_equals_torchs_convolution(fmt, kernel, dilation, stride, side):
    torch.manual_seed(0)
    x = torch.randn(2, 4, side, side + 2, dtype=torch.float64).contiguous(memory_format=FORMATS[fmt]).requires_grad_()
    w = torch.randn(4, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    padding = dilation * (kernel - 1) // 2
    plain = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=4)
    ours = depthwise_conv(x, w, stride, padding, dilation)
    g = torch.randn_like(plain)
    assert ours.shape == plain.shape
    assert torch.allclose(ours, plain, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(plain, (x, w), g)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fmt, kernel, dilation, stride, dtype", itertools.product(
    FORMATS, (3, 5, 7), (1, 2), (1, 2), (torch.float64, torch.float32)))
def test_depthwise_backward_equals_torchs(fmt, kernel, dilation, stride, dtype):
    """The lean functions' depthwise backward (dilated ones by phases, wide kernels' weight gradient 3
    columns at a time in channels_last) against aten's, on outputs 8-17 pixels wide, for every `need`."""
    torch.manual_seed(0)
    C, padding = 6, dilation * (kernel - 1) // 2
    x = torch.randn(3, C, 16, 34, dtype=dtype).contiguous(memory_format=FORMATS[fmt])
    w = torch.randn(C, 1, kernel, kernel, dtype=dtype)
    g = torch.randn_like(F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=C))
    want = torch.ops.aten.convolution_backward(g, x, w, None, [stride] * 2, [padding] * 2, [dilation] * 2, False,
                                               [0, 0], C, [True, True, False])[:2]
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for need in ((True, True), (True, False), (False, True)):
        for got, expected, needed in zip(depthwise_conv_backward(g, x, w, stride, padding, dilation, need), want,
                                         need):
            assert got is None if not needed else torch.allclose(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("fmt, batch, strided", itertools.product(FORMATS, (0, 3), (False, True)))
def test_pointwise_conv_equals_torchs_convolution(fmt, batch, strided):
    """Output (in the input's layout), input and weight gradients of the matrix-product 1x1 convolution,
    on dense and subsampled inputs and an empty batch, in float64."""
    torch.manual_seed(0)
    x = torch.randn(batch, 5, 8, 6, dtype=torch.float64).contiguous(memory_format=FORMATS[fmt]).requires_grad_()
    source = x[:, :, ::2, ::2] if strided else x
    w = torch.randn(7, 5, 1, 1, dtype=torch.float64, requires_grad=True)
    ours, plain = pointwise_conv(source, w), F.conv2d(source, w)
    assert ours.shape == plain.shape and torch.allclose(ours, plain, rtol=1e-12, atol=1e-12)
    assert strided or ours.is_contiguous(memory_format=FORMATS[fmt])
    g = torch.randn_like(plain)
    want = torch.autograd.grad(plain, (x, w), g)
    for a, b in zip(torch.autograd.grad(ours, (x, w), g), want):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert torch.allclose(pointwise_weight_grad(g, source.detach()), want[1], rtol=1e-12, atol=1e-12)


def _plain_sum(op: MixedOp, x, w):
    return sum(w[k] * op._ops[k](x) for k in op._active)


@pytest.mark.parametrize("family, stride, fmt, frozen, side",
                         itertools.product(FAMILIES, (1, 2), FORMATS, (False, True), (6, 7)))
def test_a_lean_edge_equals_its_plain_modules(family, stride, fmt, frozen, side):
    """Output, gradients (input, architecture weights, network weights unless frozen as in the
    architecture step) and BatchNorm statistics, in float64; odd sides pad a reduction."""
    torch.manual_seed(0)
    lean = MixedOp(8, stride, PRIMITIVE_SETS[FAMILIES[family]], family, 32).double().to(memory_format=FORMATS[fmt])
    plain = copy.deepcopy(lean)
    for p in itertools.chain(lean.parameters(), plain.parameters()):
        p.requires_grad_(not frozen)
    x = torch.randn(3, 8, side, side, dtype=torch.float64).contiguous(memory_format=FORMATS[fmt]).requires_grad_()
    alphas = torch.randn(len(lean._ops), dtype=torch.float64, requires_grad=True)
    out = lean(x, F.softmax(alphas, 0))
    reference = _plain_sum(plain, x, F.softmax(alphas, 0))
    assert out.is_contiguous(memory_format=FORMATS[fmt])
    assert torch.allclose(out, reference, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    inputs = [x, alphas] + ([] if frozen else list(lean.parameters()))
    refs = [x, alphas] + ([] if frozen else list(plain.parameters()))
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(reference, refs, g)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    for (name, a), b in zip(lean.named_buffers(), plain.buffers()):     # batch counts exactly
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert sum(p is not None for p in lean._plans) == len(lean._active)      # every op but 'none'


def test_a_sampled_op_runs_alone_and_its_coefficient_gets_the_gradient():
    torch.manual_seed(0)
    op = MixedOp(4, 1, PRIMITIVE_SETS["DARTS"], "darts", 32).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    for k in op._active:
        w = torch.rand(len(op._ops), dtype=torch.float64, requires_grad=True)
        out = op(x, w, active=k)
        reference = w[k] * copy.deepcopy(op._ops[k])(x)
        assert torch.allclose(out, reference, rtol=1e-12, atol=1e-12)
        grad = torch.autograd.grad(out.sum(), w)[0]
        assert torch.count_nonzero(grad) == 1 and grad[k] != 0


class _SyncLikeNorm(nn.BatchNorm2d):
    """A BatchNorm subclass, as a synchronized one is: the lean path must leave it to its own forward."""


def test_ops_with_other_norms_or_activations_run_as_they_are():
    op = SepConv(4, 4, 3, 1, 1, affine=False)
    assert isinstance(lean_ops.plan(op), lean_ops.ConvChain)
    op.op[3] = _SyncLikeNorm(4, affine=False)
    assert lean_ops.plan(op) is None
    op = SepConv(4, 4, 3, 1, 1, affine=False)
    op.op[4] = nn.SiLU()
    assert lean_ops.plan(op) is None
    assert isinstance(lean_ops.plan(SepConv(4, 4, 3, 1, 1, affine=True)), lean_ops.ConvChain)   # training networks
    reduce = FactorizedReduce(4, 4, affine=False)
    assert isinstance(lean_ops.plan(reduce), lean_ops.Reduce)
    reduce.relu = nn.SiLU()
    assert lean_ops.plan(reduce) is None


@pytest.mark.parametrize("unrolled", [False, True])
def test_architecture_gradients_equal_those_of_the_plain_supernet(unrolled):
    """First order: the architecture step's gradient; second order: DARTS's hypergradient (four passes,
    virtual weights through functional_call), both in float64 at this process's thread count."""
    model, x_t, y_t, x_v, y_v, opt = _second_order_setup()
    train, valid = (x_t, y_t), (x_v, y_v)
    plain_model = copy.deepcopy(model)
    config = ArchConfig(unrolled=unrolled, network_momentum=0.9, network_weight_decay=3e-4)

    def gradients(net):
        arch = Architect(net, config, CPU)
        return arch.unrolled_gradients(train, valid, opt_for(net))[0] if unrolled else arch.objective_gradients(valid)[0]

    def opt_for(net):
        if net is model:
            return opt
        clone = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
        clone.load_state_dict(opt.state_dict())
        return clone

    lean = gradients(model)
    with lean_ops.plain():
        plain = gradients(plain_model)
    for a, b in zip(lean, plain):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-13)
    assert all(torch.count_nonzero(a) > 0 for a in lean)
    for a, b in zip(model.buffers(), plain_model.buffers()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def _saved_bytes(model, x) -> int:
    """Bytes of the distinct storages autograd keeps for backward after one forward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


def test_the_lean_supernet_keeps_under_a_third_of_the_plain_ones_tensors():
    torch.manual_seed(0)
    model = SearchNetwork(make_spec(10, 8, 3, 4, 4, PRIMITIVE_SETS["DARTS"], "softmax", "shared"))
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    lean = _saved_bytes(model, x)
    with lean_ops.plain():
        plain = _saved_bytes(model, x)
    assert lean < plain / 3, (lean, plain)


def _count_nodes(output: torch.Tensor, name: str) -> int:
    """Nodes of `output`'s autograd graph whose class is called `name`."""
    seen, todo = set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [next_node for next_node, _ in node.next_functions]
    return sum(type(node).__name__ == name for node in seen)


def test_the_edges_that_read_one_state_share_its_pools():
    """A cell of 4 nodes reads 5 states (its two inputs, the first three nodes) on 14 edges: one max and one
    average pool per state, not per edge. Every edge's BatchNorm still counts the batch (the supernet
    gradient test compares the statistics with the plain modules')."""
    torch.manual_seed(0)
    model = SearchNetwork(make_spec(10, 8, 1, 4, 4, PRIMITIVE_SETS["DARTS"], "softmax", "shared"))
    logits = model(torch.randn(2, 3, 8, 8))
    assert _count_nodes(logits, "NormedPoolBackward") == 5 * 2
    cell_norms = [m for m in model.cells[0].modules() if isinstance(m, nn.BatchNorm2d) and not m.affine]
    assert all(int(m.num_batches_tracked) == 1 for m in cell_norms) and len(cell_norms) > 14 * 2


@pytest.mark.parametrize("fmt, used", itertools.product(FORMATS, ((0, 1), (1,))))
def test_shared_pointwise_gets_the_gradients_of_separate_convolutions(fmt, used):
    """Two 1x1 convolutions of one input (float64): outputs and gradients of the input and of both weights
    equal autograd's through two separate ones, also when only one output reaches the loss."""
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64).contiguous(memory_format=FORMATS[fmt]).requires_grad_()
    weights = [torch.randn(c, 6, 1, 1, dtype=torch.float64, requires_grad=True) for c in (4, 5)]
    targets = [torch.randn(3, c, 5, 5, dtype=torch.float64) for c in (4, 5)]
    outs = lean_ops.shared_pointwise(x, tuple(weights))
    plain = [F.conv2d(x, w) for w in weights]
    for a, b in zip(outs, plain):
        assert a.is_contiguous(memory_format=FORMATS[fmt]) and torch.allclose(a, b, rtol=1e-12, atol=1e-13)
    loss = sum((outs[i] * targets[i]).sum() for i in used)
    plain_loss = sum((plain[i] * targets[i]).sum() for i in used)
    grads = torch.autograd.grad(loss, [x, *weights], allow_unused=True)
    plain_grads = torch.autograd.grad(plain_loss, [x, *weights], allow_unused=True)
    for a, b in zip(grads, plain_grads):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, rtol=1e-12, atol=1e-13))


@pytest.mark.parametrize("fmt", FORMATS)
def test_relu_concat_gets_the_plain_gradients_dense_in_each_parts_layout(fmt):
    """ReLU of a channel concatenation (float64): output and the parts' gradients equal autograd's through
    torch.cat and F.relu; each gradient is dense in its part's layout."""
    torch.manual_seed(0)
    parts = [torch.randn(3, c, 5, 5, dtype=torch.float64).contiguous(memory_format=FORMATS[fmt]).requires_grad_()
             for c in (2, 3, 4)]
    out = lean_ops.relu_concat(parts)
    plain = F.relu(torch.cat(parts, dim=1))
    assert torch.equal(out, plain)
    target = torch.randn_like(plain)
    grads = torch.autograd.grad((out * target).sum(), parts)
    plain_grads = torch.autograd.grad((plain * target).sum(), parts)
    for g, b in zip(grads, plain_grads):
        assert torch.equal(g, b) and g.is_contiguous(memory_format=FORMATS[fmt])


@pytest.mark.parametrize("dtype, weight, side", itertools.product((torch.float64, torch.float32), (False, True),
                                                                  (8, 6)))
def test_batchnorm_on_rows_of_four_pixels_equals_the_native_one(dtype, weight, side):
    """The BatchNorm of 36 channels, channels-last, on the CPU runs on rows of 4 pixels (lean_ops._folds):
    output, statistics, running statistics and the backward's three results equal the native kernels'
    (float64 to 1e-12, float32 to 1e-5), on data whose mean is far from 0."""
    torch.manual_seed(0)
    z = (torch.randn(3, 36, side, side, dtype=dtype) * 3 + 5).contiguous(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(36).to(dtype)
    mine, native = copy.deepcopy(bn), copy.deepcopy(bn)
    affine = (torch.rand(36, dtype=dtype) + 0.5, torch.randn(36, dtype=dtype)) if weight else (None, None)
    assert lean_ops._folds(z) and not lean_ops._folds(z.contiguous()) and not lean_ops._folds(z[:, :32])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    y, mean, invstd = lean_ops._normalize(z, mine, *affine)
    expected = torch.native_batch_norm(z, *affine, native.running_mean, native.running_var, True, 0.1, native.eps)
    assert y.is_contiguous(memory_format=torch.channels_last)
    for a, b in [(y, expected[0]), (mean, expected[1]), (invstd, expected[2]),
                 (mine.running_mean, native.running_mean), (mine.running_var, native.running_var)]:
        assert torch.allclose(a, b, **tol)
    grad = torch.randn_like(z)
    ones = torch.ones(36, dtype=dtype)
    ref = torch.ops.aten.native_batch_norm_backward(grad, z, ones if affine[0] is None else affine[0], None, None,
                                                     mean, invstd, True, bn.eps, [True, True, True])
    for a, b in zip(lean_ops._norm_backward(grad, z, mean, invstd, bn.eps, affine[0]), ref):
        assert torch.allclose(a, b, **tol)


@pytest.mark.parametrize("drop_prob, fmt, channels", [(0.0, "contiguous", 8), (0.3, "contiguous", 8),
                                                      (0.0, "channels_last", 12)])
def test_a_training_network_gets_the_plain_gradients_for_less_memory(drop_prob, fmt, channels):
    """DARTS_V2 with affine BatchNorms: logits, every gradient and the BatchNorm statistics of one training
    forward and backward equal the plain modules' (float64), keeping under 70% of their tensors (61% at
    DARTS's C=36, 20 cells); with drop path too (the node sums add into the lean chains' outputs in place),
    and channels-last at 12 channels (BatchNorms on rows of 4 pixels, see lean_ops._folds)."""
    torch.manual_seed(0)
    net = ModelSpec.resolve("DARTS_V2", "cifar", 10, init_channels=channels, layers=8,
                            auxiliary=False).build().double().to(memory_format=FORMATS[fmt])
    net.drop_path_prob = drop_prob
    plain_net = copy.deepcopy(net)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=FORMATS[fmt])
    y = torch.randint(0, 10, (4,))
    lean_bytes = _saved_bytes(lambda t: copy.deepcopy(net)(t)[0], x)
    torch.manual_seed(1)
    lean_loss = F.cross_entropy(net(x)[0], y)
    with lean_ops.plain():
        plain_bytes = _saved_bytes(lambda t: copy.deepcopy(net)(t)[0], x)
        torch.manual_seed(1)
        plain_loss = F.cross_entropy(plain_net(x)[0], y)
        plain_grads = torch.autograd.grad(plain_loss, list(plain_net.parameters()))
    assert torch.allclose(lean_loss, plain_loss, rtol=1e-12, atol=0)
    for a, b in zip(torch.autograd.grad(lean_loss, list(net.parameters())), plain_grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-13)
    for a, b in zip(net.buffers(), plain_net.buffers()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert lean_bytes < 0.7 * plain_bytes, (lean_bytes, plain_bytes)


def test_autocast_runs_the_plain_modules():
    """Under AMP the forward's precisions would not be those of backward's recomputations."""
    torch.manual_seed(0)
    op = MixedOp(4, 1, PRIMITIVE_SETS["DARTS"], "darts", 32)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = torch.softmax(torch.randn(len(op._ops)), 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lean_ops.enabled(x)
        out = op(x, w)
    assert out.shape == x.shape and op._plans is None       # never planned: the plain modules ran
    assert lean_ops.enabled(x)


def test_a_mixed_op_under_autocast_gets_gradients_near_fp32s():
    """Every op's backward, the dilated convolutions' faster one included, meets the bf16 gradients of an
    autocast forward (a CUDA --amp search crashed in the dilated convolution's backward before)."""
    torch.manual_seed(0)
    op = MixedOp(8, 1, PRIMITIVE_SETS["DARTS"], "darts", 32)
    x = torch.randn(4, 8, 8, 8)
    w = torch.softmax(torch.randn(len(op._ops)), 0)
    grads = []
    for dtype in (None, torch.bfloat16):
        x_ = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = op(x_, w)
        out.float().square().sum().backward()
        grads.append(torch.cat([x_.grad.flatten(), *(p.grad.flatten() for p in op.parameters())]))
        op.zero_grad(set_to_none=True)
    assert torch.isfinite(grads[1]).all()
    assert torch.cosine_similarity(grads[1], grads[0], dim=0) > 0.999          # bf16 rounds single elements
    assert (grads[1] - grads[0]).norm() < 0.05 * grads[0].norm()
