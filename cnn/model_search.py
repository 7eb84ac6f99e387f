"""Searchable supernets: one mixed op, one search cell, one network for every search strategy.

A mixed op applies every primitive of a primitive set to its input and sums the outputs, each
scaled by a coefficient computed from the architecture weights (alphas) of its edge. How the
coefficients are computed is the *weighting* (``WEIGHTINGS``):

``softmax``  DARTS: softmax over the ops of an edge.
``scalar``   sharpDARTS's name for the same thing (``w * op(x)`` with softmax weights).
``max_w``    sharpDARTS: softmax, then ``1 - max(w) + w`` per edge, so the strongest op of
             every edge gets coefficient 1 and the others keep their distance to it.
``sigmoid``  FairDARTS / D-DARTS: an independent sigmoid per op.

Architecture weights are a list of *sets*, each ``(n_edges, n_ops)`` in DARTS edge order
(node 2 takes inputs 0, 1; node 3 takes 0, 1, 2; ...), and ``layer_sets`` says which set
each layer uses:

* shared (DARTS, sharpDARTS): two sets, 0 for the normal cells and 1 for the reduction cells;
* per cell (D-DARTS nested search): one set per layer;
* baseline (DARTOpti): one set per distinct gene of a hand-made ``Genotype_opt``; layers that
  repeat a gene share its set.

Ops are built through ``operations.build_op`` without affine BatchNorm parameters (DARTS), so a
primitive registered in ``OPS`` is searchable as soon as it is named in a primitive set. Pools
get a non-affine BatchNorm after them, as in DARTS. ``none`` is never computed: it contributes
``w * 0``, which is nothing, to the sum and to every gradient.

The forward contract, all that a faster mixed op must keep (the strategies build on nothing else):

* a mixed op is built as ``mixed_op(C, stride, primitives, family, mid_channels)`` and called as
  ``op(x, coefficients, active=None)``: ``coefficients`` is the edge's row (n_ops,); it returns
  ``sum_k coefficients[k] * op_k(x)`` over the ops other than ``none``, or, given ``active``
  (an int: the one op a sampling strategy such as GDAS drew), ``coefficients[active] *
  op_active(x)`` alone, so that exactly one op runs and the gradient still reaches the
  coefficient;
* a search cell is called as ``cell(s0, s1, coefficients, edge_weights=None, active=None)``
  with the (n_edges, n_ops) coefficients of its set, optional (n_edges,) edge scales that
  multiply each edge's output (PC-DARTS's edge normalization) and optional active ops (one int
  per edge); a node sums its edges; the cell concatenates its last ``multiplier`` nodes;
* the network asks ``coefficients()`` for one ``EdgeWeights`` (ops, edges, active) per set once
  per forward, unless the caller passes them.

In training, with gradients on, a mixed op runs the ops that cnn/lean_ops.py knows (separable and
dilated convolutions, pools, FactorizedReduce) in one autograd function per edge that keeps about a
quarter of the tensors the plain modules keep for backward, with the same numbers
(tests/test_lean_ops.py); ``lean_ops.plain()`` switches back to the plain modules, for code that
differentiates twice. Evaluation, ``torch.no_grad``, autocast and ``torch.compile`` (which plans memory
itself) run the plain modules.

PC-DARTS's partial-channel edge wraps a ``MixedOp`` on C/K channels (cnn/strategies/pcdarts.py),
so it keeps the contract and gains from any faster mixed op.

The network weights (``weight_parameters``) and the architecture weights
(``arch_parameters``) are told apart by identity (core/supernet.py): a subclass that adds
architecture parameters (PC-DARTS's betas) declares them in ``arch_parameters``. Both live in
the module (the alphas as ``alphas.<set>``), so ``state_dict`` holds everything a resumed
search needs.

Differences from the reference code, on purpose: a reduction that follows a reduction always
uses ``FactorizedReduce`` (sharpDARTS's search cell uses a strided separable conv there), as the
evaluation networks of ``model.py`` do; a search on ImageNet uses the ImageNet stems of
``model.py`` (D-DARTS convolves 224-pixel images at full resolution).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import lean_ops
from derive import DeriveError, edge_count, per_cell_genotype, shared_genotype
from genotypes import (Architecture, GenotypeError, GenotypeRecord, RangeLiteral, format_genotype, genotype_path,
                       read_genotype_file, to_architecture, write_genotype_file)
from model import ModelError, cifar_stem, default_reductions, imagenet_stems
from operations import DEFAULT_MID_CHANNELS, FactorizedReduce, ReLUConvBN, Zero, build_op
from supernet import Supernet
from weight_report import WeightTable

WEIGHTINGS = ("softmax", "scalar", "max_w", "sigmoid")
LAYOUTS = ("shared", "per_cell", "baseline")
BASELINE_LOGIT = 10.0   # D-DARTS: the ops of a hand-made network start at 10, the others at 0


class SearchError(ModelError):
    """A search that cannot be set up or continued; the message is one sentence."""


# ----------------------------------------------------------------------------------------
# Weightings
# ----------------------------------------------------------------------------------------

def op_coefficients(alphas: torch.Tensor, weighting: str) -> torch.Tensor:
    """Coefficients that scale each op of each edge in the forward pass (last dim = ops)."""
    if weighting in ("softmax", "scalar"):
        return F.softmax(alphas, dim=-1)
    if weighting == "max_w":
        w = F.softmax(alphas, dim=-1)
        return 1.0 - w.max(dim=-1, keepdim=True).values + w
    if weighting == "sigmoid":
        return torch.sigmoid(alphas)
    raise SearchError(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")


def op_probabilities(alphas: torch.Tensor, weighting: str) -> torch.Tensor:
    """The weights genotypes are parsed from, in [0, 1]: softmax, or sigmoid for `sigmoid`.

    ``max_w`` parses its softmax weights, as sharpDARTS does (its coefficients give every edge
    a maximum of exactly 1, which would leave the DARTS edge ranking nothing to rank).
    """
    if weighting == "sigmoid":
        return torch.sigmoid(alphas)
    if weighting in ("softmax", "scalar", "max_w"):
        return F.softmax(alphas, dim=-1)
    raise SearchError(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")


# ----------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------

class MixedOp(nn.Module):
    """Every primitive on one edge. The contract (module docstring) is all the search cell uses:
    ``forward(x, coefficients, active=None)``, coefficients of shape (n_ops,), returns the sum
    of ``coefficients[k] * op_k(x)``, or ``coefficients[active] * op_active(x)`` alone."""

    def __init__(self, C: int, stride: int, primitives: tuple[str, ...], family: str, mid_channels: int):
        super().__init__()
        self._ops = nn.ModuleList()
        for name in primitives:
            op = build_op(name, C, stride, False, family, mid_channels)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)
        self._active = [k for k, op in enumerate(self._ops) if not isinstance(op, Zero)]
        self._plans: list | None = None     # how each op runs lean (cnn/lean_ops.py), made at the first forward

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor, active: int | None = None) -> torch.Tensor:
        ops = self._active if active is None else [active]
        out = None
        if lean_ops.runs(self, x):
            if self._plans is None:
                self._plans = [lean_ops.plan(op) for op in self._ops]
            lean = [(k, self._plans[k]) for k in ops if self._plans[k] is not None]
            if lean:
                out = lean_ops.lean_edge(x, coefficients, lean)
            ops = [k for k in ops if self._plans[k] is None]
        w = coefficients.unbind(0)
        for k in ops:
            h = w[k] * self._ops[k](x)
            out = h if out is None else out + h
        return out


MixedOpFactory = Callable[[int, int, tuple[str, ...], str, int], nn.Module]


class SearchCell(nn.Module):
    """A DARTS cell whose every edge is a mixed op; outputs the last `multiplier` nodes.

    ``forward(s0, s1, coefficients, edge_weights=None, active=None)``: coefficients (n_edges,
    n_ops), one row per edge for its mixed op; edge_weights (n_edges,) scale each edge's output
    (PC-DARTS's edge normalization); active (n_edges ints) names the one op each edge runs.
    """

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, primitives: tuple[str, ...], family: str, mid_channels: int,
                 mixed_op: MixedOpFactory = MixedOp):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList(
            mixed_op(C, 2 if reduction and j < 2 else 1, primitives, family, mid_channels)
            for i in range(steps) for j in range(2 + i))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, coefficients: torch.Tensor,
                edge_weights: torch.Tensor | None = None, active: Sequence[int] | None = None) -> torch.Tensor:
        rows = coefficients.unbind(0)
        scales = edge_weights.unbind(0) if edge_weights is not None else None
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        with lean_ops.shared_pools():       # the edges that read one state share its pools
            for _ in range(self._steps):
                node = None
                for j, h in enumerate(states):
                    e = offset + j
                    out = self._ops[e](h, rows[e], None if active is None else active[e])
                    if scales is not None:
                        out = scales[e] * out
                    node = out if node is None else node + out
                offset += len(states)
                states.append(node)
        return torch.cat(states[-self._multiplier:], dim=1)


@dataclass(frozen=True)
class EdgeWeights:
    """What one set of architecture weights gives every cell that uses it, per forward pass."""
    ops: torch.Tensor                          # (n_edges, n_ops) op coefficients
    edges: torch.Tensor | None = None          # (n_edges,) edge scales (PC-DARTS betas, normalized)
    active: tuple[int, ...] | None = None      # the one op each edge runs (GDAS's sample)


@dataclass(frozen=True)
class SupernetSpec:
    """Everything that rebuilds a supernet; checkpoints carry it as a dict."""
    num_classes: int
    init_channels: int
    layers: int
    steps: int
    multiplier: int
    primitives: tuple[str, ...]
    weighting: str
    layout: str                       # "shared" | "per_cell" | "baseline"
    layer_sets: tuple[int, ...]       # which architecture-weight set each layer uses
    reductions: tuple[int, ...]       # layers that halve the resolution
    family: str = "darts"             # op family (operations.OPS)
    mid_channels: int = DEFAULT_MID_CHANNELS
    network: str = "cifar"            # stem: "cifar" or "imagenet"
    stem_multiplier: int = 3
    in_channels: int = 3

    @property
    def n_sets(self) -> int:
        return 2 if self.layout == "shared" else max(self.layer_sets) + 1

    @property
    def n_edges(self) -> int:
        return edge_count(self.steps)

    def set_names(self) -> list[str]:
        """'normal'/'reduce' for shared weights, else 'cell<i>' (per cell) or 'gene<i>' (baseline)."""
        if self.layout == "shared":
            return ["normal", "reduce"]
        prefix = "cell" if self.layout == "per_cell" else "gene"
        return [f"{prefix}{i}" for i in range(self.n_sets)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SupernetSpec":
        d = dict(d)
        for key in ("primitives", "layer_sets", "reductions"):
            d[key] = tuple(d[key])
        return cls(**d)


def make_spec(num_classes: int, init_channels: int, layers: int, steps: int, multiplier: int,
              primitives, weighting: str, layout: str, *, family: str = "darts",
              mid_channels: int = DEFAULT_MID_CHANNELS, network: str = "cifar",
              baseline: "Baseline | None" = None, in_channels: int = 3) -> SupernetSpec:
    """A checked spec; with a baseline, its layers, steps, reductions and gene sharing win."""
    primitives = tuple(primitives)
    if not primitives or all(p == "none" for p in primitives):
        raise SearchError("the primitive set must hold at least one op other than 'none'")
    if weighting not in WEIGHTINGS:
        raise SearchError(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")
    if layout not in LAYOUTS:
        raise SearchError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if baseline is not None:
        layout, layers, steps = "baseline", len(baseline.layer_genes), baseline.steps
        layer_sets, reductions = baseline.layer_genes, baseline.reductions
        missing = sorted({e.op for cell in baseline.arch.cells for e in cell.edges} - set(primitives))
        if missing:
            raise SearchError(f"baseline {baseline.arch.name} uses {', '.join(missing)}, which the "
                              f"primitive set lacks; use --primitives DDARTS_12")
    elif layout == "baseline":
        raise SearchError("the baseline layout needs a hand-made architecture (--arch_baseline)")
    else:
        if layers < 1:
            raise SearchError(f"--layers must be at least 1, got {layers}")
        reductions = default_reductions(layers)
        layer_sets = (tuple(1 if i in reductions else 0 for i in range(layers)) if layout == "shared"
                      else tuple(range(layers)))
    if steps < 1 or not 1 <= multiplier <= steps:
        raise SearchError(f"need steps >= 1 and 1 <= multiplier <= steps, got steps={steps}, "
                          f"multiplier={multiplier}")
    if init_channels < 1:
        raise SearchError(f"--init_channels must be positive, got {init_channels}")
    return SupernetSpec(num_classes=num_classes, init_channels=init_channels, layers=layers, steps=steps,
                        multiplier=multiplier, primitives=primitives, weighting=weighting, layout=layout,
                        layer_sets=tuple(layer_sets),
                        reductions=tuple(reductions), family=family, mid_channels=mid_channels,
                        network=network, in_channels=in_channels)


class SearchNetwork(Supernet):
    """The cell supernet. ``forward(x, coefficients=None, ablate=None) -> logits``.

    ``coefficients`` (one ``EdgeWeights`` per set) replaces what ``coefficients()`` would give
    (SDARTS's perturbed weights, DARTS-PT's projected ones); ``ablate=g`` replaces the op
    coefficients of every layer using set g by random ones (D-DARTS's deactivated cell) for a
    marginal contribution. Subclasses change the weighting (``coefficients``), the weights
    genotypes are parsed from (``probabilities``) and what counts as an architecture parameter
    (``arch_parameters``); ``mixed_op`` builds each edge (module docstring).
    """

    def __init__(self, spec: SupernetSpec, alphas_init: str | np.ndarray = "randn", *,
                 mixed_op: MixedOpFactory = MixedOp):
        super().__init__()
        self.spec = spec
        C, steps, multiplier = spec.init_channels, spec.steps, spec.multiplier
        if spec.network == "imagenet":
            self.stem0, self.stem1 = imagenet_stems(spec.in_channels, C)
            C_prev_prev = C_prev = C
            reduction_prev = True
        else:
            C_stem = spec.stem_multiplier * C
            self.stem = cifar_stem(spec.in_channels, C_stem)
            C_prev_prev = C_prev = C_stem
            reduction_prev = False
        C_curr = C
        self.cells = nn.ModuleList()
        for i in range(spec.layers):
            reduction = i in spec.reductions
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                         spec.primitives, spec.family, spec.mid_channels, mixed_op))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, spec.num_classes)

        shape = (spec.n_sets, spec.n_edges, len(spec.primitives))
        if isinstance(alphas_init, str):
            if alphas_init == "randn":        # DARTS
                init = 1e-3 * torch.randn(shape)
            elif alphas_init == "zeros":      # D-DARTS
                init = torch.zeros(shape)
            else:
                raise SearchError(f"unknown alphas_init {alphas_init!r}; use randn, zeros or an array")
        else:
            init = torch.as_tensor(np.asarray(alphas_init), dtype=torch.float32)
            if tuple(init.shape) != shape:
                raise SearchError(f"initial architecture weights have shape {tuple(init.shape)}, the "
                                  f"supernet needs {shape}")
        self.alphas = nn.ParameterList(nn.Parameter(a.clone()) for a in init)
        self._layer_sets = list(spec.layer_sets)

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    # ------------------------------------------------------------------ forward

    def coefficients(self) -> list[EdgeWeights]:
        """What every set gives its cells (the weighting applied once per forward)."""
        return [EdgeWeights(op_coefficients(a, self.spec.weighting)) for a in self.alphas]

    def stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.network == "imagenet":
            s0 = self.stem0(x)
            return s0, self.stem1(s0)
        s = self.stem(x)
        return s, s

    def forward(self, x: torch.Tensor, coefficients: list[EdgeWeights] | None = None,
                ablate: int | None = None) -> torch.Tensor:
        coefficients = self.coefficients() if coefficients is None else coefficients
        s0, s1 = self.stem_forward(x)
        for i, cell in enumerate(self.cells):
            g = self._layer_sets[i]
            w = coefficients[g]
            if g == ablate:
                w = dataclasses.replace(w, ops=torch.rand(w.ops.shape, device=x.device, dtype=w.ops.dtype))
            s0, s1 = s1, cell(s0, s1, w.ops, w.edges, w.active)
        return self.classifier(self.global_pooling(s1).flatten(1))

    # ------------------------------------------------------------------ genotypes

    @torch.no_grad()
    def probabilities(self) -> np.ndarray:
        """(n_sets, n_edges, n_ops) float64 weights that genotypes are parsed from."""
        return np.stack([op_probabilities(a.detach().float(), self.spec.weighting).cpu().double().numpy()
                         for a in self.alphas])

    def genotype(self, method: str = "darts", op_threshold: float = 0.85,
                 weights: np.ndarray | None = None) -> GenotypeRecord:
        """The genotype the current weights (or `weights`, (n_sets, n_edges, n_ops)) stand for.

        Shared weights give a classic ``Genotype``; per-cell and baseline weights a
        ``Genotype_nested`` with one gene per layer and the reductions this supernet really
        has (D-DARTS writes reductions that its search network did not use).
        """
        spec = self.spec
        weights = self.probabilities() if weights is None else np.asarray(weights)
        try:
            if spec.layout == "shared":
                return shared_genotype(weights[0], weights[1], spec.primitives, spec.steps, spec.multiplier,
                                       method, op_threshold)
            return per_cell_genotype(weights[list(spec.layer_sets)], spec.primitives, spec.steps,
                                     spec.multiplier, list(spec.reductions), method, op_threshold)
        except DeriveError as e:
            raise SearchError(f"cannot derive a genotype: {e}") from None

    def derive(self, method: str = "darts", op_threshold: float = 0.85) -> CellResult:
        return CellResult(self.genotype(method, op_threshold), self.spec, method, op_threshold)

    # ------------------------------------------------------------------ reports

    def describe(self) -> str:
        spec = self.spec
        return (f"supernet: {spec.layout} layout, {spec.weighting} weighting, {spec.n_sets} sets of "
                f"{spec.n_edges}x{len(spec.primitives)} alphas | primitives {', '.join(spec.primitives)} "
                f"({spec.family} ops) | C={spec.init_channels} | layers={spec.layers} reductions="
                f"{list(spec.reductions)} | steps={spec.steps} multiplier={spec.multiplier}")

    def set_names(self) -> list[str]:
        return self.spec.set_names()

    def weight_tables(self) -> dict[str, WeightTable]:
        """The parse weights of every set, with their rows (edges) and columns (ops) named."""
        edges = [f"{j}-{i + 2}" for i in range(self.spec.steps) for j in range(i + 2)]
        return {name: WeightTable(w, edges, list(self.spec.primitives))
                for name, w in zip(self.set_names(), self.probabilities())}

    def save_weights(self, stem: Path) -> None:
        """<stem>.npy: the parse weights, (sets, edges, ops)."""
        np.save(stem.with_suffix(".npy"), self.probabilities())

    def spec_dict(self) -> dict:
        return self.spec.to_dict()


@lru_cache(maxsize=None)
def parameter_free(op: str, family: str, mid_channels: int) -> bool:
    """Whether a primitive has no parameters in a normal (stride-1) cell of an evaluation network:
    skip_connect, pools, none (a new primitive is classified by building it)."""
    return sum(p.numel() for p in build_op(op, 4, 1, True, family, mid_channels).parameters()) == 0


@dataclass(frozen=True)
class CellResult:
    """A derived cell genotype: what the search logs each epoch and writes at the end."""
    record: GenotypeRecord
    spec: SupernetSpec
    parse_method: str
    op_threshold: float
    label = "genotype"

    def text(self) -> str:
        return format_genotype(self.record).strip()

    def normal_cells(self) -> list[list[str]]:
        """The ops of every normal (non-reduction) cell."""
        if self.record.kind == "Genotype":
            return [[edge[0] for edge in self.record.get("normal")]]
        reductions = set(self.record.get("reductions"))
        return [[edge[0] for edge in gene] for layer, gene in enumerate(self.record.get("genes"))
                if layer not in reductions]

    def collapse(self) -> dict[str, float]:
        """Skip connections and parameter-free ops per normal cell (the mean over them for one
        gene per cell): DARTS's collapse fills the normal cell with them."""
        cells = self.normal_cells() or [[]]
        free = [[op for op in ops if parameter_free(op, self.spec.family, self.spec.mid_channels)] for ops in cells]
        return {"skip_connections": float(np.mean([ops.count("skip_connect") for ops in cells])),
                "param_free_ops": float(np.mean([len(ops) for ops in free]))}

    def write(self, path: Path, origin: str, run_dir: Path) -> None:
        """Check that it builds, then write it (sharpDARTS's form for sharp ops)."""
        try:
            to_architecture(self.record, path.stem)
        except GenotypeError as e:
            raise SearchError(f"the derived genotype cannot be trained ({e}); derive it again with a lower "
                              f"--op_threshold: python cnn/train_search.py --resume {run_dir} "
                              f"--op_threshold 0.6") from None
        record = self.record
        if self.spec.family == "sharp" and record.kind == "Genotype":
            record = dataclasses.replace(record, fields=record.fields + (("layout", "cell"),))
        parse = f"parse: {self.parse_method}" + (f" op_threshold={self.op_threshold}"
                                                  if self.parse_method != "darts" else "")
        write_genotype_file(path, dataclasses.replace(record, comments=(origin, f"run: {run_dir.name}; {parse}")))

    def train_command(self, name: str, dataset: str) -> str:
        family = "" if self.spec.family == "darts" or self.record.kind == "Genotype" else f" --ops {self.spec.family}"
        return f"python cnn/train.py --arch {name} --dataset {dataset}{family}"


# ----------------------------------------------------------------------------------------
# DARTOpti baselines
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    """A hand-made architecture to start from (a ``Genotype_opt``: distinct genes and a layer sequence)."""
    arch: Architecture
    steps: int
    layer_genes: tuple[int, ...]
    reductions: tuple[int, ...]

    def alphas(self, primitives: tuple[str, ...]) -> np.ndarray:
        """(n_genes, n_edges, n_ops): BASELINE_LOGIT on the baseline's ops, 0 elsewhere (D-DARTS)."""
        column = {op: k for k, op in enumerate(primitives)}
        out = np.zeros((len(self.arch.cells), edge_count(self.steps), len(primitives)), dtype=np.float32)
        for g, cell in enumerate(self.arch.cells):
            for e in cell.edges:
                out[g, edge_count(e.to_node - 2) + e.from_node, column[e.op]] = BASELINE_LOGIT
        return out


def load_baseline(name: str) -> Baseline:
    """ResNet18, ResNet50, Xception or any Genotype_opt/Genotype_nested file, for DARTOpti.

    The cell has as many steps as the written ``concat`` says (D-DARTS: ``concat[-1] - 1``), or
    more if an edge targets a later node.
    """
    path = genotype_path(name)
    record = read_genotype_file(path)
    arch = to_architecture(record, path.stem)
    if arch.shared:
        raise SearchError(f"--arch_baseline {name}: a DARTOpti baseline is a Genotype_opt (or "
                          f"Genotype_nested) with one gene per layer, not a classic Genotype")
    for g, cell in enumerate(arch.cells):
        for e in cell.edges:
            if e.from_node >= e.to_node:
                raise SearchError(f"--arch_baseline {name}: gene {g} has an edge from node {e.from_node} "
                                  f"to node {e.to_node}, which the search cell cannot hold")
    concat = record.get("concat")
    written = list(concat.to_range()) if isinstance(concat, RangeLiteral) else list(concat)
    top = max(e.to_node for cell in arch.cells for e in cell.edges)
    steps = max(top, max(written, default=top)) - 1
    layers = len(arch.layer_genes)
    reductions = tuple(r for r in arch.reductions)
    bad = [r for r in reductions if not 0 <= r < layers]
    if bad:
        raise SearchError(f"--arch_baseline {name}: reduction layer {bad[0]} is outside its {layers} layers")
    return Baseline(arch, steps, tuple(arch.layer_genes), reductions)
