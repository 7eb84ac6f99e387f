"""The sharpDARTS multi-channel search space ("Differentiable Hyperparameter Grid Search").

The search network (sharpDARTS ``MultiChannelNetwork``) is a grid over channel widths. A stem
(3x3 conv + BatchNorm) maps the image to *every* width at once; then each of ``layers``
layers has a stride-1 stage and a stride-2 stage, and in each stage every (c_in, c_out) pair
of widths has one op per op type of ``PATH_OPS``:

``SharpSepConv``   sharpDARTS SharpSepConv, 3x3, its middle width = c_out (``SepConv`` with C_mid)
``ResizablePool``  3x3 max pool, then a 1x1 conv + BatchNorm when c_in != c_out

The output of width c_out is the sum over all c_in and ops of ``coefficient * op(input of
width c_in)``. After the last stage a SharpSepConv per width maps each width to
``HEAD_CHANNELS`` (768); their outputs are summed, pooled and classified. The architecture
weights have shape (layers, W, W, ops) per stage kind (``normal`` = stride 1, ``reduce`` =
stride 2), and one softmax (or max_w / sigmoid, see ``model_search.op_coefficients``) spans a
whole stage of one layer: all W * W * ops entries, not one edge. The stem and the head carry
no architecture weights in sharpDARTS, and none here.

A *path* (``ChannelPath``) picks one op per stage such that the widths chain; ``PathNetwork``
trains it: stem, the 2 * layers ops in sequence, the head SharpSepConv, pooling, classifier.
``best_path`` is the path with the highest sum of stage weights (softmax probabilities, what
sharpDARTS stores as its raw-weight genotype); sharpDARTS finds it with networkx
``dag_longest_path`` over a graph whose op edges carry these weights; here an exact dynamic
programme over the grid gives the same path (checked on both published searches).

Differences from sharpDARTS, on purpose:
* every op is always computed; sharpDARTS skips ops whose weight fell below 1 / (W*W*ops)^2
  (its ``always_apply_ops=False``), which needs a host sync per op and freezes those weights;
* ``PathNetwork`` builds all 2 * layers ops of the path; sharpDARTS's later simple-path model
  drops the last one (``model[3:-4]``);
* ties in ``best_path`` go to the earliest width of ``channels`` (the narrowest for the
  published grid), then SharpSepConv; networkx breaks them by its topological order.
* ``mid_channels=None`` keeps sharpDARTS's middle width (c_out); an integer chokes every grid
  SharpSepConv to that width instead (sharpDARTS's ``--mid_channels`` never reached this space).

Path files (``genotypes/multi_channel/NAME.txt``) hold ``NAME = ['Source', ...]`` in the
published list format, optionally after ``#`` comment lines, parsed with ``ast``, never run.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from errors import UserError
from model_search import WEIGHTINGS, op_coefficients, op_probabilities
from operations import PointwiseConv2d, SepConv
from paths import GENOTYPES_DIR
from supernet import Supernet
from textfiles import read_text, write_text_atomic
from weight_report import WeightTable

CHANNELS: tuple[int, ...] = (32, 64, 128, 256)
PATH_OPS: tuple[str, ...] = ("SharpSepConv", "ResizablePool")
PATHS_DIR: Path = GENOTYPES_DIR / "multi_channel"
HEAD_CHANNELS = 768     # sharpDARTS final_linear_filters

_OP_RE = re.compile(r"layer_(0|[1-9]\d*)_stride_([12])_c_in_([1-9]\d*)_c_out_([1-9]\d*)_op_type_(\w+)")
_STEM_RE = re.compile(r"Conv3x3_(0|[1-9]\d*)")
_HEAD_RE = re.compile(r"SharpSepConv([1-9]\d*)")
_TAIL = ("add-SharpSep", "global_pooling", "Linear")


class MultiChannelError(UserError):
    """A multi-channel path, path file or network setting that cannot be used."""


@dataclass(frozen=True)
class PathStep:
    layer: int
    stride: int
    c_in: int
    c_out: int
    op: str

    def name(self) -> str:
        return f"layer_{self.layer}_stride_{self.stride}_c_in_{self.c_in}_c_out_{self.c_out}_op_type_{self.op}"

    def add_name(self) -> str:
        return f"layer_{self.layer}_add_c_out_{self.c_out}_stride_{self.stride}"


@dataclass(frozen=True)
class ChannelPath:
    """One network of the grid. `stem_index` is the stem's position among the search grid's
    widths (the ``Conv3x3_<i>`` of the published names); None means its position in CHANNELS."""
    stem_channels: int
    steps: tuple[PathStep, ...]
    final_channels: int
    stem_index: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.stem_index is None:
            if self.stem_channels not in CHANNELS:
                raise MultiChannelError(f"a stem of {self.stem_channels} channels is not in the published grid "
                                        f"{CHANNELS}; give its stem_index in your grid")
            object.__setattr__(self, "stem_index", CHANNELS.index(self.stem_channels))
        elif not isinstance(self.stem_index, int) or self.stem_index < 0:
            raise MultiChannelError(f"stem_index must be a non-negative integer, got {self.stem_index!r}")
        if not self.steps or len(self.steps) % 2:
            raise MultiChannelError(f"a multi-channel path needs two steps per layer (stride 1, then stride 2), "
                                    f"got {len(self.steps)}")
        previous = self.stem_channels
        for i, step in enumerate(self.steps):
            where = f"multi-channel path step {step.name()!r}"
            if step.op not in PATH_OPS:
                raise MultiChannelError(f"{where}: unknown op type {step.op!r}; use one of {', '.join(PATH_OPS)}")
            if (step.layer, step.stride) != (i // 2, 1 + i % 2):
                raise MultiChannelError(f"{where}: step {i} must be layer {i // 2} with stride {1 + i % 2}")
            if min(step.c_in, step.c_out) < 1:
                raise MultiChannelError(f"{where}: widths must be positive")
            if step.c_in != previous:
                raise MultiChannelError(f"{where}: takes {step.c_in} channels but the step before gives {previous}")
            previous = step.c_out
        if self.final_channels != previous:
            raise MultiChannelError(f"multi-channel path head SharpSepConv{self.final_channels} does not match "
                                    f"the last step's {previous} channels")

    @property
    def layers(self) -> int:
        return len(self.steps) // 2

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ChannelPath:
        """Parse the published list format (module docstring); every entry is checked."""
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise MultiChannelError("a multi-channel path is a list of strings like ['Source', 'Conv3x3_0', ...]")
        names = list(names)

        def entry(i: int) -> str:
            if i >= len(names):
                raise MultiChannelError(f"multi-channel path ends after entry {len(names) - 1}; it must end with "
                                        f"'SharpSepConv<width>', {', '.join(map(repr, _TAIL))}")
            return names[i]

        def fail(i: int, expected: str):
            raise MultiChannelError(f"multi-channel path entry {i} {names[i]!r}: expected {expected}")

        if entry(0) != "Source":
            fail(0, "'Source'")
        stem = _STEM_RE.fullmatch(entry(1))
        if stem is None:
            fail(1, "'Conv3x3_<index of the stem width>'")
        if entry(2) != f"BatchNorm_{stem[1]}":
            fail(2, f"'BatchNorm_{stem[1]}'")
        steps, i = [], 3
        while (m := _OP_RE.fullmatch(entry(i))) is not None:
            step = PathStep(int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5])
            if entry(i + 1) != step.add_name():
                fail(i + 1, f"{step.add_name()!r} after {step.name()!r}")
            steps.append(step)
            i += 2
        if not steps:
            fail(i, "an op 'layer_0_stride_1_c_in_<w>_c_out_<w>_op_type_<op>'")
        head = _HEAD_RE.fullmatch(entry(i))
        if head is None:
            fail(i, "another op 'layer_<l>_stride_<s>_c_in_<w>_c_out_<w>_op_type_<op>' or 'SharpSepConv<width>'")
        for k, token in enumerate(_TAIL, start=i + 1):
            if entry(k) != token:
                fail(k, repr(token))
        if len(names) > i + 1 + len(_TAIL):
            fail(i + 1 + len(_TAIL), "nothing after 'Linear'")
        return cls(steps[0].c_in, tuple(steps), int(head[1]), stem_index=int(stem[1]))

    def names(self) -> list[str]:
        """The published list format; `from_names(p).names() == p`."""
        out = ["Source", f"Conv3x3_{self.stem_index}", f"BatchNorm_{self.stem_index}"]
        for step in self.steps:
            out += [step.name(), step.add_name()]
        return out + [f"SharpSepConv{self.final_channels}", *_TAIL]


# ----------------------------------------------------------------------------------------
# Path files
# ----------------------------------------------------------------------------------------

def _refuse(path: Path, node: ast.AST, what: str):
    raise MultiChannelError(f"{path}:{node.lineno}:{node.col_offset}: found {what}; a path file holds only "
                            f"NAME = ['Source', ...], a list of strings")


def read_path_file(path: Path) -> tuple[str, ChannelPath]:
    """(NAME, path) from a file holding `NAME = ['Source', ...]`; nothing in it is evaluated."""
    path = Path(path)
    text = read_text(path, "multi-channel path file", MultiChannelError)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:
        raise MultiChannelError(f"{path}:{e.lineno or 1}:{max((e.offset or 1) - 1, 0)}: invalid syntax "
                                f"({e.msg}); write NAME = ['Source', ...]") from None
    if len(tree.body) != 1:
        raise MultiChannelError(f"{path}: holds {len(tree.body)} statements; write exactly one NAME = ['Source', ...]")
    stmt = tree.body[0]
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        _refuse(path, stmt, f"a {type(stmt).__name__} statement")
    if not isinstance(stmt.value, ast.List):
        _refuse(path, stmt.value, "a call" if isinstance(stmt.value, ast.Call) else f"a {type(stmt.value).__name__}")
    for element in stmt.value.elts:
        if not (isinstance(element, ast.Constant) and isinstance(element.value, str)):
            _refuse(path, element, f"a {type(element).__name__} in the list")
    try:
        channel_path = ChannelPath.from_names([e.value for e in stmt.value.elts])
    except MultiChannelError as e:
        raise MultiChannelError(f"{path}:{stmt.value.lineno}: {e}") from None
    return stmt.targets[0].id, channel_path


def write_path_file(path: Path, name: str, channel_path: ChannelPath, comments: Sequence[str] = ()) -> None:
    """Write `# comments` and `NAME = [...]` atomically (temporary file, then os.replace)."""
    if not name.isidentifier():
        raise MultiChannelError(f"{name!r} cannot name a path: use letters, digits and underscores")
    lines = [c if c.startswith("#") else f"# {c}".rstrip() for c in (" ".join(c.split()) for c in comments)]
    lines.append(f"{name} = [{', '.join(repr(n) for n in channel_path.names())}]")
    write_text_atomic(path, "\n".join(lines) + "\n")


def list_paths() -> list[str]:
    """Names of the path files in PATHS_DIR."""
    return sorted(p.stem for p in PATHS_DIR.glob("*.txt") if p.is_file()) if PATHS_DIR.is_dir() else []


def load_path(arch: str) -> tuple[str, ChannelPath]:
    """A name in PATHS_DIR ('MULTI_CHANNEL_MAX_W_PATH') or the path of a path file."""
    given = Path(arch)
    if given.is_file():
        return read_path_file(given)
    stem = given.name[:-4] if given.name.endswith(".txt") else given.name
    candidate = PATHS_DIR / f"{stem}.txt"
    if given.parent == Path(".") and candidate.is_file():
        return read_path_file(candidate)
    raise MultiChannelError(f"unknown multi-channel path {arch!r}: neither a file nor a name in "
                            f"{PATHS_DIR.parent.name}/{PATHS_DIR.name}/; known: {', '.join(list_paths()) or 'none'}")


# ----------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------

class ResizablePool(nn.Module):
    """sharpDARTS ResizablePool: 3x3 max pool, then 1x1 conv + BatchNorm when the width changes."""

    def __init__(self, C_in: int, C_out: int, stride: int):
        super().__init__()
        pool = nn.MaxPool2d(3, stride=stride, padding=1)
        self.op = pool if C_in == C_out else nn.Sequential(
            pool, PointwiseConv2d(C_in, C_out), nn.BatchNorm2d(C_out, eps=1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def build_path_op(op: str, C_in: int, C_out: int, stride: int, mid_channels: int | None = None) -> nn.Module:
    """One grid op; affine BatchNorm in search and training alike, as sharpDARTS builds them."""
    if op == "SharpSepConv":
        return SepConv(C_in, C_out, 3, stride, 1, C_mid=C_out if mid_channels is None else mid_channels)
    if op == "ResizablePool":
        return ResizablePool(C_in, C_out, stride)
    raise MultiChannelError(f"unknown op type {op!r}; use one of {', '.join(PATH_OPS)}")


def _stem(in_channels: int, C: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))


def _head(C: int, head_channels: int) -> SepConv:
    return SepConv(C, head_channels, 3, 1, 1, C_mid=head_channels)


def _check_sizes(num_classes: int, in_channels: int, mid_channels: int | None, head_channels: int) -> None:
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels), ("head_channels", head_channels),
                        ("mid_channels", 1 if mid_channels is None else mid_channels)):
        if not isinstance(value, int) or value < 1:
            raise MultiChannelError(f"{what} must be a positive integer, got {value!r}")


def path_from_raw_weights(normal: np.ndarray, reduce: np.ndarray, channels: Sequence[int] = CHANNELS) -> ChannelPath:
    """The path with the highest sum of stage weights, exactly (dynamic programme over the grid).

    `normal` / `reduce`: (layers, W, W, ops) weights [layer][c_in][c_out][op] of the stride-1 /
    stride-2 stages. Ties go to the earliest width in `channels`, then the earliest op.
    """
    channels = tuple(channels)
    normal, reduce = np.asarray(normal, dtype=np.float64), np.asarray(reduce, dtype=np.float64)
    W, K = len(channels), len(PATH_OPS)
    if normal.ndim != 4 or normal.shape[1:] != (W, W, K) or reduce.shape != normal.shape:
        raise MultiChannelError(f"raw weights must both have shape (layers, {W}, {W}, {K}), got "
                                f"{normal.shape} and {reduce.shape}")
    stages = [(layer, stride, w) for layer in range(len(normal)) for stride, w in ((1, normal[layer]), (2, reduce[layer]))]
    score, choices = np.zeros(W), []
    for _, _, w in stages:
        # per c_out, the candidates (c_in, op) flattened c_in-major; argmax keeps the first maximum
        candidates = (score[:, None, None] + w).transpose(1, 0, 2).reshape(W, W * K)
        best = candidates.argmax(axis=1)
        choices.append(best)
        score = candidates[np.arange(W), best]
    c = final = int(score.argmax())
    steps = []
    for (layer, stride, _), best in zip(reversed(stages), reversed(choices)):
        c_in, op = divmod(int(best[c]), K)
        steps.append(PathStep(layer, stride, channels[c_in], channels[c], PATH_OPS[op]))
        c = c_in
    return ChannelPath(channels[c], tuple(reversed(steps)), channels[final], stem_index=c)


class MultiChannelSearchNetwork(Supernet):
    """The grid supernet (module docstring). forward(x) -> logits."""

    def __init__(self, num_classes: int, *, in_channels: int = 3, channels: Sequence[int] = CHANNELS,
                 layers: int = 4, weighting: str = "softmax", mid_channels: int | None = None,
                 head_channels: int = HEAD_CHANNELS):
        super().__init__()
        _check_sizes(num_classes, in_channels, mid_channels, head_channels)
        self.channels = tuple(channels)
        if not self.channels or len(set(self.channels)) != len(self.channels) or \
                not all(isinstance(c, int) and c > 0 for c in self.channels):
            raise MultiChannelError(f"channels must be distinct positive integers, got {list(channels)}")
        if not isinstance(layers, int) or layers < 1:
            raise MultiChannelError(f"layers must be a positive integer, got {layers!r}")
        if weighting not in WEIGHTINGS:
            raise MultiChannelError(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")
        self.weighting = weighting
        Cs = self.channels
        self.stem = nn.ModuleList(_stem(in_channels, c) for c in Cs)
        # op_grid[layer][stage][c_in][c_out][op], stage 0 = stride 1, stage 1 = stride 2 (sharpDARTS order)
        self.op_grid = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(nn.ModuleList(nn.ModuleList(
                build_path_op(op, ci, co, stride, mid_channels) for op in PATH_OPS) for co in Cs) for ci in Cs)
                for stride in (1, 2))
            for _ in range(layers))
        self.base = nn.ModuleList(_head(c, head_channels) for c in Cs)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_channels, num_classes)
        shape = (layers, len(Cs), len(Cs), len(PATH_OPS))
        self.alphas = nn.ParameterList([nn.Parameter(1e-3 * torch.randn(shape)) for _ in ("normal", "reduce")])
        self._spec = {"num_classes": num_classes, "in_channels": in_channels, "channels": list(Cs), "layers": layers,
                      "weighting": weighting, "mid_channels": mid_channels, "head_channels": head_channels}

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def coefficients(self) -> list[torch.Tensor]:
        """Per stage kind, (layers, W, W, ops) coefficients; one weighting spans a layer's stage."""
        return [op_coefficients(a.flatten(1), self.weighting).view_as(a) for a in self.alphas]

    def forward(self, x: torch.Tensor, coefficients: list[torch.Tensor] | None = None,
                ablate: int | None = None) -> torch.Tensor:
        if ablate is not None:
            raise MultiChannelError("the multi-channel search space has no cells to ablate; use --cell_loss none")
        coefficients = self.coefficients() if coefficients is None else coefficients
        states = [stem(x) for stem in self.stem]
        for layer, stages in enumerate(self.op_grid):
            for stage, grid in enumerate(stages):
                w = coefficients[stage][layer]
                new_states = []
                for co in range(len(self.channels)):
                    out = None
                    for ci, state in enumerate(states):
                        for k, op in enumerate(grid[ci][co]):
                            h = w[ci, co, k] * op(state)
                            out = h if out is None else out + h
                    new_states.append(out)
                states = new_states
        out = sum(head(s) for head, s in zip(self.base, states))
        return self.classifier(self.global_pooling(out).flatten(1))

    @torch.no_grad()
    def raw_weights(self) -> dict[str, np.ndarray]:
        """Stage probabilities (softmax; sigmoid for `sigmoid`), as sharpDARTS's raw-weight genotype."""
        return {kind: op_probabilities(a.detach().float().flatten(1), self.weighting).view_as(a).cpu().double().numpy()
                for kind, a in zip(("normal", "reduce"), self.alphas)}

    def best_path(self) -> ChannelPath:
        """The highest-weight path through the grid (`path_from_raw_weights` of `raw_weights`)."""
        raw = self.raw_weights()
        return path_from_raw_weights(raw["normal"], raw["reduce"], self.channels)

    def derive(self, method: str = "darts", op_threshold: float = 0.85) -> PathResult:
        """The best path (the grid has one rule; the parse flags are for cells)."""
        return PathResult(self.best_path())

    # ------------------------------------------------------------------ reports

    def describe(self) -> str:
        return (f"multi-channel grid: widths {list(self.channels)}, {len(self.op_grid)} layers of a stride-1 and a "
                f"stride-2 stage, {self.weighting} weighting")

    def set_names(self) -> list[str]:
        return ["normal", "reduce"]

    def weight_tables(self) -> dict[str, WeightTable]:
        """Per stage kind, one row per (layer, input width, output width), one column per op."""
        rows = [f"L{layer} {ci}>{co}" for layer in range(len(self.op_grid)) for ci in self.channels
                for co in self.channels]
        return {kind: WeightTable(w.reshape(len(rows), len(PATH_OPS)), rows, list(PATH_OPS))
                for kind, w in self.raw_weights().items()}

    def save_weights(self, stem: Path) -> None:
        """<stem>.npz: the normal and reduce stage weights, (layers, W, W, ops) each."""
        np.savez(stem.with_suffix(".npz"), **self.raw_weights())

    def spec_dict(self) -> dict:
        return dict(self._spec)


