"""SDARTS: the network step at perturbed op weights (random or adversarial, within epsilon), the
architecture untouched by it."""
import pytest
import torch
import torch.nn.functional as F

import cli
import train_search
from strategies.sdarts import clip_weights, perturbed
from test_strategies import snapshot, tiny_engine

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(seed=0):
    torch.manual_seed(seed)
    return torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))


def test_the_clip_makes_every_edge_a_weighting_again():
    w = torch.tensor([[0.5, -0.1, 0.7], [-0.2, -0.1, -0.3]])
    torch.testing.assert_close(clip_weights(w), torch.tensor([[0.5 / 1.2, 0.0, 0.7 / 1.2], [0.0, 1.0, 0.0]]))


@pytest.mark.parametrize("method", ["sdarts_rs", "sdarts_adv"])
def test_epsilon_grows_linearly_from_003_to_its_maximum(method):
    strategy, _ = tiny_engine(method, ("--epochs", "10", "--epsilon", "0.2"))
    assert [strategy.begin_epoch(e)["epsilon"] for e in (0, 5, 10)] == pytest.approx([0.03, 0.115, 0.2])


@pytest.mark.parametrize("method", ["sdarts_rs", "sdarts_adv"])
def test_the_perturbation_stays_within_epsilon_and_the_network_step_leaves_the_alphas(method):
    strategy, engine = tiny_engine(method, ("--epochs", "2"))
    model = engine.model
    strategy.begin_epoch(1)                                    # epsilon 0.165
    clean = [w.ops.detach() for w in model.coefficients()]
    torch.manual_seed(5)
    deltas = strategy.perturbation(model, batch(), clean)
    assert model.training
    largest = max(d.abs().max().item() for d in deltas)
    assert 0.1 < largest <= 0.165 + 1e-7
    alphas, weights = snapshot(model.arch_parameters()), snapshot(model.weight_parameters())
    torch.manual_seed(5)
    loss, _, _ = engine.step(batch(), lambda: batch(1), False)     # the network step alone
    assert all(torch.equal(a, b) for a, b in zip(alphas, model.arch_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(weights, model.weight_parameters()))
    # the step's loss was the loss at clip(softmax(alpha) + delta), with the same delta
    with torch.no_grad():
        for p, w in zip(model.weight_parameters(), weights):
            p.copy_(w)
        x, y = batch()
        torch.testing.assert_close(loss, F.cross_entropy(model(x, coefficients=perturbed(clean, deltas)), y))


def test_random_smoothing_draws_uniform_noise():
    strategy, engine = tiny_engine("sdarts_rs", ())
    strategy.current_epsilon = 0.3
    clean = [torch.zeros(2000, 8)]
    delta = strategy.perturbation(engine.model, batch(), clean)[0]
    assert delta.abs().max() <= 0.3 and delta.mean().abs() < 0.01 and delta.std().item() == pytest.approx(
        0.3 / 3 ** 0.5, rel=0.03)


def test_the_adversarial_perturbation_increases_the_loss():
    strategy, engine = tiny_engine("sdarts_adv", ())
    model = engine.model
    strategy.current_epsilon = 0.3
    with torch.no_grad():
        for a in model.alphas:
            a.copy_(torch.randn_like(a))
    x, y = batch()
    clean = [w.ops.detach() for w in model.coefficients()]
    torch.manual_seed(1)
    deltas = strategy.perturbation(model, (x, y), clean)
    assert max(d.abs().max().item() for d in deltas) <= 0.3 + 1e-7
    model.eval()
    with torch.no_grad():
        before = F.cross_entropy(model(x, coefficients=perturbed(clean, [torch.zeros_like(w) for w in clean])), y)
        after = F.cross_entropy(model(x, coefficients=perturbed(clean, deltas)), y)
        noise = F.cross_entropy(model(x, coefficients=perturbed(clean, [torch.empty_like(w).uniform_(-0.3, 0.3)
                                                                        for w in clean])), y)
    assert after > before and after > noise


def test_sdarts_refuses_a_single_level_search(capsys):
    with pytest.raises(SystemExit):
        cli.run(lambda: train_search.main(["--method", "sdarts_rs", "--single_level"]))
    assert capsys.readouterr().err.strip() == ("error: --method sdarts_rs perturbs the network step of a bi-level "
                                               "search; it does not combine with --single_level")
