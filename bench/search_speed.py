"""Speed and memory of one search iteration for every strategy, side by side with the original DARTS code, as JSON.

    python bench/search_speed.py                                   # DARTS defaults: C=16, 8 layers, batch 64, 32 px
    python bench/search_speed.py --device cpu --batch_size 16 --layers 5   # a CPU takes ~40 s per full iteration
    python bench/search_speed.py --device cpu --threads 1 --strategies darts_first_order pcdarts
    python bench/search_speed.py --original ../shared/bench-reference/darts-cnn --device cpu --threads 1 \\
        --batch_size 16 --rounds 3              # DARTS first and second order, ours and the original's

The strategies are those of the registry (cnn/strategies/): every variant each method declares
(``VARIANTS``: e.g. DARTS first and second order), so a new method is measured without an edit
here. One iteration is what train_search.py does per training batch: the architecture step on a
search batch and the network-weight step on a training batch, built by the same code
(``train_search.build_engine`` from the variant's command-line flags, and ``Engine.step``).
Inputs are random tensors already on the device, so data loading is not measured.

Each measurement is a child process of its own (bench/measure.py), which also measures the plain
network-weight step of its own supernet (no architecture update) and reports the ratio to it, as
the house rules ask (bench/ reports ratios against a baseline run in the same process).

``--original DIR`` (a CPU-runnable copy of the original DARTS cnn/ folder) times the original's
search iteration too (bench/original_darts.py: same batch size, C, layers and threads; ``--unrolled``
for second order) beside ``darts_first_order`` and ``darts_second_order`` (the default strategies
then). A round runs one child of each side, alternating which goes first; the figures are medians
over ``--rounds``, each ratio the median of the rounds' ratios, so that a change in the load of a
shared machine hits both sides.

Reported per strategy (a "step" is one search iteration), for ``ours`` and ``original``:

* ``seconds_per_step`` and ``images_per_s`` (batch_size / seconds; an iteration also reads a search
  batch of the same size, except single-level ones);
* ``cpu_seconds_per_step``: the same in CPU time of the process (all its threads): with
  ``--threads 1`` on a machine that other processes share, the time an idle core would take;
* ``peak_memory_mb``: CUDA: peak allocated by PyTorch; CPU: peak resident set size of the child,
  interpreter and torch included, with ``rss_before_model_mb`` (the child before its model) to subtract;
* CUDA only: ``kernels_per_step`` and ``gpu_busy_fraction`` (bench/measure.py ``gpu_busy``: the share of
  one profiled iteration the GPU spent in kernels; low means the host's launches set the pace);
* ours: ``ratio_to_plain_step`` (seconds per iteration / seconds per plain network-weight step), the
  warm-up seconds (with ``--compile``: what compiling cost) and the supernet's size;
* ``ratios``: images/s (original seconds / ours), peak memory (ours / original), and the peak memory
  ratio with each side's ``rss_before_model_mb`` subtracted.

``projected_search``: the wall time of a 50-epoch CIFAR-10 search (391 iterations of batch 64 per
epoch) at each measured DARTS variant's images/s, a projection from the timed iterations alone (no
data loading, no validation; a rate measured at another batch size is assumed to hold at 64).

DARTOpti keeps its baseline's depth (ResNet18: 4 cells, 3 reductions) whatever --layers says.
The multi-channel grid has --layers / 2 layers over widths 8, 16, 32, 64 from --init_channels 8 (the
sharpDARTS rule, see train_search.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent / "cnn")]
import core_path  # noqa: E402,F401  (core/ on the import path)
import cli  # noqa: E402
import original_darts  # noqa: E402
from measure import (BenchError, gpu_busy, interleaved_rounds, machine, projection, ratios, rss_mb,  # noqa: E402
                     run_child, set_threads, summary, time_steps)
from runtime import resolve_device  # noqa: E402
from training import MEMORY_FORMATS  # noqa: E402

ORIGINAL_VARIANTS = {"darts_first_order": False, "darts_second_order": True}   # variant -> the original's --unrolled
SEARCH_EPOCHS, SEARCH_ITERATIONS, SEARCH_BATCH = 50, 391, 64     # DARTS's CIFAR-10 search: 25,000 images per epoch


def strategies() -> dict[str, list[str]]:
    """Variant name -> train_search.py flags, for every registered method."""
    from strategies import STRATEGIES
    return {variant: ["--method", name, *flags] for name, cls in STRATEGIES.items()
            for variant, flags in cls.variants().items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter)
    p.add_argument("--original", default=None,
                   help="the original DARTS cnn/ folder: its first- and second-order search iterations are timed "
                        "beside darts_first_order and darts_second_order (CPU, 32 px)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--batch_size", type=cli.positive_int, default=64, help="images per batch (training and search)")
    p.add_argument("--layers", type=cli.positive_int, default=8, help="cells of the supernet")
    p.add_argument("--init_channels", type=cli.positive_int, default=16, help="initial width C")
    p.add_argument("--image_size", type=cli.positive_int, default=32, help="side of the random input images")
    p.add_argument("--rounds", type=cli.positive_int, default=1,
                   help="rounds of one child per side (ours, the original's), alternating which goes first")
    p.add_argument("--iterations", type=cli.positive_int, default=3, help="timed iterations per child (median)")
    p.add_argument("--warmup", type=cli.non_negative_int, default=1, help="untimed iterations per child first")
    p.add_argument("--amp", action="store_true", help="ours: mixed precision on CUDA")
    p.add_argument("--compile", action="store_true",
                   help="ours: torch.compile the supernet, as train_search.py --compile (the warm-up iterations "
                        "compile it; warmup_seconds says what that cost)")
    p.add_argument("--cuda_graphs", action="store_true",
                   help="ours: replay the iteration as a CUDA graph, as train_search.py --cuda_graphs (CUDA, DARTS "
                        "only; the first three warm-up iterations run eagerly, the fourth captures: give --warmup 4 "
                        "or more)")
    p.add_argument("--memory_format", choices=MEMORY_FORMATS, default="auto",
                   help="ours: the supernet's memory format, as train_search.py --memory_format")
    p.add_argument("--plain_ops", action="store_true",
                   help="ours: run the mixed ops as their plain modules (cnn/lean_ops.py's plain()), to measure "
                        "what the lean path gains on this device")
    p.add_argument("--threads", type=cli.positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--strategies", nargs="+", default=None, choices=list(strategies()),
                   help="default: every variant, or with --original darts_first_order and darts_second_order")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)   # internal: measure one strategy here
    args = p.parse_args(argv)
    if args.original is not None:
        if resolve_device(args.device).type != "cpu" or args.image_size != 32:
            p.error("--original runs on the CPU at 32 px: give --device cpu and no --image_size")
        if not (Path(args.original) / "model_search.py").is_file():
            p.error(f"--original {args.original} is not the original DARTS cnn/ folder (no model_search.py)")
    if args.cuda_graphs and args.warmup < 4:
        p.error("--cuda_graphs needs --warmup 4 or more: three eager iterations and the capture are not timed")
    if args.strategies is None:
        args.strategies = list(ORIGINAL_VARIANTS) if args.original else list(strategies())
    return args


def measure(args: argparse.Namespace, name: str) -> dict:
    """One strategy, in this process."""
    import torch

    import lean_ops
    import train_search
    from distributed import Dist
    from runtime import Precision

    set_threads(args.threads)
    device = resolve_device(args.device)
    precision = Precision(device, args.amp, cache_casts=not args.cuda_graphs)
    flags = strategies()[name] + ["--init_channels", str(args.init_channels), "--layers", str(args.layers),
                                  "--batch_size", str(args.batch_size), "--seed", "0"]
    search_args = train_search.parse_args(flags + (["--cuda_graphs"] if args.cuda_graphs else []))
    strategy, _ = train_search.make_strategy(search_args)
    if args.cuda_graphs:
        train_search.check_cuda_graphs(search_args, strategy, device, Dist(), precision)
    torch.manual_seed(0)
    rss_before = rss_mb()
    engine = train_search.build_engine(strategy, 10, "cifar", device, precision, args.memory_format,
                                       compile=args.compile, cuda_graphs=args.cuda_graphs)
    fmt = engine.memory_format
    n, side = args.batch_size, args.image_size
    x = torch.randn(n, 3, side, side, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (n,), device=device)
    xs = torch.randn(n, 3, side, side, device=device).contiguous(memory_format=fmt)
    ys = torch.randint(0, 10, (n,), device=device)
    engine.model.train()

    def iteration():
        return engine.step((x, y), lambda: (xs, ys), True)

    with lean_ops.plain() if args.plain_ops else contextlib.nullcontext():
        timing = time_steps(iteration, device, args.warmup, args.iterations)
        plain = time_steps(lambda: engine.step((x, y), lambda: (xs, ys), False), device, args.warmup,
                           args.iterations)
        busy = gpu_busy(iteration, device)
    model = engine.model
    return {**timing, **busy, "plain_step_seconds": round(plain["seconds_per_step"], 6),
            "memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
            "ratio_to_plain_step": round(timing["seconds_per_step"] / plain["seconds_per_step"], 3),
            "rss_before_model_mb": round(rss_before, 1), "compile": args.compile, "cuda_graphs": args.cuda_graphs,
            "supernet": {"params_M": round(sum(p.numel() for p in model.weight_parameters()) / 1e6, 4),
                         "arch_params": sum(a.numel() for a in model.arch_parameters()),
                         "describe": model.describe()}}


def _ours_child(args: argparse.Namespace, argv: list[str], name: str) -> dict:
    return run_child([__file__, *argv, "--one", name], args.threads)


def _original_child(args: argparse.Namespace, name: str) -> dict:
    return original_darts.time_search_iteration(args.original, batch_size=args.batch_size,
                                                init_channels=args.init_channels, layers=args.layers,
                                                unrolled=ORIGINAL_VARIANTS[name], threads=args.threads,
                                                iterations=args.iterations, warmup=args.warmup)


def compare(args: argparse.Namespace, argv: list[str], name: str) -> dict:
    """One strategy over the rounds: ours, and the original's where it has the variant."""
    sides = {"ours": lambda: _ours_child(args, argv, name)}
    if args.original and name in ORIGINAL_VARIANTS:
        sides["original"] = lambda: _original_child(args, name)
    runs = interleaved_rounds(sides, args.rounds, name)
    result = {side: summary(side_runs, args.batch_size) for side, side_runs in runs.items()}
    if "original" in runs:
        result["ratios"] = ratios(runs["ours"], runs["original"], cpu=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Exit status 1 if a strategy's measurement failed (its entry says why), else 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(args, args.one)))
        return 0
    report = {"machine": machine(),
              "config": {"device": args.device, "batch_size": args.batch_size, "layers": args.layers,
                         "init_channels": args.init_channels, "image_size": args.image_size, "rounds": args.rounds,
                         "iterations": args.iterations, "warmup": args.warmup, "amp": args.amp,
                         "compile": args.compile, "cuda_graphs": args.cuda_graphs,
                         "memory_format": args.memory_format, "plain_ops": args.plain_ops,
                         "threads": args.threads, "original": args.original},
              "results": {}, "projected_search": {}}
    for name in args.strategies:
        try:
            result = report["results"][name] = compare(args, argv, name)
        except BenchError as e:
            report["results"][name] = {"error": str(e)}
            continue
        if name in ORIGINAL_VARIANTS:
            report["projected_search"][name] = {
                side: projection(result[side]["images_per_s"], SEARCH_EPOCHS, SEARCH_ITERATIONS * SEARCH_BATCH)
                for side in ("ours", "original") if side in result}
    report["projected_search"]["batch_size_measured"] = args.batch_size
    print(json.dumps(report, indent=2))
    return int(any("error" in result for result in report["results"].values()))


if __name__ == "__main__":
    cli.run(main)
