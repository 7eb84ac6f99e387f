"""DARTOpti (D-DARTS's "architecture optimization", Heuillet et al. 2021): a D-DARTS search that
starts from a hand-made network (``--arch_baseline``: ResNet18, ResNet50, Xception or a
Genotype_opt file), one weight set per distinct gene, a few pretraining epochs, and an early stop
once the D-DARTS distance to the baseline stays put."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from arch_distance import DistanceError, weights_distance
from model_search import Baseline, SearchError, SearchNetwork, SupernetSpec, load_baseline
from search_run import EpochRecord, StopRule
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import CellSearchConfig, CellStrategy
from strategies.ddarts import DDARTS_DEFAULTS

METRIC_WARMUP_EPOCHS = 5     # D-DARTS: the distance counts for early stopping from pretrain + 5
METRIC_PATIENCE = 4          # stop when the distance stayed within METRIC_TOLERANCE for 4 epochs
METRIC_TOLERANCE = 0.001


@dataclass(frozen=True)
class DartOptiConfig(CellSearchConfig):
    arch_baseline: str | None = None
    no_arch_metric: bool = False


class DistancePlateau(StopRule):
    """D-DARTS's early stop: the distance to the baseline, logged every epoch, stays within
    METRIC_TOLERANCE for METRIC_PATIENCE epochs (counted after the pretraining and warm-up epochs)."""

    def __init__(self, model: SearchNetwork, baseline: Baseline, op_threshold: float, pretrain_epochs: int):
        self.model, self.baseline = model, baseline
        self.baseline_weights = baseline.alphas(model.spec.primitives)
        self.op_threshold, self.pretrain_epochs = op_threshold, pretrain_epochs
        self.metrics: list[float] = []

    def distance(self) -> float:
        try:
            return weights_distance(self.baseline_weights, self.model.probabilities(),
                                    primitives=self.model.spec.primitives, op_threshold=self.op_threshold)
        except DistanceError as e:
            raise SearchError(f"architecture distance: {e}; pass --no_arch_metric") from None

    def start(self, log: logging.Logger, resumed: bool) -> None:
        if not resumed:
            log.info("architecture distance to %s at the start: %.10f", self.baseline.arch.name, self.distance())

    def observe(self, record: EpochRecord, log: logging.Logger) -> str | None:
        metric = self.distance()
        record.scalars["distance_metric"] = metric
        log.info("architecture distance to %s: %.10f", self.baseline.arch.name, metric)
        if record.epoch - 1 < self.pretrain_epochs + METRIC_WARMUP_EPOCHS:
            return None
        recent = self.metrics[-METRIC_PATIENCE:]
        self.metrics.append(metric)
        if len(recent) == METRIC_PATIENCE and all(abs(metric - m) <= METRIC_TOLERANCE for m in recent):
            return f"the architecture distance stayed within {METRIC_TOLERANCE:g} for {METRIC_PATIENCE} epochs"
        return None

    def state_dict(self) -> dict:
        return {"metrics": list(self.metrics)}

    def load_state_dict(self, state: dict) -> None:
        self.metrics = list(state["metrics"])


@STRATEGIES.register
class DartOpti(CellStrategy):
    name = "dartopti"
    config_type = DartOptiConfig
    DEFAULTS = {**DDARTS_DEFAULTS, "primitives": "DDARTS_12", "layout": "baseline", "alphas_init": "baseline",
                "pretrain_epochs": 5}
    SOURCE = "aheuillet/D-DARTS train_search.py (--arch_baseline)"
    SUMMARY = "D-DARTS from a hand-made network (ResNet, Xception), stops when the distance to it stays put"
    FLAGS = (Flag("--arch_baseline", {"help": "start from this hand-made Genotype_opt (ResNet18, ResNet50, Xception "
                                              "or a file)"}),)
    SELECTED_BY = "--arch_baseline"
    VARIANTS = {"dartopti_resnet18": ("--arch_baseline", "ResNet18")}
    config: DartOptiConfig

    def __init__(self, config: DartOptiConfig) -> None:
        super().__init__(config)
        self.baseline = load_baseline(config.arch_baseline)

    def check(self) -> None:
        if not self.config.arch_baseline:
            raise SearchError("--method dartopti needs --arch_baseline (ResNet18, ResNet50, Xception or a "
                              "Genotype_opt file)")
        super().check()

    def initial_alphas(self, spec: SupernetSpec) -> np.ndarray:
        return self.baseline.alphas(spec.primitives)

    def stop_rules(self, model: SearchNetwork) -> list[StopRule]:
        if self.config.no_arch_metric:
            return []
        return [DistancePlateau(model, self.baseline, self.config.op_threshold, self.config.pretrain_epochs)]
