"""Train a genotype from scratch (CIFAR-10/100, ImageNet, or the offline digits set).

    python cnn/train.py --arch DARTS_V2 --auxiliary --cutout            # the DARTS CIFAR-10 recipe
    python cnn/train.py --arch DARTS_V2 --dataset digits --init_channels 8 --layers 5 --epochs 15

    torchrun --nproc_per_node=4 cnn/train.py --arch DARTS_V2 --auxiliary --cutout --batch_size 384   # 4 GPUs

Writes logs/eval/<save>-<timestamp>/: log.txt, command.txt, args.json, tensorboard/,
checkpoint.pt (resumable with --resume), model_best.pt, results.json and cost.json (core/run_cost.py).

Under torchrun (see core/distributed.py) the model is wrapped in DistributedDataParallel,
--batch_size is the global batch split over the processes, the learning rate is the one given,
every rank scores its share of the test set and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from torch.utils.tensorboard import SummaryWriter

import cli
from checkpoint import (CheckpointError, checkpoint_file, load_checkpoint, model_state_dict, resume_arguments,
                        save_checkpoint)
from data import (DATA_ON_DEVICE_HELP, DATASETS, DataError, DeviceLoader, EmptySplitError, build_datasets,
                  cifar10_1_dataset, cifar10_1_dir, data_on_device_refusal, dataset_info, default_workers, make_loader,
                  split_train_valid, with_transform)
from distributed import DEFAULT_TIMEOUT_S, Dist, broadcast_buffers, broadcast_object, process_group, sync_batchnorm
from metrics import count_macs, count_parameters
from model import ModelError, ModelSpec, load_model_weights, min_train_batch
from multichannel import PathSpec
from operations import OPS
from paths import REPO_ROOT
from run_cost import RunCost
from run_dir import create_run_dir, record_invocation, setup_logger, write_json
from sampling import EvalShard, SeededSamples, ShardedOrder
from runtime import (Precision, check_finite_weights, compile_module, resolve_device, seed_epoch, seed_everything,
                     tune_runtime)
from training import (LR_SCHEDULES, MEMORY_FORMATS, evaluate, lr_scheduler, make_optimizer, memory_format,
                      to_memory_format, train_epoch)

RESUME_OVERRIDABLE = ("device", "workers", "report_freq", "histogram_freq", "data", "resume", "stop_epoch",
                      "dist_timeout", "compile")
RESUME_REQUIRED = ("model", "optimizer", "scheduler", "scaler", "epoch", "best", "elapsed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description="Train a genotype from scratch.", formatter_class=cli.HelpFormatter)
    p.add_argument("--arch", default=None,
                   help="genotype name in genotypes/ or a path to a genotype file (default DARTS_V2); with "
                        "--multi_channel a path name in genotypes/multi_channel/ or a path file")
    p.add_argument("--multi_channel", action="store_true",
                   help="train a sharpDARTS multi-channel path (cnn/multichannel.py) instead of a cell network")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS)
    p.add_argument("--data", default=str(REPO_ROOT / "data"), help="dataset root directory")
    p.add_argument("--batch_size", type=cli.positive_int, default=96)
    p.add_argument("--epochs", type=cli.positive_int, default=600)
    p.add_argument("--init_channels", type=cli.positive_int, default=None,
                   help="initial width C (default 36 CIFAR-stem, 48 ImageNet)")
    p.add_argument("--layers", type=cli.positive_int, default=None,
                   help="number of cells (default 20 CIFAR-stem, 14 ImageNet; a per-cell genotype's own cell count, "
                        "more derives a deeper network)")
    p.add_argument("--ops", default="auto", choices=["auto", *OPS],
                   help="op family; auto = the family the genotype was published for")
    p.add_argument("--mid_channels", type=cli.positive_int, default=None,
                   help="middle width of choke ops (default 32 CIFAR, 96 ImageNet; a multi-channel path: each op's "
                        "output width)")
    p.add_argument("--learning_rate", type=cli.non_negative_float, default=0.025)
    p.add_argument("--learning_rate_min", type=cli.non_negative_float, default=0.0)
    p.add_argument("--lr_schedule", default="cosine", choices=LR_SCHEDULES,
                   help="cosine: DARTS's CosineAnnealingLR(T_max=epochs); cosine_power: sharpDARTS's cosine power "
                        "annealing, from --learning_rate at the first epoch to --learning_rate_min at the last; "
                        "step: DARTS's ImageNet schedule, times --gamma every --decay_period epochs")
    p.add_argument("--lr_power_annealing_exponent_order", type=cli.positive_float, default=10.0,
                   help="cosine_power: larger decays faster early; 1 is cosine annealing (10 as sharpDARTS's "
                        "training scripts; its search and ours default to 2)")
    p.add_argument("--warmup_epochs", type=cli.non_negative_int, default=0, help="cosine_power: linear warmup epochs")
    p.add_argument("--decay_period", type=cli.positive_int, default=1, help="step: epochs between decays")
    p.add_argument("--gamma", type=cli.positive_float, default=0.97, help="step: learning rate decay factor")
    p.add_argument("--momentum", type=cli.probability, default=0.9)
    p.add_argument("--weight_decay", type=cli.non_negative_float, default=3e-4)
    p.add_argument("--auxiliary", action="store_true", help="auxiliary classifier after the last reduction cell")
    p.add_argument("--auxiliary_weight", type=cli.non_negative_float, default=0.4)
    p.add_argument("--cutout", action="store_true")
    p.add_argument("--cutout_length", type=cli.positive_int, default=16)
    p.add_argument("--auto_aug", "--autoaugment", dest="auto_aug", action="store_true",
                   help="torchvision AutoAugment policy of the dataset")
    p.add_argument("--drop_path_prob", type=cli.probability, default=0.2,
                   help="final drop path probability (linear ramp)")
    p.add_argument("--label_smooth", type=cli.probability, default=0.0)
    p.add_argument("--grad_clip", type=cli.non_negative_float, default=5.0, help="gradient norm clip (0 disables)")
    p.add_argument("--valid_portion", type=cli.probability, default=0.0,
                   help="hold out this part of the training set to select the best model (else it is selected on test)")
    p.add_argument("--cifar10_1", default=None,
                   help="directory of the CIFAR-10.1 .npy files (default: looked for under --data)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision on CUDA: bf16 where the GPU supports it, else fp16 with loss scaling; "
                        "the CPU always trains in fp32")
    p.add_argument("--memory_format", default="auto", choices=MEMORY_FORMATS,
                   help="activation layout; auto = channels_last on the CPU and on CUDA")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network: the first steps of the first epoch compile it (minutes on a "
                        "CPU), once for training and once for evaluation; pays off over long runs")
    p.add_argument("--data_on_device", action="store_true", help=DATA_ON_DEVICE_HELP)
    p.add_argument("--sync_bn", action="store_true",
                   help="under torchrun: BatchNorm statistics of the global batch instead of each process's share")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dist_timeout", type=cli.positive_float, default=DEFAULT_TIMEOUT_S,
                   help="under torchrun: seconds a process waits for the others in a collective before the run stops")
    p.add_argument("--workers", type=cli.non_negative_int, default=None,
                   help="data loader workers, kept from one epoch to the next (default 0 for digits, else "
                        "min(4, cores)); memory is pinned when CUDA is present")
    p.add_argument("--seed", type=cli.seed, default=0)
    p.add_argument("--selection_run", action="store_true",
                   help="this training picks among candidate genotypes (as DARTS retrained 4 searched cells): its "
                        "cost.json counts it as selection, and summarize_results.py keeps it out of the accuracies")
    p.add_argument("--save", default="EXP", help="run name; the run folder is logs/eval/<save>-<timestamp>")
    p.add_argument("--resume", default=None, help="checkpoint.pt (or its run folder) to continue exactly")
    p.add_argument("--load", default=None,
                   help="start from these weights (a checkpoint, or a run folder's model_best.pt) with a fresh "
                        "optimizer and schedule, e.g. to fine-tune")
    p.add_argument("--stop_epoch", type=cli.non_negative_int, default=None,
                   help="end this process after that epoch, checkpoint kept (e.g. a job time limit); --resume continues")
    p.add_argument("--report_freq", type=cli.non_negative_int, default=50,
                   help="steps between log lines of the epoch's training loss and accuracies so far (as DARTS), "
                        "each also a check for a diverged loss; 0 for none")
    p.add_argument("--histogram_freq", type=cli.non_negative_int, default=50,
                   help="epochs between tensorboard histograms of the weights, 0 for none")
    args = p.parse_args(argv)
    if args.load and args.resume:
        p.error("--load starts a new run from weights and --resume continues one: give only one of them")
    if args.multi_channel:
        if args.arch is None:
            p.error("--multi_channel needs --arch, a path name in genotypes/multi_channel/ or a path file")
        fixed = [flag for flag in ("auxiliary", "init_channels", "layers") if getattr(args, flag)] + \
            (["ops"] if args.ops != "auto" else [])
        if fixed:
            p.error(f"a multi-channel path fixes its own widths and depth and has no auxiliary head: drop "
                    f"{', '.join('--' + flag for flag in fixed)}")
    elif args.arch is None:
        args.arch = "DARTS_V2"
    refusal = data_on_device_refusal(args.dataset, args.auto_aug)
    if args.data_on_device and refusal:
        p.error(refusal)
    return args


def main(argv: list[str] | None = None) -> None:
    args, state, run_dir = resume_arguments(parse_args(argv), parse_args([]), "train", RESUME_OVERRIDABLE,
                                            RESUME_REQUIRED)
    with process_group(resolve_device(args.device), args.dist_timeout) as (ctx, device):
        train(args, state, run_dir, ctx, device)


def load_start_weights(model: nn.Module, spec: ModelSpec | PathSpec, path_text: str) -> None:
    """--load: a checkpoint file, or a run folder's model_best.pt."""
    path = checkpoint_file(path_text, "model_best.pt")
    try:
        load_model_weights(model, spec, model_state_dict(load_checkpoint(path)), str(path))
    except CheckpointError as e:
        raise CheckpointError(f"--load: {e}") from None


