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
size of the child (interpreter and torch included, ``rss_before_model_mb`` says how much that is;
``ratios.peak_memory_less_rss_before_model`` compares the peaks with it subtracted), on CUDA the
peak PyTorch allocated. On CUDA also ``kernels_per_step`` and ``gpu_busy_fraction`` (measure.gpu_busy).

Also printed: the projected wall time of the 600 epochs of DARTS's CIFAR-10 training (50,000 images
per epoch) at the measured images/s, a projection from the timed steps only (no data loading, no
evaluation).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent / "cnn")]
import core_path  # noqa: E402,F401  (core/ on the import path)
import cli  # noqa: E402
import original_darts  # noqa: E402
from measure import (gpu_busy, interleaved_rounds, machine, projection, ratios, rss_mb, run_child,  # noqa: E402
                     set_threads, summary, time_steps)

EPOCHS, IMAGES_PER_EPOCH = 600, 50_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter)
    p.add_argument("--original", default=None, help="the original DARTS cnn/ folder, timed side by side")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=cli.positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch_size", type=cli.positive_int, default=32,
                   help="2 or more (the auxiliary head's last BatchNorm cannot train on one image)")
    p.add_argument("--arch", default="DARTS_V2")
    p.add_argument("--init_channels", type=cli.positive_int, default=36)
    p.add_argument("--layers", type=cli.positive_int, default=20)
    p.add_argument("--memory_format", default=None, help="ours: default = train.py's default")
    p.add_argument("--amp", action="store_true", help="ours: mixed precision on CUDA")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile (the warm-up steps compile)")
    p.add_argument("--rounds", type=cli.positive_int, default=3,
                   help="interleaved rounds (one child of each side per round)")
    p.add_argument("--iterations", type=cli.positive_int, default=3, help="timed steps per child (the median is taken)")
    p.add_argument("--warmup", type=cli.non_negative_int, default=1, help="untimed steps per child first")
    p.add_argument("--one", choices=("ours",), default=None, help=argparse.SUPPRESS)   # internal: the child
    args = p.parse_args(argv)
    if args.batch_size < 2:
        p.error("--batch_size must be 2 or more: the auxiliary head's last BatchNorm cannot train on one image")
    return args


def measure_ours(args: argparse.Namespace) -> dict:
    """One child: our training step as train.py runs it."""
    import torch
    import torch.nn as nn
    from model import ModelSpec
    from runtime import Precision, compile_module, resolve_device, tune_runtime
    from training import make_optimizer, memory_format, to_memory_format, train_step

    set_threads(args.threads)
    device = resolve_device(args.device)
    tune_runtime(device)
    fmt = memory_format(args.memory_format, device)
    precision = Precision(device, args.amp)
    rss_before = rss_mb()
    torch.manual_seed(0)
    spec = ModelSpec.resolve(args.arch, "cifar", 10, init_channels=args.init_channels, layers=args.layers,
                             auxiliary=True)
    net = to_memory_format(spec.build(), device, fmt).train()
    if args.compile:
        compile_module(net)
    optimizer = make_optimizer(net.parameters(), argparse.Namespace(learning_rate=0.025, momentum=0.9,
                                                                    weight_decay=3e-4))
    criterion = nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def step():
        return train_step(net, x, y, optimizer, criterion, precision, auxiliary_weight=0.4, grad_clip=5.0)

    timing = time_steps(step, device, args.warmup, args.iterations)
    return {"impl": "ours", "memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
            "amp": str(precision.dtype) if precision.enabled else None, "compile": args.compile, **timing,
            **gpu_busy(step, device),
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure_ours(args)))
        return
    if args.memory_format is None:
        import train
        args.memory_format = train.parse_args([]).memory_format
    sides = {"ours": lambda: _ours_child(args)}
    if args.original:
        sides["original"] = lambda: _original_child(args)
    runs = interleaved_rounds(sides, args.rounds, "train step")
    ours = summary(runs["ours"], args.batch_size)
    report = {"machine": machine(),
              "config": {"arch": args.arch, "init_channels": args.init_channels, "layers": args.layers,
                         "batch_size": args.batch_size, "auxiliary": True, "device": args.device,
                         "threads": args.threads, "memory_format": args.memory_format, "amp": args.amp,
                         "compile": args.compile, "rounds": args.rounds, "iterations": args.iterations,
                         "warmup": args.warmup},
              "ours": ours, "projected_training": {"ours": projection(ours["images_per_s"], EPOCHS, IMAGES_PER_EPOCH)}}
    if args.original:
        report["original"] = summary(runs["original"], args.batch_size)
        report["ratios"] = ratios(runs["ours"], runs["original"], cpu=args.device == "cpu")
        report["projected_training"]["original"] = projection(report["original"]["images_per_s"], EPOCHS,
                                                              IMAGES_PER_EPOCH)
    report["projected_training"]["batch_size_measured"] = args.batch_size
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli.run(main)
