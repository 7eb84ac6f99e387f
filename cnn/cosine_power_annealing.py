"""Cosine power annealing: the sharpDARTS learning rate schedule, and its comparison charts.

Cosine annealing spends many epochs near the maximum learning rate and drops quickly at the
end; an exponential decay does the opposite. Cosine power annealing raises the exponent order
``k`` to the cosine proportion and rescales the result to run from ``max_lr`` to ``min_lr``;
the larger ``k``, the faster the early decay.

The values are sharpDARTS's own, to float rounding: for a curve of ``N`` epochs, epoch
``e = 1..N`` has the cosine proportion ``c = (1 + cos(pi * e / max_epoch)) / 2``, its power
``k**(c + 1)`` (``c`` itself for ``k = 1``) is rescaled so that the largest of the ``N`` values
is 1 and the smallest 0, and the learning rate is ``p * (max_lr - min_lr) + min_lr``. So the
first epoch trains at ``max_lr`` and epoch ``max_epoch`` at ``min_lr``; exponent 1 is the cosine
sampled at ``e / N`` and stretched to end at ``min_lr``, close to (not equal to) PyTorch's
``CosineAnnealingLR``. With ``W`` warmup epochs sharpDARTS shifts the cosine by ``W`` and
replaces the first ``W + 1`` epochs by the ramp ``i / (W + 1)``, so epoch ``W + 1`` is the first
at ``max_lr``. Where sharpDARTS returns NaN, an empty array or crashes, we return the limit of
the formula or refuse in one sentence (README, "Where we differ").

How a training script uses it: the whole schedule once, one learning rate per epoch::

    schedule = cosine_power_annealing(epochs=args.epochs, max_lr=args.learning_rate,
                                      min_lr=args.learning_rate_min, warmup_epochs=args.warmup_epochs,
                                      exponent_order=args.lr_power_annealing_exponent_order)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, ScheduleFactor(schedule, args.learning_rate))
    for epoch in range(start_epoch, args.epochs):   # 0-based: trains at schedule[epoch]
        ...train one epoch...
        scheduler.step()

The optimizer must be created with ``lr=args.learning_rate`` (``LambdaLR`` multiplies the
factor by it). ``ScheduleFactor`` keeps the schedule as plain floats, so ``scheduler.state_dict()``
saves it and loads under ``torch.load(..., weights_only=True)``; ``--resume`` then continues with
the same learning rates, because the schedule never depends on where a run resumed.

``python cosine_power_annealing.py [--out DIR] [--epochs N] ...`` draws the schedule for a few
exponent orders next to exponent 1, on a linear and a log scale, and writes the curves as CSV.
"""
from __future__ import annotations

import argparse
import math
import numbers
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import numpy as np

import cli
from errors import UserError

DEFAULT_CHART_ORDERS = (2.0, 10.0, 100.0)


class ScheduleError(UserError, ValueError):
    """Schedule arguments that make no schedule."""


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ScheduleError(f"{name} must be an integer of at least {minimum}, but got {value!r}.")
    return int(value)


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ScheduleError(f"{name} must be a finite number, but got {value!r}.")
    return float(value)


def power_proportions(cos_proportions: np.ndarray, exponent_order: float) -> np.ndarray:
    """sharpDARTS's ``k**(c + 1)``, rescaled from 1 (largest ``c``) to 0 (smallest ``c``).

    Written as a ratio of ``expm1`` so that no order overflows (sharpDARTS's ``k**2`` is inf
    beyond about 1e154) and orders near 1 do not cancel; a single value is 1, the limit of a
    curve whose first epoch is at the top.
    """
    c = np.asarray(cos_proportions, dtype=np.float64)
    c = c - c.min()
    top = c.max()
    if top == 0:
        return np.ones_like(c)
    if exponent_order == 1:
        return c / top
    log_k = math.log(exponent_order)
    return np.expm1(c * log_k) / math.expm1(top * log_k)


