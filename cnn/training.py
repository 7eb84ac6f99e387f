"""The image-classification training loop shared by train.py and the searches: memory layout, schedules,
one epoch of training, evaluation."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from cosine_power_annealing import ScheduleFactor, cosine_power_annealing
from metrics import RunningSum, correct_topk
from runtime import DivergenceWatch, Precision, progress

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
LR_SCHEDULES = ("cosine", "cosine_power", "step")


def memory_format(name: str, device: torch.device) -> torch.memory_format:
    """auto: channels-last on the CPU, where it is the fast layout of oneDNN convolutions, and on CUDA,
    where cuDNN's tensor-core convolutions (AMP, TF32) take it without transposes.

    channels-last is safe on the CPU because no module runs oneDNN's strided 1x1 convolution, whose
    channels-last weight gradient corrupts the heap (operations.PointwiseConv2d); tests/kernel_probe.py
    checks every module in this format (README, "A CPU kernel that corrupts memory")."""
    if name == "channels_last" or (name == "auto" and device.type in ("cpu", "cuda")):
        return torch.channels_last
    return torch.contiguous_format


def to_memory_format(net: nn.Module, device: torch.device, fmt: torch.memory_format) -> nn.Module:
    """`net` on `device` in layout `fmt`, the weights of its 1x1 kernels with standard strides.

    Why: a 1x1 kernel is the same memory in both layouts (only the strides of its size-1 dimensions
    differ), and the gradients of the products that run those kernels (operations.pointwise_conv) come
    with standard strides; DistributedDataParallel compares each gradient's strides with its parameter's
    and warns on every run when they differ."""
    net = net.to(device, memory_format=fmt)
    for p in net.parameters():
        if p.dim() == 4 and p.shape[-2:] == (1, 1):
            p.data = p.data.clone(memory_format=torch.contiguous_format)
    return net


def lr_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace) -> torch.optim.lr_scheduler.LRScheduler:
    """One learning rate per epoch; scheduler.step() after each epoch."""
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs, eta_min=args.learning_rate_min)
    if args.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, args.decay_period, gamma=args.gamma)
    schedule = cosine_power_annealing(epochs=args.epochs, max_lr=args.learning_rate, min_lr=args.learning_rate_min,
                                      exponent_order=args.lr_power_annealing_exponent_order,
                                      warmup_epochs=args.warmup_epochs or None)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, ScheduleFactor(schedule, args.learning_rate))


def make_optimizer(parameters, args: argparse.Namespace) -> torch.optim.SGD:
    """DARTS's SGD with momentum and weight decay, in one fused kernel per step (CPU and CUDA): the same
    update as the per-parameter loop, which costs ~0.1 s per step on the CPU for ~900 small tensors."""
    return torch.optim.SGD(parameters, args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay,
                           fused=True)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               criterion: nn.Module, precision: Precision, *, auxiliary_weight: float = 0.0,
               grad_clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns the (detached) loss and logits. `model` returns (logits,
    auxiliary logits or None)."""
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        logits, logits_aux = model(x)
        loss = criterion(logits, y)
        if logits_aux is not None and auxiliary_weight > 0:
            loss = loss + auxiliary_weight * criterion(logits_aux, y)
    precision.scaler.scale(loss).backward()
    if grad_clip > 0:
        precision.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return loss.detach(), logits.detach()


@dataclass
class EpochResult:
    loss: float
    top1: float
    top5: float


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                device: torch.device, precision: Precision, *, epoch: int, auxiliary_weight: float = 0.0,
                grad_clip: float = 0.0, desc: str = "train",
                memory_format: torch.memory_format = torch.contiguous_format, min_batch: int = 1,
                report_freq: int = 0, log: logging.Logger | None = None) -> EpochResult:
    """One pass over `loader` (epoch number `epoch`, from 1); metrics stay on the device until the end
    of the epoch, when a NaN or inf loss raises DivergenceError, or until a report (every `report_freq`
    steps, DARTS's log line of the epoch's loss and accuracies so far, to `log`), which checks for one
    too. A batch of fewer than `min_batch` images (an epoch's last) is skipped: an auxiliary head cannot
    train on one image.

    `model` may be wrapped in DistributedDataParallel: its gradients arrive averaged over the
    ranks before they are clipped, so every rank takes the same step.
    """
    model.train()
    loss_sum, top1_sum, top5_sum = RunningSum(device), RunningSum(device), RunningSum(device)
    watch = DivergenceWatch(device, epoch)
    bar = progress(loader, desc)
    for step, (x, y) in enumerate(bar):
        if y.shape[0] < min_batch:      # every rank has the same batch sizes (sampling.ShardedOrder): all skip it
            continue
        x, y = x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)
        loss, logits = train_step(model, x, y, optimizer, criterion, precision, auxiliary_weight=auxiliary_weight,
                                  grad_clip=grad_clip)
        watch.observe(loss)
        n = y.shape[0]
        top1, top5 = correct_topk(logits, y)
        loss_sum.add(loss * n, n)
        top1_sum.add(top1, n)
        top5_sum.add(top5, n)
        if report_freq and step and step % report_freq == 0:
            watch.check()
            message = f"loss {loss_sum.mean():.4f} top1 {100 * top1_sum.mean():.2f}% top5 {100 * top5_sum.mean():.2f}%"
            bar.set_postfix_str(message)
            if log is not None:
                log.info("train %03d %s", step, message)
    watch.check()
    return EpochResult(loss_sum.mean(), 100 * top1_sum.mean(), 100 * top5_sum.mean())


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             precision: Precision, desc: str = "test", memory_format: torch.memory_format = torch.contiguous_format,
             max_steps: int | None = None) -> EpochResult:
    """Loss and accuracy of `model` (logits, or (logits, auxiliary logits)) in eval mode, over
    every rank's shard when a process group runs."""
    was_training = model.training
    model.eval()
    loss_sum, top1_sum, top5_sum = RunningSum(device), RunningSum(device), RunningSum(device)
    for step, (x, y) in enumerate(progress(loader, desc)):
        if max_steps is not None and step >= max_steps:
            break
        x, y = x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
            logits = logits[0] if isinstance(logits, tuple) else logits
            loss = criterion(logits, y)
        n = y.shape[0]
        top1, top5 = correct_topk(logits, y)
        loss_sum.add(loss * n, n)
        top1_sum.add(top1, n)
        top5_sum.add(top5, n)
    model.train(was_training)
    return EpochResult(loss_sum.mean(), 100 * top1_sum.mean(), 100 * top5_sum.mean())
