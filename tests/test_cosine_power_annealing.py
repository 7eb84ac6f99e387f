"""cosine_power_annealing: sharpDARTS's values on a table of arguments, its failure cases, resuming, charts."""
import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cosine_power_annealing import ScheduleFactor, cosine_power_annealing
from training import lr_scheduler

SCRIPT = Path(__file__).resolve().parent.parent / "cnn" / "cosine_power_annealing.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sharpdarts_formula(epochs=None, max_lr=0.1, min_lr=1e-4, exponent_order=10, max_epoch=None,
                       warmup_epochs=None, start_epoch=1, restart_lr=True):
    """sharpDARTS's schedule for an integer ``epochs``, step by step as its code computes it:
    the curve over epochs 1..N, the cosine shifted by the warmup, k**(c + 1) rescaled by its
    observed min and max, the W + 1 warmup ramp written over the start, the tail only when
    resuming without restart. Returns (learning rates, power proportions, cosine proportions)."""
    n = max_epoch if epochs is None else epochs
    m = n if max_epoch is None else max_epoch
    e = np.arange(n) + 1
    w = warmup_epochs or 0
    cos = (1 + np.cos(np.pi * (e - w) / (m - w))) / 2
    power = cos if exponent_order == 1 else np.power(exponent_order, cos + 1)
    power = power - np.min(power)
    power = power / np.max(power)
    if w:
        power[e <= w + 1] = np.arange(1, w + 2) / float(w + 1)
    lrs = power * (max_lr - min_lr) + min_lr
    if start_epoch > 1 and not restart_lr:
        lrs = lrs[start_epoch - 1:]
    return lrs, power, cos


# Every parameter the sharpDARTS README documents, alone and combined: lengths, max_epoch past
# the end, epochs given only by max_epoch, exponent 1 and beyond, warmup, resuming both ways.
TABLE = [
    dict(epochs=2),
    dict(epochs=3, exponent_order=1),
    dict(epochs=10),
    dict(epochs=10, max_lr=0.1, min_lr=1e-4, exponent_order=10),
    dict(epochs=10, exponent_order=1),
    dict(epochs=600, max_lr=0.025, min_lr=1e-8, exponent_order=10, warmup_epochs=5),
    dict(epochs=300, max_lr=0.1, min_lr=7.5e-4, exponent_order=10),
    dict(epochs=1000, max_lr=0.025, min_lr=7.5e-4, exponent_order=2),
    dict(epochs=50, max_lr=0.2, min_lr=0.0, exponent_order=100),
    dict(epochs=50, exponent_order=1.5, min_lr=0.05),
    dict(epochs=7, max_lr=0.3, min_lr=0.3),
    dict(max_epoch=30),
    dict(max_epoch=30, exponent_order=1, warmup_epochs=4),
    dict(epochs=10, max_epoch=30, exponent_order=2, min_lr=1e-3, max_lr=0.025),
    dict(epochs=10, max_epoch=30, exponent_order=1),
    dict(epochs=200, max_epoch=300, warmup_epochs=5),
    dict(epochs=5, max_epoch=5, warmup_epochs=4),
    dict(epochs=2, warmup_epochs=1),
    dict(epochs=20, warmup_epochs=1, exponent_order=1),
    dict(epochs=20, warmup_epochs=3, exponent_order=2),
    dict(epochs=20, warmup_epochs=0),
    dict(epochs=12, warmup_epochs=9, max_epoch=40),
    dict(epochs=200, start_epoch=101, restart_lr=True),
    dict(epochs=200, start_epoch=101, restart_lr=True, warmup_epochs=5),
    dict(epochs=300, start_epoch=101, restart_lr=False),
    dict(epochs=300, start_epoch=101, restart_lr=False, warmup_epochs=5, exponent_order=2),
    dict(epochs=10, start_epoch=3, restart_lr=False, exponent_order=1),
    dict(epochs=10, start_epoch=10, restart_lr=False),
    dict(epochs=10, start_epoch=1, restart_lr=False),
    dict(max_epoch=10, start_epoch=4, restart_lr=False, warmup_epochs=2),
    dict(epochs=20, max_epoch=60, start_epoch=7, restart_lr=False, warmup_epochs=3, exponent_order=5),
    dict(epochs=20, max_epoch=60, start_epoch=7, restart_lr=True, warmup_epochs=3, exponent_order=5),
    dict(epochs=8, start_epoch=101, restart_lr=True, exponent_order=100, max_lr=0.2, min_lr=7.5e-4),
]
# The literal formula loses a few digits to cancellation where k**(c + 1) barely varies; ours
# computes the same quantity without that loss, so agreement is to that rounding.
ATOL = 1e-12