def cosine_power_annealing(epochs=None, max_lr=0.1, min_lr=1e-4, exponent_order=10, max_epoch=None,
                           warmup_epochs=None, return_intermediates=False, start_epoch=1, restart_lr=True):
    """Learning rates, one per epoch, that fall from ``max_lr`` to ``min_lr`` along a cosine power curve.

    The arguments and values are those of sharpDARTS's function of the same name.

    Arguments:
        epochs: the length ``N`` of the curve (an integer); defaults to ``max_epoch``.
        max_lr: the largest and first learning rate (reached at the end of warmup).
        min_lr: the smallest and last learning rate, ``0 <= min_lr <= max_lr``.
        exponent_order: the base ``k >= 1`` of the power; 1 is cosine annealing, 10 decays with
            base 10.
        max_epoch: the epoch at which the cosine reaches its end (``N`` by default, at least
            ``N``); a larger value makes a flatter curve over the same ``N`` epochs.
        warmup_epochs: ``W``: epochs ``1..W+1`` rise linearly as ``i / (W + 1)`` to ``max_lr``.
            ``None`` or 0 for no warmup.
        return_intermediates: return ``(cos_power_annealing, cos_power_proportions,
            cos_proportions)``: the learning rates, the rescaled power curve (with the warmup
            ramp) and the cosine proportions, the latter two over the whole curve.
        start_epoch: the epoch number (1-based) of index 0 of the returned learning rates.
        restart_lr: True (the default) returns the whole curve whatever ``start_epoch``, as if
            starting from epoch 1; False returns its tail from ``start_epoch``, so resuming
            after epoch 100 of a 300-epoch run is ``epochs=300, start_epoch=101, restart_lr=False``.

    Returns:
        A 1-d float64 numpy array ``cos_power_annealing``: the learning rate of each epoch.

    Raises:
        ScheduleError (a ValueError): with one sentence naming the argument that is wrong.
    """
    max_lr = _check_real("max_lr", max_lr)
    min_lr = _check_real("min_lr", min_lr)
    exponent_order = _check_real("exponent_order", exponent_order)
    if max_lr <= 0:
        raise ScheduleError(f"max_lr must be positive, but got {max_lr!r}.")
    if not 0 <= min_lr <= max_lr:
        raise ScheduleError(f"min_lr must lie between 0 and max_lr ({max_lr!r}), but got {min_lr!r}.")
    if exponent_order < 1:
        raise ScheduleError("exponent_order must be at least 1 (1 is cosine annealing), "
                            f"but got {exponent_order!r}.")
    if epochs is None and max_epoch is None:
        raise ScheduleError("cosine_power_annealing needs epochs, max_epoch or both, to know how long the schedule is.")
    epochs = _check_int("epochs", max_epoch if epochs is None else epochs, 1)
    max_epoch = epochs if max_epoch is None else _check_int("max_epoch", max_epoch, 1)
    if epochs > max_epoch:
        raise ScheduleError(f"epochs ({epochs}) run past max_epoch ({max_epoch}), where the cosine would rise "
                            "again; lower epochs or raise max_epoch.")
    warmup = 0 if warmup_epochs is None else _check_int("warmup_epochs", warmup_epochs, 0)
    if warmup >= epochs:
        raise ScheduleError(f"warmup_epochs ({warmup}) must be fewer than epochs ({epochs}), "
                            "since the warmup ramp takes warmup_epochs + 1 epochs.")
    start_epoch = _check_int("start_epoch", start_epoch, 1)
    if not restart_lr and start_epoch > epochs:
        raise ScheduleError(f"start_epoch ({start_epoch}) is after the last epoch ({epochs}), "
                            "so no epochs are left; with restart_lr=False, epochs is the length of the whole curve.")

    epoch = np.arange(1, epochs + 1, dtype=np.float64)
    # sharpDARTS shifts the cosine by the warmup, whose ramp then overwrites the first W + 1 epochs.
    cos_proportions = (1 + np.cos(np.pi * (epoch - warmup) / (max_epoch - warmup))) / 2
    cos_power_proportions = power_proportions(cos_proportions, exponent_order)
    if warmup:
        cos_power_proportions[:warmup + 1] = np.arange(1, warmup + 2) / (warmup + 1)
    cos_power_annealing = cos_power_proportions * (max_lr - min_lr) + min_lr
    if not restart_lr:
        cos_power_annealing = cos_power_annealing[start_epoch - 1:]
    if return_intermediates:
        return cos_power_annealing, cos_power_proportions, cos_proportions
    return cos_power_annealing


