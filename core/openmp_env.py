"""OpenMP settings that must be in the environment before torch loads its OpenMP runtime.

Why: after each parallel region, GNU OpenMP's (libgomp, what PyTorch's Linux wheels use) idle threads
spin for 300,000 rounds (milliseconds) before they sleep, so that the next region starts at once. While
the two lanes of core/lanes.py run their one-thread kernels, the caller's idle OpenMP thread spins on
the core the second lane needs. Measured on 2 cores of an AMD EPYC (KVM), search iteration at 2
threads, batch 16: first order 2.9-3.0 s with the default spin, 1.8-2.1 s with 1,000 to 10,000 rounds;
second order 8.2 -> 4.6-5.1 s. 10,000 rounds (well under a millisecond) still bridge the gap between
two consecutive operations, so serial code keeps its threads awake. Imported by cnn/core_path.py and
rnn/engine_path.py, which every script imports before torch; it changes nothing once torch is loaded.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

SPIN_COUNT = "10000"
_SET_HERE: list[str] = []      # the variables this module put in the environment


def prefer_short_spin() -> None:
    """Set GOMP_SPINCOUNT unless the user chose a spin count or a wait policy."""
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    _SET_HERE.append("GOMP_SPINCOUNT")


def without_our_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less what ``prefer_short_spin`` set: the environment another program (the original DARTS
    code, timed beside ours) would run in had our scripts not started it."""
    return {key: value for key, value in env.items() if key not in _SET_HERE}
