"""DARTS's recurrent search network: every step of the cell mixes every activation over every
predecessor state, weighted by the softmax of the architecture weights.

Step i (state i + 1) has one edge from each of the states 0..i, so the architecture weights are
one (36, 5) matrix for 8 steps: rows in edge order (step 0's edge from s0; step 1's from s0, s1;
...), columns in `SEARCH_PRIMITIVES` order. An edge from s_j contributes

    sum over ops k != none of  w[edge, k] * (s_j + c_j * (f_k(h_j) - s_j)),  c_j, h_j = split(s_j @ W_i)

(``none`` contributes nothing, but its weight still takes its share of the softmax), which is
computed as W * s_j + c_j * (sum_k w_k f_k(h_j) - W * s_j) with W = the sum of the non-none
weights: the same function in fewer operations. Every new state, and s0, goes through one shared
BatchNorm without affine parameters (its running statistics are buffers), as in DARTS; the cell
output is the mean of the last 8 states.

The architecture weights are declared as such: `arch_parameters()` returns them and
`weight_parameters()` every other parameter, by identity, never by name. They live in the module
(``alphas.0`` in the state_dict), so a checkpoint of the search holds them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genotypes import GenotypeRecord, RangeLiteral, recurrent_record
from recurrent_model import ACTIVATIONS, Dropouts, RecurrentCell, RNNModel
from supernet import Supernet

SEARCH_PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")
STEPS = 8
CONCAT = 8


def edge_count(steps: int) -> int:
    """Edges of a search cell: step i has one from each of the states 0..i."""
    return steps * (steps + 1) // 2


class SearchCell(RecurrentCell):
    """The DARTS search cell; `cell` takes the op weights (edges x ops) as its extra input."""

    def __init__(self, ninp: int, nhid: int, dropouth: float, dropoutx: float, steps: int = STEPS,
                 concat: int = CONCAT, primitives: tuple[str, ...] = SEARCH_PRIMITIVES):
        super().__init__(ninp, nhid, dropouth, dropoutx, steps)
        self.n_steps, self.n_concat, self.primitives = steps, concat, primitives
        self._active = [(k, ACTIVATIONS[name]) for k, name in enumerate(primitives) if name != "none"]
        self.bn = nn.BatchNorm1d(nhid, affine=False)

    def cell(self, x_part: torch.Tensor, h_prev: torch.Tensor, h_mask: torch.Tensor | None,
             probs: torch.Tensor) -> torch.Tensor:
        states = self.bn(self.initial_state(x_part, h_prev, h_mask)).unsqueeze(0)
        active = [k for k, _ in self._active]
        offset = 0
        for i in range(self.n_steps):
            masked = states if h_mask is None else states * h_mask
            c, h = (masked @ self._Ws[i]).split(self.nhid, dim=-1)
            c = c.sigmoid()
            w = probs[offset:offset + i + 1].unsqueeze(-1).unsqueeze(-1)          # (i + 1, ops, 1, 1)
            mixed = sum(w[:, k] * f(h) for k, f in self._active)
            kept = w[:, active].sum(1) * states
            s = (kept + c * (mixed - kept)).sum(0)
            states = torch.cat([states, self.bn(s).unsqueeze(0)], 0)
            offset += i + 1
        return states[-self.n_concat:].mean(0)


class RNNModelSearch(RNNModel, Supernet):
    """The search network: DARTS's `RNNModelSearch`, with its architecture weights declared (a
    Supernet, so core/architect.py trains them)."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, dropouts: Dropouts, steps: int = STEPS,
                 concat: int = CONCAT, primitives: tuple[str, ...] = SEARCH_PRIMITIVES):
        super().__init__(ntoken, ninp, SearchCell(ninp, nhid, dropouts.dropouth, dropouts.dropoutx, steps, concat,
                                                  primitives), dropouts)
        self.alphas = nn.ParameterList([nn.Parameter(1e-3 * torch.randn(edge_count(steps), len(primitives)))])

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def cell_inputs(self) -> tuple:
        return (F.softmax(self.alphas[0], dim=-1),)

    def probabilities(self) -> np.ndarray:
        return F.softmax(self.alphas[0].detach().float(), dim=-1).cpu().numpy()

    def genotype(self) -> GenotypeRecord:
        cell = self.rnns[0]
        return parse_recurrent(self.probabilities(), cell.primitives, cell.n_steps, cell.n_concat)


def language_model_objective(forward, batch: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]
                             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The architecture objective of one (inputs, targets, hidden) batch for core/architect.py: the
    mean negative log-likelihood, and the hidden state after the batch, which the search carries
    to its next batch (DARTS's `_loss`, without AR/TAR)."""
    data, targets, hidden = batch
    log_prob, hidden_next = forward(data, hidden)
    return F.nll_loss(log_prob.reshape(-1, log_prob.shape[-1]), targets.reshape(-1)), hidden_next


def parse_recurrent(probs: np.ndarray, primitives: tuple[str, ...], steps: int = STEPS,
                    concat: int = CONCAT) -> GenotypeRecord:
    """DARTS's parse: for each step the predecessor whose strongest non-`none` op is strongest, and that op
    (ties go to the first); the genotype concatenates the last `concat` states."""
    scores = np.array(probs, dtype=np.float64)
    if "none" in primitives:
        scores[:, primitives.index("none")] = -np.inf
    gene, start = [], 0
    for i in range(steps):
        edges = scores[start:start + i + 1]
        j = int(np.argmax(edges.max(axis=1)))
        gene.append((primitives[int(np.argmax(edges[j]))], j))
        start += i + 1
    return recurrent_record(gene, RangeLiteral(steps + 1 - concat, steps + 1))
