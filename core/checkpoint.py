"""Checkpoints: written atomically, read with weights_only=True, errors in one sentence."""
from __future__ import annotations

import argparse
import math
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import torch

from errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def non_finite_entry(state) -> str | None:
    """The key path of the first tensor or float in `state` (nested dicts, lists, tuples) that holds
    NaN or inf, else None. One host sync per device, whatever the number of tensors."""
    entries: list[tuple[str, torch.Tensor | float]] = []

    def collect(value, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                collect(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                collect(v, f"{key}.{i}" if key else str(i))
        elif (isinstance(value, torch.Tensor) and value.is_floating_point()) or isinstance(value, float):
            entries.append((key, value))

    collect(state, "")
    tensors = [v for _, v in entries if isinstance(v, torch.Tensor)]
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    if all(bool(torch.stack([t.isfinite().all() for t in group]).all()) for group in by_device.values()) \
            and all(math.isfinite(v) for _, v in entries if isinstance(v, float)):
        return None
    return next(key for key, v in entries
                if not (bool(v.isfinite().all()) if isinstance(v, torch.Tensor) else math.isfinite(v)))


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename, so a crash never leaves
    half a file and a failed write (a full disk) leaves the previous checkpoint as it was. A state
    holding NaN or inf is refused: a diverged run never replaces a good checkpoint. The file gets
    the permissions of any file this process creates (the umask), like the other files of a run."""
    path = Path(path)
    bad = non_finite_entry(state)
    if bad is not None:
        raise CheckpointError(f"{path} was not written: its entry {bad} is not finite (NaN or inf)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split("] . ")[-1]
        free_mb = shutil.disk_usage(path.parent).free / 2 ** 20
        raise CheckpointError(f"writing {path} failed ({reason}) with {free_mb:.0f} MiB free on its disk: make room "
                              f"and resume; any previous {path.name} is unchanged") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _refusal_reason(exc: Exception) -> str:
    """The line of torch's message that says why a file was refused, without its advice to load
    with weights_only=False (which would run whatever code the file holds)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if "weights_only" not in line
               and not line.startswith(("Weights only load failed", "Check the documentation"))]
    reason = (reasons or lines or [type(exc).__name__])[0]
    return reason.removeprefix("WeightsUnpickler error: ").split(" Please use")[0]


def checkpoint_file(path: str | Path, in_run_folder: str) -> Path:
    """The checkpoint a path names: a run folder stands for its file `in_run_folder` (model_best.pt,
    checkpoint.pt), any other path for itself."""
    path = Path(path)
    return path / in_run_folder if path.is_dir() else path


def model_file(text: str) -> str:
    """A --model_path flag's value (an argparse type): a checkpoint file, or a run folder's model_best.pt."""
    return str(checkpoint_file(text, "model_best.pt"))


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict:
    """Tensors and plain data only; anything else is refused rather than executed."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_refusal_reason(exc)})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dictionary")
    return state


def model_state_dict(state: dict) -> dict[str, torch.Tensor]:
    """The weights inside any of the layouts we read: ours, DARTS' plain state_dict, D-DARTS' 'state_dict'."""
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    weights = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not weights:
        raise CheckpointError("the checkpoint holds no model weights")
    return weights


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str,
                 hint: str = "check --arch, --init_channels, --layers and --ops") -> None:
    """strict load with a readable summary instead of PyTorch's key dump; `hint` says what to check."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    # Checkpoints from PyTorch < 0.4 carry no BatchNorm counters; those default to zero.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            details.append(f"{len(mismatched)} of another shape (e.g. {k}: "
                           f"{tuple(weights[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"{source} was saved from another architecture or size: "
                              f"{'; '.join(details)}; {hint}")
    model.load_state_dict(weights, strict=False)


def resume_arguments(args: argparse.Namespace, defaults: argparse.Namespace, kind: str,
                     overridable: tuple[str, ...], required: tuple[str, ...] = ()
                     ) -> tuple[argparse.Namespace, dict | None, Path | None]:
    """For --resume: the stored arguments, the checkpoint and its run folder (else args, None, None).

    The stored arguments win so the run continues exactly; of `overridable`, those given on this
    command line (different from their defaults) replace the stored ones; --resume and
    --stop_epoch always come from this command line; a flag newer than the checkpoint takes its
    default. Any other flag given with a value other than the run's is refused, rather than silently
    ignored (e.g. --epochs to train longer), as is a checkpoint without one of the `required` entries.
    """
    if args.resume is None:
        return args, None, None
    path = checkpoint_file(args.resume, "checkpoint.pt")
    state = load_checkpoint(path)
    if state.get("kind") != kind:
        raise CheckpointError(f"{path} is not a {kind} checkpoint, so this script cannot resume it")
    missing = [key for key in ("args", *required) if key not in state]
    if missing or not isinstance(state["args"], dict):
        raise CheckpointError(f"{path} lacks {', '.join(missing) or 'a dictionary of args'}, which resuming needs: "
                              f"it was not written by this script")
    stored = {**vars(defaults), **state["args"]}
    fixed = [f"--{key}" if value is True else f"--{key} {value}" for key, value in vars(args).items()
             if key not in overridable and value != getattr(defaults, key, None) and value != stored.get(key)]
    if fixed:
        raise CheckpointError(f"--resume continues {path.parent} with its own arguments, so {', '.join(fixed)} "
                              f"cannot apply; only --{', --'.join(k for k in overridable if k != 'resume')} may change "
                              f"(other settings need a new run)")
    for key in overridable:
        value = getattr(args, key)
        if key in ("resume", "stop_epoch") or value != getattr(defaults, key):
            stored[key] = value
    return argparse.Namespace(**stored), state, path.parent
