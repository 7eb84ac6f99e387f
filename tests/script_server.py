"""The process that tests/scripts.py forks script runs from (started by it; not run by hand).

Importing torch and torchvision costs ~9 s of CPU on this project's machines, more than most script
tests themselves. This server imports them once; each request (one JSON line on stdin) forks a child
that starts the way `python <script> args` does: its own working directory, environment, sys.argv
and sys.path[0], the project's own modules imported afresh (so what they read from the environment
at import, such as DARTS_LOGS_DIR, is the child's), torch's thread count from OMP_NUM_THREADS, stdin
from /dev/null, and stdout and stderr into files. The child ends as Python does (exit status of
SystemExit, 1 and a traceback for an uncaught exception, atexit handlers run); a native crash kills
the child alone. The reply (one JSON line on stdout) holds its status: negative for a signal, as
subprocess reports it, or "timeout" after SIGKILL.

A request with "ranks": N > 1 starts N children at once, as `torchrun --standalone --nproc_per_node=N`
starts its workers: each with the environment torchrun gives (RANK, LOCAL_RANK, WORLD_SIZE, ...,
MASTER_ADDR and a free MASTER_PORT) and streams of its own (the request's paths, with ".<rank>"
appended); when one of them fails, the others are killed, as torchrun does. The reply holds every rank's status.
"""
import atexit
import gc
import json
import os
import runpy
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_PATH = sys.path[1:]        # sys.path of `python <script>` without the script's own folder


def _preload() -> None:
    """Import everything the scripts import, then forget the project's modules (the children re-import them)."""
    sys.path.insert(0, str(REPO / "cnn"))
    try:
        import evaluate_model, train, train_search, visualize  # noqa: F401,E401 - imported for their imports
        from sklearn.datasets import load_digits  # noqa: F401 - data.py imports it when it loads digits
    except Exception:       # noqa: BLE001 - a module that does not import fails in the child, as a script
        pass
    sys.path.pop(0)
    _forget_project_modules()
    gc.collect()
    gc.freeze()         # the children then leave the server's objects alone: forking stays copy-free


def _forget_project_modules() -> None:
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(REPO)) and name != "__main__":
            del sys.modules[name]


def _redirect(fd: int, path: str, flags: int) -> None:
    target = os.open(path, flags, 0o600)
    os.dup2(target, fd)
    os.close(target)


def _child(request: dict) -> int:
    """Run the script as __main__ in this (forked) process; its exit status."""
    _redirect(0, os.devnull, os.O_RDONLY)
    _redirect(1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    _redirect(2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = str(Path(request["script"]).resolve())
    sys.argv = [request["script"], *request["args"]]
    sys.path[:] = [str(Path(script).parent), *BASE_PATH]
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
    try:
        runpy.run_path(script, run_name="__main__")
        status = 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            status = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            status = 1
    except BaseException:       # noqa: BLE001 - as Python itself: a traceback and status 1
        traceback.print_exc()
        status = 1
    try:
        for thread in threading.enumerate():        # Python waits for non-daemon threads before it exits
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    except BaseException:       # noqa: BLE001 - as Python's shutdown: reported, the script's status kept
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def _wait(pids: list[int], timeout: float) -> list[int | str]:
    """Every child's status; after a failure or the timeout, the ones still running are killed."""
    deadline = time.monotonic() + timeout
    statuses: dict[int, int | str] = {}
    while len(statuses) < len(pids):
        for pid in pids:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        failed = any(status != 0 for status in statuses.values())
        if len(statuses) < len(pids) and (failed or time.monotonic() > deadline):
            for pid in pids:
                if pid not in statuses:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    statuses[pid] = -signal.SIGKILL if failed else "timeout"
        time.sleep(0.02)
    return [statuses[pid] for pid in pids]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_requests(request: dict) -> list[dict]:
    """One request per rank: torchrun's environment and streams of its own (a single run: the request)."""
    ranks = request.get("ranks", 1)
    if ranks == 1:
        return [request]
    shared = {"WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks), "GROUP_RANK": "0",
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    return [{**request, "env": {**request["env"], **shared, "RANK": str(r), "LOCAL_RANK": str(r)},
             "stdout": f"{request['stdout']}.{r}", "stderr": f"{request['stderr']}.{r}"} for r in range(ranks)]


def _fork(request: dict) -> int:
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = _child(request)
        finally:
            os._exit(status)
    return pid


def main() -> None:
    _preload()
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        replies.flush()
        pids = [_fork(rank) for rank in _rank_requests(request)]
        replies.write(json.dumps({"returncodes": _wait(pids, request["timeout"])}) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
