"""DrNAS: op weights sampled from learned Dirichlet distributions, the KL toward the Dirichlet prior."""
import os

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

import cli
import train_search
from scripts import assert_one_sentence_error, run_script
from strategies.drnas import dirichlet_kl
from test_strategies import tiny_engine

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_samples_lie_on_the_simplex_and_carry_the_gradient_to_the_alphas():
    _, engine = tiny_engine("drnas", ())
    model = engine.model.train()
    torch.manual_seed(0)
    first, second = model.coefficients(), model.coefficients()
    for a, b in zip(first, second):
        assert (a.ops >= 0).all() and not torch.equal(a.ops, b.ops)
        torch.testing.assert_close(a.ops.sum(-1), torch.ones(a.ops.shape[0]))
    sum((w.ops * torch.arange(w.ops.shape[1])).sum() for w in first).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in model.alphas)


def test_the_samples_average_to_the_dirichlet_mean_which_eval_and_the_genotype_use():
    _, engine = tiny_engine("drnas", ())
    model = engine.model
    with torch.no_grad():
        model.alphas[0].copy_(torch.linspace(-0.5, 2.0, model.alphas[0].numel()).view_as(model.alphas[0]))
        beta = torch.nn.functional.elu(model.alphas[0]) + 1                # elu(alpha) + 1
        mean = beta / beta.sum(-1, keepdim=True)
        torch.manual_seed(0)
        model.train()
        average = torch.stack([model.coefficients()[0].ops for _ in range(4000)]).mean(0)
        torch.testing.assert_close(average, mean, atol=0.01, rtol=0)
        model.eval()
        assert torch.equal(model.coefficients()[0].ops, mean)
    np.testing.assert_allclose(model.probabilities()[0], mean.double().numpy(), rtol=1e-6)


def test_the_kl_term_matches_torch_distributions():
    torch.manual_seed(0)
    a, b = torch.rand(5, 8, dtype=torch.float64) * 3 + 0.1, torch.rand(5, 8, dtype=torch.float64) * 3 + 0.1
    torch.testing.assert_close(dirichlet_kl(a, b), kl_divergence(Dirichlet(a), Dirichlet(b)))
    torch.testing.assert_close(dirichlet_kl(a, a), torch.zeros(5, dtype=torch.float64))
    strategy, engine = tiny_engine("drnas", ("--kl_weight", "0.5"))
    model = engine.model
    terms = strategy.arch_terms(model, None, None)
    expected = 0.5 * sum(kl_divergence(Dirichlet(torch.nn.functional.elu(al) + 1),
                                       Dirichlet(torch.ones_like(al))).sum() for al in model.alphas)
    torch.testing.assert_close(terms.penalty, expected)
    torch.autograd.grad(terms.penalty, model.arch_parameters())       # differentiable in the alphas


def test_drnas_refuses_another_weighting(capsys):
    with pytest.raises(SystemExit):
        cli.run(lambda: train_search.main(["--method", "drnas", "--weighting_algorithm", "sigmoid"]))
    assert capsys.readouterr().err.strip() == ("error: --method drnas samples its op weights from Dirichlet "
                                               "distributions; it does not take --weighting_algorithm sigmoid")


def test_a_search_whose_concentrations_diverge_stops_in_one_sentence(tmp_path):
    # an absurd architecture learning rate drives concentrations to 0 and the alphas to infinity: the
    # unvalidated Dirichlet samples them, and the run reports the divergence, with nothing saved
    env = {**os.environ, "DARTS_LOGS_DIR": str(tmp_path / "logs")}
    (tmp_path / "genotypes").mkdir()
    done = run_script("tests/patched_script.py", "--genotypes_to", str(tmp_path / "genotypes"), "--",
                      "cnn/train_search.py", "--method", "drnas", "--dataset", "digits", "--batch_size", "32",
                      "--init_channels", "4", "--layers", "3", "--epochs", "1", "--pretrain_epochs", "0",
                      "--max_steps", "3", "--arch_learning_rate", "1e30", env=env)
    assert_one_sentence_error(done, "training diverged in epoch 1", "lower --learning_rate or --arch_learning_rate")
    (run,) = (tmp_path / "logs" / "search").iterdir()
    assert not (run / "checkpoint.pt").exists() and not list((tmp_path / "genotypes").iterdir())

