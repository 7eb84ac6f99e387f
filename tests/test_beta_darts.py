"""beta-DARTS: the Beta-Decay term (mean logsumexp of the alphas) and its linear schedule."""
import math

import pytest
import torch

from strategies.beta_darts import beta_decay
from test_strategies import tiny_engine

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_beta_decay_term_is_the_mean_logsumexp_over_every_edge():
    normal = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]])
    reduce = torch.tensor([[math.log(7.0), 0.0]])
    assert beta_decay([normal, reduce]).item() == pytest.approx((math.log(4) + math.log(4) + math.log(8)) / 3)


def test_the_weight_rises_linearly_as_in_the_reference_code():
    strategy, _ = tiny_engine("beta_darts", ())          # DARTS's 50 epochs: 50 * epoch / 100
    assert [strategy.begin_epoch(e)["beta_decay_weight"] for e in (0, 25, 49)] == pytest.approx([0.0, 12.5, 24.5])


def test_the_penalty_gradient_is_the_weighted_softmax_over_the_number_of_edges():
    strategy, engine = tiny_engine("beta_darts", ())
    model = engine.model
    strategy.begin_epoch(10)                              # weight 25 * 10 / 50 = 5
    with torch.no_grad():
        for a in model.alphas:
            a.copy_(torch.randn_like(a))
    terms = strategy.arch_terms(model, None, None)
    grads = torch.autograd.grad(terms.penalty, model.arch_parameters())
    edges = sum(a.shape[0] for a in model.alphas)         # 2 sets of 5 edges
    assert edges == 10
    for a, g in zip(model.alphas, grads):
        torch.testing.assert_close(g, 5.0 * torch.softmax(a.detach(), -1) / edges)
    assert terms.stats["beta_decay_penalty"].item() == pytest.approx(5.0 * beta_decay(list(model.alphas)).item())


def test_an_architecture_step_adds_the_penalty_gradient_to_the_data_gradient():
    strategy, engine = tiny_engine("beta_darts", ())
    batch = (torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    strategy.begin_epoch(0)
    plain, _, _ = engine.architect.objective_gradients(batch)
    strategy.begin_epoch(50)                              # weight 25
    regularized, _, stats = engine.architect.objective_gradients(batch)
    for a, p, r in zip(engine.model.alphas, plain, regularized):
        torch.testing.assert_close(r - p, 25.0 * torch.softmax(a.detach(), -1) / 10)
    assert stats["beta_decay_penalty"] > 0
