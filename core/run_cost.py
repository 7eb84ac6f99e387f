"""What a run cost: wall time and device-hours per phase, kept in <run>/cost.json.

The NAS best-practice checklist (Lindauer and Hutter, JMLR 2020) asks for the cost of search and
of evaluation reported apart, with the hardware and library versions. A script makes one
``RunCost`` when it starts and charges every epoch it finishes to a phase:

    cost = RunCost(device, world_size, seed)              # the clock starts
    for epoch in ...:
        ...
        cost.charge(run_dir, epoch + 1, "search")         # rank 0, before its checkpoint

``charge`` counts the wall time since the previous charge (the first one includes the set-up)
and rewrites cost.json atomically. Each process is a *session* with its own device name and
count (a search may be resumed on other hardware). Charging before the checkpoint is written
makes ``--resume`` exact: a resumed session drops what earlier sessions charged to the epochs it
runs again (work lost after the last checkpoint), so no epoch is counted twice.

Device-hours are wall hours times the device count (the torchrun world size); phases are
``search``, ``selection`` (DARTS-PT's selection, or trainings that pick among candidates) and
``training`` (evaluating a genotype).
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from errors import UserError
from run_dir import library_versions, write_json

COST_FILE = "cost.json"
PHASES = ("search", "selection", "training")
GPU_TYPES = ("cuda", "mps", "xpu")


class CostError(UserError):
    """A cost.json that cannot be read, said in one sentence."""


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


def device_label(device_type: str, name: str) -> str:
    """What the study's cost table calls a kind of device: 'NVIDIA H200', 'CPU (Intel Xeon ...)'."""
    return name if device_type == "cuda" else f"{device_type.upper()} ({name})"


class RunCost:
    """This process's session of a run, charged epoch by epoch (module docstring)."""

    def __init__(self, device: torch.device, world_size: int, seed: int):
        self._clock = time.monotonic()
        self.seed = seed
        self.session = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "device_type": device.type,
                        "device_name": device_name(device), "device_count": int(world_size),
                        "threads": torch.get_num_threads(), "versions": library_versions(), "epochs": []}
        self._earlier: list[dict] | None = None

    def charge(self, run_dir: Path, epoch: int, phase: str) -> None:
        """Count the time since the last charge as `epoch` (from 1) of `phase` and write cost.json."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; use one of {', '.join(PHASES)}")
        now = time.monotonic()
        seconds, self._clock = now - self._clock, now
        if self._earlier is None:
            self._earlier = earlier_sessions(Path(run_dir), epoch)
        self.session["epochs"].append({"epoch": int(epoch), "phase": phase, "seconds": seconds})
        write_json(Path(run_dir) / COST_FILE, cost_file_data(self.seed, [*self._earlier, self.session]))


def read_cost_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise CostError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise CostError(f"{path} is not valid JSON ({e}); move it away to restart the run's cost "
                        f"accounting") from None
    if not isinstance(data, dict) or not isinstance(data.get("sessions"), list) or not all(
            _is_session(s) for s in data["sessions"]):
        raise CostError(f"{path} is not a cost record written by RunCost; move it away to restart the run's "
                        f"cost accounting")
    return data


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _is_session(session) -> bool:
    """The fields of a session that the totals use, with the types they need."""
    return (isinstance(session, dict) and isinstance(session.get("device_type"), str)
            and isinstance(session.get("device_name"), str) and _is_number(session.get("device_count"))
            and isinstance(session.get("epochs"), list)
            and all(isinstance(e, dict) and e.get("phase") in PHASES and _is_number(e.get("epoch"))
                    and _is_number(e.get("seconds")) for e in session["epochs"]))


def earlier_sessions(run_dir: Path, epoch: int) -> list[dict]:
    """The sessions of run_dir/cost.json with only what they charged to epochs before `epoch`."""
    path = run_dir / COST_FILE
    if not path.exists():
        return []
    kept = []
    for session in read_cost_file(path)["sessions"]:
        epochs = [e for e in session["epochs"] if e["epoch"] < epoch]
        if epochs:
            kept.append({**session, "epochs": epochs})
    return kept


@dataclass(frozen=True)
class Charge:
    """Device-hours one session spent in one phase, on one kind of device."""
    phase: str
    device: str          # device_label
    gpu: bool
    wall_seconds: float
    device_hours: float
    epochs: int


def session_charges(sessions: list[dict]) -> list[Charge]:
    """One Charge per (session, phase): wall seconds summed, times the session's device count."""
    charges = []
    for session in sessions:
        per_phase: dict[str, list[float]] = {}
        for entry in session["epochs"]:
            per_phase.setdefault(entry["phase"], []).append(float(entry["seconds"]))
        label = device_label(session["device_type"], session["device_name"])
        for phase, seconds in per_phase.items():
            wall = sum(seconds)
            charges.append(Charge(phase, label, session["device_type"] in GPU_TYPES, wall,
                                  wall * session["device_count"] / 3600, len(seconds)))
    return charges


def cost_file_data(seed: int, sessions: list[dict]) -> dict:
    """cost.json: totals for a reader first (per phase and per device), then the sessions they come from."""
    charges = session_charges(sessions)
    phases: dict[str, dict] = {}
    devices: dict[str, float] = {}
    for c in charges:
        phase = phases.setdefault(c.phase, {"wall_seconds": 0.0, "device_hours": 0.0, "epochs": 0})
        phase["wall_seconds"] += c.wall_seconds
        phase["device_hours"] += c.device_hours
        phase["epochs"] += c.epochs
        devices[c.device] = devices.get(c.device, 0.0) + c.device_hours
    return {"seed": seed, "wall_seconds": sum(c.wall_seconds for c in charges),
            "device_hours": sum(c.device_hours for c in charges), "phases": phases,
            "device_hours_by_device": devices, "sessions": sessions}


def load_run_charges(run_dir: Path) -> list[Charge] | None:
    """The charges recorded in run_dir/cost.json; None when the run has no cost.json."""
    path = Path(run_dir) / COST_FILE
    return session_charges(read_cost_file(path)["sessions"]) if path.exists() else None