@pytest.mark.parametrize("kwargs", TABLE, ids=[",".join(f"{k}={v}" for k, v in row.items()) for row in TABLE])
def test_equals_sharpdarts_formula_on_the_table(kwargs):
    lrs, power, cos = sharpdarts_formula(**kwargs)
    np.testing.assert_allclose(cosine_power_annealing(**kwargs), lrs, rtol=1e-12, atol=ATOL)
    ours = cosine_power_annealing(**kwargs, return_intermediates=True)
    assert isinstance(ours, tuple) and len(ours) == 3
    for got, expected in zip(ours, (lrs, power, cos)):
        assert got.shape == expected.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=ATOL)


def test_equals_sharpdarts_formula_on_a_grid():
    checked = 0
    for n, extra, warmup, order, start, restart in itertools.product(
            [2, 3, 4, 9, 40], [None, 0, 1, 25], [None, 1, 3], [1, 1.5, 2, 10, 1000], [1, 2, 4, 50], [True, False]):
        max_epoch = None if extra is None else n + extra
        kwargs = dict(epochs=n, max_lr=0.05, min_lr=1e-5, exponent_order=order, max_epoch=max_epoch,
                      warmup_epochs=warmup, start_epoch=start, restart_lr=restart)
        if (warmup or 0) >= n or (not restart and start > n):
            continue  # sharpDARTS crashes or returns nothing there: see test_refusals
        np.testing.assert_allclose(cosine_power_annealing(**kwargs), sharpdarts_formula(**kwargs)[0],
                                   rtol=1e-12, atol=ATOL, err_msg=str(kwargs))
        checked += 1
    assert checked > 1500


# Printed by sharpDARTS's own cosine_power_annealing (ahundt/sharpDARTS, master), to 12 digits.
SHARPDARTS_PRINTED = [
    (dict(epochs=10), [0.1, 0.083146194031, 0.061815356933, 0.041627378515, 0.025657147431,
                       0.014467852968, 0.00727846851, 0.003006709189, 0.000785132885, 0.0001]),
    (dict(epochs=10, exponent_order=1, warmup_epochs=3),
     [0.025075, 0.05005, 0.075025, 0.1, 0.081193315603, 0.061164920651, 0.038935079349, 0.018906684397,
      0.005046605048, 0.0001]),
    (dict(epochs=10, max_epoch=30, exponent_order=2, min_lr=1e-3, max_lr=0.025),
     [0.025, 0.024137733162, 0.022721824008, 0.020783135712, 0.018363064128, 0.015511876374,
      0.012286773749, 0.008749801008, 0.004965725378, 0.001]),
    (dict(max_epoch=10, start_epoch=4, restart_lr=False, warmup_epochs=2),
     [0.068227576122, 0.043533666133, 0.024101282028, 0.011593382902, 0.004551403442, 0.001116668119, 0.0001]),
    (dict(epochs=8, start_epoch=101, restart_lr=True, exponent_order=100, max_lr=0.2, min_lr=7.5e-4),
     [0.2, 0.120761301683, 0.056344522501, 0.022375557848, 0.008302162831, 0.003063640581, 0.001210317992,
      0.00075]),
]


@pytest.mark.parametrize("kwargs, printed", SHARPDARTS_PRINTED)
def test_equals_values_printed_by_sharpdarts(kwargs, printed):
    np.testing.assert_allclose(cosine_power_annealing(**kwargs), printed, rtol=0, atol=6e-13)
    np.testing.assert_allclose(sharpdarts_formula(**kwargs)[0], printed, rtol=0, atol=6e-13)


@pytest.mark.parametrize("order", [1, 2, 10, 100])
@pytest.mark.parametrize("epochs", [2, 7, 300])
def test_first_is_max_last_is_min_and_monotone(order, epochs):
    lrs = cosine_power_annealing(epochs=epochs, max_lr=0.025, min_lr=1e-8, exponent_order=order)
    assert lrs.shape == (epochs,) and lrs.dtype == np.float64
    assert lrs[0] == pytest.approx(0.025, rel=1e-15) and lrs[-1] == 1e-8
    assert np.all(np.diff(lrs) < 0)


