"""Evaluation networks built from an architecture (any genotype form).

For classic genotypes the parameter names are those of the original DARTS `NetworkCIFAR`
and `NetworkImageNet` (stems, `cells.<i>.preprocess0/1`, `cells.<i>._ops.<k>` in the order
the genotype lists its edges, `auxiliary_head`, `classifier`), so a state_dict saved by the
DARTS code loads with `strict=True`. D-DARTS nested cells keep the same flat `_ops` list; a
D-DARTS checkpoint loads through `ddarts_state_dict`.

Cell semantics (one forward for every form): intermediate nodes are computed in the order
in which they first appear as an edge target; a node sums all of its incoming ops; an edge
whose source node has not been computed is skipped (as D-DARTS does); a node with no usable
input is not computed and, if it is concatenated, contributes zeros. Classic DARTS cells
apply drop path per op (never to identities); D-DARTS nested cells apply it per node.

Differences from the reference code, on purpose: both networks end with an adaptive
average pool (DARTS' `AvgPool2d(7)` equals it at 224 px, and D-DARTS networks with two
reductions would not fit it); when D-DARTS's automatic derivation builds more layers than the
genotype has cells, the reductions move to depth/3 and 2*depth/3, where the derivation puts
the reduction genes (D-DARTS keeps them at the genotype's original indices).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import load_weights
from errors import UserError
from genotypes import (Architecture, CellGenes, format_genotype, genotype_path, parse_genotype, read_genotype_file,
                       to_architecture)
import lean_ops
from operations import (DEFAULT_MID_CHANNELS, FactorizedReduce, PointwiseConv2d, ReLUConvBN, ReLUFirst, build_op,
                        concat_channels, takes_relu)


class ModelError(UserError, ValueError):
    """A network that cannot be built from the given architecture and sizes."""


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability drop_prob and rescale the rest. The mask compares uniform draws
    with the keep probability (a Bernoulli draw) rather than calling bernoulli_(keep), whose probability
    torch.compile would bake into the graph: compiled, a new probability each epoch would recompile. The
    rescaling folds into the per-sample mask: one pass over x forward and backward, where x / keep * mask
    made two."""
    keep = 1.0 - drop_prob
    mask = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < keep).to(x.dtype)
    return x * (mask / keep)


