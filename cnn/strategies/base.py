"""The base of every image search strategy: its typed settings and the default of every hook.

``CellStrategy`` is DARTS as quark0/darts runs it, with every choice exposed as a hook that a
method overrides (one file in this package per method):

``build_supernet``  the search space: the cell supernet (``network_class`` with the edges
                    ``mixed_op`` builds, alphas from ``initial_alphas``) or sharpDARTS's grid;
``arch_config``     the architecture optimizer and update (first/second order, per-tensor groups);
``arch_terms``      additions to the architecture objective (core/architect.py: a penalty, gradient
                    factors); D-DARTS's separation and ablation terms here, when configured;
``network_loss``    the loss of the network-weight step (SDARTS perturbs the architecture there);
``begin_epoch``     schedules set before each epoch (temperatures, coefficients, penalty weights);
``searching``       whether the architecture moves in an epoch (pretraining epochs do not);
``derive``          the genotype the supernet stands for (DARTS-PT's selection replaces it);
``stop_rules``      early-stopping rules (DARTOpti's distance plateau, DARTS+).

Every setting a strategy reads is a field of its config (a frozen dataclass, ``config_type``),
filled from the resolved flags; a method with settings of its own subclasses ``CellSearchConfig``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn

from architect import ArchConfig, ArchTerms, classification_objective
from ddarts_losses import DDartsLosses
from genotypes import PRIMITIVE_SETS
from model_search import Baseline, EdgeWeights, MixedOp, MixedOpFactory, SearchError, SearchNetwork, SupernetSpec, make_spec
from multichannel import MultiChannelSearchNetwork
from search_strategy import Strategy
from supernet import Supernet
from training import evaluate

ARCH_LR_MIN = 0.001          # D-DARTS: end of each cell's cosine schedule


@dataclass(frozen=True)
class CellSearchConfig:
    """What every image search strategy reads (the flags of cnn/train_search.py)."""
    method: str
    # the search space
    primitives: str
    ops: str
    mid_channels: int
    weighting_algorithm: str
    layout: str
    alphas_init: str
    init_channels: int
    layers: int
    steps: int
    multiplier: int
    multi_channel: bool
    # the network weights
    learning_rate: float
    learning_rate_min: float
    momentum: float
    weight_decay: float
    grad_clip: float
    lr_schedule: str
    lr_power_annealing_exponent_order: float
    warmup_epochs: int
    epochs: int
    pretrain_epochs: int
    # the architecture
    arch_learning_rate: float
    arch_weight_decay: float
    arch_betas: tuple[float, float]
    unrolled: bool
    single_level: bool
    sep_loss: str
    aux_loss_weight: float
    cell_loss: str
    abl_loss_weight: float
    # the genotype
    parse_method: str
    op_threshold: float


# DARTS's search settings (quark0/darts cnn/train_search.py; DARTS paper, Sec. 3.1), which every
# method inherits unless it says otherwise.
DARTS_DEFAULTS = dict(weighting_algorithm="softmax", primitives="DARTS", ops="darts", layout="shared",
                      alphas_init="randn", batch_size=64, init_channels=16, learning_rate=0.025,
                      learning_rate_min=0.001, arch_learning_rate=3e-4, arch_betas=(0.5, 0.999), epochs=50,
                      sep_loss="none", aux_loss_weight=0.0, cell_loss="none", abl_loss_weight=0.0,
                      lr_schedule="cosine", warmup_epochs=0, pretrain_epochs=0, parse_method="darts")


class CellStrategy(Strategy):
    """DARTS's choices as hooks (module docstring); ``darts`` is this class under its name."""
    config_type: ClassVar[type] = CellSearchConfig
    DEFAULTS: ClassVar[dict] = DARTS_DEFAULTS
    network_class: ClassVar[type[SearchNetwork]] = SearchNetwork
    supports_multi_channel: ClassVar[bool] = False
    compile_refusal: ClassVar[str | None] = None    # why --compile cannot serve this method, if it cannot
    cuda_graphs_ready: ClassVar[bool] = False        # --cuda_graphs checked against this method's iteration
    baseline: Baseline | None = None        # DARTOpti's hand-made start: its depth, genes and reductions win
    config: CellSearchConfig

    def __init__(self, config: CellSearchConfig) -> None:
        super().__init__(config)
        self.losses = DDartsLosses(config.sep_loss, config.aux_loss_weight, config.cell_loss, config.abl_loss_weight)
        self.check()

    def check(self) -> None:
        """Refuse settings this method cannot run, in one sentence."""
        c = self.config
        if c.unrolled and c.single_level:
            raise SearchError("--unrolled and --single_level exclude each other: the second-order step needs "
                              "separate training and search batches")
        if c.unrolled and c.cell_loss == "ablation_loss":
            raise SearchError("--unrolled and --cell_loss ablation_loss do not combine (the ablation term is "
                              "defined for first-order steps); pass --cell_loss none or drop --unrolled")
        if c.multi_channel and not self.supports_multi_channel:
            raise SearchError(f"--multi_channel searches one grid with the DARTS or sharpDARTS objective; it does "
                              f"not combine with --method {c.method}")
        if c.multi_channel and self.losses.active:
            raise SearchError("--multi_channel does not combine with D-DARTS's losses (--sep_loss, --cell_loss)")

    # ------------------------------------------------------------------ the supernet

    @property
    def total_epochs(self) -> int:
        return self.config.pretrain_epochs + self.config.epochs

    def searching(self, epoch: int) -> bool:
        return epoch >= self.config.pretrain_epochs

    def progress(self, epoch: int) -> float:
        """The share of the search epochs done before `epoch` (0 until the pretraining ends, 1 after
        the last): what linear schedules (DARTS-, beta-DARTS, SDARTS) follow."""
        return min(max(epoch - self.config.pretrain_epochs, 0) / self.config.epochs, 1.0)

    def spec(self, num_classes: int, network: str) -> SupernetSpec:
        c = self.config
        return make_spec(num_classes, c.init_channels, c.layers, c.steps, c.multiplier, PRIMITIVE_SETS[c.primitives],
                         c.weighting_algorithm, c.layout, family=c.ops, mid_channels=c.mid_channels, network=network,
                         baseline=self.baseline)

    def mixed_op(self) -> MixedOpFactory:
        """How each edge is built (PC-DARTS: partial channels; DARTS-: an auxiliary skip)."""
        return MixedOp

    def initial_alphas(self, spec: SupernetSpec) -> str | np.ndarray:
        return self.config.alphas_init

    def build_supernet(self, num_classes: int, network: str, stored: dict | None = None) -> Supernet:
        """The search space; `stored` is the spec a resumed run's checkpoint holds."""
        c = self.config
        if c.multi_channel:
            if stored is not None:
                return MultiChannelSearchNetwork(**stored)
            return MultiChannelSearchNetwork(num_classes, channels=multi_channel_widths(c.init_channels, c.steps),
                                             layers=max(c.layers // 2, 1), weighting=c.weighting_algorithm)
        spec = SupernetSpec.from_dict(stored) if stored is not None else self.spec(num_classes, network)
        return self.network_class(spec, self.initial_alphas(spec), mixed_op=self.mixed_op())

    # ------------------------------------------------------------------ the updates

    def arch_config(self) -> ArchConfig:
        """Adam as DARTS; per-cell and baseline layouts get a group and a schedule per set (D-DARTS)."""
        c = self.config
        per_tensor = c.layout != "shared" and not c.multi_channel
        return ArchConfig(learning_rate=c.arch_learning_rate, weight_decay=c.arch_weight_decay,
                          betas=tuple(c.arch_betas), unrolled=c.unrolled, network_momentum=c.momentum,
                          network_weight_decay=c.weight_decay, per_tensor=per_tensor, epochs=c.epochs,
                          learning_rate_min=ARCH_LR_MIN)

    def arch_terms(self, model: Supernet, loss, evaluate) -> ArchTerms:
        return self.losses(model, loss, evaluate) if self.losses.active else ArchTerms()

    def network_loss(self, model: nn.Module, batch):
        """The network-weight step's loss and logits (DARTS: cross-entropy at the current weighting)."""
        return classification_objective(model, batch)

    def describe_update(self) -> str:
        c = self.config
        update = "single level" if c.single_level else ("second order (unrolled)" if c.unrolled else "first order")
        if c.sep_loss != "none":
            update += f" | separation {c.sep_loss} x{c.aux_loss_weight}"
        if c.cell_loss != "none":
            update += f" | ablation x{c.abl_loss_weight}"
        return update

    # ------------------------------------------------------------------ the result

    def derive(self, model: Supernet):
        """What the supernet stands for now (a CellResult or a PathResult), logged every epoch."""
        return model.derive(self.config.parse_method, self.config.op_threshold)

    def results(self, model: Supernet) -> dict:
        """What the search writes at the end: {suffix of --genotype_name: result} (random search
        writes several)."""
        return {"": self.derive(model)}


class WithCoefficients(nn.Module):
    """The supernet forced to given coefficients (for scoring a projected or pruned supernet)."""

    def __init__(self, model: SearchNetwork, coefficients: list[EdgeWeights]):
        super().__init__()
        self.model, self.coefficients = model, coefficients

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, coefficients=self.coefficients)


@dataclass
class SelectionContext:
    """What a selection procedure (a ``SearchOption`` that ``selects``) gets after the supernet's
    training, on every rank: the engine (model, optimizers, ``engine.step``), the data, and two
    helpers built from them."""
    engine: object                     # train_search.Engine
    train_loader: torch.utils.data.DataLoader
    search_batches: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    valid_loader: torch.utils.data.DataLoader
    device: torch.device
    max_steps: int | None
    log: logging.Logger

    def tune(self, epochs: int, searching: bool = False) -> None:
        """Train the supernet `epochs` passes over the training half (network weights only, unless `searching`)."""
        device, fmt = self.device, self.engine.memory_format
        for _ in range(epochs):
            for step, (x, y) in enumerate(self.train_loader):
                if self.max_steps is not None and step >= self.max_steps:
                    break
                x, y = x.to(device, memory_format=fmt), y.to(device)
                self.engine.step((x, y), self.search_batches, searching)

    def accuracy(self, coefficients: list[EdgeWeights] | None = None) -> float:
        """Top-1 % on the held-out half, with the supernet's coefficients or the given ones."""
        model = self.engine.model if coefficients is None else WithCoefficients(self.engine.model, coefficients)
        return evaluate(model, self.valid_loader, nn.CrossEntropyLoss(), self.device,
                        self.engine.precision, desc="select", memory_format=self.engine.memory_format,
                        max_steps=self.max_steps).top1


def multi_channel_widths(init_channels: int, steps: int) -> tuple[int, ...]:
    """sharpDARTS: `steps` doubling widths from the power of two at or below --init_channels
    (36 and 4 give the published 32, 64, 128, 256)."""
    if init_channels < 1 or steps < 1:
        raise SearchError("--multi_channel needs --init_channels and --layers_in_cells of at least 1")
    first = 1 << (init_channels.bit_length() - 1)
    return tuple(first << k for k in range(steps))
