"""Run folders under logs/: every run says what produced it and logs to file and console."""
from __future__ import annotations

import json
import logging
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy
import torch

from paths import LOGS_DIR, REPO_ROOT
from textfiles import write_text_atomic


def git_commit() -> str:
    """The checked-out commit, with '+dirty' when the tree has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    """Python, the libraries a result depends on, CUDA and cuDNN as torch was built with them."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__,
            # not imported here: it takes seconds, and the language models (rnn/) never use it
            "torchvision": getattr(sys.modules.get("torchvision"), "__version__", "not used"), "numpy": numpy.__version__, "cuda": torch.version.cuda,
            "cudnn": None if cudnn is None else str(cudnn), "platform": platform.platform()}


def create_run_dir(kind: str, name: str) -> Path:
    """A fresh logs/<kind>/<name>-<timestamp>/ folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = LOGS_DIR / kind / f"{name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        run_dir = LOGS_DIR / kind / f"{name}-{stamp}-{suffix}"
        suffix += 1
    run_dir.mkdir(parents=True)
    return run_dir


def record_invocation(run_dir: Path, args: dict, device: torch.device) -> None:
    """Command line, resolved arguments and versions, appended on resume so nothing is lost."""
    with open(run_dir / "command.txt", "a") as f:
        f.write(shlex.join([sys.executable, *sys.argv]) + "\n")
    info = {
        "args": args,
        **library_versions(),
        "git_commit": git_commit(),
        "device": str(device),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(run_dir / "args.json", info)


def write_json(path: Path, data: dict) -> None:
    """Replace a JSON file atomically, so a reader never sees half of it; NaN and inf are refused
    (they are not JSON: the training loops stop at the first one before writing)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str, allow_nan=False) + "\n")


def setup_logger(run_dir: Path | None, name: str, enabled: bool = True) -> logging.Logger:
    """Console and <run_dir>/log.txt, one timestamped line per message; silent when not `enabled`
    (the ranks other than 0 of a torchrun job)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.disabled = not enabled
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if not enabled:
        return logger
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%m/%d %I:%M:%S %p")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "log.txt"))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger
