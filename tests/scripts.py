"""Run the project's scripts the way users do: in a child process, so that a native crash (SIGABRT,
SIGSEGV) or a hang fails the one test that ran it and the rest of the suite still reports.

The children are forked from one server (tests/script_server.py) that has imported torch and
torchvision once: each starts as `python <script> args` would, for a fraction of the ~9 s that a
fresh interpreter spends importing them here.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_ENV = {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONIOENCODING": "utf-8"}
_server: subprocess.Popen | None = None
_server_lock = threading.Lock()     # one request at a time: the server answers in order, one line each


def environment_without_openmp_choices() -> dict[str, str]:
    """This environment as a user's who set no OpenMP spin count or wait policy: the conftest imports
    cnn/core_path.py, which sets GOMP_SPINCOUNT here (core/openmp_env.py)."""
    return {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}


def _script_server() -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        env = {**os.environ, **BASE_ENV}
        env.pop("PYTHONPATH", None)
        _server = subprocess.Popen([sys.executable, str(REPO / "tests" / "script_server.py")], cwd=REPO, env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        atexit.register(_server.stdin.close)
    return _server


def _serve(script: str, args: tuple, cwd: Path, env: dict[str, str] | None, timeout: float,
           ranks: int = 1) -> list[tuple[int | str, str, str]]:
    """(status, stdout, stderr) of each rank of one request to the script server."""
    full_env = {**os.environ, **BASE_ENV, **(env or {})}
    full_env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        with _server_lock:
            server = _script_server()
            server.stdin.write(json.dumps({"script": str(REPO / script), "args": list(map(str, args)), "cwd": str(cwd),
                                           "env": full_env, "stdout": str(out), "stderr": str(err),
                                           "timeout": timeout, "ranks": ranks}) + "\n")
            server.stdin.flush()
            reply = server.stdout.readline()
        if not reply:
            raise RuntimeError(f"tests/script_server.py stopped (exit status {server.wait()}) while running {script}")
        suffixes = [""] if ranks == 1 else [f".{r}" for r in range(ranks)]
        return [(status, *(_text(Path(f"{stream}{suffix}")) for stream in (out, err)))
                for status, suffix in zip(json.loads(reply)["returncodes"], suffixes, strict=True)]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def run_script(script: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`python <script> args` (a path relative to the repository, e.g. cnn/train.py), on one thread;
    run folders go where DARTS_LOGS_DIR points (the tests' `logs` fixtures set it)."""
    command = [sys.executable, script, *map(str, args)]
    [(returncode, stdout, stderr)] = _serve(script, args, cwd, env, timeout)
    if returncode == "timeout":
        raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        raise AssertionError(f"{script} died of {name}\n--- stderr ---\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def run_ranks(script: str, *args: str, nproc: int = 2, env: dict[str, str] | None = None,
              timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """`torchrun --standalone --nproc_per_node=<nproc> <script> args` without torchrun's processes: the
    ranks are forked from the script server with the environment torchrun gives its workers, so none
    pays the ~9 s import of torch. Each rank's run, in rank order; when one fails, the others are
    killed (status -9), as torchrun does."""
    command = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", script, *map(str, args)]
    return [subprocess.CompletedProcess(command, status, stdout, stderr)
            for status, stdout, stderr in _serve(script, args, REPO, env, timeout, nproc)]


def run_ranks_ok(script: str, *args: str, nproc: int = 2, env: dict[str, str] | None = None,
                 timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """`run_ranks` whose every rank must exit 0; a failure shows the end of each failed rank's stderr."""
    ranks = run_ranks(script, *args, nproc=nproc, env=env, timeout=timeout)
    failed = [f"rank {r} exited {done.returncode}\n--- stderr ---\n{done.stderr[-3000:]}"
              for r, done in enumerate(ranks) if done.returncode != 0]
    assert not failed, f"{script} under {nproc} ranks\n" + "\n".join(failed)
    return ranks


def run_ok(script: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """`run_script` that must exit 0; a failure shows the end of the script's stderr."""
    done = run_script(script, *args, cwd=cwd, env=env, timeout=timeout)
    assert done.returncode == 0, f"{script} exited {done.returncode}\n--- stderr ---\n{done.stderr[-4000:]}"
    return done


def assert_one_sentence_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, one `error: ...` line holding every fragment."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_train_py_trains(genotype: Path, logs: Path) -> None:
    """A searched genotype file trains for one digits epoch (C=4, 3 cells, batches of 256, 144 training images) and
    scores above 0%; `logs` is where DARTS_LOGS_DIR points."""
    run_ok("cnn/train.py", "--arch", str(genotype), "--dataset", "digits", "--init_channels", "4", "--layers", "3",
           "--epochs", "1", "--batch_size", "256", "--valid_portion", "0.9", "--report_freq", "0")
    results = json.loads(next((logs / "eval").glob("*/results.json")).read_text())
    assert results["final"]["test_top1"] > 0
