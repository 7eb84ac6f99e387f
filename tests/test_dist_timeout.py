"""A hung rank under torchrun: the others stop after --dist_timeout with one sentence naming it."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_a_silent_rank_is_named_after_the_timeout(tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun is not on PATH; it comes with torch")
    # rank 0 hangs before its first epoch; rank 1 waits for it in the first gradient all-reduce
    command = [torchrun, "--standalone", "--nproc_per_node=2", "tests/patched_script.py", "--rank_sleeps", "0", "--",
               "cnn/train.py", "--dataset", "digits", "--device", "cpu", "--init_channels", "4", "--layers", "3",
               "--batch_size", "64", "--epochs", "1", "--workers", "0", "--dist_timeout", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DARTS_LOGS_DIR": str(tmp_path / "logs")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0
    assert ours == ["error: rank 0 did not answer within --dist_timeout 5 s (stuck, or much slower than the others), "
                    "so the run stopped; find what held it up, or raise --dist_timeout"], done.stderr[-3000:]
