"""DARTS-PT (Wang, Cheng, Zhang, Chen, Hsieh: "Rethinking Architecture Selection in Differentiable
NAS", ICLR 2021), ``--selection pt``: after the supernet's training, choose the genotype by how
much the supernet's validation accuracy needs each op and edge, not by the magnitude of the
architecture weights. Combines with any method that trains architecture weights.

Weights
    The supernet's coefficients as its forward pass uses them (``coefficients()`` in eval mode:
    the weighting's op coefficients, times PC-DARTS's edge weights; GDAS's strongest op alone),
    one (edges, ops) table per set. A decided edge is projected to its op (coefficient 1, the others 0); an edge a node
    dropped gets 0 everywhere.
Operation selection (edge by edge)
    In a random order (from ``--seed``), one edge of every set per round: each op other than
    ``none`` is removed in turn (its coefficient set to 0) and the held-out accuracy measured;
    the op whose removal lowers the accuracy most is kept (on a tie, the one with the larger
    weight: the magnitude decides what the accuracy cannot tell apart).
Topology selection (node by node)
    Then every node with more than two inputs, in a random order: the input edge whose removal
    lowers the accuracy least is dropped (on a tie, the one with the weaker strongest op),
    again, until two remain.
Tuning
    Between two decisions the network weights train ``--pt_tune_steps`` steps at the projected
    coefficients (default: DARTS-PT's 10 epochs of the training half, ``--proj_intv 10`` in its
    ``sota/cnn/train_search.py``), with the search's optimizer at its last learning rate.
Genotype
    DARTS's parse of the projected table, which holds exactly the kept edges and their ops.

The cost is one held-out evaluation per candidate op of every edge and per candidate edge of
every node, plus the tuning; the log gives the count and the seconds of this selection phase.

Differences from DARTS-PT, on purpose: the architecture weights stay where the search left them
while tuning (DARTS-PT keeps training them, through the projected weights); the evaluations run
the supernet in eval mode (DARTS-PT's use the batch statistics); DARTS-PT's tuning restarts a
cosine schedule at a tenth of the search's learning rate.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

import cli
from architect import classification_objective, search_iteration
from distributed import broadcast_object
from model_search import CellResult, EdgeWeights
from search_strategy import Flag
from strategies import OPTIONS
from strategies.cell_option import CellOption
from strategies.base import SelectionContext

DEFAULT_TUNE_EPOCHS = 10      # DARTS-PT's --proj_intv in the DARTS space

Score = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class PTConfig:
    selection: str | None
    pt_tune_steps: int | None


def node_edges(steps: int) -> list[range]:
    """The edges into every intermediate node, in DARTS edge order."""
    out, start = [], 0
    for i in range(steps):
        out.append(range(start, start + i + 2))
        start += i + 2
    return out


class Projection:
    """The weight tables with DARTS-PT's decisions applied (module docstring)."""

    def __init__(self, weights: np.ndarray, steps: int, primitives: tuple[str, ...]):
        self.base, self.nodes = np.array(weights, dtype=np.float64), node_edges(steps)
        self.candidates = [k for k, op in enumerate(primitives) if op != "none"]
        self.ops: dict[tuple[int, int], int] = {}             # (set, edge) -> the op kept
        self.dropped: set[tuple[int, int]] = set()             # (set, edge) a node dropped

    def weights(self) -> np.ndarray:
        w = self.base.copy()
        for (s, e), k in self.ops.items():
            w[s, e] = 0.0
            w[s, e, k] = 1.0
        for s, e in self.dropped:
            w[s, e] = 0.0
        return w

    def choose_op(self, s: int, e: int, score: Score) -> int:
        """Keep the op of edge `e` (set `s`) whose removal lowers the score most."""
        scores = []
        for k in self.candidates:
            w = self.weights()
            w[s, e, k] = 0.0
            scores.append(score(w))
        weights = self.weights()[s, e, self.candidates]
        self.ops[(s, e)] = self.candidates[np.lexsort((-weights, scores))[0]]     # a tie: the larger weight
        return self.ops[(s, e)]

    def choose_edges(self, s: int, node: int, score: Score) -> list[int]:
        """Drop the input of `node` whose removal lowers the score least until two remain; returns those two."""
        kept = list(self.nodes[node])
        while len(kept) > 2:
            scores = []
            for e in kept:
                w = self.weights()
                w[s, e] = 0.0
                scores.append(score(w))
            strength = self.weights()[s, kept].max(axis=1)
            dropped = kept.pop(np.lexsort((strength, -np.asarray(scores)))[0])     # a tie: the weaker edge
            self.dropped.add((s, dropped))
        return kept


