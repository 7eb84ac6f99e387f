"""What every training loop of both domains needs around its steps: the device, mixed precision,
seeds, progress bars, and the divergence checks that keep NaN and inf out of checkpoints."""
from __future__ import annotations

import contextlib
import ctypes
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from checkpoint import non_finite_entry
from distributed import is_main_process, min_over_ranks
from errors import UserError
from sampling import mix_seed


class DeviceError(UserError):
    """A --device that this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was asked for, but PyTorch sees no CUDA device; use --device cpu or auto")
    return device


def tune_runtime(device: torch.device) -> None:
    """Process-wide settings that make the same steps faster, called once by the training, search and
    evaluation scripts (and the benchmarks) before their models.

    On CUDA, cuDNN times its algorithms at each new convolution shape and keeps the fastest, as the
    original DARTS code does: a CNN's shapes are fixed, and a DARTS search iteration ran 1.7x faster with
    it on an H200 (first order, batch 64: 1.33 -> 0.78 s). On a CPU, the C library's allocator keeps the
    memory a step frees for the next step (`keep_freed_memory`)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory instead of handing it back to the system; False where the C
    library has no mallopt (macOS, Windows).

    By default glibc gives a large block (above a threshold it raises with use, to at most 32 MB) pages
    mapped for it alone and unmaps them when it is freed, so every step faults in again, page by page,
    memory that the previous step freed: ~85,000 page faults in a DARTS_V2 training step at batch 32,
    ~6% of its time on a CPU. The process keeps its peak size instead (the peak itself moved by <7%);
    a repeated same-size block can first grow the heap by a few blocks until freed ones merge (measured
    for 64 MB blocks: 2-5, then reuse)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def progress(iterable, desc: str) -> tqdm:
    """A progress bar on a terminal, on rank 0 only."""
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=None if is_main_process() else True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed the model's random draws (drop path) of one epoch from (seed, epoch, rank), so a resumed
    run repeats them exactly; the data order and augmentation are seeded by ``sampling``."""
    torch.manual_seed(mix_seed(seed, epoch, rank))


@dataclass
class Precision:
    """Mixed precision: bf16 where the GPU supports it, fp16 with dynamic loss scaling otherwise.
    `cache_casts` off: autocast casts each weight at each use (what CUDA-graph capture asks)."""
    device: torch.device
    enabled: bool
    cache_casts: bool = True

    def __post_init__(self) -> None:
        self.enabled = self.enabled and self.device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, cache_enabled=self.cache_casts)


class DivergenceError(UserError):
    """Training produced NaN or inf; the message names where and what to change."""


DIVERGENCE_ADVICE = "lower --learning_rate, clip gradients with --grad_clip, or run without --amp"
NO_STEP = torch.iinfo(torch.long).max


class DivergenceWatch:
    """Finds the first step of an epoch whose loss is NaN or inf without a host sync per step: the
    step's index stays on the device (torch.where) and is read only by `check`, at report points
    and at the end of the epoch, before anything is saved. Under torchrun every rank must call
    `check` at the same points (it takes the minimum over the ranks)."""

    def __init__(self, device: torch.device, epoch: int, advice: str = DIVERGENCE_ADVICE):
        self.epoch, self.advice = epoch, advice
        self.steps = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad = torch.full((), NO_STEP, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), device=device)

    def observe(self, *losses: torch.Tensor) -> None:
        """The losses of one step (their sum is NaN or inf if one of them is)."""
        total = sum(loss.detach().float() for loss in losses)
        new = ~total.isfinite() & (self.first_bad == NO_STEP)
        self.first_bad = torch.where(new, self.steps, self.first_bad)
        self.bad_value = torch.where(new, total, self.bad_value)
        self.steps += 1

    def check(self) -> None:
        first = int(min_over_ranks(self.first_bad))
        if first != NO_STEP:
            value = float(self.bad_value) if int(self.first_bad) == first else "NaN or inf on another rank"
            raise DivergenceError(f"training diverged at epoch {self.epoch}, step {first + 1}: the loss became "
                                  f"{value}; {self.advice} (nothing of this epoch was saved)")


def check_finite_weights(model: nn.Module, epoch: int, advice: str = DIVERGENCE_ADVICE) -> None:
    """Before a checkpoint: every parameter and buffer finite (identical on every rank, so every rank decides alike)."""
    bad = non_finite_entry(model.state_dict())
    if bad is not None:
        raise DivergenceError(f"training diverged in epoch {epoch}: {bad} is no longer finite (NaN or inf); "
                              f"{advice} (nothing of this epoch was saved)")


class CompileError(UserError):
    """--compile on a machine that cannot compile."""


def _require_cpp_compiler() -> None:
    from torch._inductor import cpp_builder, exc
    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise CompileError("--compile needs a C++ compiler at run time (torch.compile's inductor builds C++ "
                           "kernels) and none was found: install g++ (or set CXX to one) or run without "
                           "--compile") from None


def compile_module(module: nn.Module, backend: str = "inductor") -> nn.Module:
    """Compile `module`'s forward with torch.compile, in place: its parameters, buffers and state_dict
    keys stay as they are, and DistributedDataParallel can wrap it. What compiles: training and
    evaluation once each on their first call, again for a batch of another size (an epoch's last one:
    that size becomes dynamic) and for the first nonzero drop path probability; a Python number the
    forward reads (that probability, which changes every epoch) is an input of the graph, not a constant
    baked into it, so its later values compile nothing. The "eager" backend checks those guards without
    generating code. Inductor, the default backend, builds C++ (and, on CUDA, Triton's launchers) at
    run time: without a compiler this fails here, in one sentence, before anything runs."""
    if backend == "inductor":
        _require_cpp_compiler()
    module.compile(backend=backend)
    return module