@dataclass(frozen=True)
class PathResult:
    """The best path of a multi-channel search: what it logs each epoch and writes at the end."""
    path: ChannelPath
    label = "best path"

    def text(self) -> str:
        return str(self.path.names())

    def collapse(self) -> dict[str, float]:
        return {}      # a path has no cell to collapse

    def write(self, path: Path, origin: str, run_dir: Path) -> None:
        write_path_file(path, path.stem, self.path, comments=(origin, f"run: {run_dir.name}; best path"))

    def train_command(self, name: str, dataset: str) -> str:
        return f"python cnn/train.py --multi_channel --arch {name} --dataset {dataset}"


class PathNetwork(nn.Module):
    """One path trained alone: stem, its ops in sequence, head SharpSepConv, pooling, classifier.

    `drop_path_prob` exists because the training loop sets it every epoch; it is not used: a
    path has no parallel branches to drop (sharpDARTS uses no drop path here either).
    """

    def __init__(self, path: ChannelPath, num_classes: int, *, in_channels: int = 3, mid_channels: int | None = None,
                 head_channels: int = HEAD_CHANNELS):
        super().__init__()
        if not isinstance(path, ChannelPath):
            raise MultiChannelError(f"PathNetwork needs a ChannelPath, got {type(path).__name__}")
        _check_sizes(num_classes, in_channels, mid_channels, head_channels)
        self.path = path
        self.drop_path_prob = 0.0
        self.stem = _stem(in_channels, path.stem_channels)
        self.ops = nn.ModuleList(build_path_op(s.op, s.c_in, s.c_out, s.stride, mid_channels) for s in path.steps)
        self.head = _head(path.final_channels, head_channels)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.stem(x)
        for op in self.ops:
            x = op(x)
        return self.classifier(self.global_pooling(self.head(x)).flatten(1)), None


