"""PC-DARTS (Xu, Xie, Zhang, Chen, Qi, Tian and Xiong, ICLR 2020): partial channel connections and
edge normalization, so that a search fits a quarter of DARTS's memory and runs a larger batch.

Partial channels (``--partial_channels K``)
    Each edge sends only its first C/K channels through its mixed op (built on C/K channels);
    the other channels bypass the ops (through a 2x2 max pool on a reduction edge, to match the
    ops' stride), are concatenated after them, and the result is channel-shuffled in K groups
    (channel ``g * C/K + j`` moves to ``j * K + g``), so that the next edge sees other channels.
    K=1 sends every channel through the ops: the paper's ablation of edge normalization alone.
    The edge wraps a ``MixedOp`` and keeps its contract (cnn/model_search.py).
Edge normalization (betas)
    Every edge of a set has a beta, an architecture parameter beside the alphas (declared in
    ``arch_parameters``, so the architecture optimizer trains it and the network optimizer never
    sees it). The edge's output is scaled by the softmax of the betas over its node's inputs,
    which damps the fluctuation that sampling channels brings into the edge selection.
Genotype
    Edges are ranked, and ops chosen, on softmax(alpha) times the edge's normalized beta, with
    DARTS's parse otherwise (``none`` excluded, two edges per node); these products are also what
    is logged, plotted and saved as the weights of each epoch.

Defaults (``SOURCE``): batch 256, network learning rate 0.1 annealed to 0, Adam 6e-4 for the
architecture, 50 epochs of which the first 15 train the network weights only (here
``--pretrain_epochs 15 --epochs 35``), K=4, first order.

Differences from PC-DARTS, on purpose: the bypass pool rounds up (``ceil_mode``) so that odd
sizes match the strided ops (identical on even sizes); the architecture batch comes from the
persistent held-out stream (PC-DARTS draws ``next(iter(valid_queue))`` each step).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

import cli
from model_search import EdgeWeights, MixedOp, MixedOpFactory, SearchError, SearchNetwork, SupernetSpec, op_coefficients
from search_strategy import Flag
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellSearchConfig, CellStrategy


@dataclass(frozen=True)
class PCDartsConfig(CellSearchConfig):
    partial_channels: int = 4


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel ``g * C/groups + j`` to ``j * groups + g`` (one copy, in the input's memory layout)."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1).reshape(b, h, w, groups, c // groups).transpose(3, 4).reshape(b, h, w, c)
        return nhwc.permute(0, 3, 1, 2)
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class PartialChannelMixedOp(nn.Module):
    """An edge whose ops see 1/k of its channels (module docstring); same contract as MixedOp."""

    def __init__(self, C: int, stride: int, primitives: tuple[str, ...], family: str, mid_channels: int, *, k: int):
        super().__init__()
        if C % k:
            raise SearchError(f"--partial_channels {k} must divide every cell's width, and {C} is not a multiple "
                              f"of it; choose --init_channels as a multiple of {k}")
        self.k = k
        self.mixed = MixedOp(C // k, stride, primitives, family, mid_channels)
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor, active: int | None = None) -> torch.Tensor:
        if self.k == 1:     # every channel through the ops, nothing bypasses (PC-DARTS's edge normalization alone)
            return self.mixed(x, coefficients, active)
        part = x.shape[1] // self.k
        out = torch.cat([self.mixed(x[:, :part], coefficients, active), self.bypass(x[:, part:])], dim=1)
        return channel_shuffle(out, self.k)


class PCDartsNetwork(SearchNetwork):
    """The cell supernet with one beta per edge and set, normalized over each node's inputs."""

    def __init__(self, spec: SupernetSpec, alphas_init="randn", *, mixed_op: MixedOpFactory):
        super().__init__(spec, alphas_init, mixed_op=mixed_op)
        self.betas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(spec.n_edges)) for _ in range(spec.n_sets))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.alphas, *self.betas]

    def edge_weights(self) -> list[torch.Tensor]:
        """Per set, (n_edges,): the softmax of the betas over the inputs of each node."""
        out = []
        for betas in self.betas:
            nodes, start = [], 0
            for i in range(self.spec.steps):
                nodes.append(torch.softmax(betas[start:start + i + 2], dim=0))
                start += i + 2
            out.append(torch.cat(nodes))
        return out

    def coefficients(self) -> list[EdgeWeights]:
        return [EdgeWeights(op_coefficients(a, self.spec.weighting), edges=e)
                for a, e in zip(self.alphas, self.edge_weights())]

    @torch.no_grad()
    def probabilities(self):
        """softmax(alpha) times the edge's normalized beta: what PC-DARTS ranks edges by."""
        edges = torch.stack(self.edge_weights()).detach().cpu().double().numpy()
        return super().probabilities() * edges[:, :, None]


@STRATEGIES.register
class PCDarts(CellStrategy):
    name = "pcdarts"
    config_type = PCDartsConfig
    network_class = PCDartsNetwork
    DEFAULTS = {**DARTS_DEFAULTS, "batch_size": 256, "learning_rate": 0.1, "learning_rate_min": 0.0,
                "arch_learning_rate": 6e-4, "pretrain_epochs": 15, "epochs": 35, "partial_channels": 4}
    SOURCE = ("yuhuixu1993/PC-DARTS train_search.py and the PC-DARTS paper, Sec. 4.2: batch 256, lr 0.1 cosine to 0, "
              "Adam 6e-4, 50 epochs of which the first 15 train the weights only, K=4")
    SUMMARY = "1/K of the channels through the mixed ops (shuffled), edge betas; genotype from alpha times beta"
    FLAGS = (Flag("--partial_channels", {"type": cli.positive_int, "help": "PC-DARTS: K, so that 1/K of each edge's "
                                         "channels go through its ops and the rest bypass them (default 4)"}),)
    config: PCDartsConfig

    def check(self) -> None:
        super().check()
        if self.config.init_channels % self.config.partial_channels:
            raise SearchError(f"--partial_channels {self.config.partial_channels} must divide --init_channels "
                              f"{self.config.init_channels}")

    def mixed_op(self) -> MixedOpFactory:
        return partial(PartialChannelMixedOp, k=self.config.partial_channels)
