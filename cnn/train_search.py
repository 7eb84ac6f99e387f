"""Architecture search: every method of cnn/strategies/ (DARTS first/second order, sharpDARTS,
D-DARTS, DARTOpti, PC-DARTS, DARTS-, beta-DARTS, SDARTS, GDAS, DrNAS, random search) in one loop,
with DARTS+'s early stop and DARTS-PT's selection as options of any of them.

    python cnn/train_search.py --unrolled                                    # DARTS, second order
    python cnn/train_search.py --batch_size 96 --pretrain_epochs 0 --init_channels 16 --amp --no_arch_metric
    python cnn/train_search.py --batch_size 96 --arch_baseline ResNet18 --amp   # DARTOpti
    python cnn/train_search.py --dataset cifar10 --batch_size 48 --layers_of_cells 8 --layers_in_cells 4 \\
        --save NAME --init_channels 16 --epochs 120 --cutout --autoaugment --seed 22 \\
        --weighting_algorithm max_w --primitives DARTS_PRIMITIVES               # sharpDARTS
    python cnn/train_search.py --method pcdarts                                  # PC-DARTS, K=4
    python cnn/train_search.py --method gdas --selection pt --early_stop         # GDAS, DARTS-PT, DARTS+
    python cnn/train_search.py --method random --samples 8                       # random-search baseline

Strategy (``--method``, one registered class of cnn/strategies/ each; ``auto``, the default,
infers it from the flags of the original scripts):

* ``dartopti`` if ``--arch_baseline`` is given;
* ``ddarts`` if a D-DARTS flag is given: ``--pretrain_epochs --no_arch_metric --sep_loss
  --aux_loss_weight --cell_loss --abl_loss_weight``;
* ``sharp`` if a sharpDARTS flag is given: ``--weighting_algorithm --layers_of_cells
  --layers_in_cells --mid_channels --lr_power_annealing_exponent_order --multi_channel``;
* ``darts`` otherwise.

The method fills in the flags left unset (its ``DEFAULTS``: weighting, primitives, op family,
weight layout, learning rates and schedule, epochs, losses, parse rule, with their source);
every one of them can be set by its flag. A method's own flags (e.g. ``--partial_channels``)
are refused with another method. The method in effect and where it came from are printed and
logged. Options that combine with any method (cnn/strategies/, ``SearchOption``) are switched on
by their own flag.

Writes logs/search/search-<save>-<timestamp>/: log.txt, command.txt, args.json, tensorboard/
(losses, accuracies, learning rates, schedules, every architecture weight, the skip connections
and parameter-free ops of the derived normal cell, and the genotype per epoch),
weights/epoch_NNN.npy (the parse weights, (sets, edges, ops)) and weights/epoch_NNN.png (their
heatmap), cost.json (wall time and device-hours of the search and of a selection, core/run_cost.py),
checkpoint.pt (``--resume`` continues exactly; resuming a finished run derives the
genotype again, e.g. with another ``--op_threshold``), and at the end
genotypes/<genotype_name>.txt, ready for ``python cnn/train.py --arch <genotype_name>`` (never
over a file another run wrote: see core/search_run.py).

``--multi_channel`` searches sharpDARTS's grid of channel widths instead of cells
(cnn/multichannel.py): ``--init_channels`` rounds down to the narrowest width, ``--layers_in_cells``
gives the number of widths (doubling), ``--layers_of_cells`` / 2 the number of layers; the best
path is written to genotypes/multi_channel/<genotype_name>.txt for
``python cnn/train.py --multi_channel --arch <genotype_name>`` (weights/epoch_NNN.npz).

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
from dataclasses import dataclass
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset
from torch.utils.tensorboard import SummaryWriter

import cli
from architect import Architect, search_iteration
from checkpoint import resume_arguments, save_checkpoint
from cuda_graphs import GraphedIteration
from data import (DATA_ON_DEVICE_HELP, DATASETS, DataError, DeviceLoader, EmptySplitError, build_datasets,
                  data_on_device_refusal, dataset_info, default_workers, make_loader, split_train_valid, with_transform)
from ddarts_losses import CELL_LOSSES, SEP_LOSSES
from derive import PARSE_METHODS
from distributed import (DEFAULT_TIMEOUT_S, Dist, average_over_ranks, broadcast_buffers, broadcast_object,
                         process_group, sync_batchnorm)
from genotypes import PRIMITIVE_SETS
from metrics import RunningSum, correct_topk
from model_search import WEIGHTINGS, SearchError
from operations import OPS
from paths import GENOTYPES_DIR, REPO_ROOT
from run_dir import create_run_dir, record_invocation, setup_logger
from run_cost import RunCost
from runtime import (DIVERGENCE_ADVICE, DivergenceWatch, Precision, check_finite_weights, compile_module, progress,
                     resolve_device, seed_epoch, seed_everything, tune_runtime)
from sampling import EvalShard, SeededSamples, ShardedOrder
from search_run import GENOTYPE_MARK, STOPPED, EpochRecord, check_genotype_name, run_epochs, write_result
from strategies import OPTIONS, STRATEGIES, SelectionContext
from strategies.base import CellStrategy
from supernet import Supernet
from training import MEMORY_FORMATS, evaluate, lr_scheduler, memory_format
from weight_report import heatmap_png, log_tables, tensorboard_tables

RESUME_OVERRIDABLE = ("device", "workers", "report_freq", "data", "resume", "stop_epoch", "parse_method",
                      "op_threshold", "genotype_name", "dist_timeout", "compile", "cuda_graphs")
RESUME_REQUIRED = ("spec", "model", "optimizer", "scheduler", "architect", "scaler", "stream", "epoch", "elapsed",
                   "stop_rules")
GENOTYPE_OUTPUT_DIR = GENOTYPES_DIR  # where the derived genotype is written (tests move it)
OPS_ALIASES = {"OPS": "sharp", "DARTS_OPS": "darts"}   # sharpDARTS's --ops values
SEARCH_DIVERGENCE_ADVICE = DIVERGENCE_ADVICE.replace("--learning_rate", "--learning_rate or --arch_learning_rate")


def _ops_family(value: str) -> str:
    family = OPS_ALIASES.get(value, value)
    if family not in OPS:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(OPS)} (or sharpDARTS's OPS, DARTS_OPS)")
    return family


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(description="Differentiable architecture search: every method of cnn/strategies/.",
                           allow_abbrev=False, formatter_class=cli.HelpFormatter)
    m = "(default: set by --method)"
    p.add_argument("--method", default="auto", choices=("auto", *sorted(STRATEGIES)),
                   help="search strategy (README: Search methods); auto: dartopti with --arch_baseline, ddarts with a "
                        "D-DARTS flag, sharp with a sharpDARTS flag, else darts")
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
    p.add_argument("--epochs", type=cli.positive_int, default=None,
                   help=f"search epochs, after --pretrain_epochs {m}")
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
                        "several times faster that way) and on CUDA (cuDNN's tensor-core convolutions)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the supernet: the first iteration compiles it (first order: two graphs, "
                        "architecture and network step; --unrolled: three), about ten minutes on a CPU "
                        "core even for a tiny supernet; meant for long runs on a GPU (not measured there yet); "
                        "tested with DARTS first and second order; refused for GDAS (one graph per draw)")
    p.add_argument("--cuda_graphs", action="store_true",
                   help="replay each search iteration as one CUDA graph, captured after three eager iterations and "
                        "again at each epoch (a batch of another size runs eagerly); CUDA only, --method darts "
                        "(first or second order), one process, fp32 or bf16; not yet run on a GPU")
    p.add_argument("--data_on_device", action="store_true", help=DATA_ON_DEVICE_HELP)
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
    STRATEGIES.add_flags(p)
    OPTIONS.add_flags(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line with the method's defaults filled in, checked before anything runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.resume is not None:
        return args
    if args.method == "auto":
        given = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
        args.method, args.method_source = STRATEGIES.infer(given, "darts")
    else:
        args.method_source = "--method"
    default_warmup = args.warmup_epochs is None
    for key, value in STRATEGIES[args.method].DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if default_warmup:   # the default warmup leaves at least one epoch to anneal
        args.warmup_epochs = min(args.warmup_epochs, max(args.epochs + args.pretrain_epochs - 1, 0))
    args.arch_betas = list(args.arch_betas)
    STRATEGIES.check_flags(args.method, args)
    OPTIONS.check_option_flags(args)
    strategy, _ = make_strategy(args)
    if args.compile and strategy.compile_refusal:
        raise SearchError(strategy.compile_refusal)
    refusal = data_on_device_refusal(args.dataset, args.auto_aug)
    if args.data_on_device and refusal:
        raise SearchError(refusal)
    return args


def check_cuda_graphs(args: argparse.Namespace, strategy: CellStrategy, device: torch.device, ctx: Dist,
                      precision: Precision) -> None:
    """Refuse --cuda_graphs where a captured iteration cannot run (or has not been made to), in one sentence."""
    if not strategy.cuda_graphs_ready or args.multi_channel or args.compile or strategy.losses.active:
        raise SearchError("--cuda_graphs is built for --method darts (first or second order, cells, without "
                          "--compile) only so far")
    if device.type != "cuda":
        raise SearchError(f"--cuda_graphs captures CUDA kernels: it needs a CUDA device, not {device}")
    if ctx.world_size > 1:
        raise SearchError("--cuda_graphs runs in one process only so far (not under torchrun)")
    if precision.scaler.is_enabled():
        raise SearchError("--cuda_graphs does not combine with fp16 loss scaling (it reads the gradients' "
                          "finiteness on the host); this GPU has no bf16 for --amp")


def make_strategy(args: argparse.Namespace) -> tuple[CellStrategy, list]:
    """The method's strategy and the options switched on, from the resolved flags; each refuses in
    one sentence what it cannot run."""
    cls = STRATEGIES.lookup(args.method)
    strategy = cls(cls.make_config(args))
    options = [option(option.make_config(args)) for option in OPTIONS.values() if option.enabled(args)]
    for option in options:
        option.check(strategy)
    if sum(option.selects for option in options) > 1:
        raise SearchError("choose one selection procedure")
    return strategy, options


# ----------------------------------------------------------------------------------------
# Data: the two halves and the persistent search stream
# ----------------------------------------------------------------------------------------

class SearchStream:
    """Batches of the held-out half from one iterator, re-created only when exhausted."""

    def __init__(self, dataset: Dataset, batch_size: int, workers: int, seed: int, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format, ctx: Dist = Dist(),
                 on_device: bool = False):
        self.sampler = ShardedOrder(len(dataset), seed, stream=1, rank=ctx.rank, world_size=ctx.world_size,
                                    batch_size=batch_size)
        self.loader = _loader(dataset, batch_size, workers, self.sampler, device if on_device else None)
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


@dataclass
class SearchData:
    """The training half (network weights), the held-out half (architecture: the stream; and the
    validation score, unaugmented), and what the dataset tells the supernet."""
    order: ShardedOrder
    train_loader: torch.utils.data.DataLoader
    valid_loader: torch.utils.data.DataLoader
    stream: SearchStream
    num_classes: int
    network: str


def search_data(args: argparse.Namespace, ctx: Dist, device: torch.device, fmt: torch.memory_format) -> SearchData:
    batch = ctx.per_rank_batch(args.batch_size)
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
    workers = default_workers(args.dataset) if args.workers is None else args.workers
    order = ShardedOrder(len(train_half), args.seed, rank=ctx.rank, world_size=ctx.world_size, batch_size=batch)
    held_on = device if args.data_on_device else None
    return SearchData(order, _loader(train_half, batch, workers, order, held_on),
                      _loader(valid_half, batch, workers, EvalShard(len(valid_half), ctx.rank, ctx.world_size), held_on,
                              seeded=False),
                      SearchStream(search_half, batch, workers, args.seed, device, fmt, ctx, args.data_on_device),
                      num_classes, info.network)


def _loader(dataset: Dataset, batch: int, workers: int, sampler: ShardedOrder | EvalShard,
            held_on: torch.device | None, seeded: bool = True):
    """Batches of `dataset` in `sampler`'s order: from loader workers, or (--data_on_device) from the
    dataset held on `held_on` and augmented there. `seeded`: the sampler gives (index, seed) items, whose
    seed draws the sample's augmentation (a ShardedOrder; an EvalShard gives plain indices)."""
    if held_on is not None:
        return DeviceLoader(dataset, batch, held_on, sampler=sampler)
    return make_loader(SeededSamples(dataset) if seeded else dataset, batch, workers=workers, sampler=sampler)