def forward_weights(model) -> np.ndarray:
    """(sets, edges, ops): the coefficients the supernet's eval forward uses, edge weights multiplied in."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        tables = [w.ops if w.edges is None else w.ops * w.edges[:, None] for w in model.coefficients()]
    model.train(was_training)
    return torch.stack(tables).double().cpu().numpy()


def as_coefficients(weights: np.ndarray, like: torch.Tensor) -> list[EdgeWeights]:
    return [EdgeWeights(torch.as_tensor(w, dtype=like.dtype, device=like.device)) for w in weights]


@OPTIONS.register
class PerturbationSelection(CellOption):
    name = "pt"
    config_type = PTConfig
    ENABLED_BY = "selection"
    selects = True
    SOURCE = "Wang et al., DARTS-PT, ICLR 2021, Alg. 1 and 2; ruocwang/darts-pt sota/cnn (--proj_intv 10 epochs)"
    SUMMARY = "selects each edge's op, then each node's two inputs, by how much removing them costs held-out accuracy"
    FLAGS = (Flag("--selection", {"choices": ("pt",), "help": "after the search, DARTS-PT's perturbation-based "
                                  "selection instead of the parse of the largest weights"}),
             Flag("--pt_tune_steps", {"type": cli.non_negative_int, "help": "DARTS-PT: network steps between two "
                                      f"decisions (default {DEFAULT_TUNE_EPOCHS} epochs of the training half)"}))
    config: PTConfig

    def select(self, context: SelectionContext) -> CellResult:
        model, started = context.engine.model, time.time()
        spec, like = model.spec, model.alphas[0]
        projection = Projection(forward_weights(model), spec.steps, spec.primitives)
        evaluations = 0

        def score(weights: np.ndarray) -> float:
            nonlocal evaluations
            evaluations += 1
            return context.accuracy(as_coefficients(weights, like))

        names, rows = model.set_names(), next(iter(model.weight_tables().values())).rows    # rows: "0-2", ...
        # a random order, the same on every rank (rank 0's)
        edge_order, node_order = broadcast_object(([torch.randperm(spec.n_edges).tolist() for _ in names],
                                                   (torch.randperm(spec.steps - 1) + 1).tolist()))

        def choose_ops(r: int) -> str:
            return ", ".join(f"{name} edge {rows[e]} keeps {spec.primitives[projection.choose_op(s, e, score)]}"
                             for s, name in enumerate(names) for e in [edge_order[s][r]])

        def choose_inputs(n: int) -> str:
            return ", ".join(f"{name} node {n + 2} keeps {[rows[e] for e in projection.choose_edges(s, n, score)]}"
                             for s, name in enumerate(names))

        rounds = [partial(choose_ops, r) for r in range(spec.n_edges)] + [partial(choose_inputs, n) for n in node_order]
        steps = self.tune_steps(context)
        for r, decide in enumerate(rounds):
            context.log.info("DARTS-PT decision %d/%d: %s", r + 1, len(rounds), decide())
            if r + 1 < len(rounds):
                tune(context, steps, as_coefficients(projection.weights(), like))
        context.log.info("DARTS-PT selection: %d decisions, %d evaluations, %d tuning steps between two, %.0f s",
                         len(rounds), evaluations, steps, time.time() - started)
        threshold = context.engine.strategy.config.op_threshold
        return CellResult(model.genotype("darts", weights=projection.weights()), spec, "darts", threshold)

    def tune_steps(self, context: SelectionContext) -> int:
        if self.config.pt_tune_steps is not None:
            return self.config.pt_tune_steps
        per_epoch = len(context.train_loader)
        return DEFAULT_TUNE_EPOCHS * (per_epoch if context.max_steps is None else min(per_epoch, context.max_steps))


def tune(context: SelectionContext, steps: int, coefficients: list[EdgeWeights]) -> None:
    """`steps` network-weight steps of the supernet at the given coefficients."""
    engine, device = context.engine, context.device

    def network_loss(model, batch):
        return classification_objective(lambda x: model(x, coefficients=coefficients), batch)

    done = 0
    while done < steps:
        for x, y in context.train_loader:
            if done == steps:
                break
            batch = (x.to(device, memory_format=engine.memory_format), y.to(device))
            search_iteration(engine.model, None, engine.optimizer, engine.precision, batch, context.search_batches,
                             grad_clip=engine.strategy.config.grad_clip, network_loss=network_loss)
            done += 1
