"""Time the original DARTS code (the cnn/ folder of quark0/darts, made CPU-runnable, e.g.
../shared/bench-reference/darts-cnn), each measurement in a process of its own.

    python bench/original_darts.py train_step --original ../shared/bench-reference/darts-cnn --threads 1
    python bench/original_darts.py search_iteration --original DIR --batch_size 16 --unrolled

From Python (bench/train_speed.py, bench/search_speed.py): ``time_train_step(...)`` and
``time_search_iteration(...)`` start that child and return its JSON as a dict.

The original modules are imported only in the child, never into a process that holds the project's
(theirs are named ``model``, ``operations`` and ``genotypes`` too). What is timed is what the original
scripts run per batch, on random tensors (no data loading):

* train_step (train.py): NetworkCIFAR(C, 10, layers, auxiliary=True, genotype), drop path 0 (the
  original's drop path calls CUDA); zero_grad, forward, loss + 0.4 x auxiliary loss, backward,
  clip_grad_norm_(5), SGD(lr 0.025, momentum 0.9, weight decay 3e-4) step;
* search_iteration (train_search.py): Architect.step on a search batch (second order with
  ``unrolled``; Adam, lr 3e-4, weight decay 1e-3), then the same weight step on a training batch,
  without the auxiliary head. CPU only: the CPU-runnable copy creates its architecture weights and
  unrolled models on the CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from measure import rss_mb, run_child, set_threads, time_steps  # noqa: E402

LEARNING_RATE, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP, AUXILIARY_WEIGHT = 0.025, 0.9, 3e-4, 5.0, 0.4
ARCH_LEARNING_RATE, ARCH_WEIGHT_DECAY = 3e-4, 1e-3


def time_train_step(original: str | Path, *, batch_size: int = 32, init_channels: int = 36, layers: int = 20,
                    arch: str = "DARTS_V2", threads: int | None = None, iterations: int = 3, warmup: int = 1,
                    device: str = "cpu", timeout: float | None = None) -> dict:
    """One training step of the original NetworkCIFAR, timed in a child process."""
    return run_child([__file__, "train_step", "--original", str(original), "--batch_size", str(batch_size),
                      "--init_channels", str(init_channels), "--layers", str(layers), "--arch", arch,
                      "--iterations", str(iterations), "--warmup", str(warmup), "--device", device,
                      *(["--threads", str(threads)] if threads else [])], threads, timeout, _users_environment())


def time_search_iteration(original: str | Path, *, batch_size: int = 64, init_channels: int = 16, layers: int = 8,
                          unrolled: bool = False, threads: int | None = None, iterations: int = 3, warmup: int = 1,
                          timeout: float | None = None) -> dict:
    """One search iteration (architecture step, then weight step) of the original code, in a child process."""
    return run_child([__file__, "search_iteration", "--original", str(original), "--batch_size", str(batch_size),
                      "--init_channels", str(init_channels), "--layers", str(layers),
                      "--iterations", str(iterations), "--warmup", str(warmup),
                      *(["--unrolled"] if unrolled else []), *(["--threads", str(threads)] if threads else [])],
                     threads, timeout, _users_environment())


def _users_environment() -> dict[str, str]:
    """This process's environment less the OpenMP defaults our scripts set (core/openmp_env.py, imported by
    the calling bench script): the original code runs as its own users run it."""
    from openmp_env import without_our_defaults
    return without_our_defaults(os.environ)


# ------------------------------------------------------------------------------------ in the child

def _weight_step(model, optimizer, x, y, criterion, auxiliary: bool) -> None:
    import torch.nn as nn
    optimizer.zero_grad()
    if auxiliary:
        logits, logits_aux = model(x)
        loss = criterion(logits, y) + AUXILIARY_WEIGHT * criterion(logits_aux, y)
    else:
        loss = criterion(model(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()


def _measure_train_step(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn as nn
    import genotypes
    from model import NetworkCIFAR
    device = torch.device(args.device)
    rss_before = rss_mb()
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):     # the original cells print their widths
        model = NetworkCIFAR(args.init_channels, 10, args.layers, True, getattr(genotypes, args.arch)).to(device)
    model.drop_path_prob = 0.0
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    criterion = nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    timing = time_steps(lambda: _weight_step(model, optimizer, x, y, criterion, True), device,
                        args.warmup, args.iterations)
    return {"impl": "original DARTS", "step": "train", "memory_format": "contiguous", **timing,
            "rss_before_model_mb": round(rss_before, 1)}


def _measure_search_iteration(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn as nn
    from architect import Architect
    from model_search import Network
    device = torch.device("cpu")
    rss_before = rss_mb()
    torch.manual_seed(0)
    criterion = nn.CrossEntropyLoss()
    model = Network(args.init_channels, 10, args.layers, criterion)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    architect = Architect(model, SimpleNamespace(momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                                                 arch_learning_rate=ARCH_LEARNING_RATE,
                                                 arch_weight_decay=ARCH_WEIGHT_DECAY))
    n = args.batch_size
    x, y = torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))
    x_search, y_search = torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))

    def iteration() -> None:
        architect.step(x, y, x_search, y_search, LEARNING_RATE, optimizer, unrolled=args.unrolled)
        _weight_step(model, optimizer, x, y, criterion, False)

    timing = time_steps(iteration, device, args.warmup, args.iterations)
    return {"impl": "original DARTS", "step": "search", "unrolled": args.unrolled, "memory_format": "contiguous",
            **timing, "rss_before_model_mb": round(rss_before, 1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", choices=("train_step", "search_iteration"))
    p.add_argument("--original", required=True, help="the original DARTS cnn/ folder")
    p.add_argument("--batch_size", type=int, default=None, help="default 32 (train_step), 64 (search_iteration)")
    p.add_argument("--init_channels", type=int, default=None, help="default 36 (train_step), 16 (search_iteration)")
    p.add_argument("--layers", type=int, default=None, help="default 20 (train_step), 8 (search_iteration)")
    p.add_argument("--arch", default="DARTS_V2", help="train_step: a genotype name of the original genotypes.py")
    p.add_argument("--unrolled", action="store_true", help="search_iteration: second order")
    p.add_argument("--device", default="cpu", help="train_step: cpu or cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--iterations", type=int, default=3, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    args = p.parse_args(argv)
    train = args.what == "train_step"
    args.batch_size = args.batch_size or (32 if train else 64)
    args.init_channels = args.init_channels or (36 if train else 16)
    args.layers = args.layers or (20 if train else 8)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    original = Path(args.original).resolve()
    if not (original / "model.py").is_file() or not (original / "model_search.py").is_file():
        sys.exit(f"error: {original} is not the original DARTS cnn/ folder (model.py and model_search.py missing)")
    sys.path.insert(0, str(original))
    set_threads(args.threads)
    measure = _measure_train_step if args.what == "train_step" else _measure_search_iteration
    result = measure(args)
    result.update(batch_size=args.batch_size, init_channels=args.init_channels, layers=args.layers,
                  threads=args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