# ----------------------------------------------------------------------------------------
# The engine: supernet, optimizers, one iteration
# ----------------------------------------------------------------------------------------

def genotype_file(name: str, multi_channel: bool = False) -> Path:
    """genotypes/<name>.txt, or genotypes/multi_channel/<name>.txt for a multi-channel path (whose
    name is also the NAME inside the file, so a Python identifier)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise SearchError(f"--genotype_name {name!r} must be a plain file name (letters, digits, _ - .)")
    if multi_channel and not name.isidentifier():
        raise SearchError(f"--genotype_name {name!r} names a multi-channel path: use letters, digits and _ only")
    return (GENOTYPE_OUTPUT_DIR / "multi_channel" if multi_channel else GENOTYPE_OUTPUT_DIR) / f"{name}.txt"


@dataclass
class Engine:
    strategy: CellStrategy
    model: Supernet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    architect: Architect
    precision: Precision
    memory_format: torch.memory_format

    graphs: GraphedIteration | None = None      # --cuda_graphs

    def step(self, batch, search_batch, searching: bool):
        """One search iteration (core/architect.py): (training loss, logits, architecture statistics)."""
        if self.graphs is not None:
            return self.graphs(batch, search_batch, searching)
        return self.iteration(batch, search_batch, searching)

    def iteration(self, batch, search_batch, searching: bool):
        c = self.strategy.config
        return search_iteration(self.model, self.architect if searching else None, self.optimizer, self.precision,
                                batch, search_batch, grad_clip=c.grad_clip, single_level=c.single_level,
                                network_loss=self.strategy.network_loss)


def build_engine(strategy: CellStrategy, num_classes: int, network: str, device: torch.device, precision: Precision,
                 memory_format_name: str = "auto", sync_bn: bool = False, stored_spec: dict | None = None,
                 compile: bool = False, cuda_graphs: bool = False) -> Engine:
    """Supernet, network optimizer and schedule, architect: everything one search iteration uses
    (shared with bench/search_speed.py, so that the benchmark measures what the search runs).
    `compile` compiles the supernet's forward in place: the architect's steps, the network step and
    evaluation all call it, the second-order step at its virtual weights. `cuda_graphs` replays the
    iteration as a CUDA graph (core/cuda_graphs.py; the caller has checked that it can)."""
    tune_runtime(device)
    fmt = memory_format(memory_format_name, device)
    model = strategy.build_supernet(num_classes, network, stored_spec).to(device, memory_format=fmt)
    if sync_bn:
        model = sync_batchnorm(model, device)
    if compile:
        compile_module(model)
    c = strategy.config
    optimizer = torch.optim.SGD(model.weight_parameters(), c.learning_rate, momentum=c.momentum,
                                weight_decay=c.weight_decay)
    # Pretraining epochs are part of the schedule (D-DARTS adds them to --epochs).
    scheduler = lr_scheduler(optimizer, argparse.Namespace(
        lr_schedule=c.lr_schedule, epochs=strategy.total_epochs, learning_rate=c.learning_rate,
        learning_rate_min=c.learning_rate_min, lr_power_annealing_exponent_order=c.lr_power_annealing_exponent_order,
        warmup_epochs=c.warmup_epochs))
    architect = Architect(model, strategy.arch_config(), precision, terms=strategy.arch_terms, capturable=cuda_graphs)
    engine = Engine(strategy, model, optimizer, scheduler, architect, precision, fmt)
    if cuda_graphs:
        engine.graphs = GraphedIteration(engine.iteration)
    return engine


# ----------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    args, state, run_dir = resume_arguments(parse_args(argv), build_parser().parse_args([]), "search",
                                            RESUME_OVERRIDABLE, RESUME_REQUIRED)
    with process_group(resolve_device(args.device), args.dist_timeout) as (ctx, device):
        search(args, state, run_dir, ctx, device)


def search(args: argparse.Namespace, state: dict | None, run_dir: Path | None, ctx: Dist,
           device: torch.device) -> Supernet:
    """Run (or continue) a search; returns this rank's supernet at the end."""
    cost = RunCost(device, ctx.world_size, args.seed, "search")
    strategy, options = make_strategy(args)
    precision = Precision(device, args.amp, cache_casts=not args.cuda_graphs)
    if args.cuda_graphs:
        check_cuda_graphs(args, strategy, device, ctx, precision)
    seed_everything(args.seed)
    data = search_data(args, ctx, device, memory_format(args.memory_format, device))
    engine = build_engine(strategy, data.num_classes, data.network, device, precision, args.memory_format,
                          args.sync_bn, state["spec"] if state is not None else None, args.compile, args.cuda_graphs)
    rules = strategy.stop_rules(engine.model) + [r for o in options for r in o.stop_rules(engine.model, strategy)]
    run = SearchRun(args, ctx, strategy, options, engine, data, rules, cost)
    start = run.restore(state) if state is not None else 0
    run.open(state, run_dir, start)
    ended = run_epochs(start, strategy.total_epochs, stop_epoch=args.stop_epoch, run_epoch=run.epoch, rules=rules,
                       report=run.report, save=run.save, log=run.log, run_dir=run.run_dir)
    run.close(finish=ended != STOPPED)
    return engine.model


