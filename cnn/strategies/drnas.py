"""DrNAS (Chen, Wang, Cheng, Tang and Hsieh, ICLR 2021): the op weights of every edge are a sample of
a Dirichlet distribution whose concentrations are learned, with a KL regularizer toward a
Dirichlet prior.

Concentrations ``beta = elu(alpha) + 1`` (positive, 1 at alpha = 0). Each training forward draws
the op weights of every edge from ``Dirichlet(beta)`` with the reparameterized sampler of
``torch.distributions`` (implicit reparameterization of the Gamma draws), so the architecture step
optimizes the expected loss over the distribution, whose exploration keeps the search away from
sharp regions. In eval mode (the validation score, DARTS-PT's scoring) the supernet uses the
Dirichlet mean ``beta / sum(beta)``, which is also what the genotype is parsed from (DARTS's
parse). The architecture loss adds ``--kl_weight`` (1e-3) times the sum over every edge of
``KL(Dirichlet(beta) || Dirichlet(1, ..., 1))``, in closed form (``dirichlet_kl``).

Settings (xiangning-chen/DrNAS DARTS-space/train_search.py): batch 64, lr 0.1 cosine to 0, Adam
6e-4 (betas 0.5, 0.999, weight decay 1e-3), 50 epochs of which the first 10 train the weights
only. Not done here: DrNAS's progressive learning (partial channels K=6 then 4 with the ops
pruned from 8 to 4 per edge after 25 epochs, each stage starting with 10 weight-only epochs); this
is its one-stage search on all channels. Its code parses the genotype from softmax(alpha), which
ranks the ops of an edge the same way (both are increasing in alpha) but may rank edges
differently; we parse the distribution's mean, as the paper describes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import cli
from architect import ArchTerms
from model_search import EdgeWeights, SearchError, SearchNetwork
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellSearchConfig, CellStrategy
from supernet import Supernet


@dataclass(frozen=True)
class DrNASConfig(CellSearchConfig):
    kl_weight: float = 1e-3


def dirichlet_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(Dirichlet(a) || Dirichlet(b)) of every row (last dim: the components), in closed form."""
    a0, b0 = a.sum(-1), b.sum(-1)
    return (torch.lgamma(a0) - torch.lgamma(a).sum(-1) - torch.lgamma(b0) + torch.lgamma(b).sum(-1)
            + ((a - b) * (torch.digamma(a) - torch.digamma(a0).unsqueeze(-1))).sum(-1))


class DirichletNetwork(SearchNetwork):
    """The cell supernet whose op weights are Dirichlet samples (training) or means (eval)."""

    def concentrations(self) -> list[torch.Tensor]:
        return [F.elu(a) + 1 for a in self.alphas]

    def coefficients(self) -> list[EdgeWeights]:
        betas = self.concentrations()
        if self.training:
            # Unvalidated: validation reads every concentration on the host at each forward (a sync per step on
            # a GPU) and raised a bare ValueError once a diverging step drove one to 0; a sample of such
            # concentrations is NaN or makes the KL term infinite, which the divergence watch reports.
            return [EdgeWeights(torch.distributions.Dirichlet(b, validate_args=False).rsample()) for b in betas]
        return [EdgeWeights(b / b.sum(-1, keepdim=True)) for b in betas]

    @torch.no_grad()
    def probabilities(self) -> np.ndarray:
        """The Dirichlet means, (n_sets, n_edges, n_ops) float64."""
        return np.stack([(b / b.sum(-1, keepdim=True)).cpu().double().numpy() for b in self.concentrations()])


@STRATEGIES.register
class DrNAS(CellStrategy):
    name = "drnas"
    config_type = DrNASConfig
    network_class = DirichletNetwork
    DEFAULTS = {**DARTS_DEFAULTS, "learning_rate": 0.1, "learning_rate_min": 0.0, "arch_learning_rate": 6e-4,
                "pretrain_epochs": 10, "epochs": 40, "kl_weight": 1e-3}
    SOURCE = ("DrNAS paper (Chen et al., ICLR 2021) Sec. 2 and xiangning-chen/DrNAS DARTS-space/train_search.py and "
              "model_search.py: batch 64, lr 0.1 cosine to 0, Adam 6e-4, 10 weight-only + 40 epochs, KL weight 1e-3 "
              "toward Dirichlet(1); one stage, without the progressive partial channels")
    SUMMARY = "op weights sampled from learned Dirichlet distributions (reparameterized), KL toward a Dirichlet prior"
    FLAGS = (Flag("--kl_weight", {"type": cli.non_negative_float,
                                  "help": "DrNAS: weight of the KL divergence to the Dirichlet(1) prior (default "
                                          "1e-3)"}),)
    config: DrNASConfig

    def check(self) -> None:
        super().check()
        if self.config.weighting_algorithm != "softmax":
            raise SearchError(f"--method drnas samples its op weights from Dirichlet distributions; it does not take "
                              f"--weighting_algorithm {self.config.weighting_algorithm}")

    def arch_terms(self, model: Supernet, loss, evaluate) -> ArchTerms:
        kl = sum(dirichlet_kl(b, torch.ones_like(b)).sum() for b in model.concentrations())
        return super().arch_terms(model, loss, evaluate).plus(self.config.kl_weight * kl, "kl_penalty")
