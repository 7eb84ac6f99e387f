"""Many processes with ``torchrun``: the process group, each rank's device, global batches.

``torchrun --nproc_per_node=N cnn/train.py ...`` starts N copies; each learns its rank from the
environment torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE). GPUs talk over NCCL, CPUs over gloo.
Without torchrun (WORLD_SIZE unset or 1) nothing here starts a process group and every helper
is a no-op, so the scripts run the same code either way.

Conventions: ``--batch_size`` is the global batch, split evenly over the ranks, and the learning
rate given is the one for that global batch (nothing is rescaled behind the user's back). Only
rank 0 writes logs, checkpoints and genotypes.

BatchNorm: by default each rank normalises with the statistics of its own share of the batch
(as DistributedDataParallel and the reference codes do). ``--sync_bn`` makes the statistics
those of the global batch, so that N processes compute what one process would: torch's
``SyncBatchNorm`` on CUDA, and ``GlobalBatchNorm2d`` below elsewhere, because torch's refuses
CPU tensors.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from errors import UserError


class DistributedError(UserError):
    """A distributed set-up that cannot work (e.g. a batch that does not split over the ranks)."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, batch: int, sync_bn: bool) -> str:
        """The log's note on how a step is shared ('' for one process)."""
        if not self.enabled:
            return ""
        return f" | {self.world_size} processes, {batch} images each per step" + (", global BatchNorm" if sync_bn else "")

    def per_rank_batch(self, batch_size: int) -> int:
        """Each rank's share of the global batch."""
        if batch_size % self.world_size:
            raise DistributedError(f"--batch_size {batch_size} is the global batch and must split evenly over "
                                   f"{self.world_size} processes; use a multiple of {self.world_size}")
        return batch_size // self.world_size


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise DistributedError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


class CollectiveTimeout(DistributedError):
    """A collective operation waited longer than --dist_timeout; said once, by the lowest waiting rank."""

    def __init__(self, message: str, reporting_rank: int):
        super().__init__(message)
        self.reporting_rank = reporting_rank


DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_GRACE_S = 3.0   # how long the ranks that timed out wait for each other before naming the silent ones


def silent_ranks(ctx: Dist, grace_s: float = TIMEOUT_GRACE_S) -> list[int] | None:
    """After a collective timed out on this rank: the ranks that did not also time out within
    `grace_s` (they are stuck elsewhere), found through torchrun's key-value store; None when the
    store cannot be reached."""
    try:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=datetime.timedelta(seconds=grace_s))
        store.set(f"darts/timed_out/{ctx.rank}", "1")
        time.sleep(grace_s)
        return [r for r in range(ctx.world_size) if not store.check([f"darts/timed_out/{r}"])]
    except (KeyError, ValueError, RuntimeError):
        return None


def collective_timeout(ctx: Dist, timeout_s: float) -> CollectiveTimeout:
    """The sentence for a timed-out collective, naming the silent ranks when the store tells them."""
    silent = silent_ranks(ctx) or []
    who = f"rank{'s' * (len(silent) > 1)} {', '.join(map(str, silent))}" if silent else "a rank"
    waiting = [r for r in range(ctx.world_size) if r not in silent]
    return CollectiveTimeout(f"{who} did not answer within --dist_timeout {timeout_s:g} s (stuck, or much slower than "
                             f"the others), so the run stopped; find what held it up, or raise --dist_timeout",
                             reporting_rank=min(waiting, default=ctx.rank))


def _timed_out(exc: BaseException) -> bool:
    """gloo says it either way: "Timed out waiting ..." in the collective, or "Application timeout
    caused pair closure" when the peer's connection was closed by its own timeout first."""
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("timed out" in message or "timeout caused" in message)


@contextlib.contextmanager
def process_group(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[tuple[Dist, torch.device]]:
    """(this process's place, its device) for the length of a run; the group is torn down after.

    Under torchrun a CUDA `device` without an index becomes the GPU of the local rank. A collective
    that waits longer than `timeout_s` ends the run: gloo raises, and this rank says which ranks
    were silent (CollectiveTimeout); NCCL's watchdog stops the process itself with its own message.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        yield Dist(), device
        return
    ctx = Dist(_env_int("RANK", 0), _env_int("LOCAL_RANK", 0), world_size)
    timeout = datetime.timedelta(seconds=timeout_s)
    if device.type == "cuda":
        if device.index is not None:
            raise DistributedError(f"--device {device} would put every process on one GPU; under torchrun use "
                                   f"--device cuda (or auto): each process takes the GPU of its local rank")
        device = torch.device("cuda", ctx.local_rank)
        if device.index >= torch.cuda.device_count():
            raise DistributedError(f"local rank {ctx.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                                   f"start at most that many processes per node")
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    try:
        yield ctx, device
    except RuntimeError as exc:
        if _timed_out(exc):
            raise collective_timeout(ctx, timeout_s) from exc
        raise
    finally:
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return not is_distributed() or dist.get_rank() == 0


def average_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the ranks (one collective for all of them)."""
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The sum of `values` over the ranks (a copy; `values` itself unchanged)."""
    values = values.clone()
    if is_distributed():
        dist.all_reduce(values)
    return values


def min_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The elementwise minimum of `value` over the ranks (a copy; `value` itself unchanged)."""
    value = value.clone()
    if is_distributed():
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so that every rank scores
    and saves the same model when the statistics were gathered per rank."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank (e.g. the run folder rank 0 created)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


class _SumOverRanks(torch.autograd.Function):
    """The sum over ranks of a tensor, whose gradient is the sum over ranks of the gradients
    (every rank's loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return sum_over_ranks(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return sum_over_ranks(grad)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch of all ranks together.

    Sums go through all-reduces with a gradient, so the gradient is that of the global batch.
    The variance is computed in two passes (mean first), as a single process would, to stay
    within float rounding of it. Outside training or a process group it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        C = x.shape[1]
        dims = (0, 2, 3)
        local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() // C)])
        total = _SumOverRanks.apply(local)
        count = total[C]
        mean = total[:C] / count
        centered = x - mean.view(1, C, 1, 1)
        var = _SumOverRanks.apply(centered.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), factor)
        y = centered * torch.rsqrt(var + self.eps).view(1, C, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, C, 1, 1) + self.bias.view(1, C, 1, 1)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with every BatchNorm2d computing global-batch statistics (same parameter names);
    `model` itself when no process group runs (one process: its batch is the global batch)."""
    if not is_distributed():
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_batchnorm(model)


def _to_global_batchnorm(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        replacement = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                        module.track_running_stats)
        like = next((t for t in module.state_dict().values() if t.is_floating_point()), None)
        if like is not None:
            replacement.to(like.device, like.dtype)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, _to_global_batchnorm(child))
    return module
