"""DARTS- (Chu, Wang, Zhang, Zhang, Wei and Li, ICLR 2021): an auxiliary skip connection on every
edge, beside its mixed op, whose coefficient decays linearly from ``--auxiliary_skip`` (1) to 0
over the search.

The skip gives the gradient a path that no op has to provide, so the search no longer favours
``skip_connect`` for the ease of training it brings (the unfair advantage behind DARTS's
collapse); as its coefficient reaches 0 the supernet becomes DARTS's again, and the genotype is
DARTS's parse of the alphas (the auxiliary skip is no candidate and never in a genotype).

Edge: ``mixed(x) + beta * skip(x)`` with ``skip`` the identity on a normal edge and a
``FactorizedReduce`` without affine parameters on a reduction edge (stride 2), as in
Meituan-AutoML/DARTS- (``--auxiliary_skip``, its ``linear`` decay). Coefficient before search epoch
e (from 0) of E: ``beta = auxiliary_skip * (1 - e / E)``: 1 at the first epoch, 0.5 at the middle,
1/E at the last. Every other setting is DARTS's (DARTS- searches with DARTS's settings).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

import cli
from model_search import MixedOp, MixedOpFactory
from operations import FactorizedReduce
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellSearchConfig, CellStrategy


@dataclass(frozen=True)
class DartsMinusConfig(CellSearchConfig):
    auxiliary_skip: float = 1.0


class SkipCoefficient:
    """The one coefficient every edge's auxiliary skip is scaled by, set by the schedule each epoch."""

    def __init__(self, value: float):
        self.value = value


class AuxiliarySkipMixedOp(nn.Module):
    """A mixed op plus ``coefficient.value * skip(x)``; same contract as MixedOp (cnn/model_search.py)."""

    def __init__(self, C: int, stride: int, primitives: tuple[str, ...], family: str, mid_channels: int, *,
                 coefficient: SkipCoefficient):
        super().__init__()
        self.mixed = MixedOp(C, stride, primitives, family, mid_channels)
        self.skip = FactorizedReduce(C, C, affine=False) if stride == 2 else nn.Identity()
        self.coefficient = coefficient

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor, active: int | None = None) -> torch.Tensor:
        out = self.mixed(x, coefficients, active)
        if self.coefficient.value == 0:
            return out
        return out + self.coefficient.value * self.skip(x)


@STRATEGIES.register
class DartsMinus(CellStrategy):
    name = "darts_minus"
    config_type = DartsMinusConfig
    DEFAULTS = {**DARTS_DEFAULTS, "auxiliary_skip": 1.0}
    SOURCE = ("DARTS- paper (Chu et al., ICLR 2021) Sec. 3 and Meituan-AutoML/DARTS- train_search.py: an auxiliary "
              "skip with coefficient 1 decayed linearly to 0 over the 50 epochs; DARTS's other settings")
    SUMMARY = "an auxiliary skip beside every edge's mixed op, its coefficient decayed linearly from 1 to 0"
    FLAGS = (Flag("--auxiliary_skip", {"type": cli.non_negative_float,
                                       "help": "DARTS-: initial coefficient of the auxiliary skip on every edge, "
                                               "decayed linearly to 0 over the search (default 1)"}),)
    config: DartsMinusConfig

    def __init__(self, config: DartsMinusConfig) -> None:
        super().__init__(config)
        self.skip = SkipCoefficient(config.auxiliary_skip)

    def mixed_op(self) -> MixedOpFactory:
        return partial(AuxiliarySkipMixedOp, coefficient=self.skip)

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        self.skip.value = self.config.auxiliary_skip * (1.0 - self.progress(epoch))
        return {"auxiliary_skip": self.skip.value}
