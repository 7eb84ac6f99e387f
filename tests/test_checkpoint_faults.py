"""Checkpoints under faults: a full disk, NaN weights, hand-made and malicious files."""
import os
from pathlib import Path

import pytest
import torch

from checkpoint import CheckpointError, save_checkpoint
from scripts import assert_one_sentence_error, run_script
from test_bad_input import one_sentence

TINY = ["--dataset", "digits", "--init_channels", "4", "--layers", "3", "--batch_size", "256", "--workers", "0",
        "--valid_portion", "0.9"]       # 144 training images: evaluation costs little


def test_a_full_disk_is_one_sentence_and_the_old_checkpoints_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("DARTS_LOGS_DIR", str(tmp_path / "logs"))
    # --histogram_freq 0 (no weight histograms; --report_freq 0 then) once crashed after the first epoch
    first = run_script("cnn/train.py", *TINY, "--epochs", "3", "--stop_epoch", "1", "--histogram_freq", "0")
    assert first.returncode == 0
    run = next((tmp_path / "logs" / "eval").iterdir())
    before = {p.name: p.read_bytes() for p in run.glob("*.pt")}
    limit = min(len(data) for data in before.values()) // 2      # as a full disk: the write of either fails
    done = run_script("tests/patched_script.py", "--file_size_limit", str(limit), "--", "cnn/train.py",
                      "--resume", str(run))
    assert_one_sentence_error(done, f"writing {run}", "failed (File too large)", "MiB free on its disk",
                              "is unchanged")
    assert {p.name: p.read_bytes() for p in run.glob("*.pt")} == before
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == []


def test_checkpoints_get_the_permissions_of_other_files(tmp_path):
    previous = os.umask(0o027)
    try:
        save_checkpoint({"w": torch.ones(2)}, tmp_path / "a.pt")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o640


def test_a_non_finite_state_is_never_written(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"entry optimizer\.state\.0\.momentum_buffer is not finite"):
        save_checkpoint({"model": {"w": torch.ones(2)},
                         "optimizer": {"state": {0: {"momentum_buffer": torch.tensor([1.0, float("nan")])}}}}, path)
    with pytest.raises(CheckpointError, match=r"entry scores\.test_loss is not finite"):
        save_checkpoint({"model": {"w": torch.ones(2)}, "scores": {"test_loss": float("inf")}}, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


class Payload:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def test_a_malicious_checkpoint_is_refused_with_the_real_reason(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    message = one_sentence(capsys, "evaluate_model", "--model_path", str(path), "--no_accuracy")
    assert "posix.system" in message and "weights_only" not in message
    torch.save({"model": {"w": torch.zeros(1)}, "hook": Path("x")}, path)
    message = one_sentence(capsys, "evaluate_model", "--model_path", str(path), "--no_accuracy")
    assert "Unsupported global: GLOBAL pathlib.PosixPath" in message and "weights_only" not in message


def test_hand_made_checkpoints_are_one_sentence(tmp_path, capsys):
    path = tmp_path / "hand.pt"
    torch.save({"kind": "train", "model": {"w": torch.zeros(1)}}, path)
    assert f"{path} lacks args" in one_sentence(capsys, "train", "--resume", str(path))
    torch.save({"kind": "search", "args": {}, "model": {}}, path)
    assert "lacks spec, optimizer" in one_sentence(capsys, "train_search", "--resume", str(path))
    torch.save({"model": {"w": torch.zeros(1)}, "spec": {"genotype": "x"}}, path)
    message = one_sentence(capsys, "evaluate_model", "--model_path", str(path), "--no_accuracy")
    assert "holds a 'spec' this version cannot read (KeyError: 'arch_name')" in message


def test_a_resumed_run_refuses_flags_it_would_ignore(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    required = {key: {} for key in ("model", "optimizer", "scheduler", "scaler", "best")}
    torch.save({"kind": "train", "args": {"epochs": 2, "learning_rate": 0.1}, **required, "epoch": 2,
                "elapsed": 1.0}, path)
    message = one_sentence(capsys, "train", "--resume", str(tmp_path), "--epochs", "5", "--learning_rate", "0.1",
                           "--cutout", "--report_freq", "3")
    # the run's own value (--learning_rate 0.1) and an overridable flag (--report_freq) pass; the rest is named
    assert f"--resume continues {tmp_path} with its own arguments, so --epochs 5, --cutout cannot apply" \
        in message and "only --device, --workers, --report_freq" in message


def test_each_evaluate_script_points_to_the_other_for_the_other_kind_of_network(tmp_path, capsys):
    language, image = tmp_path / "lm.pt", tmp_path / "cnn.pt"
    torch.save({"kind": "lm_model", "model": {"encoder.weight": torch.zeros(3, 2)}}, language)
    torch.save({"kind": "model", "model": {"stem.0.weight": torch.zeros(1)}}, image)
    assert "holds a language model: evaluate it with rnn/evaluate_model.py" in \
        one_sentence(capsys, "evaluate_model", "--model_path", str(language), "--no_accuracy")
    assert_one_sentence_error(run_script("rnn/evaluate_model.py", "--model_path", str(image), "--data", "pydoc"),
                              "holds an image network: evaluate it with cnn/evaluate_model.py")
