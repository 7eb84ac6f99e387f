"""The language-model training DARTS's rnn/train.py does, step by step, for train.py and the search.

* Truncated backpropagation with variable lengths: each batch is ``bptt`` rows long with
  probability 0.95, else ``bptt / 2``, plus normal noise of standard deviation 5, at least 5 and
  at most ``bptt + max_seq_len_delta``; the learning rate of the step is scaled by length / bptt.
* The hidden state is carried from batch to batch (detached), one per chunk of
  ``small_batch_size`` sequences: a batch is computed in chunks whose gradients add up.
* The loss adds activation regularization (``alpha`` times the mean square of the dropped cell
  output) and temporal activation regularization (``beta`` times the mean square of the change
  of the cell output from one time step to the next); gradients are clipped to norm ``clip``.
* SGD until the validation loss has not improved on the best of all but the last ``nonmono``
  epochs, then averaged SGD (torch.optim.ASGD with t0 = 0, lambd = 0, as DARTS); from then on
  evaluation and the saved model use the averaged weights.

Under torchrun each rank takes an equal share of the sequences (columns) of every batch and the
gradients are averaged over the ranks before clipping, so every rank takes the same step;
evaluation splits the columns of the evaluation batch over the ranks and sums the losses.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from logging import Logger

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from corpus import get_batch
from distributed import average_over_ranks
from metrics import RunningSum
from recurrent_model import RNNModel
from runtime import DivergenceWatch, Precision, progress

DIVERGENCE_ADVICE = "lower --lr or --clip, or run without --amp"
OPTIMIZERS = ("sgd", "asgd")
ChunkHook = Callable[[int, torch.Tensor, torch.Tensor, list[torch.Tensor]], None]


@dataclass(frozen=True)
class StepConfig:
    """What one training step needs of the command line."""
    bptt: int
    max_seq_len_delta: int
    clip: float
    alpha: float
    beta: float
    small_batch_size: int
    log_interval: int
    length_sd: float = 5.0      # noise on the drawn lengths (DARTS's search: none)


def batch_schedule(rows: int, bptt: int, max_seq_len_delta: int, rng: np.random.Generator,
                   length_sd: float = 5.0) -> list[tuple[int, int]]:
    """(first row, drawn length) of every batch of one epoch over `rows` rows of training data."""
    schedule, i = [], 0
    while i < rows - 2:
        mean = bptt if rng.random() < 0.95 else bptt / 2
        seq_len = min(max(5, int(rng.normal(mean, length_sd) if length_sd else mean)), bptt + max_seq_len_delta)
        schedule.append((i, seq_len))
        i += seq_len
    return schedule


def regularization(raw_output: torch.Tensor, dropped_output: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """AR on the dropped cell output plus TAR on the raw one, as DARTS adds them to the loss."""
    tar = beta * (raw_output[1:] - raw_output[:-1]).pow(2).mean()
    return tar + alpha * dropped_output.pow(2).mean() if alpha > 0 else tar


def detach(hidden: list[torch.Tensor]) -> list[torch.Tensor]:
    """The hidden state without its history, so backpropagation stops at the batch boundary."""
    return [h.detach() for h in hidden]


def train_step(model: RNNModel, data: torch.Tensor, targets: torch.Tensor, hidden: list[list[torch.Tensor]],
               optimizer: torch.optim.Optimizer, precision: Precision, cfg: StepConfig, seq_len: int,
               watch: DivergenceWatch, before_chunk: ChunkHook | None = None) -> torch.Tensor:
    """One weight step on a batch (T, B) of this rank's sequences, computed in chunks of
    small_batch_size whose hidden states `hidden` carries (updated in place). `before_chunk(chunk,
    data, targets, hidden)` runs before each chunk's forward (the search's architecture step).
    Only the optimizer's parameters get gradients and are clipped. Returns the summed negative
    log-likelihood of the targets, on the device."""
    group = optimizer.param_groups[0]
    lr = group["lr"]
    group["lr"] = lr * seq_len / cfg.bptt
    optimizer.zero_grad(set_to_none=True)
    batch, small = data.shape[1], cfg.small_batch_size
    total = torch.zeros((), device=data.device)
    weights = [p for g in optimizer.param_groups for p in g["params"]]
    for c in range(batch // small):
        cols = slice(c * small, (c + 1) * small)
        if before_chunk is not None:
            before_chunk(c, data[:, cols], targets[:, cols], hidden[c])
        with precision.autocast():
            log_prob, hidden[c], raw, dropped = model(data[:, cols], detach(hidden[c]), return_h=True)
            nll = F.nll_loss(log_prob.float().reshape(-1, model.ntoken), targets[:, cols].reshape(-1), reduction="sum")
            raw_loss = nll / targets[:, cols].numel()
            loss = raw_loss + regularization(raw[-1], dropped[-1], cfg.alpha, cfg.beta)
        precision.scaler.scale(loss * (small / batch)).backward(inputs=weights)
        watch.observe(raw_loss)
        total += nll.detach()
    params = [p for p in weights if p.grad is not None]
    average_over_ranks([p.grad for p in params])
    precision.scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(params, cfg.clip)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    group["lr"] = lr
    return total


def train_epoch(model: RNNModel, train_data: torch.Tensor, optimizer: torch.optim.Optimizer, precision: Precision,
                cfg: StepConfig, *, epoch: int, rng: np.random.Generator, log: Logger,
                arch_step: Callable[..., None] | None = None, advice: str = DIVERGENCE_ADVICE) -> float:
    """One pass over this rank's columns of the batched training data; the mean negative
    log-likelihood per token over every rank. A NaN or inf loss raises DivergenceError (with `advice`)
    at the next report (every `cfg.log_interval` batches) or at the end. `arch_step(first row, chunk,
    data, targets, hidden)` runs before each chunk's weight step (the search)."""
    model.train()
    device = train_data.device
    hidden = [model.init_hidden(cfg.small_batch_size) for _ in range(train_data.shape[1] // cfg.small_batch_size)]
    watch = DivergenceWatch(device, epoch, advice)
    epoch_sum, interval_sum = RunningSum(device), torch.zeros((), device=device)
    interval_tokens, started = 0, time.time()
    schedule = batch_schedule(train_data.shape[0], cfg.bptt, cfg.max_seq_len_delta, rng, cfg.length_sd)
    for batch, (start, seq_len) in enumerate(progress(schedule, f"epoch {epoch}"), start=1):
        data, targets = get_batch(train_data, start, seq_len)
        before = None if arch_step is None else functools.partial(arch_step, start)
        nll = train_step(model, data, targets, hidden, optimizer, precision, cfg, seq_len, watch, before)
        epoch_sum.add(nll, targets.numel())
        interval_sum += nll
        interval_tokens += targets.numel()
        if cfg.log_interval and batch % cfg.log_interval == 0:
            watch.check()       # the report reads the loss on the host anyway: a diverged run stops here
            loss = float(interval_sum) / interval_tokens
            log.info("| epoch %3d | %5d/%5d batches | lr %.2f | ms/batch %.1f | loss %.2f | ppl %.2f", epoch, batch,
                     len(schedule), optimizer.param_groups[0]["lr"], 1000 * (time.time() - started) / cfg.log_interval,
                     loss, perplexity(loss))
            interval_sum.zero_()
            interval_tokens, started = 0, time.time()
    watch.check()
    return epoch_sum.mean()


@torch.no_grad()
def evaluate(model: RNNModel, source: torch.Tensor, bptt: int, precision: Precision, desc: str = "eval") -> float:
    """Mean negative log-likelihood per predicted token of batched `source` (this rank's columns,
    possibly none), in evaluation mode, the hidden state carried through; over every rank."""
    was_training = model.training
    model.eval()
    total = RunningSum(source.device)
    if source.shape[1]:
        hidden = model.init_hidden(source.shape[1])
        for i in progress(range(0, source.shape[0] - 1, bptt), desc):
            data, targets = get_batch(source, i, bptt)
            with precision.autocast():
                log_prob, hidden = model(data, hidden)
            total.add(F.nll_loss(log_prob.float().reshape(-1, model.ntoken), targets.reshape(-1), reduction="sum"),
                      targets.numel())
    model.train(was_training)
    return total.mean()


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def make_optimizer(kind: str, model: nn.Module, lr: float, wdecay: float) -> torch.optim.Optimizer:
    """DARTS's SGD, or the averaged SGD it switches to: torch's ASGD with t0 = 0 averages the iterates from its
    second step on (its first step only sets the average), in PyTorch 0.3 as now."""
    if kind == "asgd":
        return torch.optim.ASGD(model.parameters(), lr=lr, t0=0, lambd=0.0, weight_decay=wdecay)
    return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wdecay)


def should_switch(history: list[float], valid_loss: float, nonmono: int) -> bool:
    """DARTS's trigger: validation worse than the best of all but the last `nonmono` SGD epochs."""
    return len(history) > nonmono and valid_loss > min(history[:-nonmono])


@contextlib.contextmanager
def averaged_weights(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Inside the block the model holds ASGD's averaged weights (what DARTS evaluates and saves);
    the trained weights come back after it. With SGD nothing changes."""
    if not isinstance(optimizer, torch.optim.ASGD):
        yield
        return
    swapped = [(p, p.detach().clone()) for p in model.parameters() if "ax" in optimizer.state.get(p, {})]
    with torch.no_grad():
        for p, _ in swapped:
            p.copy_(optimizer.state[p]["ax"])
    try:
        yield
    finally:
        with torch.no_grad():
            for p, trained in swapped:
                p.copy_(trained)
