"""Cost accounting: cost.json of a run, charged per epoch, exact across --resume."""
import json
import shutil
import time

import pytest
import torch

import run_cost
from cost_file import COST_FILE, CostError, device_label, load_run_charges
from run_cost import RunCost
from scripts import run_script

CPU = torch.device("cpu")
TINY = ["--arch", "DARTS_V2", "--dataset", "digits", "--init_channels", "4", "--layers", "3", "--batch_size", "256",
        "--valid_portion", "0.9", "--report_freq", "0"]      # 144 training images: evaluation costs little


def cost_of(run):
    return json.loads((run / COST_FILE).read_text())


def charged_epochs(data):
    return [(e["epoch"], e["phase"]) for s in data["sessions"] for e in s["epochs"]]


def test_charges_add_up_to_the_totals_in_device_hours(tmp_path):
    cost = RunCost(CPU, world_size=2, seed=7, phase="search")
    time.sleep(0.05)                      # set-up time belongs to the first epoch
    cost.charge(tmp_path, 1)
    cost.phase = "selection"
    cost.charge(tmp_path, 1)
    data = cost_of(tmp_path)
    [session] = data["sessions"]
    seconds = [e["seconds"] for e in session["epochs"]]
    assert seconds[0] >= 0.05
    assert data["seed"] == 7 and session["device_count"] == 2 and session["device_type"] == "cpu"
    assert session["device_name"] == run_cost.cpu_name() and session["versions"]["torch"] == torch.__version__
    assert data["wall_seconds"] == pytest.approx(sum(seconds))
    assert data["device_hours"] == pytest.approx(sum(seconds) * 2 / 3600)
    assert data["phases"]["search"]["device_hours"] == pytest.approx(seconds[0] * 2 / 3600)
    assert data["phases"]["selection"]["epochs"] == 1
    label = device_label("cpu", run_cost.cpu_name())
    assert label.startswith("CPU (") and data["device_hours_by_device"] == {label: pytest.approx(data["device_hours"])}
    charges = load_run_charges(tmp_path)
    assert sorted((c.phase, c.epochs, c.gpu) for c in charges) == [("search", 1, False), ("selection", 1, False)]


def test_a_resumed_session_drops_epochs_charged_after_the_checkpoint(tmp_path):
    first = RunCost(CPU, 1, 0, "training")
    for epoch in (1, 2, 3):               # as if the process died after charging epoch 3, checkpoint at 2
        first.charge(tmp_path, epoch)
    resumed = RunCost(CPU, 4, 0, "training")
    resumed.charge(tmp_path, 3)
    data = cost_of(tmp_path)
    assert charged_epochs(data) == [(1, "training"), (2, "training"), (3, "training")]
    assert [s["device_count"] for s in data["sessions"]] == [1, 4]
    kept = data["sessions"][0]["epochs"][:2] + data["sessions"][1]["epochs"]
    assert data["wall_seconds"] == pytest.approx(sum(e["seconds"] for e in kept))
    assert data["device_hours"] == pytest.approx((kept[0]["seconds"] + kept[1]["seconds"] + 4 * kept[2]["seconds"])
                                                 / 3600)


def test_a_session_resuming_the_search_drops_the_selection_a_lost_session_began(tmp_path):
    first = RunCost(CPU, 1, 0, "search")
    first.charge(tmp_path, 1)
    first.charge(tmp_path, 2)
    first.phase = "selection"
    first.charge(tmp_path, 1)
    RunCost(CPU, 1, 0, "search").charge(tmp_path, 2)        # resumed from the checkpoint of epoch 1
    assert charged_epochs(cost_of(tmp_path)) == [(1, "search"), (2, "search")]
    resumed = RunCost(CPU, 1, 0, "selection")               # resumed after the search's last checkpoint
    resumed.charge(tmp_path, 1)
    assert charged_epochs(cost_of(tmp_path)) == [(1, "search"), (2, "search"), (1, "selection")]
    assert [len(s["epochs"]) for s in cost_of(tmp_path)["sessions"]] == [1, 1, 1]


def test_a_run_without_cost_file_has_no_charges_and_a_bad_one_is_one_sentence(tmp_path):
    assert load_run_charges(tmp_path) is None
    (tmp_path / COST_FILE).write_text('{"sessions": [{"epochs": [{"epoch": 1}]}]}')
    with pytest.raises(CostError, match="is not a cost record written by RunCost"):
        load_run_charges(tmp_path)
    with pytest.raises(CostError, match="is not a cost record"):
        RunCost(CPU, 1, 0, "training").charge(tmp_path, 1)
    with pytest.raises(ValueError, match="unknown phase"):
        RunCost(CPU, 1, 0, "evaluation").charge(tmp_path, 1)


def test_train_py_cost_survives_resume_and_a_lost_epoch_is_counted_once(tmp_path):
    env = {"DARTS_LOGS_DIR": str(tmp_path / "logs")}
    done = run_script("cnn/train.py", *TINY, "--epochs", "3", "--stop_epoch", "1", "--seed", "5", env=env)
    assert done.returncode == 0, done.stderr
    [run] = list((tmp_path / "logs" / "eval").iterdir())
    assert charged_epochs(cost_of(run)) == [(1, "training")]
    checkpoint_1 = tmp_path / "checkpoint_1.pt"
    shutil.copy(run / "checkpoint.pt", checkpoint_1)
    done = run_script("cnn/train.py", "--resume", run, "--stop_epoch", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert charged_epochs(cost_of(run)) == [(1, "training"), (2, "training")]
    shutil.copy(checkpoint_1, run / "checkpoint.pt")      # epoch 2 lost: a crash before its checkpoint
    done = run_script("cnn/train.py", "--resume", run, env=env)
    assert done.returncode == 0, done.stderr
    data = cost_of(run)
    assert [[e["epoch"] for e in s["epochs"]] for s in data["sessions"]] == [[1], [2, 3]]
    assert data["seed"] == 5 and data["phases"]["training"]["epochs"] == 3
    seconds = [e["seconds"] for s in data["sessions"] for e in s["epochs"]]
    assert data["wall_seconds"] == pytest.approx(sum(seconds))
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 3
    # the epochs' wall time, as results.json counts it (training and testing only), fits inside the charges
    assert results["wall_seconds"] <= data["wall_seconds"]


def test_a_selection_run_is_charged_to_selection(tmp_path):
    env = {"DARTS_LOGS_DIR": str(tmp_path / "logs")}
    done = run_script("cnn/train.py", *TINY, "--epochs", "1", "--selection_run", env=env)
    assert done.returncode == 0, done.stderr
    [run] = list((tmp_path / "logs" / "eval").iterdir())
    assert charged_epochs(cost_of(run)) == [(1, "selection")]
    assert json.loads((run / "args.json").read_text())["numpy"]
