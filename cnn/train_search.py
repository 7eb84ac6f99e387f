"""Architecture search: DARTS (first/second order), sharpDARTS, D-DARTS and DARTOpti in one engine.

    python cnn/train_search.py --unrolled                                    # DARTS, second order
    python cnn/train_search.py --batch_size 96 --pretrain_epochs 0 --init_channels 16 --amp --no_arch_metric
    python cnn/train_search.py --batch_size 96 --arch_baseline ResNet18 --amp   # DARTOpti
    python cnn/train_search.py --dataset cifar10 --batch_size 48 --layers_of_cells 8 --layers_in_cells 4 \\
        --save NAME --init_channels 16 --epochs 120 --cutout --autoaugment --seed 22 \\
        --weighting_algorithm max_w --primitives DARTS_PRIMITIVES               # sharpDARTS

Strategy (``--method``; ``auto``, the default, infers it from the flags of the original scripts):

* ``dartopti`` if ``--arch_baseline`` is given;
* ``ddarts`` if a D-DARTS flag is given: ``--pretrain_epochs --no_arch_metric --sep_loss
  --aux_loss_weight --cell_loss --abl_loss_weight``;
* ``sharp`` if a sharpDARTS flag is given: ``--weighting_algorithm --layers_of_cells
  --layers_in_cells --mid_channels --lr_power_annealing_exponent_order``;
* ``darts`` otherwise.

The method only fills in defaults (``METHOD_DEFAULTS``: weighting, primitives, op family, weight
layout, learning rates and schedule, losses, parse rule); every one of them can be set by its
flag. The method in effect and where it came from are printed and logged.

Writes logs/search/search-<save>-<timestamp>/: log.txt, command.txt, args.json, tensorboard/
(losses, accuracies, learning rates, every architecture weight and the genotype per epoch),
weights/epoch_NNN.npy (the parse weights, (sets, edges, ops)), checkpoint.pt (``--resume``
continues exactly; resuming a finished run derives the genotype again, e.g. with another
``--op_threshold``), and at the end genotypes/<genotype_name>.txt, ready for
``python cnn/train.py --arch <genotype_name>`` (never over a file another run wrote: see
``check_genotype_name`` and ``unclaimed_genotype_file``).

``--multi_channel`` searches sharpDARTS's grid of channel widths instead of cells
(cnn/multichannel.py): ``--init_channels`` rounds down to the narrowest width, ``--layers_in_cells``
gives the number of widths (doubling), ``--layers_of_cells`` / 2 the number of layers; the best
path is written to genotypes/multi_channel/<genotype_name>.txt for
``python cnn/train.py --multi_channel --arch <genotype_name>``.

Under ``torchrun --nproc_per_node=N`` (core/distributed.py) ``--batch_size`` is the global batch;
network and architecture gradients are averaged over the processes, so the architecture weights
stay identical everywhere, and rank 0 alone writes the run folder and the genotype.

The search batches come from one persistent iterator over the held-out part of the training
set, created again only when it is exhausted; its position is part of the checkpoint, and each
sample's augmentation is seeded from its place in the stream, so a resumed search sees exactly
the batches an uninterrupted one would.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset
from torch.utils.tensorboard import SummaryWriter

import core_path  # noqa: F401  (puts core/ on the import path)
import cli
from arch_distance import DistanceError, weights_distance
from architect import CELL_LOSSES, SEP_LOSSES, ArchConfig, Architect, search_iteration
from checkpoint import resume_arguments, save_checkpoint
from data import (DATASETS, DataError, EmptySplitError, build_datasets, dataset_info, default_workers, make_loader,
                  split_train_valid, with_transform)
from derive import PARSE_METHODS
from distributed import (DEFAULT_TIMEOUT_S, Dist, average_over_ranks, broadcast_buffers, broadcast_object,
                         process_group, sync_batchnorm)
from genotypes import PRIMITIVE_SETS, GenotypeError, format_genotype, to_architecture, write_genotype_file
from metrics import RunningSum, correct_topk
from model_search import WEIGHTINGS, Baseline, SearchError, SearchNetwork, SupernetSpec, load_baseline, make_spec
from multichannel import MultiChannelSearchNetwork, write_path_file
from operations import OPS
from paths import GENOTYPES_DIR, REPO_ROOT
from run_dir import create_run_dir, record_invocation, setup_logger
from sampling import EvalShard, SeededSamples, ShardedOrder
from runtime import (DIVERGENCE_ADVICE, DivergenceWatch, Precision, check_finite_weights, progress, resolve_device,
                     seed_epoch, seed_everything)
from training import MEMORY_FORMATS, evaluate, lr_scheduler, memory_format

METHODS = ("darts", "sharp", "ddarts", "dartopti")
METHOD_HINTS = {
    "ddarts": ("--pretrain_epochs", "--no_arch_metric", "--sep_loss", "--aux_loss_weight", "--cell_loss",
               "--abl_loss_weight"),
    "sharp": ("--weighting_algorithm", "--layers_of_cells", "--layers_in_cells", "--mid_channels",
              "--lr_power_annealing_exponent_order", "--multi_channel"),
}
# Defaults of each strategy, from its original train_search.py (quark0/darts, ahundt/sharpDARTS,
# aheuillet/D-DARTS).
METHOD_DEFAULTS = {
    "darts": dict(weighting_algorithm="softmax", primitives="DARTS", ops="darts", layout="shared",
                  alphas_init="randn", batch_size=64, init_channels=16, learning_rate=0.025,
                  learning_rate_min=0.001, arch_learning_rate=3e-4, arch_betas=(0.5, 0.999),
                  sep_loss="none", aux_loss_weight=0.0, cell_loss="none", abl_loss_weight=0.0, lr_schedule="cosine",
                  warmup_epochs=0, pretrain_epochs=0, parse_method="darts"),
    "sharp": dict(weighting_algorithm="scalar", primitives="PRIMITIVES", ops="sharp", layout="shared",
                  alphas_init="randn", batch_size=64, init_channels=16, learning_rate=0.025,
                  learning_rate_min=1e-4, arch_learning_rate=3e-4, arch_betas=(0.5, 0.999),
                  sep_loss="none", aux_loss_weight=0.0, cell_loss="none", abl_loss_weight=0.0, lr_schedule="cosine_power",
                  warmup_epochs=5, pretrain_epochs=0, parse_method="darts"),
    "ddarts": dict(weighting_algorithm="sigmoid", primitives="DDARTS_7", ops="darts", layout="per_cell",
                   alphas_init="zeros", batch_size=72, init_channels=32, learning_rate=0.005,
                   learning_rate_min=0.001, arch_learning_rate=3e-3, arch_betas=(0.9, 0.999),
                   sep_loss="l2", aux_loss_weight=9.0, cell_loss="ablation_loss", abl_loss_weight=0.7,
                   lr_schedule="cosine", warmup_epochs=0, pretrain_epochs=0, parse_method="threshold_sparse"),
    "dartopti": dict(weighting_algorithm="sigmoid", primitives="DDARTS_12", ops="darts", layout="baseline",
                     alphas_init="baseline", batch_size=72, init_channels=32, learning_rate=0.005,
                     learning_rate_min=0.001, arch_learning_rate=3e-3, arch_betas=(0.9, 0.999),
                     sep_loss="l2", aux_loss_weight=9.0, cell_loss="ablation_loss", abl_loss_weight=0.7,
                     lr_schedule="cosine", warmup_epochs=0, pretrain_epochs=5, parse_method="threshold_sparse"),
}
ARCH_LR_MIN = 0.001          # D-DARTS: end of each cell's cosine schedule
METRIC_WARMUP_EPOCHS = 5     # D-DARTS: the distance counts for early stopping from pretrain + 5
METRIC_PATIENCE = 4          # stop when the distance stayed within METRIC_TOLERANCE for 4 epochs
METRIC_TOLERANCE = 0.001
GENOTYPE_MARK = "written by train_search.py"
RESUME_OVERRIDABLE = ("device", "workers", "report_freq", "data", "resume", "stop_epoch", "parse_method",
                      "op_threshold", "genotype_name", "dist_timeout")
RESUME_REQUIRED = ("spec", "model", "optimizer", "scheduler", "architect", "scaler", "stream", "epoch", "elapsed",
                   "metrics")
GENOTYPE_OUTPUT_DIR = GENOTYPES_DIR  # where the derived genotype is written (tests move it)
OPS_ALIASES = {"OPS": "sharp", "DARTS_OPS": "darts"}   # sharpDARTS's --ops values
SEARCH_DIVERGENCE_ADVICE = DIVERGENCE_ADVICE.replace("--learning_rate", "--learning_rate or --arch_learning_rate")


def _ops_family(value: str) -> str:
    family = OPS_ALIASES.get(value, value)
    if family not in OPS:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(OPS)} (or sharpDARTS's OPS, DARTS_OPS)")
    return family


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(description="Differentiable architecture search (DARTS, sharpDARTS, D-DARTS, DARTOpti).",
                           allow_abbrev=False, formatter_class=cli.HelpFormatter)
    m = "(default: set by --method)"
    p.add_argument("--method", default="auto", choices=("auto", *METHODS),
                   help="search strategy; auto: dartopti with --arch_baseline, ddarts with a D-DARTS flag, "
                        "sharp with a sharpDARTS flag, else darts")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS)
    p.add_argument("--data", default=str(REPO_ROOT / "data"), help="dataset root directory")
    p.add_argument("--train_portion", type=cli.portion, default=0.5,
                   help="part of the training set that trains network weights; the rest drives the architecture")
    p.add_argument("--batch_size", type=cli.positive_int, default=None, help=f"batch size {m}")
    p.add_argument("--learning_rate", type=cli.non_negative_float, default=None,
                   help=f"initial network learning rate {m}")
    p.add_argument("--learning_rate_min", type=cli.non_negative_float, default=None,
                   help=f"final network learning rate {m}")
    p.add_argument("--lr_schedule", default=None, choices=("cosine", "cosine_power"),
                   help=f"network learning rate schedule: DARTS's cosine annealing or sharpDARTS's cosine power {m}")
    p.add_argument("--lr_power_annealing_exponent_order", type=cli.positive_float, default=2.0,
                   help="cosine_power: larger decays faster early; 1 is cosine annealing (2 as sharpDARTS's search; "
                        "its train.py and ours default to 10)")
    p.add_argument("--warmup_epochs", type=cli.non_negative_int, default=None,
                   help=f"cosine_power: linear warmup epochs {m}")
    p.add_argument("--momentum", type=cli.probability, default=0.9)
    p.add_argument("--weight_decay", type=cli.non_negative_float, default=3e-4)
    p.add_argument("--arch_learning_rate", type=cli.non_negative_float, default=None,
                   help=f"Adam learning rate of the alphas {m}")
    p.add_argument("--arch_weight_decay", type=cli.non_negative_float, default=1e-3)
    p.add_argument("--grad_clip", type=cli.non_negative_float, default=5.0,
                   help="network gradient norm clip (0 disables)")
    p.add_argument("--epochs", type=cli.positive_int, default=50,
                   help="search epochs (DARTOpti adds --pretrain_epochs)")
    p.add_argument("--pretrain_epochs", type=cli.non_negative_int, default=None,
                   help=f"epochs that train network weights only before the alphas move {m}")
    p.add_argument("--layers", "--layers_of_cells", dest="layers", type=cli.positive_int, default=8,
                   help="cells in the supernet (a --arch_baseline sets its own)")
    p.add_argument("--steps", "--layers_in_cells", dest="steps", type=cli.positive_int, default=4,
                   help="intermediate nodes per cell (a --arch_baseline sets its own)")
    p.add_argument("--multiplier", type=cli.positive_int, default=4, help="nodes concatenated for a cell's output")
    p.add_argument("--init_channels", type=cli.positive_int, default=None, help=f"initial width C {m}")
    p.add_argument("--primitives", default=None, choices=sorted(PRIMITIVE_SETS), help=f"op set to search {m}")
    p.add_argument("--ops", type=_ops_family, default=None, help=f"op family: {', '.join(OPS)} {m}")
    p.add_argument("--mid_channels", type=cli.positive_int, default=32, help="middle width of sharpDARTS choke ops")
    p.add_argument("--weighting_algorithm", default=None, choices=WEIGHTINGS,
                   help=f"op weighting: softmax (DARTS) = scalar (sharpDARTS), max_w (1 - max(w) + w), sigmoid {m}")
    p.add_argument("--multi_channel", action="store_true",
                   help="search sharpDARTS's grid of channel widths and strides instead of cells")
    p.add_argument("--unrolled", action="store_true", help="second-order DARTS hypergradient")
    p.add_argument("--single_level", action="store_true",
                   help="update alphas and network weights together on the training batch")
    p.add_argument("--sep_loss", default=None, choices=SEP_LOSSES, help=f"zero-one separation loss {m}")
    p.add_argument("--aux_loss_weight", type=cli.non_negative_float, default=None,
                   help=f"weight of the separation loss {m}")
    p.add_argument("--cell_loss", default=None, choices=CELL_LOSSES, help=f"per-cell ablation loss {m}")
    p.add_argument("--abl_loss_weight", type=cli.non_negative_float, default=None,
                   help=f"weight of the ablation loss {m}")
    p.add_argument("--arch_baseline", default=None,
                   help="DARTOpti: start from this hand-made Genotype_opt (ResNet18, ResNet50, Xception or a file)")
    p.add_argument("--no_arch_metric", action="store_true",
                   help="DARTOpti: do not compute the architecture distance to the baseline each epoch")
    p.add_argument("--parse_method", default=None, choices=PARSE_METHODS, help=f"weights -> genotype rule {m}")
    p.add_argument("--op_threshold", type=cli.probability, default=0.85,
                   help="weight an op needs with a threshold parse")
    p.add_argument("--genotype_name", default=None,
                   help="write genotypes/<name>.txt (default: <save>-<timestamp> of the run folder); a name whose "
                        "file another run wrote is refused, or, if written while this search ran, becomes <name>_2")
    p.add_argument("--cutout", action="store_true")
    p.add_argument("--cutout_length", type=cli.positive_int, default=16)
    p.add_argument("--auto_aug", "--autoaugment", dest="auto_aug", action="store_true",
                   help="torchvision AutoAugment policy of the dataset")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (bf16 if supported, else fp16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--memory_format", default="auto", choices=MEMORY_FORMATS,
                   help="tensor layout; auto: channels_last on the CPU (its depthwise convolutions are "
                        "several times faster that way), contiguous on CUDA")
    p.add_argument("--sync_bn", action="store_true",
                   help="under torchrun: BatchNorm statistics of the global batch instead of each process's share")
    p.add_argument("--dist_timeout", type=cli.positive_float, default=DEFAULT_TIMEOUT_S,
                   help="under torchrun: seconds a process waits for the others in a collective before the run stops")
    p.add_argument("--workers", type=cli.non_negative_int, default=None,
                   help="data loader workers (default 0 for digits, else min(4, cores))")
    p.add_argument("--seed", type=cli.seed, default=2)
    p.add_argument("--save", default="EXP", help="run name; the run folder is logs/search/search-<save>-<timestamp>")
    p.add_argument("--resume", default=None, help="checkpoint.pt (or its run folder) to continue exactly")
    p.add_argument("--report_freq", type=cli.non_negative_int, default=50,
                   help="steps between progress lines in the log, 0 for none (train.py: epochs between weight "
                        "histograms)")
    p.add_argument("--max_steps", type=cli.positive_int, default=None,
                   help="at most this many steps per epoch, in training and in validation (quick trials, tests)")
    p.add_argument("--stop_epoch", type=cli.non_negative_int, default=None,
                   help="stop after this epoch, leaving a checkpoint that --resume continues")
    return p


def infer_method(argv: list[str], args: argparse.Namespace) -> tuple[str, str]:
    """(method, why): --method, else the flags of the original scripts (module docstring)."""
    if args.method != "auto":
        return args.method, "--method"
    if args.arch_baseline:
        return "dartopti", "inferred from --arch_baseline"
    given = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    found = {method: [f for f in flags if f in given] for method, flags in METHOD_HINTS.items()}
    found = {method: flags for method, flags in found.items() if flags}
    if len(found) > 1:
        raise SearchError(f"the flags {', '.join(sum(found.values(), []))} belong to different methods "
                          f"({' and '.join(found)}); pass --method to choose one")
    if found:
        method, flags = next(iter(found.items()))
        return method, f"inferred from {', '.join(flags)}"
    return "darts", "the default (no flag of another method given)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.resume is not None:
        return args
    method, why = infer_method(argv, args)
    args.method, args.method_source = method, why
    defaults = METHOD_DEFAULTS[method]
    default_warmup = args.warmup_epochs is None
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if default_warmup:   # the default warmup leaves at least one epoch to anneal
        args.warmup_epochs = min(args.warmup_epochs, max(args.epochs + args.pretrain_epochs - 1, 0))
    args.arch_betas = list(args.arch_betas)
    if args.arch_baseline and method != "dartopti":
        raise SearchError(f"--arch_baseline starts a DARTOpti search, but --method {method} was given")
    if method == "dartopti" and not args.arch_baseline:
        raise SearchError("--method dartopti needs --arch_baseline (ResNet18, ResNet50, Xception or a Genotype_opt file)")
    if args.unrolled and args.single_level:
        raise SearchError("--unrolled and --single_level exclude each other: the second-order step needs "
                          "separate training and search batches")
    if args.multi_channel and (method in ("ddarts", "dartopti") or args.sep_loss != "none" or args.cell_loss != "none"):
        raise SearchError("--multi_channel searches one grid with the DARTS or sharpDARTS objective; it does not "
                          "combine with D-DARTS/DARTOpti flags (--sep_loss, --cell_loss, --arch_baseline)")
    return args


# ----------------------------------------------------------------------------------------
# Data: the two halves and the persistent search stream
# ----------------------------------------------------------------------------------------

class SearchStream:
    """Batches of the held-out half from one iterator, re-created only when exhausted."""

    def __init__(self, dataset: Dataset, batch_size: int, workers: int, seed: int, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format, ctx: Dist = Dist()):
        self.sampler = ShardedOrder(len(dataset), seed, stream=1, rank=ctx.rank, world_size=ctx.world_size,
                                    batch_size=batch_size)
        self.loader = make_loader(SeededSamples(dataset), batch_size, workers=workers,
                                  sampler=self.sampler)
        self.device = device
        self.memory_format = memory_format
        self.consumed = 0          # batches taken from the current pass
        self._iterator = None

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self.sampler.start_batch = self.consumed
            self._iterator = iter(self.loader)
        try:
            x, y = next(self._iterator)
        except StopIteration:
            self.sampler.set_epoch(self.sampler.pass_index + 1)
            self.consumed = 0
            self._iterator = iter(self.loader)
            x, y = next(self._iterator)
        self.consumed += 1
        return (x.to(self.device, non_blocking=True, memory_format=self.memory_format),
                y.to(self.device, non_blocking=True))

    def state_dict(self) -> dict:
        return {"pass_index": self.sampler.pass_index, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.pass_index = int(state["pass_index"])
        self.consumed = int(state["consumed"])
        self._iterator = None


# ----------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------

def genotype_file(name: str, multi_channel: bool = False) -> Path:
    """genotypes/<name>.txt, or genotypes/multi_channel/<name>.txt for a multi-channel path (whose
    name is also the NAME inside the file, so a Python identifier)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise SearchError(f"--genotype_name {name!r} must be a plain file name (letters, digits, _ - .)")
    if multi_channel and not name.isidentifier():
        raise SearchError(f"--genotype_name {name!r} names a multi-channel path: use letters, digits and _ only")
    return (GENOTYPE_OUTPUT_DIR / "multi_channel" if multi_channel else GENOTYPE_OUTPUT_DIR) / f"{name}.txt"


