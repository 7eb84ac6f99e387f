"""SDARTS (Chen and Hsieh, ICML 2020): the network weights are trained under a perturbation of the
architecture weights, so that they fit a neighbourhood of the architecture rather than one point;
the loss landscape around the alphas becomes flat, and the architecture no longer jumps to the
sharp minima (skip connections) where DARTS collapses.

Both variants perturb the op weights ``w = softmax(alpha)`` of the network-weight step only (the
architecture step is DARTS's, at the unperturbed alphas, which the network step never moves):
``w + delta`` with ``|delta| <= epsilon`` elementwise, made a valid weighting again by SDARTS's
clip (each edge's weights clamped to [0, 1] and divided by their sum). Epsilon before search
epoch e of E grows linearly, ``0.03 + (epsilon - 0.03) * e / E``, to ``--epsilon`` (0.3).

``sdarts_rs``  random smoothing: delta uniform in [-epsilon, epsilon], new for every step.
``sdarts_adv`` adversarial: delta from a PGD attack on the training batch's loss (random start in
               the epsilon box, ``--attack_steps`` 7 sign-gradient ascent steps of 2 epsilon /
               steps, each clamped back into the box), with the supernet in eval mode; if the
               attack did not raise the loss above the unperturbed one, delta is 0.

Source: xiangning-chen/SmoothDARTS (sota/cnn/train_search.py, attacker/perturb.py): DARTS's
settings otherwise. One difference, on purpose: the box holds delta itself, before the clip;
the reference clamps before its clip, so its weights can leave the box by the renormalization.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

import cli
from architect import classification_objective
from model_search import EdgeWeights, SearchError
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellSearchConfig, CellStrategy

EPSILON_START = 0.03        # SDARTS: epsilon at the first search epoch


@dataclass(frozen=True)
class SDartsConfig(CellSearchConfig):
    epsilon: float = 0.3


@dataclass(frozen=True)
class SDartsAdvConfig(SDartsConfig):
    attack_steps: int = 7


def clip_weights(w: torch.Tensor) -> torch.Tensor:
    """SDARTS's clip: every row clamped to [0, 1] and normalized to sum 1 (a row clamped to all
    zeros puts 1 on its largest entry)."""
    clamped = w.clamp(0.0, 1.0)
    empty = clamped.sum(dim=-1, keepdim=True) == 0
    top = torch.zeros_like(w).scatter_(-1, w.argmax(dim=-1, keepdim=True), 1.0)
    clamped = torch.where(empty, top, clamped)
    return clamped / clamped.sum(dim=-1, keepdim=True)


def perturbed(clean: list[torch.Tensor], deltas: list[torch.Tensor]) -> list[EdgeWeights]:
    return [EdgeWeights(clip_weights(w + d)) for w, d in zip(clean, deltas)]


class SmoothedDarts(CellStrategy):
    """DARTS with the network step taken at perturbed op weights; subclasses draw the perturbation."""
    config_type: ClassVar[type] = SDartsConfig
    DEFAULTS: ClassVar[dict] = {**DARTS_DEFAULTS, "epsilon": 0.3}
    FLAGS = (Flag("--epsilon", {"type": cli.non_negative_float,
                                "help": "SDARTS: largest perturbation of the op weights, reached at the last search "
                                        "epoch from 0.03 (default 0.3)"}),)
    config: SDartsConfig
    current_epsilon = EPSILON_START

    def check(self) -> None:
        super().check()
        if self.config.single_level:
            raise SearchError(f"--method {self.config.method} perturbs the network step of a bi-level search; it "
                              f"does not combine with --single_level")

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        self.current_epsilon = EPSILON_START + (self.config.epsilon - EPSILON_START) * self.progress(epoch)
        return {"epsilon": self.current_epsilon}

    def perturbation(self, model: nn.Module, batch, clean: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def network_loss(self, model: nn.Module, batch):
        clean = [w.ops.detach() for w in model.coefficients()]
        weights = perturbed(clean, self.perturbation(model, batch, clean))
        return classification_objective(lambda x: model(x, coefficients=weights), batch)


@STRATEGIES.register
class SDartsRS(SmoothedDarts):
    name = "sdarts_rs"
    SOURCE = ("SDARTS paper (Chen and Hsieh, ICML 2020) Sec. 4 and xiangning-chen/SmoothDARTS "
              "(--perturb_alpha random --epsilon_alpha 0.3); DARTS's other settings")
    SUMMARY = "network step at op weights plus uniform noise in [-epsilon, epsilon], epsilon 0.03 to 0.3"

    def perturbation(self, model: nn.Module, batch, clean: list[torch.Tensor]) -> list[torch.Tensor]:
        eps = self.current_epsilon
        return [torch.empty_like(w).uniform_(-eps, eps) for w in clean]


@STRATEGIES.register
class SDartsAdv(SmoothedDarts):
    name = "sdarts_adv"
    config_type = SDartsAdvConfig
    DEFAULTS = {**SmoothedDarts.DEFAULTS, "attack_steps": 7}
    SOURCE = ("SDARTS paper (Chen and Hsieh, ICML 2020) Sec. 4 and xiangning-chen/SmoothDARTS attacker/perturb.py "
              "(--perturb_alpha pgd_linf --epsilon_alpha 0.3, 7 steps of 2 epsilon / 7); DARTS's other settings")
    SUMMARY = "network step at op weights under a PGD attack within epsilon (7 steps), epsilon 0.03 to 0.3"
    FLAGS = (*SmoothedDarts.FLAGS,
             Flag("--attack_steps", {"type": cli.positive_int,
                                     "help": "SDARTS-ADV: PGD steps of the perturbation (default 7)"}))
    config: SDartsAdvConfig

    def perturbation(self, model: nn.Module, batch, clean: list[torch.Tensor]) -> list[torch.Tensor]:
        eps, steps = self.current_epsilon, self.config.attack_steps

        def loss_at(deltas: list[torch.Tensor]) -> torch.Tensor:
            return classification_objective(lambda x: model(x, coefficients=perturbed(clean, deltas)), batch)[0]

        training = model.training
        model.eval()
        with torch.no_grad():
            unperturbed = loss_at([torch.zeros_like(w) for w in clean])
        deltas = [torch.empty_like(w).uniform_(-eps, eps) for w in clean]
        for _ in range(steps):
            for d in deltas:
                d.requires_grad_(True)
            grads = torch.autograd.grad(loss_at(deltas), deltas)
            with torch.no_grad():
                deltas = [(d + 2 * eps / steps * g.sign()).clamp(-eps, eps) for d, g in zip(deltas, grads)]
        with torch.no_grad():
            worse = loss_at(deltas) > unperturbed
        model.train(training)
        return [torch.where(worse, d, torch.zeros_like(d)) for d in deltas]
