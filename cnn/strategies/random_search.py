"""Random search (Li and Talwalkar, "Random Search and Reproducibility for NAS", UAI 2019), the
baseline that DARTS's paper compares against and the NAS best-practice checklist (Lindauer and
Hutter) asks for: ``--samples N`` genotypes drawn uniformly from the DARTS search space, with no
supernet training.

Every intermediate node of the normal and the reduction cell takes two distinct inputs among
the nodes before it, each with an op drawn uniformly from the primitive set without ``none``
(the DARTS rules). The draws come from ``--seed`` alone, so a seed names the same N genotypes on
every machine. They are written as ``<genotype_name>_<i>.txt`` (i from 0), each ready for
``train.py --arch``, to be trained with the same recipe as a searched genotype and compared
(``summarize_results.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import cli
from model_search import CellResult, SearchNetwork
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellSearchConfig, CellStrategy

DEFAULT_SAMPLES = 8


@dataclass(frozen=True)
class RandomSearchConfig(CellSearchConfig):
    samples: int = DEFAULT_SAMPLES
    seed: int = 2


def random_weights(rng: np.random.Generator, n_sets: int, steps: int, primitives: tuple[str, ...]) -> np.ndarray:
    """(n_sets, n_edges, n_ops): 1 on the drawn op of each of the two drawn inputs of every node, 0 elsewhere
    (so that the DARTS parse reads back exactly the draw)."""
    ops = [k for k, name in enumerate(primitives) if name != "none"]
    out = np.zeros((n_sets, sum(i + 2 for i in range(steps)), len(primitives)))
    for s in range(n_sets):
        start = 0
        for i in range(steps):
            for j in rng.choice(i + 2, size=2, replace=False):
                out[s, start + j, rng.choice(ops)] = 1.0
            start += i + 2
    return out


@STRATEGIES.register
class RandomSearch(CellStrategy):
    name = "random"
    config_type = RandomSearchConfig
    DEFAULTS = {**DARTS_DEFAULTS, "samples": DEFAULT_SAMPLES}
    SOURCE = ("Li and Talwalkar, UAI 2019 (random search over the DARTS space: two distinct inputs per node, "
              "ops without none); --samples 8 is ours")
    SUMMARY = "no supernet training: --samples N uniform genotypes of the DARTS space, written as <name>_<i>"
    FLAGS = (Flag("--samples", {"type": cli.positive_int, "help": "random search: genotypes to draw, written as "
                                f"<genotype_name>_<i>.txt (default {DEFAULT_SAMPLES})"}),)
    total_epochs = 0
    config: RandomSearchConfig

    @classmethod
    def variants(cls) -> dict[str, tuple[str, ...]]:
        """None: it trains no supernet, so bench/search_speed.py has no iteration of it to time."""
        return {}

    def describe_update(self) -> str:
        return f"none: {self.config.samples} genotypes drawn uniformly with seed {self.config.seed}"

    def results(self, model: SearchNetwork) -> dict[str, CellResult]:
        spec, rng = model.spec, np.random.default_rng(self.config.seed)
        return {f"_{i}": CellResult(model.genotype("darts", weights=random_weights(rng, spec.n_sets, spec.steps,
                                                                                    spec.primitives)),
                                    spec, "darts", self.config.op_threshold)
                for i in range(self.config.samples)}
