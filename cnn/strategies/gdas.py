"""GDAS (Dong and Yang, "Searching for a Robust Neural Architecture in Four GPU Hours", CVPR 2019):
every forward pass samples one op per edge and runs only that op.

Sampling
    Per edge, Gumbel-softmax probabilities ``p = softmax((log_softmax(alpha) + g) / tau)`` with
    ``g = -log(E)``, ``E ~ Exp(1)``; the edge runs the op ``k = argmax p`` (a draw from
    softmax(alpha), whatever tau) with the coefficient ``h_k = 1 - p_k.detach() + p_k``: exactly 1
    in the forward pass, the gradient of ``p_k`` in the backward pass (straight-through), so the
    alphas learn through the one op that ran. One sample per set and forward pass, shared by the
    cells of the set, as in GDAS. A forward pass costs one op per edge (cnn/model_search.py's
    ``active``), which is why GDAS is fast.
Temperature
    ``tau`` falls linearly from ``--tau_max`` (10) at the first search epoch to ``--tau_min``
    (0.1) at the last (``tau_max - (tau_max - tau_min) * e / (epochs - 1)``), set before every
    epoch and logged and plotted as ``schedule/tau``.
Evaluation
    In eval mode (the held-out score of every epoch) each edge runs its strongest op, so that
    the score does not depend on a draw; GDAS's own code samples there too.
Genotype
    DARTS's parse of softmax(alpha).

Defaults (``SOURCE``): batch 256, lr 0.025 cosine to 0.001, 250 epochs, Adam 3e-4 with weight
decay 1e-3, tau 10 to 0.1. Differences, on purpose: GDAS's SGD is Nesterov with weight decay
5e-4; here DARTS's plain momentum SGD and ``--weight_decay`` (3e-4 unless given).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import cli
from model_search import EdgeWeights, MixedOp, MixedOpFactory, SearchError, SearchNetwork, SupernetSpec
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellSearchConfig, CellStrategy


@dataclass(frozen=True)
class GdasConfig(CellSearchConfig):
    tau_max: float = 10.0
    tau_min: float = 0.1


def gumbel_sample(alphas: torch.Tensor, tau: float) -> EdgeWeights:
    """One op per edge (row of `alphas`) drawn by the Gumbel-max trick, with straight-through coefficients."""
    exponential = torch.empty_like(alphas).exponential_().clamp_min(torch.finfo(alphas.dtype).tiny)
    probs = F.softmax((F.log_softmax(alphas, dim=-1) - exponential.log()) / tau, dim=-1)
    index = probs.argmax(dim=-1)
    hard = F.one_hot(index, alphas.shape[-1]).to(probs.dtype)
    return EdgeWeights(hard - probs.detach() + probs, active=tuple(index.tolist()))


def strongest(alphas: torch.Tensor) -> EdgeWeights:
    """Every edge's strongest op alone, with coefficient 1."""
    index = alphas.argmax(dim=-1)
    return EdgeWeights(F.one_hot(index, alphas.shape[-1]).to(alphas.dtype), active=tuple(index.tolist()))


class GdasNetwork(SearchNetwork):
    """The cell supernet whose every forward runs one sampled op per edge (module docstring)."""

    def __init__(self, spec: SupernetSpec, alphas_init="randn", *, mixed_op: MixedOpFactory = MixedOp,
                 tau: float = 10.0):
        super().__init__(spec, alphas_init, mixed_op=mixed_op)
        self.tau = tau

    def coefficients(self) -> list[EdgeWeights]:
        if not self.training:
            return [strongest(a.detach()) for a in self.alphas]
        return [gumbel_sample(a, self.tau) for a in self.alphas]


@STRATEGIES.register
class Gdas(CellStrategy):
    name = "gdas"
    config_type = GdasConfig
    network_class = GdasNetwork
    compile_refusal = ("GDAS picks one op per edge on the host at every forward, so torch.compile would trace "
                       "a new graph for every draw: run it without --compile")
    DEFAULTS = {**DARTS_DEFAULTS, "batch_size": 256, "epochs": 250, "tau_max": 10.0, "tau_min": 0.1}
    SOURCE = ("D-X-Y/AutoDL-Projects configs/search-opts/GDAS-NASNet-CIFAR.config and scripts (GDAS.sh): batch 256, "
              "lr 0.025 cosine to 0.001, 250 epochs, Adam 3e-4 wd 1e-3, tau 10 to 0.1 (GDAS paper, Sec. 3.2)")
    SUMMARY = "Gumbel-softmax sample of one op per edge per forward (hard, straight-through), tau annealed 10 to 0.1"
    FLAGS = (Flag("--tau_max", {"type": cli.positive_float, "help": "GDAS: Gumbel-softmax temperature of the first "
                                "search epoch (default 10)"}),
             Flag("--tau_min", {"type": cli.positive_float, "help": "GDAS: temperature of the last search epoch "
                                "(default 0.1)"}))
    config: GdasConfig

    def check(self) -> None:
        super().check()
        c = self.config
        if c.tau_min > c.tau_max:
            raise SearchError(f"--tau_min {c.tau_min:g} exceeds --tau_max {c.tau_max:g}; the temperature falls")
        if c.weighting_algorithm not in ("softmax", "scalar"):
            raise SearchError(f"--method gdas samples from a softmax; --weighting_algorithm "
                              f"{c.weighting_algorithm} does not combine with it")

    def build_supernet(self, num_classes: int, network: str, stored: dict | None = None) -> GdasNetwork:
        """The supernet, kept so that ``begin_epoch`` sets its temperature."""
        self.supernet = super().build_supernet(num_classes, network, stored)
        self.supernet.tau = self.temperature(0)
        return self.supernet

    def temperature(self, epoch: int) -> float:
        c = self.config
        done = min(max(epoch - c.pretrain_epochs, 0), c.epochs - 1)
        return c.tau_max - (c.tau_max - c.tau_min) * done / max(c.epochs - 1, 1)

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        self.supernet.tau = self.temperature(epoch)
        return {"tau": self.supernet.tau}

    def describe_update(self) -> str:
        return f"{super().describe_update()} | Gumbel-softmax, one op per edge, tau {self.config.tau_max:g} to " \
               f"{self.config.tau_min:g}"
