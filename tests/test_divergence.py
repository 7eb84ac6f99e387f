"""A diverging run stops at the first NaN or inf with one sentence and leaves only finite files."""
import json
import math
from pathlib import Path

import pytest
import torch

import run_dir
from scripts import assert_one_sentence_error, run_script
from runtime import DivergenceError, DivergenceWatch

TINY = ["--dataset", "digits", "--init_channels", "4", "--layers", "3", "--batch_size", "256", "--workers", "0"]


@pytest.fixture
def logs(tmp_path, monkeypatch):
    root = tmp_path / "logs"
    monkeypatch.setenv("DARTS_LOGS_DIR", str(root))
    return root


def assert_every_tensor_finite(folder: Path) -> None:
    for path in folder.rglob("*.pt"):
        state = torch.load(path, weights_only=True)
        stack = [state]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, (list, tuple)):
                stack.extend(value)
            elif isinstance(value, torch.Tensor) and value.is_floating_point():
                assert value.isfinite().all(), path
            elif isinstance(value, float):
                assert math.isfinite(value), path


def test_the_watch_names_the_first_non_finite_step():
    watch = DivergenceWatch(torch.device("cpu"), epoch=3)
    for loss in [1.0, 2.0, float("inf"), float("nan")]:
        watch.observe(torch.tensor(loss), torch.tensor(0.5))
    with pytest.raises(DivergenceError, match="epoch 3, step 3: the loss became inf; lower --learning_rate"):
        watch.check()
    fine = DivergenceWatch(torch.device("cpu"), epoch=1)
    fine.observe(torch.tensor(1e30))
    fine.check()


def test_a_diverging_run_stops_with_one_sentence_and_writes_nothing_non_finite(logs):
    done = run_script("cnn/train.py", *TINY, "--epochs", "2", "--learning_rate", "1e6", "--batch_size", "32",
                      "--report_freq", "2")
    assert_one_sentence_error(done, "training diverged at epoch 1, step", "lower --learning_rate", "--grad_clip")
    run = next((logs / "eval").iterdir())
    assert not (run / "checkpoint.pt").exists() and not (run / "model_best.pt").exists()
    assert_every_tensor_finite(run)
    # DARTS's log lines every --report_freq steps; the first after the NaN stopped the run, not the epoch's end
    reports = [line.split("train ")[1][:3] for line in (run / "log.txt").read_text().splitlines() if " train 0" in line]
    diverged_at = int(done.stderr.split("step ")[1].split(":")[0])
    assert reports and int(reports[-1]) < diverged_at < 12, (reports, diverged_at)


def test_a_resumed_run_that_diverges_keeps_its_good_checkpoints(logs):
    # epoch 1 at lr 0.025, epoch 2 at 0.025 * 1e8: the loss becomes NaN in epoch 2
    schedule = ["--epochs", "3", "--lr_schedule", "step", "--gamma", "1e8"]
    assert run_script("cnn/train.py", *TINY, *schedule, "--stop_epoch", "1").returncode == 0
    run = next((logs / "eval").iterdir())
    before = {p.name: p.read_bytes() for p in run.glob("*.pt")} | {"results.json": (run / "results.json").read_bytes()}
    done = run_script("cnn/train.py", "--resume", str(run))
    assert_one_sentence_error(done, "training diverged at epoch 2, step")
    assert {name: (run / name).read_bytes() for name in before} == before
    assert_every_tensor_finite(run)
    assert json.loads((run / "results.json").read_text())["epochs"] == 1


def test_a_diverging_search_writes_no_genotype(logs, tmp_path):
    genotypes = tmp_path / "genotypes"
    genotypes.mkdir()
    done = run_script("tests/patched_script.py", "--genotypes_to", str(genotypes), "--", "cnn/train_search.py",
                      "--dataset", "digits", "--init_channels", "4", "--layers", "3", "--steps", "2",
                      "--multiplier", "2", "--batch_size", "16", "--epochs", "1", "--max_steps", "4",
                      "--report_freq", "2", "--learning_rate", "1e8", "--genotype_name", "diverged")
    assert_one_sentence_error(done, "training diverged", "epoch 1", "--arch_learning_rate")
    assert not list(genotypes.iterdir())
    assert_every_tensor_finite(logs)


def test_results_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        run_dir.write_json(tmp_path / "results.json", {"loss": float("nan")})
    assert not (tmp_path / "results.json").exists()
