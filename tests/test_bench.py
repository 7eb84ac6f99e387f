"""bench/train_speed.py, bench/search_speed.py and bench/gpu_check.sh end to end, on tiny networks."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts import environment_without_openmp_choices

REPO = Path(__file__).resolve().parent.parent
# the CPU-runnable copy of the original DARTS cnn/ folder (../shared/bench-reference/darts-cnn beside the checkout)
ORIGINAL = Path(os.environ.get("DARTS_ORIGINAL_CNN", REPO.parent / "shared" / "bench-reference" / "darts-cnn"))


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
    assert projected["hours"] == pytest.approx(600 * 50_000 / ours["images_per_s"] / 3600, rel=1e-3, abs=0.01)
    assert report["config"]["threads"] == 1 and "original" not in report


def test_search_speed_runs_plain_ops_in_the_memory_format_asked_for():
    done = subprocess.run([sys.executable, "bench/search_speed.py", "--device", "cpu", "--threads", "1",
                           "--init_channels", "4", "--layers", "2", "--batch_size", "2", "--image_size", "8",
                           "--iterations", "1", "--warmup", "0", "--strategies", "darts_first_order",
                           "--memory_format", "contiguous", "--plain_ops"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["config"]["plain_ops"] and report["config"]["memory_format"] == "contiguous"
    (run,) = report["results"]["darts_first_order"]["ours"]["runs"]
    assert run["memory_format"] == "contiguous" and run["seconds_per_step"] > 0 and run["plain_step_seconds"] > 0


def test_search_speed_with_cuda_graphs_on_a_cpu_reports_the_refusal():
    done = subprocess.run([sys.executable, "bench/search_speed.py", "--device", "cpu", "--cuda_graphs", "--warmup", "4",
                           "--strategies", "darts_first_order", "darts_second_order"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["config"]["cuda_graphs"]
    for variant in ("darts_first_order", "darts_second_order"):
        assert report["results"][variant]["error"].endswith(
            "error: --cuda_graphs captures CUDA kernels: it needs a CUDA device, not cpu")


def test_search_speed_times_the_original_darts_side_by_side():
    if not (ORIGINAL / "model_search.py").is_file():
        pytest.skip(f"no original DARTS cnn/ folder at {ORIGINAL} (set DARTS_ORIGINAL_CNN to one)")
    # 3 cells: the original's second order needs a normal cell (its normal alphas get no gradient otherwise)
    done = subprocess.run([sys.executable, "bench/search_speed.py", "--original", str(ORIGINAL), "--device", "cpu",
                           "--threads", "1", "--init_channels", "4", "--layers", "3", "--batch_size", "4",
                           "--iterations", "1", "--warmup", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=environment_without_openmp_choices())
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert list(report["results"]) == ["darts_first_order", "darts_second_order"]
    for name, result in report["results"].items():
        ours, original, ratios = result["ours"], result["original"], result["ratios"]
        (ours_run,), (original_run,) = ours["runs"], original["runs"]
        assert original_run["unrolled"] == (name == "darts_second_order")
        # our scripts set their OpenMP spin count; the original runs in the environment its user gave
        assert (ours_run["gomp_spincount"], original_run["gomp_spincount"]) == ("10000", None)
        assert (original_run["batch_size"], original_run["init_channels"], original_run["layers"],
                original_run["threads"]) == (4, 4, 3, 1)
        assert "C=4 | layers=3" in ours_run["supernet"]["describe"]
        for side in (ours, original):
            assert side["seconds_per_step"] > 0 and side["images_per_s"] == pytest.approx(4 / side["seconds_per_step"],
                                                                                          rel=1e-3)
            assert side["peak_memory_mb"] > side["rss_before_model_mb"] > 0
        # the ratios are rounded to 3 decimals: a small ratio is off by up to 5e-4, more than 2e-3 of it
        assert ratios["images_per_s"] == pytest.approx(original["seconds_per_step"] / ours["seconds_per_step"],
                                                       rel=2e-3, abs=6e-4)
        assert ratios["peak_memory"] == pytest.approx(ours["peak_memory_mb"] / original["peak_memory_mb"], rel=2e-3,
                                                      abs=6e-4)
        assert ratios["peak_memory_less_rss_before_model"] == pytest.approx(
            (ours["peak_memory_mb"] - ours["rss_before_model_mb"])
            / (original["peak_memory_mb"] - original["rss_before_model_mb"]), rel=2e-3, abs=6e-4)
        assert all(math.isfinite(v) and v > 0 for k, v in ratios.items() if k != "per_round")
        projected = report["projected_search"][name]
        for side in ("ours", "original"):
            hours = 50 * 391 * 64 / result[side]["images_per_s"] / 3600
            assert projected[side]["hours"] == pytest.approx(hours, rel=1e-3, abs=0.01)


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    if torch.cuda.is_available():
        return      # on a GPU machine the script runs for minutes: bench/gpu_check.sh is run there by hand
    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", "bench/gpu_check.sh", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "CUDA is absent" in done.stdout
    assert json.loads(out.read_text()) == {"cuda": False, "skipped": "CUDA is absent"}
