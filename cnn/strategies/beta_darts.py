"""beta-DARTS (Ye, Li, Zhang, Zhang, Li and Ouyang, CVPR 2022): the Beta-Decay regularization of the
architecture weights, with a linearly growing weight.

Beta-Decay is the mean, over every edge of every weight set, of ``logsumexp(alpha)`` over the
edge's ops. Its gradient is the edge's softmax divided by the number of edges: it pulls every
alpha down in proportion to its op's weight, so that no edge's softmax can saturate on one op
(the beta, the softmax, stays smooth), which keeps the architecture step from sliding into
parameter-free ops. It is added to the architecture loss with the weight
``beta_decay_weight * e / E`` before search epoch e (from 0) of E; with the default 25 and DARTS's
50 epochs that is the reference code's ``0 + 50 * epoch / 100`` (0 at the first epoch, 24.5 at
the last). Every other setting is DARTS's (first order, Adam 3e-4, weight decay 1e-3 on the
alphas, as the reference code keeps them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import cli
from architect import ArchTerms
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellSearchConfig, CellStrategy
from supernet import Supernet


@dataclass(frozen=True)
class BetaDartsConfig(CellSearchConfig):
    beta_decay_weight: float = 25.0


def beta_decay(alphas: list[torch.Tensor]) -> torch.Tensor:
    """The mean over every edge (row) of every set of the logsumexp of its alphas."""
    return torch.cat([torch.logsumexp(a, dim=-1).flatten() for a in alphas]).mean()


@STRATEGIES.register
class BetaDarts(CellStrategy):
    name = "beta_darts"
    config_type = BetaDartsConfig
    DEFAULTS = {**DARTS_DEFAULTS, "beta_decay_weight": 25.0}
    SOURCE = ("beta-DARTS paper (Ye et al., CVPR 2022) Sec. 3 and Sunshine-Ye/Beta-DARTS optimizers/darts/architect.py "
              "(mlc_loss, weight 50 * epoch / 100); DARTS's other settings")
    SUMMARY = "Beta-Decay: the mean logsumexp of the alphas added to the architecture loss, weight rising linearly"
    FLAGS = (Flag("--beta_decay_weight", {"type": cli.non_negative_float,
                                          "help": "beta-DARTS: weight of the Beta-Decay term after the last search "
                                                  "epoch; it rises linearly from 0 (default 25)"}),)
    config: BetaDartsConfig
    weight = 0.0

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        self.weight = self.config.beta_decay_weight * self.progress(epoch)
        return {"beta_decay_weight": self.weight}

    def arch_terms(self, model: Supernet, loss, evaluate) -> ArchTerms:
        penalty = self.weight * beta_decay(model.alphas)
        return super().arch_terms(model, loss, evaluate).plus(penalty, "beta_decay_penalty")
