"""cost.json, the cost record of a run (written by run_cost.RunCost): reading it, checking it,
and adding up its device-hours per phase and per kind of device.

No torch here: summarize_results.py reads the records of many runs and starts quickly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from errors import UserError

COST_FILE = "cost.json"
PHASES = ("search", "selection", "training")
GPU_TYPES = ("cuda", "mps", "xpu")


class CostError(UserError):
    """A cost.json that cannot be read, said in one sentence."""


def device_label(device_type: str, name: str) -> str:
    """What the study's cost table calls a kind of device: 'NVIDIA H200', 'CPU (Intel Xeon ...)'."""
    return name if device_type == "cuda" else f"{device_type.upper()} ({name})"


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