def genotype_writer(path: Path) -> str | None:
    """The run folder named in the `run:` comment of a genotype (or path) file a search wrote; None
    for any other file (shipped, hand-made, unreadable)."""
    try:
        comments = [line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")]
    except (OSError, UnicodeDecodeError):
        return None
    if not any(GENOTYPE_MARK in c for c in comments):
        return None
    return next((c.removeprefix("run:").split(";")[0].strip() for c in comments if c.startswith("run:")), None)


def check_genotype_name(path: Path, run_name: str | None) -> None:
    """Refuse a genotype name whose file exists, unless the run `run_name` wrote it (a resumed run
    may write its own genotype again): two searches never silently share a name."""
    if not path.exists():
        return
    writer = genotype_writer(path)
    if run_name is not None and writer == run_name:
        return
    if writer is None:
        raise SearchError(f"{path} exists and was not written by a search; choose another --genotype_name")
    raise SearchError(f"{path} exists, written by the search run {writer}; choose another --genotype_name, "
                      f"or delete that file to replace it")


def unclaimed_genotype_file(path: Path, run_name: str) -> Path:
    """`path`, or, if another run wrote it while this one ran, the first `<name>_<k>` that is free or
    this run's own (so a finished run derived again rewrites the same file)."""
    candidate, k = path, 1
    while candidate.exists() and genotype_writer(candidate) != run_name:
        k += 1
        candidate = path.with_name(f"{path.stem}_{k}{path.suffix}")
    return candidate


@dataclass
class Engine:
    spec: SupernetSpec | None            # None for the multi-channel grid
    baseline: Baseline | None
    model: SearchNetwork | MultiChannelSearchNetwork
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    architect: Architect
    memory_format: torch.memory_format


def build_engine(args: argparse.Namespace, num_classes: int, network: str, device: torch.device,
                 precision: Precision, spec: SupernetSpec | None = None) -> Engine:
    """Supernet, network optimizer and schedule, architect: everything one search iteration uses
    (shared with bench/search_speed.py, so that the benchmark measures what the search runs)."""
    baseline = load_baseline(args.arch_baseline) if args.method == "dartopti" else None
    fmt = memory_format(args.memory_format, device)
    if args.multi_channel:
        spec = None
        model = MultiChannelSearchNetwork(num_classes, channels=multi_channel_widths(args.init_channels, args.steps),
                                          layers=max(args.layers // 2, 1), weighting=args.weighting_algorithm)
    else:
        if spec is None:
            spec = make_spec(num_classes, args.init_channels, args.layers, args.steps, args.multiplier,
                             PRIMITIVE_SETS[args.primitives], args.weighting_algorithm, args.layout, family=args.ops,
                             mid_channels=args.mid_channels, network=network, baseline=baseline)
        init = baseline.alphas(spec.primitives) if baseline is not None else args.alphas_init
        model = SearchNetwork(spec, init)
    model = model.to(device, memory_format=fmt)
    if args.sync_bn:
        model = sync_batchnorm(model, device)
    optimizer = torch.optim.SGD(model.weight_parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    # DARTOpti's pretraining epochs are part of the schedule (D-DARTS adds them to --epochs).
    scheduler = lr_scheduler(optimizer, argparse.Namespace(**{**vars(args), "epochs": args.pretrain_epochs + args.epochs}))
    architect = Architect(model, ArchConfig(
        learning_rate=args.arch_learning_rate, weight_decay=args.arch_weight_decay, betas=tuple(args.arch_betas),
        unrolled=args.unrolled, network_momentum=args.momentum, network_weight_decay=args.weight_decay,
        per_cell=spec is not None and spec.layout != "shared", epochs=args.epochs, learning_rate_min=ARCH_LR_MIN,
        sep_loss=args.sep_loss, aux_loss_weight=args.aux_loss_weight, cell_loss=args.cell_loss,
        abl_loss_weight=args.abl_loss_weight), precision)
    return Engine(spec, baseline, model, optimizer, scheduler, architect, fmt)


def multi_channel_widths(init_channels: int, steps: int) -> tuple[int, ...]:
    """sharpDARTS: `steps` doubling widths from the power of two at or below --init_channels
    (36 and 4 give the published 32, 64, 128, 256)."""
    if init_channels < 1 or steps < 1:
        raise SearchError("--multi_channel needs --init_channels and --layers_in_cells of at least 1")
    first = 1 << (init_channels.bit_length() - 1)
    return tuple(first << k for k in range(steps))


def log_weights(log, spec: SupernetSpec, probabilities: np.ndarray) -> None:
    with np.printoptions(precision=3, suppress=True, linewidth=160):
        for name, w in zip(spec.set_names(), probabilities):
            log.info("weights %s (rows: edges, columns: %s)\n%s", name, ", ".join(spec.primitives), w)


def tensorboard_weights(writer, spec: SupernetSpec, probabilities: np.ndarray, epoch: int) -> None:
    sources = [(i + 2, j) for i in range(spec.steps) for j in range(i + 2)]
    for name, w in zip(spec.set_names(), probabilities):
        for e, (to_node, from_node) in enumerate(sources):
            for k, op in enumerate(spec.primitives):
                writer.add_scalar(f"arch/{name}/{from_node}-{to_node}/{op}", float(w[e, k]), epoch)


def main(argv: list[str] | None = None) -> None:
    args, state, run_dir = resume_arguments(parse_args(argv), build_parser().parse_args([]), "search",
                                            RESUME_OVERRIDABLE, RESUME_REQUIRED)
    with process_group(resolve_device(args.device), args.dist_timeout) as (ctx, device):
        search(args, state, run_dir, ctx, device)


def search(args: argparse.Namespace, state: dict | None, run_dir: Path | None, ctx: Dist,
           device: torch.device) -> SearchNetwork | MultiChannelSearchNetwork:
    """Run (or continue) a search; returns this rank's supernet at the end."""
    batch = ctx.per_rank_batch(args.batch_size)
    precision = Precision(device, args.amp)
    seed_everything(args.seed)
    info = dataset_info(args.dataset)
    train_full, test_set = build_datasets(args.dataset, args.data, auto_augment=args.auto_aug,
                                          cutout_length=args.cutout_length if args.cutout else 0)
    num_classes = len(getattr(train_full, "classes", None) or []) or info.num_classes
    try:
        train_half, search_half = split_train_valid(train_full, args.train_portion, args.seed)
    except EmptySplitError as e:
        raise DataError(f"--train_portion {args.train_portion} leaves a part of the {len(train_full)} training "
                        f"examples empty: {e.sizes[0]} train the network weights, {e.sizes[1]} the architecture"
                        ) from None
    # the held-out half scored like the test set (no augmentation)
    valid_half = Subset(with_transform(train_full, test_set.transform), search_half.indices)

    engine = build_engine(args, num_classes, info.network, device, precision,
                          SupernetSpec.from_dict(state["spec"]) if state is not None and state["spec"] else None)
    spec, baseline, model, fmt = engine.spec, engine.baseline, engine.model, engine.memory_format
    optimizer, scheduler, architect = engine.optimizer, engine.scheduler, engine.architect
    weights = model.weight_parameters()
    total_epochs = args.pretrain_epochs + args.epochs

    workers = default_workers(args.dataset) if args.workers is None else args.workers
    order = ShardedOrder(len(train_half), args.seed, rank=ctx.rank, world_size=ctx.world_size, batch_size=batch)
    train_loader = make_loader(SeededSamples(train_half), batch, workers=workers, sampler=order)
    valid_loader = make_loader(valid_half, batch, workers=workers,
                               sampler=EvalShard(len(valid_half), ctx.rank, ctx.world_size))
    stream = SearchStream(search_half, batch, workers, args.seed, device, fmt, ctx)

    start_epoch, elapsed, metrics = 0, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        architect.load_state_dict(state["architect"])
        precision.scaler.load_state_dict(state["scaler"])
        stream.load_state_dict(state["stream"])
        start_epoch, elapsed, metrics = state["epoch"], state["elapsed"], list(state["metrics"])
        if state.get("stopped_early"):
            start_epoch = total_epochs
    else:
        if args.genotype_name is not None:   # every rank checks (and fails) alike: no rank left waiting
            check_genotype_name(genotype_file(args.genotype_name, args.multi_channel), None)
        if ctx.is_main:
            run_dir = create_run_dir("search", f"search-{args.save}")
            if args.genotype_name is None:
                name = run_dir.name.removeprefix("search-")
                args.genotype_name = name.replace("-", "_") if args.multi_channel else name
    run_dir, args.genotype_name = broadcast_object((run_dir, args.genotype_name))
    out_path = genotype_file(args.genotype_name, args.multi_channel)
    if state is not None and args.genotype_name != state["args"].get("genotype_name"):   # a new name on resume
        check_genotype_name(out_path, run_dir.name)
    if ctx.is_main:
        record_invocation(run_dir, vars(args), device)
    log = setup_logger(run_dir, "search", enabled=ctx.is_main)
    log.info("run folder %s", run_dir)
    log.info("method %s (%s)", args.method, getattr(args, "method_source", "--method"))
    log.info("args %s", json.dumps(vars(args), sort_keys=True))
    shared = ctx.describe(batch, args.sync_bn)
    amp = f" | amp {precision.dtype}" if precision.enabled else ""
    if spec is None:
        log.info("multi-channel grid: widths %s, %d layers of a stride-1 and a stride-2 stage, %s weighting | "
                 "device %s%s%s", list(model.channels), len(model.op_grid), model.weighting, device, amp, shared)
    else:
        log.info("supernet: %s layout, %s weighting, %d sets of %dx%d alphas | primitives %s (%s ops) | C=%d | "
                 "layers=%d reductions=%s | steps=%d multiplier=%d | device %s%s%s", spec.layout, spec.weighting,
                 spec.n_sets, spec.n_edges, len(spec.primitives), args.primitives, spec.family, spec.init_channels,
                 spec.layers, list(spec.reductions), spec.steps, spec.multiplier, device, amp, shared)
    log.info("param size = %.6fM (network weights; alphas %d)", sum(p.numel() for p in weights) / 1e6,
             sum(a.numel() for a in model.arch_parameters()))
    log.info("update: %s%s%s", "single level" if args.single_level else
             ("second order (unrolled)" if args.unrolled else "first order"),
             f" | separation {args.sep_loss} x{args.aux_loss_weight}" if args.sep_loss != "none" else "",
             f" | ablation x{args.abl_loss_weight}" if args.cell_loss != "none" else "")
    if start_epoch:
        log.info("resumed from epoch %d", start_epoch)

    baseline_weights = baseline.alphas(spec.primitives) if baseline is not None else None
    use_metric = baseline is not None and not args.no_arch_metric

    def distance() -> float:
        try:
            return weights_distance(baseline_weights, model.probabilities(), primitives=spec.primitives,
                                    op_threshold=args.op_threshold)
        except DistanceError as e:
            raise SearchError(f"architecture distance: {e}; pass --no_arch_metric") from None

    if use_metric and start_epoch == 0:
        log.info("architecture distance to %s at the start: %.10f", baseline.arch.name, distance())

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch + 1) if ctx.is_main else None
    weights_dir = run_dir / "weights"
    if ctx.is_main:
        weights_dir.mkdir(exist_ok=True)
    model.train()
    stopped_early = False
    for epoch in range(start_epoch, total_epochs):
        if args.stop_epoch is not None and epoch >= args.stop_epoch:
            log.info("stopping after epoch %d as asked (--stop_epoch); continue with --resume %s", epoch, run_dir)
            if writer is not None:
                writer.close()
            return model
        started = time.time()
        seed_epoch(args.seed, epoch, ctx.rank)
        order.set_epoch(epoch)
        searching = epoch >= args.pretrain_epochs
        lr = scheduler.get_last_lr()[0]
        train_loss, train_top1, arch_means = search_epoch(
            args, engine, train_loader, stream, precision, device, searching, log, epoch + 1,
            f"epoch {epoch + 1}/{total_epochs}" + ("" if searching else " (pretrain)"))
        scheduler.step()
        if searching:
            architect.end_epoch()
        broadcast_buffers(model)
        check_finite_weights(model, epoch + 1, SEARCH_DIVERGENCE_ADVICE)
        valid = evaluate(model, valid_loader, nn.CrossEntropyLoss(), device, precision, desc="valid",
                         memory_format=fmt, max_steps=args.max_steps)
        elapsed += time.time() - started

        scalars = {"train_loss": train_loss, "train_top1": train_top1, "valid_loss": valid.loss,
                   "valid_top1": valid.top1, "lr": lr}
        for i, arch_lr in enumerate(architect.learning_rates() if searching else []):
            scalars[f"arch_lr/{i}" if len(architect.learning_rates()) > 1 else "arch_lr"] = arch_lr
        if "arch_loss" in arch_means:
            scalars["arch_loss"] = float(arch_means["arch_loss"])
        for key in ("separation", "ablation", "marginal", "cell_losses"):
            if key in arch_means:
                for name, value in zip(spec.set_names(), arch_means[key]):
                    scalars[f"{key}/{name}"] = float(value)
        if use_metric:
            metric = distance()
            scalars["distance_metric"] = metric
            log.info("architecture distance to %s: %.10f", baseline.arch.name, metric)
        log.info("epoch %d/%d%s lr %.3e | train loss %.4f acc %.2f%% | valid loss %.4f acc %.2f%% | %.0f s",
                 epoch + 1, total_epochs, "" if searching else " (pretrain)", lr, train_loss, train_top1,
                 valid.loss, valid.top1, elapsed)
        if "ablation" in arch_means:
            log.info("ablation values (mean of the epoch) %s | marginal contributions %s",
                     np.array2string(arch_means["ablation"], precision=4),
                     np.array2string(arch_means["marginal"], precision=4))
        if ctx.is_main:
            report_architecture(args, model, spec, log, writer, weights_dir, epoch + 1, scalars)

        if use_metric and epoch >= args.pretrain_epochs + METRIC_WARMUP_EPOCHS:
            if len(metrics) >= METRIC_PATIENCE and all(abs(metric - m) <= METRIC_TOLERANCE
                                                       for m in metrics[-METRIC_PATIENCE:]):
                stopped_early = True
            metrics.append(metric)
        if ctx.is_main:
            save_checkpoint({"kind": "search", "epoch": epoch + 1, "args": vars(args),
                             "spec": spec.to_dict() if spec is not None else None,
                             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "architect": architect.state_dict(),
                             "scaler": precision.scaler.state_dict(), "stream": stream.state_dict(),
                             "metrics": metrics, "elapsed": elapsed, "stopped_early": stopped_early},
                            run_dir / "checkpoint.pt")
        if stopped_early:
            log.info("the architecture distance stayed within %g for %d epochs: search stopped early",
                     METRIC_TOLERANCE, METRIC_PATIENCE)
            break
    if ctx.is_main:
        writer.close()
        finish(args, model, run_dir, out_path, log)
    return model


def search_epoch(args: argparse.Namespace, engine: Engine, train_loader, stream: SearchStream, precision: Precision,
                 device: torch.device, searching: bool, log, epoch: int,
                 desc: str) -> tuple[float, float, dict[str, np.ndarray]]:
    """One pass over the training half (architecture steps too when `searching`): training loss and
    top-1 %, and the epoch's mean architecture statistics, all over every rank's batches. A NaN or
    inf loss (of either step) raises DivergenceError at the next progress line or at the end."""
    model, fmt = engine.model, engine.memory_format
    loss_sum, top1_sum = RunningSum(device), RunningSum(device)
    watch = DivergenceWatch(device, epoch, SEARCH_DIVERGENCE_ADVICE)
    arch_sums: dict[str, torch.Tensor] = {}
    arch_steps = 0
    bar = progress(train_loader, desc)
    for step, (x, y) in enumerate(bar):
        if args.max_steps is not None and step >= args.max_steps:
            break
        x, y = x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)
        logits, loss, stats = search_iteration(model, engine.architect if searching else None, engine.optimizer,
                                               precision, x, y, stream, grad_clip=args.grad_clip,
                                               single_level=args.single_level)
        watch.observe(loss, *([stats["arch_loss"]] if "arch_loss" in stats else []))
        n = y.shape[0]
        loss_sum.add(loss * n, n)
        top1_sum.add(correct_topk(logits, y, (1,))[0], n)
        if stats:
            arch_steps += 1
            for key, value in stats.items():
                value = value.detach().float()
                arch_sums[key] = arch_sums[key] + value if key in arch_sums else value.clone()
        if args.report_freq and step and step % args.report_freq == 0:
            watch.check()
            message = f"loss {loss_sum.mean():.4f} top1 {100 * top1_sum.mean():.2f}%"
            if arch_steps:
                message += f" | arch loss {arch_sums['arch_loss'].item() / arch_steps:.4f}"
            bar.set_postfix_str(message)
            log.info("train %03d %s", step, message)
    watch.check()
    average_over_ranks(list(arch_sums.values()))
    arch_means = {k: (v / max(arch_steps, 1)).cpu().numpy() for k, v in arch_sums.items()}
    return loss_sum.mean(), 100 * top1_sum.mean(), arch_means


def report_architecture(args: argparse.Namespace, model: SearchNetwork | MultiChannelSearchNetwork,
                        spec: SupernetSpec | None, log, writer: SummaryWriter, weights_dir: Path, epoch: int,
                        scalars: dict[str, float]) -> None:
    """Rank 0's record of the architecture after an epoch: its weights (weights/epoch_NNN.npy, or
    .npz of the grid's normal and reduce stages), the log, tensorboard, and what would be derived now."""
    if spec is None:
        np.savez(weights_dir / f"epoch_{epoch:03d}.npz", **model.raw_weights())
        text = str(model.best_path().names())
    else:
        probabilities = model.probabilities()
        np.save(weights_dir / f"epoch_{epoch:03d}.npy", probabilities)
        text = format_genotype(model.genotype(args.parse_method, args.op_threshold)).strip()
        tensorboard_weights(writer, spec, probabilities, epoch)
        log_weights(log, spec, probabilities)
    for key, value in scalars.items():
        writer.add_scalar(key, value, epoch)
    writer.add_text("genotype", text, epoch)
    writer.flush()
    log.info("%s = %s", "best path" if spec is None else "genotype", text)


def finish(args: argparse.Namespace, model: SearchNetwork | MultiChannelSearchNetwork, run_dir: Path,
           out_path: Path, log) -> None:
    """Derive the final genotype (or path), check that it builds, write it and print it; under
    another name if another run wrote this one meanwhile."""
    origin = f"{GENOTYPE_MARK}: {args.method} search on {args.dataset}, seed {args.seed}"
    wanted, out_path = out_path, unclaimed_genotype_file(out_path, run_dir.name)
    if out_path != wanted:
        log.warning("%s was written by %s while this search ran, so this search writes %s instead", wanted,
                    genotype_writer(wanted) or "someone else", out_path)
    if isinstance(model, MultiChannelSearchNetwork):
        path = model.best_path()
        write_path_file(out_path, out_path.stem, path, comments=(origin, f"run: {run_dir.name}; best path"))
        (run_dir / "genotype.txt").write_text(out_path.read_text())
        log.info("best path written to %s:\n%s", out_path, path.names())
        log.info("train it with: python cnn/train.py --multi_channel --arch %s --dataset %s", out_path.stem,
                 args.dataset)
        return
    record = model.genotype(args.parse_method, args.op_threshold)
    try:
        to_architecture(record, out_path.stem)
    except GenotypeError as e:
        raise SearchError(f"the derived genotype cannot be trained ({e}); derive it again with a lower "
                          f"--op_threshold: python cnn/train_search.py --resume {run_dir} --op_threshold 0.6") from None
    if args.ops == "sharp" and record.kind == "Genotype":
        record = replace(record, fields=record.fields + (("layout", "cell"),))   # sharpDARTS's form: sharp ops
    record = replace(record, comments=(
        origin,
        f"run: {run_dir.name}; parse: {args.parse_method}"
        + (f" op_threshold={args.op_threshold}" if args.parse_method != "darts" else ""),
    ))
    write_genotype_file(out_path, record)
    text = format_genotype(record)
    (run_dir / "genotype.txt").write_text(text)
    log.info("genotype written to %s:\n%s", out_path, text.strip())
    family = "" if args.ops == "darts" or record.get("layout") else f" --ops {args.ops}"
    log.info("train it with: python cnn/train.py --arch %s --dataset %s%s", out_path.stem, args.dataset, family)


if __name__ == "__main__":
    cli.run(main)