@dataclass(frozen=True)
class PathSpec:
    """Everything that rebuilds a trained path network; checkpoints carry it as a dict whose
    ``kind`` tells it from a cell network's ``model.ModelSpec``."""
    arch_name: str
    path: tuple[str, ...]         # the published list format
    network: str                  # the dataset's stem type, kept for the checks of evaluate_model.py
    num_classes: int
    mid_channels: int | None = None
    head_channels: int = HEAD_CHANNELS
    auxiliary: bool = False       # a path has no auxiliary head
    kind: str = "multi_channel"

    @classmethod
    def resolve(cls, arch: str, network: str, num_classes: int, *, mid_channels: int | None = None) -> "PathSpec":
        name, channel_path = load_path(arch)
        return cls(arch_name=name, path=tuple(channel_path.names()), network=network, num_classes=num_classes,
                   mid_channels=mid_channels)

    def channel_path(self) -> ChannelPath:
        return ChannelPath.from_names(self.path)

    def check_input_size(self, image_size: int) -> None:
        """Any size works: the head pools globally."""

    def build(self) -> PathNetwork:
        return PathNetwork(self.channel_path(), self.num_classes, mid_channels=self.mid_channels,
                           head_channels=self.head_channels)

    def describe(self) -> str:
        widths = [self.channel_path().stem_channels] + [s.c_out for s in self.channel_path().steps]
        return f"multi-channel path {self.arch_name} | widths {' > '.join(map(str, widths))} | {self.network} data"

    def to_dict(self) -> dict:
        return {**asdict(self), "path": list(self.path)}
