"""bench/train_speed.py and bench/gpu_check.sh end to end, on a tiny network."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def test_train_speed_reports_steps_memory_and_projection():
    done = subprocess.run([sys.executable, "bench/train_speed.py", "--threads", "1", "--init_channels", "4",
                           "--layers", "3", "--batch_size", "4", "--rounds", "1", "--iterations", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    ours = report["ours"]
    assert len(ours["runs"]) == 1 and all(len(run["all_seconds"]) == 2 for run in ours["runs"])
    assert ours["runs"][0]["memory_format"] == "channels_last"      # train.py's default on the CPU
    assert ours["images_per_s"] == pytest.approx(4 / ours["seconds_per_step"], rel=1e-3) and ours["seconds_per_step"] > 0
    assert ours["peak_memory_mb"] >= ours["runs"][0]["rss_before_model_mb"] > 0
    projected = report["projected_training"]["ours"]
    assert projected["hours"] == pytest.approx(600 * 50_000 / ours["images_per_s"] / 3600, abs=0.05)
    assert report["config"]["threads"] == 1 and "original" not in report


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    if torch.cuda.is_available():
        return      # on a GPU machine the script runs for minutes: bench/gpu_check.sh is run there by hand
    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", "bench/gpu_check.sh", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "CUDA is absent" in done.stdout
    assert json.loads(out.read_text()) == {"cuda": False, "skipped": "CUDA is absent"}
