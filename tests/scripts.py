"""Run the project's scripts the way users do: in a child process, so that a native crash (SIGABRT,
SIGSEGV) or a hang fails the one test that ran it and the rest of the suite still reports."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`python <script> args` (a path relative to the repository, e.g. cnn/train.py), on one thread;
    run folders go where DARTS_LOGS_DIR points (the tests' `logs` fixtures set it)."""
    path = REPO / script
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONIOENCODING": "utf-8",
                **(env or {})}
    full_env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, str(path), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise AssertionError(f"{script} died of {name}\n--- stderr ---\n{done.stderr[-4000:]}")
    return done


def assert_one_sentence_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, one `error: ...` line holding every fragment."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