def test_larger_orders_decay_faster_early():
    curves = [cosine_power_annealing(100, exponent_order=k) for k in (1, 2, 10, 100)]
    for slower, faster in zip(curves, curves[1:]):
        assert np.all(faster[1:-1] < slower[1:-1])


def test_single_epoch_trains_at_max_lr_where_sharpdarts_gives_nan():
    for kwargs in (dict(epochs=1), dict(max_epoch=1, exponent_order=1), dict(epochs=1, max_epoch=50),
                   dict(epochs=1, start_epoch=1, restart_lr=False), dict(epochs=1, start_epoch=9)):
        with np.errstate(invalid="ignore"):
            sharp_lrs, _, sharp_cos = sharpdarts_formula(max_lr=0.3, **kwargs)
        assert np.isnan(sharp_lrs).all()
        lrs, power, cos = cosine_power_annealing(max_lr=0.3, **kwargs, return_intermediates=True)
        assert list(lrs) == [0.3] and list(power) == [1.0]
        np.testing.assert_allclose(cos, sharp_cos)


@pytest.mark.parametrize("order", [1e160, 1e300, np.finfo(np.float64).max])
def test_huge_orders_give_the_limit_where_sharpdarts_overflows(order):
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(sharpdarts_formula(epochs=6, exponent_order=order)[0]).all()
    lrs, power, cos = cosine_power_annealing(epochs=6, max_lr=0.1, min_lr=0.0, exponent_order=order,
                                             return_intermediates=True)
    # (k**c - k**c_min) / (k**c_max - k**c_min), written with negative powers only, cannot overflow.
    below_top, floor = np.power(order, cos - cos.max()), np.power(order, cos.min() - cos.max())
    np.testing.assert_allclose(power, (below_top - floor) / (1 - floor), rtol=1e-9, atol=1e-300)
    assert lrs[0] == 0.1 and lrs[-1] == 0.0 and np.all(np.diff(lrs) <= 0)


def test_orders_near_one_approach_exponent_one():
    one = cosine_power_annealing(epochs=30, exponent_order=1)
    for order in (1 + 1e-6, 1 + 1e-12, np.nextafter(1, 2)):
        np.testing.assert_allclose(cosine_power_annealing(epochs=30, exponent_order=order), one, rtol=1e-5)


