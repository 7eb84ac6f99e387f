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
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

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
    """Median seconds of `iterations` calls of `step` after `warmup` untimed ones (wall clock, and CPU time
    of the process's threads: on a machine shared with other work, what an idle core would take), and the
    peak memory: on CUDA the most PyTorch allocated, on the CPU the peak resident set size of the process;
    and the OpenMP spin count the process ran with (core/openmp_env.py sets ours)."""
    def timed() -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started, time.process_time() - cpu_started

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_seconds = [timed()[0] for _ in range(warmup)]
    seconds, cpu_seconds = zip(*[timed() for _ in range(iterations)])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mb()
    return {"seconds_per_step": statistics.median(seconds), "cpu_seconds_per_step": statistics.median(cpu_seconds),
            "all_seconds": [round(s, 6) for s in seconds], "warmup_seconds": [round(s, 3) for s in warmup_seconds],
            "peak_memory_mb": round(peak, 1), "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}


def gpu_busy(step: Callable[[], object], device: torch.device) -> dict:
    """One more call of `step` under the profiler, on CUDA: how many kernels it launched and what fraction
    of its wall time the GPU spent running them. A low fraction means the host's launches, not the GPU,
    set the pace (what CUDA-graph capture or fewer, larger kernels would cut); the profiler slows the
    launches down, so the fraction is a lower bound. Empty on a CPU."""
    if device.type != "cuda":
        return {}
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - started
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e6
    return {"kernels_per_step": len(kernels), "kernel_seconds_per_step": round(busy, 6),
            "profiled_step_seconds": round(wall, 6), "gpu_busy_fraction": round(busy / wall, 3)}


def projection(images_per_s: float, epochs: int, images_per_epoch: int) -> dict:
    """Wall time of `epochs` epochs at the measured rate: a projection from the timed steps alone (no data
    loading, no evaluation between epochs)."""
    seconds = epochs * images_per_epoch / images_per_s
    return {"epochs": epochs, "images_per_epoch": images_per_epoch, "hours": round(seconds / 3600, 2),
            "days": round(seconds / 86400, 3)}


def run_child(argv: list[str], threads: int | None = None, timeout: float | None = None,
              env: Mapping[str, str] | None = None) -> dict:
    """Run `python argv...` with `threads` OpenMP/MKL threads and return the JSON of its last output line;
    `env` (default: this process's environment) is the child's environment before the thread counts."""
    env = dict(os.environ if env is None else env)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-5:])
        raise BenchError(f"{' '.join(argv[:2])} exited with status {done.returncode}:\n{tail}")
    return json.loads(lines[-1])


def interleaved_rounds(sides: dict[str, Callable[[], dict]], rounds: int, label: str) -> dict[str, list[dict]]:
    """Each side's child results over `rounds` rounds, one child per side per round, the sides' order
    alternating from round to round, so that a change in the load of a shared machine slows both alike."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for index in range(rounds):
        for name in (list(sides) if index % 2 == 0 else list(sides)[::-1]):
            result = sides[name]()
            runs[name].append(result)
            print(f"{label} round {index + 1} {name}: {result['seconds_per_step']:.3f} s/step, "
                  f"{result['peak_memory_mb']:.0f} MB", file=sys.stderr, flush=True)
    return runs


def summary(runs: list[dict], batch_size: int) -> dict:
    """Medians over the rounds, and the fastest step of all: on a loaded machine the step least slowed
    down by other work."""
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    seconds = median("seconds_per_step")
    result = {"seconds_per_step": round(seconds, 6), "images_per_s": round(batch_size / seconds, 3),
              "cpu_seconds_per_step": round(median("cpu_seconds_per_step"), 6),
              "fastest_step_seconds": min(s for r in runs for s in r["all_seconds"]),
              "peak_memory_mb": median("peak_memory_mb")}
    for key in ("rss_before_model_mb", "kernels_per_step", "gpu_busy_fraction"):
        if all(key in r for r in runs):
            result[key] = median(key)
    return {**result, "runs": runs}


def ratios(ours: list[dict], original: list[dict], cpu: bool) -> dict:
    """Ours against the original, round by round (medians of the rounds' ratios): images/s (the original's
    seconds / ours) and peak memory (ours / the original's). On the CPU the peaks are resident set sizes,
    interpreter and torch included; ``peak_memory_less_rss_before_model`` compares them with each side's
    resident set size before its model was built subtracted."""
    rounds = []
    for mine, theirs in zip(ours, original, strict=True):
        ratio = {"images_per_s": theirs["seconds_per_step"] / mine["seconds_per_step"],
                 "peak_memory": mine["peak_memory_mb"] / theirs["peak_memory_mb"]}
        if cpu:
            ratio["peak_memory_less_rss_before_model"] = (
                (mine["peak_memory_mb"] - mine["rss_before_model_mb"])
                / (theirs["peak_memory_mb"] - theirs["rss_before_model_mb"]))
        rounds.append(ratio)
    result = {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}
    return {**result, "per_round": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
            "fastest_steps": round(min(s for r in original for s in r["all_seconds"])
                                   / min(s for r in ours for s in r["all_seconds"]), 3)}


def machine() -> dict:
    """The CPU, core count, torch version, GPU and the project's commit (``-dirty`` with uncommitted changes)."""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "commit": _commit()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *a], capture_output=True,
                              text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