class ScheduleFactor:
    """``LambdaLR`` multiplier that makes epoch ``i`` (0-based scheduler step) train at ``schedule[i]``.

    ``LambdaLR`` multiplies the optimizer's initial learning rate by this factor, so ``base_lr``
    must be that learning rate. Steps past the end keep the last rate. The schedule is stored as
    a list of floats, so the scheduler's state dict holds plain data only.
    """

    def __init__(self, schedule, base_lr: float):
        base_lr = _check_real("base_lr", base_lr)
        if base_lr <= 0:
            raise ScheduleError("base_lr must be positive (it is the optimizer's initial learning rate), "
                             f"but got {base_lr!r}.")
        self.factors = [float(lr) / base_lr for lr in np.asarray(schedule, dtype=np.float64).ravel()]
        if not self.factors:
            raise ScheduleError("the schedule is empty; it needs one learning rate per epoch.")

    def __call__(self, step: int) -> float:
        return self.factors[min(max(step, 0), len(self.factors) - 1)]


# ----------------------------------------------------------------------------------------- charts

def chart_curves(epochs: int, max_lr: float, min_lr: float, orders, warmup_epochs: int) -> dict[str, np.ndarray]:
    """The curves the charts draw, by legend label: cosine annealing, each exponent order, one with warmup."""
    curves = {"cosine annealing (exponent 1)": cosine_power_annealing(epochs, max_lr, min_lr, exponent_order=1)}
    for order in orders:
        curves[f"cosine power, exponent {order:g}"] = cosine_power_annealing(epochs, max_lr, min_lr,
                                                                             exponent_order=order)
    if warmup_epochs:
        order = orders[len(orders) // 2] if orders else 10.0
        curves[f"{warmup_epochs} warmup epochs + cosine power, exponent {order:g}"] = cosine_power_annealing(
            epochs, max_lr, min_lr, exponent_order=order, warmup_epochs=warmup_epochs)
    return curves


def write_charts(out_dir: Path, epochs: int = 300, max_lr: float = 0.1, min_lr: float = 1e-4,
                 orders=DEFAULT_CHART_ORDERS, warmup_epochs: int = 5, fmt: str = "png") -> list[Path]:
    """Draw the schedules on a linear and a log scale, and write the curves as CSV; returns the paths."""
    if min_lr <= 0:
        raise ScheduleError(f"the log-scale chart needs min_lr > 0, but got {min_lr!r}.")
    curves = chart_curves(epochs, max_lr, min_lr, list(orders), warmup_epochs)
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    x = np.arange(1, epochs + 1)
    paths = []
    for scale in ("linear", "log"):
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, values in curves.items():
            ax.plot(x, values, label=label, linestyle="--" if label.startswith("cosine annealing") else "-")
        ax.set_yscale(scale)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"learning rate ({scale} scale)")
        ax.set_title(f"cosine power annealing, {max_lr:g} to {min_lr:g} over {epochs} epochs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        path = out_dir / f"cosine_power_annealing_{scale}.{fmt}"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    csv_path = out_dir / "cosine_power_annealing.csv"
    header = ",".join(["epoch", *(f'"{label}"' for label in curves)])
    np.savetxt(csv_path, np.column_stack([x, *curves.values()]), delimiter=",", header=header, comments="",
               fmt=["%d"] + ["%.10g"] * len(curves))
    paths.append(csv_path)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from paths import LOGS_DIR
    p = cli.ArgumentParser(description="Draw cosine power annealing schedules next to cosine annealing "
                                            "(linear and log scale) and write them as image files and CSV.")
    p.add_argument("--out", default=str(LOGS_DIR / "cosine_power_annealing"), help="output folder")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--max_lr", type=float, default=0.1)
    p.add_argument("--min_lr", type=float, default=1e-4)
    p.add_argument("--exponent_orders", type=float, nargs="+", default=list(DEFAULT_CHART_ORDERS),
                   help="exponent orders to draw next to cosine annealing")
    p.add_argument("--warmup_epochs", type=int, default=5, help="also draw the middle order with this warmup (0: no)")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"], help="image file format")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for path in write_charts(Path(args.out), args.epochs, args.max_lr, args.min_lr, args.exponent_orders,
                             args.warmup_epochs, args.format):
        print(path)


if __name__ == "__main__":
    cli.run(main)