class Cell(nn.Module):
    def __init__(self, genes: CellGenes, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, *, nested: bool, family: str, mid_channels: int):
        super().__init__()
        self.reduction = reduction
        self.nested = nested
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self._ops = nn.ModuleList(
            build_op(e.op, C, 2 if reduction and e.from_node < 2 else 1, True, family, mid_channels)
            for e in genes.edges)
        self._sources = [e.from_node for e in genes.edges]
        self._targets = [e.to_node for e in genes.edges]
        self._plan = _evaluation_plan(genes)
        if not self._plan:
            raise ModelError(f"a cell has no node that can be computed from its inputs: {genes.edges}")
        self._concat = list(genes.concat)
        self._is_identity = [isinstance(op, nn.Identity) for op in self._ops]
        self._takes_relu = [takes_relu(op) for op in self._ops]
        self._lean: list | None = None       # the chains cnn/lean_ops.py runs in training, made at the first use
        self.multiplier = len(self._concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        return self.after_relu(F.relu(s0), F.relu(s1), drop_prob)

    def after_relu(self, r0: torch.Tensor, r1: torch.Tensor, drop_prob: float = 0.0,
                   convolved: dict[int, torch.Tensor] | None = None, relu_output: bool = False) -> torch.Tensor:
        """The cell on the ReLUs of its inputs (both preprocessing ops start with a ReLU). An op that starts
        with a ReLU gets the one ReLU of its state, shared with the other ops that read that state.
        `convolved` holds, for input 0 or 1, its preprocessing's 1x1 convolution already computed (by
        ``lean_ops.shared_pointwise``, ``pointwise_preprocess``): only the BatchNorm is left to apply.
        With `relu_output` the cell returns the ReLU of its output (what the next cells read)."""
        convolved = convolved or {}
        states = {j: preprocess.op[2](convolved[j]) if j in convolved else preprocess.after_relu(r)
                  for j, (preprocess, r) in enumerate(((self.preprocess0, r0), (self.preprocess1, r1)))}
        relus: dict[int, torch.Tensor] = {}
        drop = self.training and drop_prob > 0.0
        lean = self._lean_chains(r0)
        lean_output = relu_output and lean_ops.runs(self, r0)
        chained: dict[int, torch.Tensor] = {}       # lean chains' outputs computed ahead of their node
        for node, edge_ids in self._plan:
            out, out_fresh = None, False
            for k in edge_ids:
                source = self._sources[k]
                if self._takes_relu[k]:
                    if source not in relus:
                        relus[source] = F.relu(states[source])
                    if lean[k] is None:
                        h = self._ops[k].after_relu(relus[source])
                    else:
                        if k not in chained:
                            self._run_ready_chains(lean, states, relus, chained)
                        h = chained[k]
                else:
                    h = self._ops[k](states[source])
                # A lean chain's or drop path's output is kept by no backward: a sum may add into it in place.
                h_fresh = lean[k] is not None
                if drop and not self.nested and not self._is_identity[k]:
                    h, h_fresh = drop_path(h, drop_prob), True
                out, out_fresh = _add(out, out_fresh, h, h_fresh)
            if drop and self.nested:
                out = drop_path(out, drop_prob)
            states[node] = out
        reference = states[self._plan[-1][0]]
        parts = [states[i] if i in states else torch.zeros_like(reference) for i in self._concat]
        if lean_output:
            return lean_ops.relu_concat(parts)
        return F.relu(concat_channels(parts)) if relu_output else concat_channels(parts)

    def _run_ready_chains(self, lean: list, states: dict, relus: dict, chained: dict) -> None:
        """Every lean chain of the plan whose input state exists and whose output is not yet computed, in one
        function (their kernels run in two lanes on a CPU, see core/lanes.py)."""
        ready = [k for _, edge_ids in self._plan for k in edge_ids
                 if lean[k] is not None and k not in chained and self._sources[k] in states]
        for k in ready:
            if self._sources[k] not in relus:
                relus[self._sources[k]] = F.relu(states[self._sources[k]])
        outputs = lean_ops.lean_chains([relus[self._sources[k]] for k in ready], [lean[k] for k in ready])
        chained.update(zip(ready, outputs))

    def _lean_chains(self, x: torch.Tensor) -> list:
        """Per op, the chain cnn/lean_ops.py runs in its place (training with gradients), else None."""
        if not lean_ops.runs(self, x):
            return [None] * len(self._ops)
        if self._lean is None:
            self._lean = [p if isinstance(p, lean_ops.ConvChain) else None for p in map(lean_ops.plan, self._ops)]
        return self._lean


def _add(total: torch.Tensor | None, total_fresh: bool, h: torch.Tensor, h_fresh: bool) -> tuple[torch.Tensor, bool]:
    """(total + h, whether the sum may be written in place), in place into a fresh tensor when there is one:
    a new tensor the size of a cell state costs more than the addition (IEEE addition commutes, so h + total
    is the same sum)."""
    if total is None:
        return h, h_fresh
    if total_fresh:
        return total.add_(h), True
    if h_fresh:
        return h.add_(total), True
    return total + h, True


def pointwise_preprocess(preprocess: nn.Module) -> PointwiseConv2d | None:
    """The convolution of a preprocessing ReLUConvBN that is a stride-1 1x1 convolution followed by a plain
    BatchNorm, else None (classes matched exactly)."""
    if type(preprocess) is not ReLUConvBN or type(preprocess.op[2]) is not nn.BatchNorm2d:
        return None
    conv = preprocess.op[1]
    return conv if type(conv) is PointwiseConv2d and conv.stride == (1, 1) else None


def _evaluation_plan(genes: CellGenes) -> list[tuple[int, list[int]]]:
    """(node, edge indices) in computation order; edges from uncomputed nodes are left out."""
    targets: list[int] = []
    for e in genes.edges:
        if e.to_node not in targets:
            targets.append(e.to_node)
    computed = {0, 1}
    plan = []
    for node in targets:
        usable = [k for k, e in enumerate(genes.edges) if e.to_node == node and e.from_node in computed]
        if usable:
            plan.append((node, usable))
            computed.add(node)
    return plan


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier after the last reduction cell, laid out as in DARTS.

    CIFAR: 8x8 features pooled with stride 3. ImageNet: 14x14 pooled with stride 2 and, as in
    DARTS, no norm after the 2x2 conv (its state_dict indices depend on that); sharpDARTS and
    D-DARTS keep that norm (``features.6``), so their ImageNet checkpoints load strictly.
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, norm_after_conv: bool):
        super().__init__()
        layers = [
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            PointwiseConv2d(C, 128),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if norm_after_conv:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = ReLUFirst(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features.after_relu(r).flatten(1))


def default_reductions(layers: int) -> tuple[int, ...]:
    """DARTS reduces at 1/3 and 2/3 of the depth (one reduction when those coincide)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def cifar_stem(in_channels: int, C_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, C_out, 3, padding=1, bias=False), nn.BatchNorm2d(C_out))


def imagenet_stems(in_channels: int, C: int, second_stride: int = 2) -> tuple[nn.Sequential, nn.Sequential]:
    """DARTS's two ImageNet stems (8x down); D-DARTS's second conv has stride 1 (4x down)."""
    stem0 = nn.Sequential(
        nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(C // 2, C, 3, stride=second_stride, padding=1, bias=False),
        nn.BatchNorm2d(C),
    )
    stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(C))
    return stem0, stem1


@dataclass(frozen=True)
class LayerPlan:
    genes: tuple[int, ...]        # index into Architecture.cells for each layer
    reductions: tuple[int, ...]   # layers that halve the resolution


def layer_plan(arch: Architecture, layers: int | None) -> LayerPlan:
    """Which gene each layer uses and where the network reduces.

    Shared genotypes reduce at depth/3 and 2*depth/3. Per-cell genotypes use one gene per
    layer; a deeper network is derived the way D-DARTS maps layers to its genes.
    """
    if arch.shared:
        if layers is None or layers < 1:
            raise ModelError("the number of layers must be a positive integer")
        reductions = default_reductions(layers)
        return LayerPlan(tuple(1 if i in reductions else 0 for i in range(layers)), reductions)
    G = len(arch.layer_genes)
    if layers is None or layers == G:
        return LayerPlan(tuple(arch.layer_genes), tuple(arch.reductions))
    if layers < G:
        raise ModelError(f"genotype {arch.name} defines {G} cells: --layers must be {G} or more "
                         f"(more layers derive a deeper network)")
    if len(arch.reductions) > 2:
        raise ModelError(f"automatic derivation is undefined for {arch.name}: it has "
                         f"{len(arch.reductions)} reduction cells (at most 2 are supported); "
                         f"train it with --layers {G}")
    first, second = G // 3, 2 * G // 3
    middle_span, last_span = second - 1 - first, G - 1 - second
    if middle_span < 1 or last_span < 1:
        raise ModelError(f"automatic derivation is undefined for {arch.name}: its {G} cells "
                         f"leave no normal cell between or after the reduction cells")
    genes = []
    for i in range(layers):
        if i < layers // 3:
            n = (i % G) // 3
        elif i == layers // 3:
            n = first
        elif i < 2 * layers // 3:
            n = i % middle_span + first + 1
        elif i == 2 * layers // 3:
            n = second
        else:
            n = i % last_span + second + 1
        genes.append(arch.layer_genes[n])
    return LayerPlan(tuple(genes), (layers // 3, 2 * layers // 3))


class Network(nn.Module):
    """Cells stacked on a stem; the CIFAR and ImageNet variants differ only in the stem."""

    def __init__(self, arch: Architecture, C: int, num_classes: int, layers: int | None,
                 auxiliary: bool, family: str, mid_channels: int, C_stem_out: int, reduction_prev: bool,
                 aux_pool_stride: int, aux_norm_after_conv: bool):
        super().__init__()
        plan = layer_plan(arch, layers)
        self._auxiliary = auxiliary
        self._aux_layer = plan.reductions[-1] if plan.reductions else len(plan.genes) - 1
        self.drop_path_prob = 0.0
        C_prev_prev, C_prev, C_curr = C_stem_out, C_stem_out, C
        self.cells = nn.ModuleList()
        C_to_auxiliary = C_prev
        for i, gene in enumerate(plan.genes):
            reduction = i in plan.reductions
            if reduction:
                C_curr *= 2
            cell = Cell(arch.cells[gene], C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                        nested=arch.nested, family=family, mid_channels=mid_channels)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self._aux_layer:
                C_to_auxiliary = C_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(C_to_auxiliary, num_classes, aux_pool_stride, aux_norm_after_conv)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each cell output is read by the next two cells' preprocessing (and maybe the auxiliary head),
        all starting with a ReLU: it is applied once, by the cell (the last cell's output goes to the
        classifier as it is)."""
        logits_aux = None
        s0, s1 = self.stem_forward(x)
        r0 = F.relu(s0)
        r1 = r0 if s1 is s0 else F.relu(s1)
        lean = lean_ops.runs(self, x)
        ahead: dict[int, torch.Tensor] = {}
        for i, cell in enumerate(self.cells):
            convolved, ahead = ahead, {}
            following = self.cells[i + 1] if i + 1 < len(self.cells) else None
            convs = (pointwise_preprocess(cell.preprocess1),
                     None if following is None else pointwise_preprocess(following.preprocess0))
            if lean and all(convs):
                # r1 is read by this cell's preprocess1 and the next one's preprocess0: both 1x1 convolutions now.
                convolved[1], ahead[0] = lean_ops.shared_pointwise(r1, tuple(c.weight for c in convs))
            out = cell.after_relu(r0, r1, self.drop_path_prob, convolved, relu_output=following is not None)
            auxiliary = i == self._aux_layer and self._auxiliary and self.training
            if following is not None or auxiliary:
                r0, r1 = r1, out if following is not None else F.relu(out)
            if auxiliary:
                logits_aux = self.auxiliary_head.after_relu(r1)
        logits = self.classifier(self.global_pooling(out).flatten(1))
        return logits, logits_aux


class NetworkCIFAR(Network):
    def __init__(self, C: int, num_classes: int, layers: int | None, auxiliary: bool,
                 arch: Architecture, family: str = "darts", mid_channels: int = DEFAULT_MID_CHANNELS,
                 in_channels: int = 3, stem_multiplier: int = 3):
        super().__init__(arch, C, num_classes, layers, auxiliary, family, mid_channels,
                         C_stem_out=stem_multiplier * C, reduction_prev=False, aux_pool_stride=3,
                         aux_norm_after_conv=True)
        self.stem = cifar_stem(in_channels, stem_multiplier * C)

    def stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(Network):
    """DARTS ImageNet stems (224 px to 28 px); D-DARTS per-cell genotypes keep D-DARTS's layout,
    whose second stem conv has stride 1, so the checkpoints published with D-DARTS run at the
    resolution they were trained at. The auxiliary head has a norm after its 2x2 conv except in
    DARTS's own networks (classic genotypes with DARTS ops): sharpDARTS (the sharp op family) and
    D-DARTS build it."""

    def __init__(self, C: int, num_classes: int, layers: int | None, auxiliary: bool,
                 arch: Architecture, family: str = "darts", mid_channels: int = DEFAULT_MID_CHANNELS,
                 in_channels: int = 3):
        super().__init__(arch, C, num_classes, layers, auxiliary, family, mid_channels,
                         C_stem_out=C, reduction_prev=True, aux_pool_stride=2,
                         aux_norm_after_conv=family == "sharp" or not arch.shared)
        self.stem0, self.stem1 = imagenet_stems(in_channels, C, second_stride=2 if arch.shared else 1)

    def stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


NETWORK_DEFAULTS = {
    "cifar": {"init_channels": 36, "layers": 20, "mid_channels": 32},
    "imagenet": {"init_channels": 48, "layers": 14, "mid_channels": 96},
}
# The auxiliary heads pool 5x5 then convolve 2x2: the smallest input side they accept.
MIN_AUXILIARY_INPUT = {"cifar": 30, "imagenet": 224}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that rebuilds an evaluation network; checkpoints carry it as a dict."""
    arch_name: str
    genotype: str           # the genotype text, so a checkpoint is self-contained
    network: str            # "cifar" or "imagenet" stem
    num_classes: int
    init_channels: int
    layers: int | None      # None: one layer per cell of a per-cell genotype
    ops: str                # op family
    mid_channels: int
    auxiliary: bool

    @classmethod
    def resolve(cls, arch: str, network: str, num_classes: int, *, init_channels: int | None = None,
                layers: int | None = None, ops: str = "auto", mid_channels: int | None = None,
                auxiliary: bool = False) -> "ModelSpec":
        """Fill unset sizes with the DARTS defaults of the stem type; 'auto' ops = the genotype's family."""
        path = genotype_path(arch)
        record = read_genotype_file(path)
        architecture = to_architecture(record, path.stem)
        defaults = NETWORK_DEFAULTS[network]
        if layers is None and architecture.shared:
            layers = defaults["layers"]
        return cls(arch_name=path.stem, genotype=format_genotype(record), network=network,
                   num_classes=num_classes,
                   init_channels=init_channels or defaults["init_channels"], layers=layers,
                   ops=architecture.ops if ops == "auto" else ops,
                   mid_channels=mid_channels or defaults["mid_channels"], auxiliary=auxiliary)

    def check_input_size(self, image_size: int) -> None:
        """Refuse an auxiliary head that the input resolution cannot feed."""
        if self.auxiliary and image_size < MIN_AUXILIARY_INPUT[self.network]:
            raise ModelError(f"--auxiliary needs inputs of at least {MIN_AUXILIARY_INPUT[self.network]} px with the "
                             f"{self.network} stem, this dataset has {image_size} px: drop --auxiliary")

    def architecture(self) -> Architecture:
        return to_architecture(parse_genotype(self.genotype, source=self.arch_name), self.arch_name)

    def build(self) -> Network:
        cls = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}[self.network]
        return cls(self.init_channels, self.num_classes, self.layers, self.auxiliary, self.architecture(),
                   family=self.ops, mid_channels=self.mid_channels)

    def describe(self) -> str:
        return (f"arch {self.arch_name} | ops {self.ops} | C={self.init_channels} | layers={self.layers or 'per-cell'} "
                f"| {self.network} stem | {self.num_classes} classes")

    def to_dict(self) -> dict:
        return asdict(self)


