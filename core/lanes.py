"""Two lanes of CPU threads for independent pieces of one step.

Why: on a CPU, the small kernels of a search supernet (C=16, batch 16: tensors of ~1 MB) hardly get
faster on a second thread (measured here, 2 cores of a Xeon: one mixed op's four convolution chains,
forward and backward, 26.6 ms on one thread, 20.1 ms on two); the same kernels run on one thread each
in two lanes, each lane taking the next independent piece (a chain), take 15.7 ms. The caller's
thread is one lane, a worker thread the other; each runs with half the torch threads, and the
caller's count is restored after. PyTorch releases the interpreter lock inside its kernels, so the
lanes' kernels overlap; only their Python interleaves. Lanes pay only when the caller's idle OpenMP
thread does not spin on the second lane's core: core/openmp_env.py shortens that spin (on 2 cores of an
AMD EPYC, lanes under libgomp's default spin made a search iteration slower than no lanes).

Results are those of running the tasks one after the other: each task computes what it computed
alone (with fewer threads, so sums may round differently in the last bit), and the caller combines
the results in its own order. ``serial()`` turns lanes off (tests compare both).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")

_ENABLED = [True]
_IN_LANE = threading.local()     # a task that calls run() runs its own tasks one after the other
_WORKER: list[tuple[int, ThreadPoolExecutor] | None] = [None]   # (pid that made it, executor)


@contextmanager
def serial() -> Iterator[None]:
    """Within: ``run`` runs its tasks one after the other on the caller's thread."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


def active() -> bool:
    """Whether ``run`` would use two lanes now: not ``serial()``, not within a lane, and at least two
    torch threads."""
    return _ENABLED[-1] and not getattr(_IN_LANE, "inside", False) and torch.get_num_threads() >= 2


def run(tasks: Sequence[Callable[[], T]], order: Sequence[int], device: torch.device) -> list[T]:
    """Each task's result, in the tasks' order, for the tasks that `order` lists (task indices, the longest
    first; None for the others). Tasks must be independent. On a CPU with two lanes, each lane takes the
    next task of `order` not yet taken; elsewhere the tasks run in `order` on the caller's thread."""
    results: list = [None] * len(tasks)
    if len(order) < 2 or device.type != "cpu" or not active():
        for i in order:
            results[i] = tasks[i]()
        return results
    threads = torch.get_num_threads()
    claim = threading.Lock()
    pending = iter(order)
    grad = torch.is_grad_enabled()

    def lane(n_threads: int) -> None:
        torch.set_num_threads(n_threads)
        _IN_LANE.inside = True
        try:
            with torch.set_grad_enabled(grad):      # grad mode is per thread
                while (i := _next(pending, claim)) is not None:
                    results[i] = tasks[i]()
        finally:
            _IN_LANE.inside = False

    other = _worker().submit(lane, threads // 2)
    try:
        lane(threads - threads // 2)
    finally:
        torch.set_num_threads(threads)
        other.result()      # raises the worker's exception, if it had one
    return results


def _next(pending: Iterator[int], claim: threading.Lock) -> int | None:
    with claim:
        return next(pending, None)


def _worker() -> ThreadPoolExecutor:
    """The second lane's thread, made at first use; a forked child (a data loader worker) makes its own,
    since the parent's thread does not exist there."""
    made = _WORKER[0]
    if made is None or made[0] != os.getpid():
        made = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="lane"))
        _WORKER[0] = made
    return made[1]
