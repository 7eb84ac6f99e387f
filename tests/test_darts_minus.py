"""DARTS-: an auxiliary skip beside every edge's mixed op, its coefficient decayed linearly to 0."""
import pytest
import torch

from genotypes import PRIMITIVE_SETS
from operations import FactorizedReduce
from strategies.darts_minus import AuxiliarySkipMixedOp, SkipCoefficient
from test_strategies import tiny_engine

DARTS = PRIMITIVE_SETS["DARTS"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_skip_coefficient_decays_linearly_from_one_to_zero_over_the_search():
    strategy, _ = tiny_engine("darts_minus", ("--epochs", "10"))
    assert [strategy.begin_epoch(e)["auxiliary_skip"] for e in (0, 5, 9, 10)] == pytest.approx([1.0, 0.5, 0.1, 0.0])
    strategy, _ = tiny_engine("darts_minus", ("--epochs", "4", "--pretrain_epochs", "2", "--auxiliary_skip", "0.8"))
    assert [strategy.begin_epoch(e)["auxiliary_skip"] for e in range(7)] == pytest.approx([0.8, 0.8, 0.8, 0.6, 0.4,
                                                                                            0.2, 0.0])


@pytest.mark.parametrize("stride", [1, 2])
def test_an_edge_adds_the_scaled_skip_to_its_mixed_op(stride):
    torch.manual_seed(0)
    coefficient = SkipCoefficient(0.3)
    edge = AuxiliarySkipMixedOp(8, stride, DARTS, "darts", 32, coefficient=coefficient).eval()
    assert isinstance(edge.skip, FactorizedReduce if stride == 2 else torch.nn.Identity)
    x, w = torch.randn(2, 8, 6, 6), torch.softmax(torch.randn(len(DARTS)), 0)
    with torch.no_grad():
        mixed, skip = edge.mixed(x, w), edge.skip(x)
        torch.testing.assert_close(edge(x, w), mixed + 0.3 * skip)
        if stride == 1:       # no op at all: the edge is 0.3 x exactly
            assert torch.equal(edge(x, torch.zeros(len(DARTS))), 0.3 * x)
        coefficient.value = 0.0
        assert torch.equal(edge(x, w), mixed)


def test_the_supernet_follows_the_schedule_and_the_skip_is_no_candidate():
    strategy, engine = tiny_engine("darts_minus", ("--epochs", "2"))
    model = engine.model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        strategy.begin_epoch(0)
        first = model(x)
        strategy.begin_epoch(2)
        assert not torch.allclose(first, model(x))
    assert engine.model.alphas[0].shape[1] == len(DARTS)      # the skip has no alpha and is never derived
