"""Speed and memory of one DARTS training step, ours and the original DARTS code's, printed as JSON.

    python bench/train_speed.py --original ../shared/bench-reference/darts-cnn --threads 1 --rounds 3
    python bench/train_speed.py --threads 2                                  # ours only
    python bench/train_speed.py --device cuda --amp --compile --batch_size 96

The step is DARTS's CIFAR-10 training step: DARTS_V2, C=36, 20 cells, auxiliary head (weight 0.4),
32x32 random inputs (no data loading), SGD with momentum and weight decay, gradient clipping at 5,
drop path 0 (the original's drop path calls CUDA). Ours runs ``training.train_step`` on the network,
optimizer and memory format that ``cnn/train.py`` builds with its defaults (flags here override them).

Every measurement is a child process of its own (``measure.run_child``); the original code runs
through ``original_darts.py``, never in a process that holds the project's modules. A round times
ours and the original once each, in alternating order; the reported figures are medians over the
rounds, and each ratio is the median of the ratios within a round, so that a machine shared with
other work slows both sides of a ratio alike; ``fastest_steps`` is the ratio of the two sides'
fastest steps, the ones least slowed down by other work. Memory: on the CPU the peak resident set
size of the child (interpreter and torch included, ``rss_before_model_mb`` says how much that is),
on CUDA the peak PyTorch allocated.

Also printed: the projected wall time of the 600 epochs of DARTS's CIFAR-10 training (50,000 images
per epoch) at the measured images/s, training steps only (no data loading, no evaluation).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
import original_darts  # noqa: E402
from measure import rss_mb, run_child, set_threads, time_steps  # noqa: E402

EPOCHS, IMAGES_PER_EPOCH = 600, 50_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--original", default=None, help="the original DARTS cnn/ folder, timed side by side")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--arch", default="DARTS_V2")
    p.add_argument("--init_channels", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--memory_format", default=None, help="ours: default = train.py's default")
    p.add_argument("--amp", action="store_true", help="ours: mixed precision on CUDA")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile (the warm-up steps compile)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one child of each side per round)")
    p.add_argument("--iterations", type=int, default=3, help="timed steps per child (the median is taken)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per child first")
    p.add_argument("--one", choices=("ours",), default=None, help=argparse.SUPPRESS)   # internal: the child
    return p.parse_args(argv)


def measure_ours(args: argparse.Namespace) -> dict:
    """One child: our training step as train.py runs it."""
    sys.path.insert(0, str(REPO / "cnn"))
    import core_path  # noqa: F401
    import torch
    import torch.nn as nn
    from model import ModelSpec
    from runtime import Precision, compile_module, resolve_device
    from training import make_optimizer, memory_format, train_step

    set_threads(args.threads)
    device = resolve_device(args.device)
    fmt = memory_format(args.memory_format, device)
    precision = Precision(device, args.amp)
    rss_before = rss_mb()
    torch.manual_seed(0)
    spec = ModelSpec.resolve(args.arch, "cifar", 10, init_channels=args.init_channels, layers=args.layers,
                             auxiliary=True)
    net = spec.build().to(device, memory_format=fmt).train()
    if args.compile:
        compile_module(net)
    optimizer = make_optimizer(net.parameters(), argparse.Namespace(learning_rate=0.025, momentum=0.9,
                                                                    weight_decay=3e-4))
    criterion = nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    timing = time_steps(lambda: train_step(net, x, y, optimizer, criterion, precision, auxiliary_weight=0.4,
                                           grad_clip=5.0), device, args.warmup, args.iterations)
    return {"impl": "ours", "memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
            "amp": str(precision.dtype) if precision.enabled else None, "compile": args.compile, **timing,
            "rss_before_model_mb": round(rss_before, 1)}


def _ours_child(args: argparse.Namespace) -> dict:
    flags = ["--one", "ours", "--device", args.device, "--batch_size", str(args.batch_size), "--arch", args.arch,
             "--init_channels", str(args.init_channels), "--layers", str(args.layers),
             "--memory_format", args.memory_format, "--iterations", str(args.iterations),
             "--warmup", str(args.warmup), *(["--threads", str(args.threads)] if args.threads else []),
             *(["--amp"] if args.amp else []), *(["--compile"] if args.compile else [])]
    return run_child([__file__, *flags], args.threads)


def _original_child(args: argparse.Namespace) -> dict:
    return original_darts.time_train_step(args.original, batch_size=args.batch_size, init_channels=args.init_channels,
                                          layers=args.layers, arch=args.arch, threads=args.threads,
                                          iterations=args.iterations, warmup=args.warmup, device=args.device)


def _summary(runs: list[dict], batch_size: int) -> dict:
    """Medians over the rounds, and the fastest step of all: on a loaded machine the step least slowed
    down by other work."""
    seconds = statistics.median(r["seconds_per_step"] for r in runs)
    fastest = min(s for r in runs for s in r["all_seconds"])
    return {"seconds_per_step": round(seconds, 4), "images_per_s": round(batch_size / seconds, 3),
            "fastest_step_seconds": fastest, "peak_memory_mb": statistics.median(r["peak_memory_mb"] for r in runs),
            "runs": runs}


def machine() -> dict:
    import torch
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
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _projection(images_per_s: float) -> dict:
    seconds = EPOCHS * IMAGES_PER_EPOCH / images_per_s
    return {"epochs": EPOCHS, "images_per_epoch": IMAGES_PER_EPOCH, "hours": round(seconds / 3600, 1),
            "days": round(seconds / 86400, 2)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure_ours(args)))
        return
    if args.memory_format is None:
        sys.path.insert(0, str(REPO / "cnn"))
        import train
        args.memory_format = train.parse_args([]).memory_format
    ours_runs, original_runs, ratios = [], [], []
    for round_index in range(args.rounds):
        sides = [("ours", _ours_child)] + ([("original", _original_child)] if args.original else [])
        if round_index % 2:
            sides.reverse()
        results = {}
        for name, child in sides:
            results[name] = child(args)
            print(f"round {round_index + 1} {name}: {results[name]['seconds_per_step']:.3f} s/step, "
                  f"{results[name]['peak_memory_mb']:.0f} MB", file=sys.stderr, flush=True)
        ours_runs.append(results["ours"])
        if args.original:
            original_runs.append(results["original"])
            ratios.append({"images_per_s": results["original"]["seconds_per_step"] / results["ours"]["seconds_per_step"],
                           "peak_memory": results["ours"]["peak_memory_mb"] / results["original"]["peak_memory_mb"]})
    ours = _summary(ours_runs, args.batch_size)
    report = {"machine": machine(),
              "config": {"arch": args.arch, "init_channels": args.init_channels, "layers": args.layers,
                         "batch_size": args.batch_size, "auxiliary": True, "device": args.device,
                         "threads": args.threads, "memory_format": args.memory_format, "amp": args.amp,
                         "compile": args.compile, "rounds": args.rounds, "iterations": args.iterations,
                         "warmup": args.warmup},
              "ours": ours}
    if args.original:
        report["original"] = _summary(original_runs, args.batch_size)
        report["ratios"] = {
            "images_per_s": round(statistics.median(r["images_per_s"] for r in ratios), 3),
            "peak_memory": round(statistics.median(r["peak_memory"] for r in ratios), 3),
            "per_round": [{k: round(v, 3) for k, v in r.items()} for r in ratios],
            "fastest_steps": round(report["original"]["fastest_step_seconds"] / ours["fastest_step_seconds"], 3)}
        report["projected_training"] = {"ours": _projection(ours["images_per_s"]),
                                        "original": _projection(report["original"]["images_per_s"])}
    else:
        report["projected_training"] = {"ours": _projection(ours["images_per_s"])}
    report["projected_training"]["batch_size_measured"] = args.batch_size
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