def train(args: argparse.Namespace, state: dict | None, run_dir: Path | None, ctx: Dist, device: torch.device) -> None:
    cost = RunCost(device, ctx.world_size, args.seed, "selection" if args.selection_run else "training")
    batch = ctx.per_rank_batch(args.batch_size)
    precision = Precision(device, args.amp)
    tune_runtime(device)
    fmt = memory_format(args.memory_format, device)
    seed_everything(args.seed)
    info = dataset_info(args.dataset)
    train_set, test_set = build_datasets(args.dataset, args.data, cutout_length=args.cutout_length if args.cutout else 0,
                                         auto_augment=args.auto_aug)
    num_classes = len(getattr(train_set, "classes", [])) or info.num_classes
    valid_set = None
    if args.valid_portion > 0:
        full_train = train_set
        try:
            train_set, held_out = split_train_valid(full_train, 1.0 - args.valid_portion, args.seed)
        except EmptySplitError as e:
            raise DataError(f"--valid_portion {args.valid_portion} leaves a part of the {len(full_train)} training "
                            f"examples empty: {e.sizes[0]} to train on, {e.sizes[1]} held out") from None
        valid_set = Subset(with_transform(full_train, test_set.transform), held_out.indices)
    extra_dir = cifar10_1_dir(args.dataset, args.data, args.cifar10_1)
    extra_set = cifar10_1_dataset(extra_dir) if extra_dir else None

    if args.multi_channel:
        spec = PathSpec.resolve(args.arch, info.network, num_classes, mid_channels=args.mid_channels)
    else:
        spec = ModelSpec.resolve(args.arch, info.network, num_classes, init_channels=args.init_channels,
                                 layers=args.layers, ops=args.ops, mid_channels=args.mid_channels,
                                 auxiliary=args.auxiliary)
    min_batch = min_train_batch(spec)
    if batch < min_batch:
        raise ModelError(f"--auxiliary needs at least {min_batch} images per batch in each process, not {batch}: "
                         f"its last BatchNorm normalises one value per image and channel")
    spec.check_input_size(info.image_size)
    net = spec.build()
    if args.load and state is None:
        load_start_weights(net, spec, args.load)
    net = to_memory_format(net, device, fmt)
    params, macs = count_parameters(net), count_macs(net, info.image_size, device)
    if args.sync_bn:
        net = sync_batchnorm(net, device)
    if args.compile:
        compile_module(net)

    workers = default_workers(args.dataset) if args.workers is None else args.workers
    order = ShardedOrder(len(train_set), args.seed, rank=ctx.rank, world_size=ctx.world_size, batch_size=batch)
    if args.data_on_device:
        train_loader = DeviceLoader(train_set, batch, device, sampler=order)
    else:
        train_loader = make_loader(SeededSamples(train_set), batch, workers=workers, sampler=order)

    def eval_loader(dataset):
        if dataset is None:
            return None
        shard = EvalShard(len(dataset), ctx.rank, ctx.world_size)
        if args.data_on_device:
            return DeviceLoader(dataset, batch, device, sampler=shard)
        return make_loader(dataset, batch, workers=workers, sampler=shard)

    test_loader, valid_loader, extra_loader = eval_loader(test_set), eval_loader(valid_set), eval_loader(extra_set)

    optimizer = make_optimizer(net.parameters(), args)
    scheduler = lr_scheduler(optimizer, args)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smooth)
    test_criterion = nn.CrossEntropyLoss()

    start_epoch, best, elapsed = 0, {}, 0.0
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        precision.scaler.load_state_dict(state["scaler"])
        start_epoch, best, elapsed = state["epoch"], state["best"], state["elapsed"]
    elif ctx.is_main:
        run_dir = create_run_dir("eval", args.save)
    run_dir = broadcast_object(run_dir)
    # The parameters a step uses are the same every step (an op on a skipped edge never is): a static graph.
    # With --sync_bn every rank's statistics are already the global ones: no buffer broadcast per step.
    model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                    static_graph=True, broadcast_buffers=not args.sync_bn) if ctx.enabled else net
    if ctx.is_main:
        record_invocation(run_dir, vars(args), device)
    log = setup_logger(run_dir, "train", enabled=ctx.is_main)
    log.info("run folder %s", run_dir)
    log.info("args %s", json.dumps(vars(args), sort_keys=True))
    log.info("%s | device %s%s%s", spec.describe(), device, f" | amp {precision.dtype}" if precision.enabled else "",
             ctx.describe(batch, args.sync_bn))
    log.info("param size = %.6fM (without auxiliary head) | MACs = %.2fM at %dx%d", params / 1e6, macs / 1e6,
             info.image_size, info.image_size)
    if args.load and state is None:
        log.info("started from the weights of %s", args.load)
    if start_epoch:
        log.info("resumed from epoch %d", start_epoch)
    if len(order) % batch == 1 and min_batch > 1:
        log.info("each epoch's last batch holds one image, which the auxiliary head cannot train on: it is skipped")

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch + 1) if ctx.is_main else None
    select_name = "valid" if valid_loader else "test"
    result: dict = {}
    for epoch in range(start_epoch, args.epochs):
        if args.stop_epoch is not None and epoch >= args.stop_epoch:
            log.info("stopping after epoch %d as asked; continue with --resume %s", epoch, run_dir)
            break
        started = time.time()
        seed_epoch(args.seed, epoch, ctx.rank)
        order.set_epoch(epoch)
        lr = scheduler.get_last_lr()[0]
        net.drop_path_prob = args.drop_path_prob * epoch / args.epochs
        train = train_epoch(model, train_loader, optimizer, criterion, device, precision, epoch=epoch + 1,
                            auxiliary_weight=args.auxiliary_weight, grad_clip=args.grad_clip,
                            desc=f"epoch {epoch + 1}/{args.epochs}", memory_format=fmt, min_batch=min_batch,
                            report_freq=args.report_freq, log=log)
        scheduler.step()
        broadcast_buffers(net)
        check_finite_weights(net, epoch + 1)
        test = evaluate(net, test_loader, test_criterion, device, precision, memory_format=fmt)
        scores = {"train_loss": train.loss, "train_top1": train.top1, "test_loss": test.loss,
                  "test_top1": test.top1, "test_top5": test.top5, "lr": lr}
        if valid_loader:
            valid = evaluate(net, valid_loader, test_criterion, device, precision, desc="valid", memory_format=fmt)
            scores.update(valid_top1=valid.top1, valid_loss=valid.loss)
        if extra_loader:
            scores["cifar10_1_top1"] = evaluate(net, extra_loader, test_criterion, device, precision,
                                                desc="cifar10.1", memory_format=fmt).top1
        elapsed += time.time() - started
        is_best = not best or scores[f"{select_name}_top1"] > best[f"{select_name}_top1"]
        if is_best:
            best = {"epoch": epoch + 1, "selected_on": select_name, **scores}
        log.info("epoch %d/%d lr %.3e | train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%% top5 %.2f%%%s%s",
                 epoch + 1, args.epochs, lr, train.loss, train.top1, test.loss, test.top1, test.top5,
                 f" | valid acc {scores['valid_top1']:.2f}%" if valid_loader else "",
                 f" | cifar10.1 acc {scores['cifar10_1_top1']:.2f}%" if extra_loader else "")
        result = {"arch": spec.arch_name, "dataset": args.dataset, "epochs": epoch + 1, "params": params,
                  "macs": macs, "final": scores, "best": best, "wall_seconds": elapsed}
        if ctx.is_main:
            cost.charge(run_dir, epoch + 1)
            save_epoch(args, run_dir, writer, epoch, scores, is_best, result, spec, net, optimizer, scheduler,
                       precision)
    if writer is not None:
        writer.close()
    if result and result["epochs"] == args.epochs:
        log.info("final test accuracy %.2f%% (top-5 %.2f%%) after %d epochs, %.0f s", result["final"]["test_top1"],
                 result["final"]["test_top5"], result["epochs"], elapsed)
        log.info("model_best.pt: epoch %d, selected on %s accuracy %.2f%%, test accuracy %.2f%%", best["epoch"],
                 select_name, best[f"{select_name}_top1"], best["test_top1"])


def save_epoch(args: argparse.Namespace, run_dir: Path, writer: SummaryWriter, epoch: int, scores: dict,
               is_best: bool, result: dict, spec: ModelSpec | PathSpec, net: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, precision: Precision) -> None:
    """Rank 0's records of one epoch: tensorboard, model_best.pt, checkpoint.pt, results.json."""
    for key, value in scores.items():
        writer.add_scalar(key, value, epoch + 1)
    if args.histogram_freq and (epoch + 1) % args.histogram_freq == 0:
        for name, p in net.named_parameters():
            writer.add_histogram(name, p.detach().float().cpu(), epoch + 1)
    meta = {"spec": spec.to_dict(), "dataset": args.dataset, "epoch": epoch + 1, "scores": scores}
    weights = net.state_dict()
    if is_best:
        save_checkpoint({"kind": "model", **meta, "model": weights}, run_dir / "model_best.pt")
    save_checkpoint({"kind": "train", **meta, "model": weights, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": precision.scaler.state_dict(),
                     "best": result["best"], "elapsed": result["wall_seconds"], "args": vars(args)},
                    run_dir / "checkpoint.pt")
    write_json(run_dir / "results.json", result)

if __name__ == "__main__":
    cli.run(main)
