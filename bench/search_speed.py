"""Speed and memory of one search iteration for every strategy, printed as JSON.

    python bench/search_speed.py                                   # DARTS defaults: C=16, 8 layers, batch 64, 32 px
    python bench/search_speed.py --device cpu --batch_size 16 --layers 5   # a CPU takes ~40 s per full iteration
    python bench/search_speed.py --device cpu --threads 1 --strategies darts_first_order pcdarts

The strategies are those of the registry (cnn/strategies/): every variant each method declares
(``VARIANTS``: e.g. DARTS first and second order), so a new method is measured without an edit
here. One iteration is what train_search.py does per training batch: the architecture step on a
search batch and the network-weight step on a training batch, built by the same code
(``train_search.build_engine`` from the variant's command-line flags, and ``Engine.step``).
Inputs are random tensors already on the device, so data loading is not measured.

Each strategy runs in a fresh subprocess, which also measures the plain network-weight step of
its own supernet (no architecture update) and reports the ratio to it, as the house rules ask
(bench/ reports ratios against a baseline run in the same process). Reported per strategy:

* ``images_per_s``: training images per second (batch_size / seconds per iteration; an
  iteration also reads a search batch of the same size, except single-level ones);
* ``seconds_per_iteration``: median over the timed iterations;
* ``ratio_to_plain_step``: seconds per iteration / seconds per plain network-weight step;
* ``peak_memory_mb``: CUDA: peak allocated by PyTorch; CPU: peak resident set size of the
  process, with ``rss_before_model_mb`` (interpreter, torch and data) to subtract.

DARTOpti keeps its baseline's depth (ResNet18: 4 cells, 3 reductions) whatever --layers says.
The multi-channel grid has --layers / 2 layers over widths 8, 16, 32, 64 from --init_channels 8 (the
sharpDARTS rule, see train_search.py).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CNN_DIR = Path(__file__).resolve().parent.parent / "cnn"
sys.path.insert(0, str(CNN_DIR))
import core_path  # noqa: E402,F401



def strategies() -> dict[str, list[str]]:
    """Variant name -> train_search.py flags, for every registered method."""
    from strategies import STRATEGIES
    return {variant: ["--method", name, *flags] for name, cls in STRATEGIES.items()
            for variant, flags in cls.variants().items()}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per strategy")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--strategies", nargs="+", default=list(strategies()), choices=list(strategies()))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)   # internal: measure one strategy here
    return p.parse_args(argv)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def measure(args: argparse.Namespace, name: str) -> dict:
    """One strategy, in this process."""
    import torch

    import train_search
    from runtime import Precision, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = Precision(device, args.amp)
    flags = strategies()[name] + ["--init_channels", str(args.init_channels), "--layers", str(args.layers),
                                  "--batch_size", str(args.batch_size), "--seed", "0"]
    strategy, _ = train_search.make_strategy(train_search.parse_args(flags))
    torch.manual_seed(0)
    rss_before = _rss_mb()
    engine = train_search.build_engine(strategy, 10, "cifar", device, precision)
    model, fmt = engine.model, engine.memory_format
    n, side = args.batch_size, args.image_size
    x = torch.randn(n, 3, side, side, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (n,), device=device)
    xs = torch.randn(n, 3, side, side, device=device).contiguous(memory_format=fmt)
    ys = torch.randint(0, 10, (n,), device=device)
    model.train()

    def run(searching: bool, count: int) -> list[float]:
        times = []
        for _ in range(count):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            engine.step((x, y), lambda: (xs, ys), searching)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        return times

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run(True, args.warmup)
    seconds = statistics.median(run(True, args.iterations))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()
    run(False, args.warmup)
    plain = statistics.median(run(False, args.iterations))
    result = {
        "images_per_s": round(n / seconds, 2),
        "seconds_per_iteration": round(seconds, 4),
        "plain_step_seconds": round(plain, 4),
        "ratio_to_plain_step": round(seconds / plain, 3),
        "peak_memory_mb": round(peak, 1),
        "supernet": _supernet_summary(engine),
    }
    if device.type != "cuda":
        result["rss_before_model_mb"] = round(rss_before, 1)
    return result


def _supernet_summary(engine) -> dict:
    model = engine.model
    return {"params_M": round(sum(p.numel() for p in model.weight_parameters()) / 1e6, 4),
            "arch_params": sum(a.numel() for a in model.arch_parameters()), "describe": model.describe()}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(args, args.one)))
        return
    import torch
    from runtime import resolve_device

    device = resolve_device(args.device)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "config": {"batch_size": args.batch_size, "layers": args.layers, "init_channels": args.init_channels,
                   "image_size": args.image_size, "iterations": args.iterations, "warmup": args.warmup,
                   "amp": args.amp, "threads": args.threads or torch.get_num_threads()},
        "results": {},
    }
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for name in args.strategies:
        command = [sys.executable, str(Path(__file__).resolve()), *passthrough, "--one", name]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            report["results"][name] = {"error": tail}
        else:
            report["results"][name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {json.dumps(report['results'][name])}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