def per_epoch_lrs(scheduler_factory, epochs, lr):
    """The learning rate each epoch trains at: read before the epoch's scheduler.step()."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = scheduler_factory(optimizer)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(lrs)


def test_training_scripts_index_the_whole_schedule_by_epoch():
    args = argparse.Namespace(lr_schedule="cosine_power", epochs=15, learning_rate=0.05, learning_rate_min=1e-4,
                              lr_power_annealing_exponent_order=10.0, warmup_epochs=2)
    lrs = per_epoch_lrs(lambda opt: lr_scheduler(opt, args), 15, 0.05)
    np.testing.assert_allclose(lrs, sharpdarts_formula(epochs=15, max_lr=0.05, min_lr=1e-4, warmup_epochs=2)[0],
                               rtol=1e-12)


def test_schedule_factor_drives_lambda_lr_through_the_array(tmp_path):
    schedule = cosine_power_annealing(epochs=12, max_lr=0.05, min_lr=1e-4, warmup_epochs=3)
    lrs = per_epoch_lrs(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, ScheduleFactor(schedule, 0.05)),
                        12, 0.05)
    np.testing.assert_allclose(lrs, schedule, rtol=1e-12)
    # Resume: the scheduler state is plain data, so it loads with weights_only=True and continues the schedule.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, ScheduleFactor(schedule, 0.05))
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, ScheduleFactor(schedule, 0.05))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert scheduler.get_last_lr()[0] == pytest.approx(schedule[5], rel=1e-12)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule[6], rel=1e-12)


@pytest.mark.parametrize("warmup", [None, 5])
@pytest.mark.parametrize("start", [2, 4, 6, 30])
def test_resuming_without_restart_is_the_tail_of_the_full_curve(start, warmup):
    full = cosine_power_annealing(epochs=30, max_lr=0.1, min_lr=1e-4, warmup_epochs=warmup)
    resumed = cosine_power_annealing(epochs=30, max_lr=0.1, min_lr=1e-4, warmup_epochs=warmup,
                                     start_epoch=start, restart_lr=False)
    np.testing.assert_array_equal(resumed, full[start - 1:])
    by_max_epoch = cosine_power_annealing(max_epoch=30, max_lr=0.1, min_lr=1e-4, warmup_epochs=warmup,
                                          start_epoch=start, restart_lr=False)
    np.testing.assert_array_equal(by_max_epoch, full[start - 1:])


def test_restart_lr_returns_a_fresh_curve_as_if_starting_from_epoch_one():
    # The sharpDARTS README: resuming from epoch 100 to run until 300, specify epochs=200.
    fresh = cosine_power_annealing(epochs=200, max_lr=0.1, min_lr=1e-4, warmup_epochs=2)
    restarted = cosine_power_annealing(epochs=200, max_lr=0.1, min_lr=1e-4, warmup_epochs=2, start_epoch=101,
                                       restart_lr=True)
    np.testing.assert_array_equal(restarted, fresh)
    assert restarted[2] == pytest.approx(0.1, rel=1e-15) and restarted[-1] == 1e-4


@pytest.mark.parametrize("kwargs, words", [
    ({}, "needs epochs, max_epoch"),
    ({"epochs": 0}, "epochs must be an integer"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"epochs": np.arange(5) + 1}, "epochs must be an integer"),
    ({"epochs": 5, "exponent_order": 0.5}, "exponent_order must be at least 1"),
    ({"epochs": 5, "exponent_order": float("inf")}, "exponent_order must be a finite number"),
    ({"epochs": 5, "max_lr": 0}, "max_lr must be positive"),
    ({"epochs": 5, "min_lr": 0.2}, "min_lr must lie between"),
    ({"epochs": 5, "min_lr": float("nan")}, "min_lr must be a finite number"),
    ({"epochs": 5, "warmup_epochs": 5}, "warmup_epochs (5) must be fewer than epochs (5)"),
    ({"epochs": 5, "warmup_epochs": -1}, "warmup_epochs must be an integer"),
    ({"epochs": 5, "start_epoch": 0}, "start_epoch must be an integer"),
    ({"epochs": 5, "max_epoch": 4}, "run past max_epoch"),
    ({"max_epoch": 4, "start_epoch": 6, "restart_lr": False}, "start_epoch (6) is after the last epoch (4)"),
])
def test_refusals_are_one_sentence(kwargs, words):
    with pytest.raises(ValueError) as info:
        cosine_power_annealing(**kwargs)
    message = str(info.value)
    assert words in message and message.endswith(".") and "\n" not in message


def test_where_sharpdarts_crashes_or_returns_nothing_we_refuse():
    with pytest.raises(ValueError), np.errstate(all="ignore"):  # sharpDARTS: 6 ramp values into 5 epochs
        sharpdarts_formula(epochs=5, warmup_epochs=5)
    assert sharpdarts_formula(epochs=4, start_epoch=6, restart_lr=False)[0].size == 0


def run_script(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_writes_linear_and_log_png_charts(tmp_path):
    out = tmp_path / "charts"
    proc = run_script(["--out", str(out), "--epochs", "50", "--exponent_orders", "2", "10"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [Path(line) for line in proc.stdout.split()]
    pngs = sorted(p for p in out.iterdir() if p.suffix == ".png")
    assert [p.name for p in pngs] == ["cosine_power_annealing_linear.png", "cosine_power_annealing_log.png"]
    for png in pngs:
        assert png in printed
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    rows = np.loadtxt(out / "cosine_power_annealing.csv", delimiter=",", skiprows=1)
    assert rows.shape == (50, 1 + 4)  # epoch, cosine, orders 2 and 10, warmup
    np.testing.assert_allclose(rows[:, 1], cosine_power_annealing(50, 0.1, 1e-4, exponent_order=1), rtol=1e-9)


def test_cli_bad_flag_is_one_sentence(tmp_path):
    # Also the DARTS habit: run from inside cnn/.
    proc = run_script(["--out", str(tmp_path), "--epochs", "10", "--min_lr", "0"], cwd=SCRIPT.parent)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())