def min_train_batch(spec) -> int:
    """The fewest images per batch (and process) that `spec`'s network trains on (a ModelSpec or a
    multi-channel PathSpec): 2 with the CIFAR auxiliary head, whose last BatchNorm sees a 1x1 map and
    so one value per image and channel, else 1."""
    return 2 if spec.auxiliary and spec.network == "cifar" else 1


def ddarts_state_dict(state: dict[str, torch.Tensor], model: Network) -> dict[str, torch.Tensor]:
    """Rename the keys of a D-DARTS checkpoint to ours.

    D-DARTS nests a nested cell's ops as `cells.<i>._ops.<to>.<from>.<j>.<rest>` (j counts
    the ops between the same two nodes); we keep one flat list in genotype edge order,
    `cells.<i>._ops.<k>.<rest>`. Every other key is the same, and keys already in our form
    (never three numbers after `_ops`) pass unchanged.
    """
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if (len(parts) > 6 and parts[0] == "cells" and parts[2] == "_ops" and all(p.isdigit() for p in parts[3:6])
                and model.cells[int(parts[1])].nested):
            cell = model.cells[int(parts[1])]
            to_node, from_node, j = int(parts[3]), int(parts[4]), int(parts[5])
            matches = [k for k in range(len(cell._ops))
                       if cell._sources[k] == from_node and cell._targets[k] == to_node]
            if j >= len(matches):
                raise ModelError(f"checkpoint key {key} has no matching op in the genotype")
            key = ".".join(parts[:3] + [str(matches[j])] + parts[6:])
        renamed[key] = value
    return renamed


def load_model_weights(model: nn.Module, spec, weights: dict[str, torch.Tensor], source: str) -> None:
    """Weights of our checkpoints, or DARTS's and D-DARTS's published ones, into `model` (built from
    `spec`, a ModelSpec or a multi-channel PathSpec)."""
    if isinstance(spec, ModelSpec) and spec.architecture().nested:
        weights = ddarts_state_dict(weights, model)
    load_weights(model, weights, source)
