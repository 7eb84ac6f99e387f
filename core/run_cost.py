"""What a run cost: wall time and device-hours per phase, kept in <run>/cost.json.

The NAS best-practice checklist (Lindauer and Hutter, JMLR 2020) asks for the cost of search and
of evaluation reported apart, with the hardware and library versions. A script makes one
``RunCost`` when it starts, in the phase it begins with, and charges every epoch it finishes:

    cost = RunCost(device, world_size, seed, "search")    # the clock starts
    for epoch in ...:
        ...
        cost.charge(run_dir, epoch + 1)                   # rank 0, before its checkpoint
    cost.phase = "selection"                              # what follows is charged to selection,
    cost.charge(run_dir, 1)                               # its units counted from 1 again

``charge`` counts the wall time since the previous charge (the first one includes the set-up)
and rewrites cost.json atomically. Each process is a *session* with its own device name and
count (a search may be resumed on other hardware). Charging before the checkpoint is written
makes ``--resume`` exact: a resumed session drops what earlier sessions charged to the epochs it
runs again (work lost after the last checkpoint), so no epoch is counted twice; phases follow
each other in the order of ``PHASES``, so a session that resumes the search also drops the
selection a lost session had begun.

Device-hours are wall hours times the device count (the torchrun world size); phases are
``search``, ``selection`` (DARTS-PT's selection, or trainings that pick among candidates) and
``training`` (evaluating a genotype).
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from cost_file import COST_FILE, PHASES, cost_file_data, read_cost_file
from run_dir import library_versions, write_json


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """The name of the accelerator (torch.cuda.get_device_name), or of the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_name()
    return device.type


class RunCost:
    """This process's session of a run, charged epoch by epoch (module docstring)."""

    def __init__(self, device: torch.device, world_size: int, seed: int, phase: str):
        self._clock = time.monotonic()
        self.seed, self.phase = seed, phase
        self.session = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "device_type": device.type,
                        "device_name": device_name(device), "device_count": int(world_size),
                        "threads": torch.get_num_threads(), "versions": library_versions(), "epochs": []}
        self._earlier: list[dict] | None = None

    def charge(self, run_dir: Path, epoch: int) -> None:
        """Count the time since the last charge as `epoch` (from 1) of the current phase and write cost.json."""
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}; use one of {', '.join(PHASES)}")
        now = time.monotonic()
        seconds, self._clock = now - self._clock, now
        if self._earlier is None:
            self._earlier = earlier_sessions(Path(run_dir), self.phase, epoch)
        self.session["epochs"].append({"epoch": int(epoch), "phase": self.phase, "seconds": seconds})
        write_json(Path(run_dir) / COST_FILE, cost_file_data(self.seed, [*self._earlier, self.session]))


def earlier_sessions(run_dir: Path, phase: str, epoch: int) -> list[dict]:
    """The sessions of run_dir/cost.json with only what they charged before `epoch` of `phase`."""
    path = run_dir / COST_FILE
    if not path.exists():
        return []
    resumed_at = (PHASES.index(phase), epoch)
    kept = []
    for session in read_cost_file(path)["sessions"]:
        epochs = [e for e in session["epochs"] if (PHASES.index(e["phase"]), e["epoch"]) < resumed_at]
        if epochs:
            kept.append({**session, "epochs": epochs})
    return kept