class SearchRun:
    """One search as ``run_epochs`` drives it: each epoch's steps and scores (``epoch``), its report
    and heatmap (``report``, rank 0), its checkpoint (``save``), and the genotype at the end.
    ``cost`` (core/run_cost.py) charges each epoch to the search phase of cost.json, and a
    selection (an option that ``selects``) to the selection phase."""

    def __init__(self, args: argparse.Namespace, ctx: Dist, strategy: CellStrategy, options: list, engine: Engine,
                 data: SearchData, rules: list, cost: RunCost):
        self.args, self.ctx, self.strategy, self.options = args, ctx, strategy, options
        self.engine, self.data, self.rules, self.cost = engine, data, rules, cost
        self.elapsed = 0.0

    def restore(self, state: dict) -> int:
        """Load a checkpoint; returns the first epoch to run (past the last if the search had stopped early)."""
        engine = self.engine
        engine.model.load_state_dict(state["model"])
        engine.optimizer.load_state_dict(state["optimizer"])
        engine.scheduler.load_state_dict(state["scheduler"])
        engine.architect.load_state_dict(state["architect"])
        engine.precision.scaler.load_state_dict(state["scaler"])
        self.data.stream.load_state_dict(state["stream"])
        for rule, rule_state in zip(self.rules, state["stop_rules"], strict=True):
            rule.load_state_dict(rule_state)
        self.elapsed = state["elapsed"]
        return self.strategy.total_epochs if state.get("stopped_early") else state["epoch"]

    def open(self, state: dict | None, run_dir: Path | None, start: int) -> None:
        """Claim the genotype name, create (or reopen) the run folder, log what runs."""
        args, ctx, model = self.args, self.ctx, self.engine.model
        if state is None:
            if args.genotype_name is not None:   # every rank checks (and fails) alike: no rank left waiting
                check_genotype_name(genotype_file(args.genotype_name, args.multi_channel), None)
            if ctx.is_main:
                run_dir = create_run_dir("search", f"search-{args.save}")
                if args.genotype_name is None:
                    name = run_dir.name.removeprefix("search-")
                    args.genotype_name = name.replace("-", "_") if args.multi_channel else name
        self.run_dir, args.genotype_name = broadcast_object((run_dir, args.genotype_name))
        if state is not None and args.genotype_name != state["args"].get("genotype_name"):   # a new name on resume
            check_genotype_name(genotype_file(args.genotype_name, args.multi_channel), self.run_dir.name)
        if ctx.is_main:
            record_invocation(self.run_dir, vars(args), self.data.stream.device)
        self.log = log = setup_logger(self.run_dir, "search", enabled=ctx.is_main)
        log.info("run folder %s", self.run_dir)
        log.info("method %s (%s) | defaults: %s", args.method, getattr(args, "method_source", "--method"),
                 self.strategy.SOURCE)
        log.info("args %s", json.dumps(vars(args), sort_keys=True))
        amp = f" | amp {self.engine.precision.dtype}" if self.engine.precision.enabled else ""
        log.info("%s | device %s%s%s", model.describe(), self.data.stream.device, amp,
                 ctx.describe(ctx.per_rank_batch(args.batch_size), args.sync_bn))
        log.info("param size = %.6fM (network weights; architecture %d)",
                 sum(p.numel() for p in model.weight_parameters()) / 1e6,
                 sum(a.numel() for a in model.arch_parameters()))
        log.info("update: %s%s", self.strategy.describe_update(),
                 "".join(f" | {type(o).__name__}" for o in self.options))
        if start:
            log.info("resumed from epoch %d", start)
        for rule in self.rules:
            rule.start(log, resumed=start > 0)
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start + 1) if ctx.is_main else None
        self.weights_dir = self.run_dir / "weights"
        if ctx.is_main:
            self.weights_dir.mkdir(exist_ok=True)
        model.train()

    def epoch(self, epoch: int) -> EpochRecord:
        """Train (and search, unless pretraining) one epoch, score the held-out half, derive."""
        args, engine, strategy = self.args, self.engine, self.strategy
        started = time.time()
        seed_epoch(args.seed, epoch, self.ctx.rank)
        self.data.order.set_epoch(epoch)
        schedule = strategy.begin_epoch(epoch)
        searching = strategy.searching(epoch)
        lr = engine.scheduler.get_last_lr()[0]
        total = f"{epoch + 1}/{strategy.total_epochs}" + ("" if searching else " (pretrain)")
        train_loss, train_top1, arch_means = search_epoch(args, engine, self.data, searching, self.log, epoch + 1,
                                                          f"epoch {total}")
        engine.scheduler.step()
        if searching:
            engine.architect.end_epoch()
        broadcast_buffers(engine.model)
        check_finite_weights(engine.model, epoch + 1, SEARCH_DIVERGENCE_ADVICE)
        valid = evaluate(engine.model, self.data.valid_loader, nn.CrossEntropyLoss(), self.data.stream.device,
                         engine.precision, desc="valid", memory_format=engine.memory_format, max_steps=args.max_steps)
        self.elapsed += time.time() - started
        result = strategy.derive(engine.model)
        scalars = {"train_loss": train_loss, "train_top1": train_top1, "valid_loss": valid.loss,
                   "valid_top1": valid.top1, "lr": lr, **{f"schedule/{k}": v for k, v in schedule.items()},
                   **{f"collapse/{k}": v for k, v in result.collapse().items()}}
        rates = engine.architect.learning_rates() if searching else []
        scalars.update({f"arch_lr/{i}" if len(rates) > 1 else "arch_lr": rate for i, rate in enumerate(rates)})
        self.log.info("epoch %s lr %.3e | train loss %.4f acc %.2f%% | valid loss %.4f acc %.2f%% | %.0f s%s", total,
                      lr, train_loss, train_top1, valid.loss, valid.top1, self.elapsed,
                      "".join(f" | {k} {v:.4g}" for k, v in schedule.items()))
        for key, value in arch_means.items():
            if value.ndim == 0:
                scalars[key] = float(value)
                continue
            scalars.update({f"{key}/{name}": float(v) for name, v in zip(engine.model.set_names(), value)})
            self.log.info("%s values (mean of the epoch, per set) %s", key, np.array2string(value, precision=4))
        return EpochRecord(epoch + 1, searching, scalars, engine.model.weight_tables(), result)

    def report(self, record: EpochRecord) -> None:
        """Rank 0's record of the epoch: weights (.npy/.npz) and their heatmap, log, tensorboard."""
        if not self.ctx.is_main:
            return
        stem = self.weights_dir / f"epoch_{record.epoch:03d}"
        self.engine.model.save_weights(stem)
        heatmap_png(stem.with_suffix(".png"), record.tables, f"{self.args.method}: architecture weights, "
                                                             f"epoch {record.epoch}")
        log_tables(self.log, record.tables)
        tensorboard_tables(self.writer, record.tables, record.epoch)
        for key, value in record.scalars.items():
            self.writer.add_scalar(key, value, record.epoch)
        self.writer.add_text("genotype", record.result.text(), record.epoch)
        self.writer.flush()
        collapse = record.result.collapse()
        if collapse:
            self.log.info("normal cell: %g skip connections, %g parameter-free ops", collapse["skip_connections"],
                          collapse["param_free_ops"])
        self.log.info("%s = %s", record.result.label, record.result.text())

    def save(self, epochs_done: int, stopped_early: str | None) -> None:
        if not self.ctx.is_main:
            return
        self.cost.charge(self.run_dir, epochs_done)
        engine = self.engine
        save_checkpoint({"kind": "search", "epoch": epochs_done, "args": vars(self.args),
                         "spec": engine.model.spec_dict(), "model": engine.model.state_dict(),
                         "optimizer": engine.optimizer.state_dict(), "scheduler": engine.scheduler.state_dict(),
                         "architect": engine.architect.state_dict(), "scaler": engine.precision.scaler.state_dict(),
                         "stream": self.data.stream.state_dict(), "stop_rules": [r.state_dict() for r in self.rules],
                         "elapsed": self.elapsed, "stopped_early": stopped_early}, self.run_dir / "checkpoint.pt")

    def close(self, finish: bool) -> None:
        """After the epochs: the genotype(s), selected on every rank, written by rank 0."""
        if self.writer is not None:
            self.writer.close()
        if not finish:
            return
        selection = next((o for o in self.options if o.selects), None)
        if selection is not None:
            data = self.data
            self.cost.phase = "selection"
            results = {"": selection.select(SelectionContext(self.engine, data.train_loader, data.stream,
                                                             data.valid_loader, data.stream.device,
                                                             self.args.max_steps, self.log))}
            if self.ctx.is_main:
                self.cost.charge(self.run_dir, 1)
        else:
            results = self.strategy.results(self.engine.model)
        if not self.ctx.is_main:
            return
        args = self.args
        origin = f"{GENOTYPE_MARK}: {args.method} search on {args.dataset}, seed {args.seed}"
        for suffix, result in results.items():
            write_result(result, genotype_file(args.genotype_name + suffix, args.multi_channel), self.run_dir, origin,
                         args.dataset, self.log)


def search_epoch(args: argparse.Namespace, engine: Engine, data: SearchData, searching: bool, log, epoch: int,
                 desc: str) -> tuple[float, float, dict[str, np.ndarray]]:
    """One pass over the training half (architecture steps too when `searching`): training loss and
    top-1 %, and the epoch's mean architecture statistics, all over every rank's batches. A NaN or
    inf loss (of either step) raises DivergenceError at the next progress line or at the end."""
    device, fmt = data.stream.device, engine.memory_format
    loss_sum, top1_sum = RunningSum(device), RunningSum(device)
    watch = DivergenceWatch(device, epoch, SEARCH_DIVERGENCE_ADVICE)
    arch_sums: dict[str, torch.Tensor] = {}
    arch_steps = 0
    if engine.graphs is not None:
        engine.graphs.reset()       # this epoch's learning rate and schedule are new Python numbers
    bar = progress(data.train_loader, desc)
    for step, (x, y) in enumerate(bar):
        if args.max_steps is not None and step >= args.max_steps:
            break
        x, y = x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)
        loss, logits, stats = engine.step((x, y), data.stream, searching)
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


if __name__ == "__main__":
    cli.run(main)
