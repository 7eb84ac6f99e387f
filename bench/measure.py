"""How every bench script measures: seconds per step, peak memory, and one child process per measurement.

A measurement runs in a child process of its own (``run_child``), so that its peak resident set size is
its own and not the sum of everything measured before, and so that code that must never share a process
with the project's modules (the original DARTS code, whose ``model``, ``operations`` and ``genotypes``
modules have the project's names) stays apart. The child prints one JSON object on its last line.

This module imports nothing from the project: the children of ``original_darts.py`` import it too.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch


class BenchError(RuntimeError):
    """A measurement child that failed; the message ends with its last lines of output."""


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB: Linux's VmHWM, which starts afresh at exec,
    where getrusage's ru_maxrss (the fallback elsewhere) keeps the parent's peak in a child."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, iterations: int) -> dict:
    """Median seconds of `iterations` calls of `step` after `warmup` untimed ones, and the peak memory:
    on CUDA the most PyTorch allocated, on the CPU the peak resident set size of the process."""
    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_seconds = [timed() for _ in range(warmup)]
    seconds = [timed() for _ in range(iterations)]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mb()
    return {"seconds_per_step": statistics.median(seconds), "all_seconds": [round(s, 4) for s in seconds],
            "warmup_seconds": [round(s, 3) for s in warmup_seconds], "peak_memory_mb": round(peak, 1)}


def run_child(argv: list[str], threads: int | None = None, timeout: float | None = None) -> dict:
    """Run `python argv...` with `threads` OpenMP/MKL threads and return the JSON of its last output line."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-5:])
        raise BenchError(f"{' '.join(argv[:2])} exited with status {done.returncode}:\n{tail}")
    return json.loads(lines[-1])
