import pytest
import torch

from operations import OPS, OpError, build_op, family_op_names


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("family", list(OPS))
@pytest.mark.parametrize("size", [16, 15])
def test_every_op_keeps_or_halves_the_resolution(family, size):
    x = torch.randn(2, 8, size, size)
    for name in family_op_names(family):
        for stride in (1, 2):
            op = build_op(name, 8, stride, family=family, mid_channels=4).eval()
            out = op(x)
            expected = size if stride == 1 else (size + 1) // 2
            assert out.shape == (2, 8, expected, expected), (family, name, stride)


def test_darts_op_sizes_match_the_darts_layer_structure():
    # sep conv: two (depthwise kxk + pointwise + BN) blocks
    assert n_params(build_op("sep_conv_3x3", 16, 1)) == 2 * (16 * 9 + 16 * 16 + 2 * 16)
    assert n_params(build_op("dil_conv_5x5", 16, 1)) == 16 * 25 + 16 * 16 + 2 * 16
    assert n_params(build_op("conv_7x1_1x7", 16, 1)) == 2 * 16 * 16 * 7 + 2 * 16
    assert n_params(build_op("skip_connect", 16, 2)) == 2 * 16 * 8 + 2 * 16
    assert n_params(build_op("skip_connect", 16, 1)) == 0


def test_ddarts_op_sizes_match_its_layer_structure():
    C = 8
    assert n_params(build_op("simple_conv_5x5", C, 1)) == C * C * 25 + 2 * C
    assert n_params(build_op("conv_3x1_1x3", C, 1)) == 2 * C * C * 3 + 2 * C
    bottleneck = C * C + 2 * C + C * C * 9 + 2 * C + C * 4 * C + 2 * 4 * C + 4 * C * C + 2 * C
    assert n_params(build_op("bottleneck_1x3x1", C, 1)) == bottleneck


def test_sharp_ops_are_sharpsepconvs_with_their_middle_width():
    C, mid = 16, 32
    def sharp_sep(c_mid, k=3):
        return C * k * k + C * c_mid + 2 * c_mid + c_mid * k * k + c_mid * C + 2 * C
    assert n_params(build_op("sep_conv_3x3", C, 1, family="sharp")) == sharp_sep(C)
    assert n_params(build_op("dil_conv_3x3", C, 1, family="sharp")) == sharp_sep(C)
    assert n_params(build_op("flood_conv_3x3", C, 1, family="sharp")) == sharp_sep(4 * C)
    assert n_params(build_op("choke_conv_3x3", C, 1, family="sharp", mid_channels=mid)) == sharp_sep(mid)
    # same name, different module: the family is never swapped silently
    assert n_params(build_op("dil_conv_3x3", C, 1, family="darts")) != sharp_sep(C)


def test_sharp_average_pool_counts_padding_and_darts_does_not():
    x = torch.ones(1, 1, 4, 4)
    corner_sharp = build_op("avg_pool_3x3", 1, 1, family="sharp")(x)[0, 0, 0, 0].item()
    corner_darts = build_op("avg_pool_3x3", 1, 1, family="darts")(x)[0, 0, 0, 0].item()
    assert corner_darts == pytest.approx(1.0)
    assert corner_sharp == pytest.approx(4 / 9)


def test_unknown_op_names_the_family_that_has_it():
    with pytest.raises(OpError, match="--ops sharp"):
        build_op("choke_conv_3x3", 8, 1, family="darts")
    with pytest.raises(OpError, match="known ops"):
        build_op("no_such_op", 8, 1)
    with pytest.raises(OpError, match="op family"):
        build_op("sep_conv_3x3", 8, 1, family="nope")


def test_factorized_reduce_on_odd_input_matches_even_behaviour():
    op = build_op("skip_connect", 4, 2).eval()
    x = torch.randn(1, 4, 9, 9)
    assert op(x).shape == (1, 4, 5, 5)
    # on even sizes it is exactly the DARTS computation (no padding involved)
    even = torch.randn(1, 4, 8, 8)
    relu = torch.relu(even)
    darts = op.bn(torch.cat([op.conv_1(relu), op.conv_2(relu[:, :, 1:, 1:])], dim=1))
    assert torch.equal(op(even), darts)


@pytest.mark.parametrize("side", [8, 7])
def test_factorized_reduce_gradients_match_autograd_and_keep_channels_last(side):
    from operations import FactorizedReduce, _FactorizedHalves, factorized_halves
    torch.manual_seed(0)
    op = FactorizedReduce(6, 8).double()
    x = torch.randn(2, 6, side, side, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    g = torch.randn(2, 8, (side + 1) // 2, (side + 1) // 2, dtype=torch.float64)
    weights = (op.conv_1.weight, op.conv_2.weight)
    ours = torch.autograd.grad(op.pre_norm(x), (x, *weights), g)
    plain = torch.autograd.grad(factorized_halves(x, *weights), (x, *weights), g)   # autograd through the slices
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert ours[0].stride(1) == 1 and plain[0].stride(1) != 1    # channels last: what the custom backward keeps
    # second derivatives too (the exact hypergradient differentiates a network gradient once more)
    small = (x.detach()[:1, :, :5, :5].clone().requires_grad_(), *(w.detach().clone().requires_grad_() for w in weights))
    assert torch.autograd.gradgradcheck(_FactorizedHalves.apply, small)
