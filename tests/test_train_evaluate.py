"""train.py and evaluate_model.py end to end on tiny data in the real on-disk formats."""
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

import scripts
from data import DataError
import run_dir
import train
from scripts import assert_one_sentence_error
from tiny_datasets import make_cifar10, make_cifar10_1, make_cifar100, make_imagefolder

REPO = Path(__file__).resolve().parent.parent
TINY = ["--init_channels", "4", "--layers", "3", "--batch_size", "8", "--workers", "0", "--epochs", "1"]
# 144 of digits' 1437 training images train, the rest are held out (evaluation costs little): for runs whose
# assertions are about schedules, resuming, loading or building, not about what the network learns
FEW_TRAINING_IMAGES = ["--valid_portion", "0.9"]


@pytest.fixture
def logs(tmp_path, monkeypatch):
    """Run folders go to a temporary logs root, in process and in subprocesses."""
    root = tmp_path / "logs"
    monkeypatch.setattr(run_dir, "LOGS_DIR", root)
    monkeypatch.setenv("DARTS_LOGS_DIR", str(root))
    return root


def only_run(logs: Path) -> Path:
    runs = sorted((logs / "eval").iterdir())
    assert len(runs) == 1
    return runs[0]


def run_script(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return scripts.run_script(f"cnn/{script}", *args, cwd=cwd)


def train_ok(*args: str, cwd: Path = REPO) -> None:
    """cnn/train.py in a child process (a native crash fails this test only); it must exit 0."""
    scripts.run_ok("cnn/train.py", *args, cwd=cwd)


def evaluate_output(*args: str, cwd: Path = REPO) -> str:
    return scripts.run_ok("cnn/evaluate_model.py", *args, cwd=cwd).stdout


def test_a_last_batch_of_one_image_is_skipped_with_the_auxiliary_head(tmp_path, logs):
    # 9 images in batches of 8: the auxiliary head's last BatchNorm cannot train on the ninth alone
    data = make_cifar10(tmp_path / "data", n_train=9, n_test=4)
    train_ok("--arch", "DARTS_V2", "--dataset", "cifar10", "--data", str(data), "--auxiliary", "--init_channels",
             "4", "--layers", "3", "--batch_size", "8", "--epochs", "2", "--save", "odd")
    run = only_run(logs)
    assert "each epoch's last batch holds one image, which the auxiliary head cannot train on: it is skipped" in \
        (run / "log.txt").read_text()
    final = json.loads((run / "results.json").read_text())["final"]
    assert final["train_loss"] > 0 and 0.0 <= final["test_top1"] <= 100.0


def test_cifar10_with_cifar10_1_trains_and_evaluates(tmp_path, logs):
    data = make_cifar10(tmp_path / "data", n_train=16, n_test=8)
    make_cifar10_1(data, n=8)
    train_ok("--arch", "DARTS_V2", "--dataset", "cifar10", "--data", str(data), "--auxiliary", *TINY,
             "--save", "c10")
    run = only_run(logs)
    for name in ["log.txt", "command.txt", "args.json", "checkpoint.pt", "model_best.pt", "results.json"]:
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 1 and "cifar10_1_top1" in results["final"]
    log = (run / "log.txt").read_text()
    assert "param size" in log and "cifar10.1 acc" in log
    assert json.loads((run / "args.json").read_text())["args"]["arch"] == "DARTS_V2"

    out = evaluate_output("--model_path", str(run / "model_best.pt"), "--data", str(data))
    top1 = float(re.search(r"cifar10 test top-1 ([\d.]+)%", out).group(1))
    assert results["best"]["epoch"] == 1 and results["best"]["selected_on"] == "test"
    assert top1 == pytest.approx(results["best"]["test_top1"], abs=0.005)
    assert re.search(r"cifar10\.1 top-1 [\d.]+% .*\(8 images\)", out)
    params = float(re.search(r"params ([\d.]+)M", out).group(1))
    assert params * 1e6 == pytest.approx(results["params"], abs=1)


def test_cifar100_trains_and_evaluates(tmp_path, logs):
    data = make_cifar100(tmp_path / "data", n_train=16, n_test=8)
    train_ok("--arch", "PC_DARTS_cifar", "--dataset", "cifar100", "--data", str(data), *TINY)
    run = only_run(logs)
    state = torch.load(run / "model_best.pt", weights_only=True)
    assert state["model"]["classifier.weight"].shape[0] == 100
    out = evaluate_output("--model_path", str(run / "model_best.pt"), "--data", str(data))
    assert "cifar100 test top-1" in out and "(8 images)" in out


def test_imagefolder_imagenet_trains_and_evaluates(tmp_path, logs):
    data = make_imagefolder(tmp_path / "imagenet", classes=3, per_class=2, size=64)
    train_ok("--arch", "DARTS_V2", "--dataset", "imagenet", "--data", str(data), "--init_channels", "8",
             "--layers", "3", "--batch_size", "4", "--workers", "0", "--epochs", "1", "--label_smooth", "0.1")
    run = only_run(logs)
    assert "imagenet stem" in (run / "log.txt").read_text()
    out = evaluate_output("--model_path", str(run / "model_best.pt"), "--data", str(data))
    assert "3 classes" in out and "imagenet test top-1" in out and "at 224x224" in out


def test_nested_genotype_trains_with_its_own_cell_count(tmp_path, logs):
    train_ok("--arch", "D-DARTS_threshold_sparse_cifar10_0.85_50", "--dataset", "digits",
             "--init_channels", "4", "--batch_size", "256", "--epochs", "1", *FEW_TRAINING_IMAGES)
    run = only_run(logs)
    assert "layers=per-cell" in (run / "log.txt").read_text()
    out = evaluate_output("--model_path", str(run / "model_best.pt"))
    assert "digits test top-1" in out and "(360 images)" in out


def test_resume_continues_exactly(tmp_path, logs):
    common = ["--arch", "DARTS_V2", "--dataset", "digits", "--init_channels", "4", "--layers", "3",
              "--batch_size", "128", "--epochs", "2", "--cutout", "--cutout_length", "4", "--seed", "3",
              *FEW_TRAINING_IMAGES]
    train_ok(*common, "--save", "straight")
    train_ok(*common, "--save", "stopped", "--stop_epoch", "1")
    stopped = next((logs / "eval").glob("stopped-*"))
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["epoch"] == 1
    train_ok("--resume", str(stopped))
    straight = next((logs / "eval").glob("straight-*"))
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scores"] == b["scores"]
    assert (stopped / "command.txt").read_text().count("\n") == 2


def test_unknown_genotype_is_one_sentence_with_close_names(logs):
    done = run_script("train.py", "--arch", "DARTS_V3", "--dataset", "digits")
    assert_one_sentence_error(done, "DARTS_V2")
    assert not logs.exists()


def test_missing_imagenet_is_one_sentence(tmp_path, logs):
    done = run_script("train.py", "--dataset", "imagenet", "--data", str(tmp_path / "nowhere"))
    assert_one_sentence_error(done, "train")
    assert not logs.exists()


def test_missing_cifar_says_where_to_put_the_files(tmp_path, logs, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        train.main(["--dataset", "cifar10", "--data", str(tmp_path / "empty"), *TINY])


def test_auxiliary_head_on_digits_is_refused(logs):
    done = run_script("train.py", "--dataset", "digits", "--auxiliary", *TINY)
    assert_one_sentence_error(done, "--auxiliary")


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A tiny DARTS_V2 trained on digits, by train.py run from inside cnn/ as DARTS users do."""
    root = tmp_path_factory.mktemp("ckpt")
    scripts.run_ok("cnn/train.py", "--arch", "DARTS_V2", "--dataset", "digits", *TINY, "--batch_size", "256",
                   *FEW_TRAINING_IMAGES, cwd=REPO / "cnn", env={"DARTS_LOGS_DIR": str(root)})
    return next(root.glob("eval/*/model_best.pt"))


def test_checkpoint_of_another_architecture_is_one_sentence(digits_checkpoint):
    done = run_script("evaluate_model.py", "--arch", "DARTS_V1", "--model_path", str(digits_checkpoint),
                      "--init_channels", "4", "--layers", "3", "--dataset", "digits")
    assert_one_sentence_error(done, "another architecture")


def test_corrupt_and_unsafe_checkpoints_are_refused(tmp_path, digits_checkpoint):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(digits_checkpoint.read_bytes()[:1000])
    assert_one_sentence_error(run_script("evaluate_model.py", "--model_path", str(corrupt)), "not a readable")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": Path("x")}, unsafe)
    assert_one_sentence_error(run_script("evaluate_model.py", "--model_path", str(unsafe)), "not a readable")
    missing = run_script("evaluate_model.py", "--model_path", str(tmp_path / "nope.pt"))
    assert_one_sentence_error(missing, "does not exist")
    # a folder: a run folder without model_best.pt is named by that file; export's --model_path takes files only
    assert_one_sentence_error(run_script("evaluate_model.py", "--model_path", str(tmp_path)),
                              f"checkpoint {tmp_path / 'model_best.pt'} does not exist")
    assert_one_sentence_error(run_script("export_model.py", "--onnx", str(tmp_path / "x.onnx"), "--model_path",
                                         str(tmp_path)), f"{tmp_path} is a folder, not a checkpoint file")


def test_a_run_folder_evaluates_its_best_model(digits_checkpoint):
    by_file = evaluate_output("--model_path", str(digits_checkpoint), "--dataset", "digits")
    assert "digits test top-1" in by_file
    assert evaluate_output("--model_path", str(digits_checkpoint.parent), "--dataset", "digits") == by_file


def test_a_plain_darts_state_dict_evaluates_with_flags_from_inside_cnn(tmp_path, digits_checkpoint):
    weights = torch.load(digits_checkpoint, weights_only=True)["model"]
    plain = tmp_path / "weights.pt"
    torch.save(weights, plain)
    # the scripts run from inside cnn/ like DARTS's (the checkpoint was trained from there too)
    out = evaluate_output("--arch", "DARTS_V2", "--model_path", str(plain), "--init_channels", "4",
                          "--layers", "3", "--dataset", "digits", cwd=REPO / "cnn")
    assert "digits test top-1" in out
    assert "3 classes" not in out and "10 classes" in out


def test_cosine_power_schedule_runs_from_max_to_min_lr(logs):
    train_ok("--arch", "DARTS_V2", "--dataset", "digits", "--init_channels", "4", "--layers", "3",
             "--batch_size", "256", "--epochs", "3", *FEW_TRAINING_IMAGES, "--lr_schedule", "cosine_power",
             "--learning_rate", "0.1", "--learning_rate_min", "0.001")
    run = only_run(logs)
    log = (run / "log.txt").read_text()
    assert "epoch 1/3 lr 1.000e-01" in log
    assert json.loads((run / "results.json").read_text())["final"]["lr"] == pytest.approx(0.001)


@pytest.mark.parametrize("device", ["foo", "cuda:7" if not torch.cuda.is_available() else "foo"])
def test_a_bad_device_is_one_sentence(logs, device):
    assert_one_sentence_error(run_script("train.py", "--dataset", "digits", "--device", device), "--device")


def test_a_checkpoint_scored_on_another_dataset_is_refused(tmp_path, digits_checkpoint):
    data = make_imagefolder(tmp_path / "imagenet", classes=3, per_class=1, size=32)
    done = run_script("evaluate_model.py", "--model_path", str(digits_checkpoint), "--dataset", "imagenet",
                      "--data", str(data))
    assert_one_sentence_error(done, "10-class", "--dataset imagenet")


def test_load_starts_from_the_weights_with_a_fresh_schedule(logs, digits_checkpoint):
    train_ok("--arch", "DARTS_V2", "--dataset", "digits", *TINY, "--batch_size", "256", "--epochs", "2",
             *FEW_TRAINING_IMAGES, "--load", str(digits_checkpoint.parent), "--learning_rate", "0", "--save", "loaded")
    run = only_run(logs)
    assert f"started from the weights of {digits_checkpoint.parent}" in (run / "log.txt").read_text()
    assert "epoch 1/2 lr 0.000e+00" in (run / "log.txt").read_text()      # its own schedule, from epoch 1
    loaded = torch.load(run / "checkpoint.pt", weights_only=True)
    source = torch.load(digits_checkpoint, weights_only=True)
    # a zero learning rate leaves the loaded parameters as they were (BatchNorm statistics still move)
    parameters = [k for k in source["model"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(parameters) > 20
    for key in parameters:
        assert torch.equal(loaded["model"][key], source["model"][key]), key
    assert loaded["optimizer"]["state"] and loaded["epoch"] == 2


def test_load_of_another_architecture_and_load_with_resume_are_refused(logs, digits_checkpoint):
    done = run_script("train.py", "--arch", "DARTS_V1", "--dataset", "digits", *TINY, "--load", str(digits_checkpoint))
    assert_one_sentence_error(done, "--load", "another architecture")
    done = run_script("train.py", "--dataset", "digits", "--load", "a.pt", "--resume", "b")
    assert done.returncode == 2 and "give only one of them" in done.stderr


def test_step_schedule_decays_by_gamma_every_period(logs):
    train_ok("--arch", "DARTS_V2", "--dataset", "digits", *TINY, "--batch_size", "256", "--epochs", "3",
             *FEW_TRAINING_IMAGES, "--lr_schedule", "step", "--learning_rate", "0.1", "--gamma", "0.5", "--decay_period", "2")
    log = (only_run(logs) / "log.txt").read_text()
    assert "epoch 1/3 lr 1.000e-01" in log and "epoch 2/3 lr 1.000e-01" in log and "epoch 3/3 lr 5.000e-02" in log


def test_a_multi_channel_path_trains_and_evaluates(logs):
    train_ok("--multi_channel", "--arch", "MULTI_CHANNEL_HANDMADE_PATH", "--dataset", "digits", "--epochs", "1",
             "--batch_size", "256", *FEW_TRAINING_IMAGES)
    run = only_run(logs)
    result = json.loads((run / "results.json").read_text())
    assert result["arch"] == "MULTI_CHANNEL_HANDMADE_PATH"
    assert result["params"] == 1_035_882      # as in test_multichannel: digits has CIFAR-10's 10 classes
    out = evaluate_output("--model_path", str(run / "model_best.pt"))
    assert "multi-channel path MULTI_CHANNEL_HANDMADE_PATH | widths 32 > 32 > 64" in out
    assert f"digits test top-1 {result['best']['test_top1']:.2f}%" in out


@pytest.mark.parametrize("flags, message", [
    (["--multi_channel"], "--multi_channel needs --arch"),
    (["--multi_channel", "--arch", "MULTI_CHANNEL_MAX_W_PATH", "--init_channels", "8"], "drop --init_channels"),
    (["--multi_channel", "--arch", "NO_SUCH_PATH"], "unknown multi-channel path 'NO_SUCH_PATH'"),
])
def test_multi_channel_flags_are_checked(logs, flags, message):
    done = run_script("train.py", "--dataset", "digits", *flags)
    assert done.returncode == 2 and message in done.stderr


def test_data_on_device_trains_digits_with_cutout(logs):
    train_ok("--arch", "DARTS_V2", "--dataset", "digits", "--init_channels", "4", "--layers", "3",
             "--batch_size", "256", "--epochs", "1", "--cutout", "--cutout_length", "4", "--data_on_device")
    final = json.loads((only_run(logs) / "results.json").read_text())["final"]
    assert 0.0 <= final["test_top1"] <= 100.0 and final["train_loss"] > 0 and final["train_top1"] > 0.0


def test_data_on_device_with_auto_augment_is_one_sentence(logs):
    assert_one_sentence_error(run_script("train.py", "--dataset", "digits", "--data_on_device", "--auto_aug"),
                              "--data_on_device", "--auto_aug")
