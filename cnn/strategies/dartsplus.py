"""DARTS+ early stopping (Liang, Zhang, Sun, He, Huang, Zhuang and Li, 2019), ``--early_stop``,
for any method that trains architecture weights.

Criterion 1
    Stop once the normal cell derived after an epoch holds two or more skip connections (the
    mean over the normal cells when every cell has its own gene), the sign that the collapse
    has begun.
Criterion 2
    Stop once the ranking of the architecture weights of the learnable ops (those with
    parameters: not skip, pools or none) on every edge of every set has stayed the same for
    ``--early_stop_patience`` epochs (default 10, the paper's example): the architecture has
    settled, so further epochs only train the supernet.

Only searching epochs count: pretraining epochs (PC-DARTS, D-DARTS) leave the architecture
where it started, and its random start may derive skips.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

import cli
from model_search import parameter_free
from search_run import EpochRecord, StopRule
from search_strategy import Flag
from strategies import OPTIONS
from strategies.cell_option import CellOption

MAX_SKIPS = 2             # criterion 1: two skip connections in the normal cell
DEFAULT_PATIENCE = 10     # criterion 2: the paper's "e.g., 10 epochs"


@dataclass(frozen=True)
class EarlyStopConfig:
    early_stop: bool | None
    early_stop_patience: int | None


class DartsPlusRule(StopRule):
    """Both DARTS+ criteria over the epoch records (module docstring)."""

    def __init__(self, patience: int, learnable: list[str]):
        self.patience, self.learnable = patience, learnable
        self.ranking: list | None = None      # the last searching epoch's ranking
        self.stable = 0                       # epochs in a row whose ranking equals the one before

    def rank(self, record: EpochRecord) -> list:
        """Per set, per edge: the learnable ops' columns from the strongest to the weakest."""
        out = []
        for table in record.tables.values():
            columns = [table.columns.index(op) for op in self.learnable if op in table.columns]
            out.append([[columns[k] for k in np.argsort(-row[columns], kind="stable")] for row in table.values])
        return out

    def observe(self, record: EpochRecord, log: logging.Logger) -> str | None:
        if not record.searching:
            return None
        skips = record.result.collapse()["skip_connections"]
        ranking = self.rank(record)
        self.stable = self.stable + 1 if ranking == self.ranking else 0
        self.ranking = ranking
        record.scalars["early_stop/stable_epochs"] = float(self.stable)
        if skips >= MAX_SKIPS:
            return f"DARTS+ criterion 1: the normal cell holds {skips:g} skip connections (at most {MAX_SKIPS - 1})"
        if self.stable >= self.patience:
            return f"DARTS+ criterion 2: the ranking of the learnable ops' weights was stable for {self.stable} epochs"
        return None

    def state_dict(self) -> dict:
        return {"ranking": self.ranking, "stable": self.stable}

    def load_state_dict(self, state: dict) -> None:
        self.ranking, self.stable = state["ranking"], int(state["stable"])


@OPTIONS.register
class DartsPlusEarlyStop(CellOption):
    name = "early_stop"
    config_type = EarlyStopConfig
    ENABLED_BY = "early_stop"
    SOURCE = "Liang et al., DARTS+ (2019), Sec. 3.2: criteria 1 (two skips) and 2 (stable ranking, e.g. 10 epochs)"
    SUMMARY = "stops the search at two skip connections in the normal cell or a stable ranking of the learnable ops"
    FLAGS = (Flag("--early_stop", {"action": "store_true", "help": "DARTS+: stop when the derived normal cell holds "
                                   "2 skip connections or the ops' ranking stayed the same --early_stop_patience "
                                   "epochs"}),
             Flag("--early_stop_patience", {"type": cli.positive_int, "help": "DARTS+ criterion 2: epochs of a "
                                            f"stable ranking (default {DEFAULT_PATIENCE})"}))
    config: EarlyStopConfig

    def stop_rules(self, model, strategy) -> list[StopRule]:
        c = strategy.config
        learnable = [op for op in model.spec.primitives if not parameter_free(op, c.ops, c.mid_channels)]
        return [DartsPlusRule(self.config.early_stop_patience or DEFAULT_PATIENCE, learnable)]
