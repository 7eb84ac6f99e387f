"""summarize_results.py on a study the scripts themselves made on digits (tiny networks, 2 epochs):
two searches with different seeds, each searched genotype trained twice, and the two genotypes of
one random search (--method random --samples 2) trained once each. The acceptance tests check both variance columns, the GPU-day total and the plots
against the run folders; the others the per-genotype tables, CSV, sorting, skipping and errors.
visualize.py --run is checked here too, on the study's search runs."""
import csv
import json
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import summarize_results
from cost_file import GPU_TYPES, device_label
from scripts import run_script
from summarize_results import SummaryError

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "cnn" / "summarize_results.py"
SEARCH = ["--dataset", "digits", "--init_channels", "4", "--layers", "3", "--steps", "2", "--multiplier", "2",
          "--epochs", "2", "--max_steps", "2", "--batch_size", "32", "--report_freq", "0"]
TRAIN = ["--dataset", "digits", "--init_channels", "4", "--layers", "3", "--batch_size", "256", "--epochs", "2",
         "--valid_portion", "0.9", "--report_freq", "0"]      # 144 training images: evaluation costs little
SEARCH_SEEDS = (1, 2)
RANDOM_SEED = 11
RANDOM_GENOTYPES = ["random_0", "random_1"]   # train_search.py --method random --samples 2 --genotype_name random
TRAINING_SEEDS = (0, 1)
GENOTYPES = [*RANDOM_GENOTYPES, "searched_1", "searched_2"]


def run_each(jobs):
    """One after the other: the script server runs one child at a time, and answers in the order it was asked
    (two threads asking at once could each read the other's answer)."""
    for job, env in jobs.items():
        proc = run_script(*job, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """logs/search (2 DARTS searches, 1 random search), logs/eval (6 trainings) and genotypes/ (the 4
    genotypes they use)."""
    root = tmp_path_factory.mktemp("study")
    env = {"DARTS_LOGS_DIR": str(root / "logs")}
    genotypes = root / "genotypes"
    genotypes.mkdir()
    searches = [(*SEARCH, "--seed", seed, "--genotype_name", f"searched_{seed}") for seed in SEARCH_SEEDS]
    searches.append((*SEARCH, "--method", "random", "--samples", "2", "--seed", RANDOM_SEED, "--genotype_name", "random"))
    run_each({("tests/patched_script.py", "--genotypes_to", genotypes, "--", "cnn/train_search.py", *flags): env
                 for flags in searches})
    trainings = {("cnn/train.py", *TRAIN, "--arch", genotypes / f"searched_{seed}.txt", "--seed", t,
                  "--save", f"searched_{seed}_t{t}"): env for seed in SEARCH_SEEDS for t in TRAINING_SEEDS}
    trainings.update({("cnn/train.py", *TRAIN, "--arch", genotypes / f"{name}.txt", "--seed", "0", "--save", name): env
                      for name in RANDOM_GENOTYPES})
    run_each(trainings)
    return root


def search_folders(study) -> dict[tuple[str, int], Path]:
    """The study's search run folders by (method, seed), from their args.json."""
    found = {}
    for folder in (study / "logs" / "search").iterdir():
        args = json.loads((folder / "args.json").read_text())["args"]
        found[(args["method"], args["seed"])] = folder
    return found


@pytest.fixture(scope="module")
def eval_dir(study):
    return study / "logs" / "eval"


def results_of(eval_dir, arch):
    found = []
    for folder in sorted(eval_dir.iterdir()):
        data = json.loads((folder / "results.json").read_text())
        if data["arch"] == arch:
            found.append((folder, data))
    return found


def summarize(args, capsys):
    summarize_results.main([str(a) for a in args])
    captured = capsys.readouterr()
    return captured.out, captured.err


def block(out, title_start):
    """The lines of the one table whose title starts with `title_start`."""
    matching = [b.splitlines() for b in out.split("\n\n") if b.startswith(title_start)]
    assert len(matching) == 1, out
    return matching[0]


def test_one_table_per_genotype_with_mean_and_sample_std(eval_dir, capsys):
    out, err = summarize(sorted(eval_dir.iterdir()), capsys)
    assert err == ""
    v2, v1 = block(out, "searched_1 on digits: 2 runs"), block(out, "random_0 on digits: 1 run")
    v2_results = results_of(eval_dir, "searched_1")
    finals = [d["final"]["test_top1"] for _, d in v2_results]
    bests = [d["best"]["test_top1"] for _, d in v2_results]
    for folder, data in v2_results:
        row = next(line for line in v2 if line.startswith(folder.name))
        assert f"{data['final']['test_top1']:.2f}" in row and f"{data['params'] / 1e6:.4g}" in row
    footer = next(line for line in v2 if line.startswith("mean ± std")).split()
    expected_final = f"{statistics.mean(finals):.2f} ± {statistics.stdev(finals):.2f}"
    expected_best = f"{statistics.mean(bests):.2f} ± {statistics.stdev(bests):.2f}"
    assert " ".join(footer[4:7]) == expected_final and " ".join(footer[7:10]) == expected_best
    [(_, v1_data)] = results_of(eval_dir, "random_0")
    v1_footer = next(line for line in v1 if line.startswith("mean ± std"))
    assert f"{v1_data['final']['test_top1']:.2f} ± -" in v1_footer
    assert "CIFAR-10.1" not in out  # digits runs have no CIFAR-10.1 scores


def test_csv_round_trips_with_the_csv_module(eval_dir, tmp_path, capsys):
    csv_path = tmp_path / "out" / "summary.csv"
    out, _ = summarize([eval_dir / "*", "--csv", csv_path], capsys)  # a quoted glob, expanded by the script
    assert f"wrote {csv_path}" in out
    with open(csv_path, newline="") as f:
        rows = {(r["arch"], r["dataset"]): r for r in csv.DictReader(f)}
    assert set(rows) == {(name, "digits") for name in GENOTYPES}
    for arch in GENOTYPES:
        runs = results_of(eval_dir, arch)
        row = rows[(arch, "digits")]
        finals = [d["final"]["test_top1"] for _, d in runs]
        bests = [d["best"]["test_top1"] for _, d in runs]
        walls = [d["wall_seconds"] for _, d in runs]
        assert int(row["runs"]) == len(runs)
        assert float(row["final_test_top1_mean"]) == statistics.fmean(finals)
        assert float(row["best_test_top1_mean"]) == statistics.fmean(bests)
        assert float(row["wall_seconds_mean"]) == statistics.fmean(walls)
        assert float(row["params_m"]) == runs[0][1]["params"] / 1e6
        assert float(row["macs_m"]) == runs[0][1]["macs"] / 1e6
        assert row["epochs"] == "2" and row["cifar10_1_top1_runs"] == "0" and row["cifar10_1_top1_mean"] == ""
        assert row["run_folders"].split(";") == [str(folder) for folder, _ in runs]
        if len(runs) > 1:
            assert float(row["final_test_top1_std"]) == statistics.stdev(finals)
            assert float(row["best_test_top1_std"]) == statistics.stdev(bests)
        else:
            assert row["final_test_top1_std"] == row["best_test_top1_std"] == ""


def test_parent_folders_are_searched_and_runs_count_once(eval_dir, capsys):
    one_run = sorted(eval_dir.iterdir())[0]
    out, _ = summarize([eval_dir.parent, one_run, one_run / "results.json"], capsys)
    assert "searched_1 on digits: 2 runs" in out and "random_0 on digits: 1 run" in out


def copy_run(eval_dir, arch, dest):
    folder = results_of(eval_dir, arch)[0][0]
    return Path(shutil.copytree(folder, dest / folder.name, ignore=shutil.ignore_patterns("*.pt", "tensorboard")))


def test_folders_without_results_are_listed_as_skipped(eval_dir, tmp_path, capsys):
    crashed = tmp_path / "crashed-20250101-000000"
    crashed.mkdir()
    (crashed / "log.txt").write_text("started\n")
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    out, err = summarize([*sorted(eval_dir.iterdir()), crashed, empty], capsys)
    assert err.splitlines() == [
        f"skipped {crashed}: no results.json (the run has not finished an epoch, or crashed before)",
        f"skipped {empty}: no results.json in it or below it"]
    assert "searched_1 on digits: 2 runs" in out


def test_incomplete_runs_are_skipped_unless_asked(eval_dir, tmp_path, capsys):
    run = copy_run(eval_dir, "random_0", tmp_path)
    info = json.loads((run / "args.json").read_text())
    info["args"]["epochs"] = 5  # as if stopped (--stop_epoch 2) before the last of 5 epochs
    (run / "args.json").write_text(json.dumps(info))
    with pytest.raises(SummaryError, match="nothing to summarise"):
        summarize([run], capsys)
    assert "incomplete, 2 of 5 epochs" in capsys.readouterr().err
    out, _ = summarize([run, "--include_incomplete"], capsys)
    assert " 2/5* " in out and "stopped before its last epoch" in out


def test_cifar10_1_column_when_runs_measured_it(eval_dir, tmp_path, capsys):
    # digits cannot measure CIFAR-10.1, so add the score train.py writes for CIFAR-10 runs to copies.
    values = [81.5, 83.0]
    for i, value in enumerate(values):
        run = copy_run(eval_dir, "searched_1", tmp_path / str(i))
        data = json.loads((run / "results.json").read_text())
        data["final"]["cifar10_1_top1"] = value
        (run / "results.json").write_text(json.dumps(data))
    out, _ = summarize([tmp_path / "*" / "*", "--csv", tmp_path / "s.csv"], capsys)
    table = block(out, "searched_1 on digits: 2 runs")
    assert "CIFAR-10.1 top-1" in table[1]
    footer = next(line for line in table if line.startswith("mean ± std"))
    assert f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" in footer
    with open(tmp_path / "s.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["cifar10_1_top1_runs"] == "2" and float(row["cifar10_1_top1_mean"]) == statistics.fmean(values)


def test_sort_and_group_by(eval_dir, capsys):
    out, _ = summarize([eval_dir, "--sort", "final"], capsys)
    titles = [b.splitlines()[0] for b in out.split("\n\n")]
    means = {a: statistics.fmean(d["final"]["test_top1"] for _, d in results_of(eval_dir, a))
             for a in GENOTYPES}
    assert titles[0].startswith(max(means, key=means.get))
    out, _ = summarize([eval_dir, "--group_by", "dataset"], capsys)
    assert out.startswith("any genotype on digits: 6 runs") and "note: these runs differ in params" in out
    with pytest.raises(SummaryError, match="--group_by takes"):
        summarize([eval_dir, "--group_by", "arch,seed"], capsys)


def run_cli(args, cwd=REPO):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def test_cli_from_repo_root_and_from_cnn(eval_dir):
    proc = run_cli([eval_dir / "*"])
    assert proc.returncode == 0, proc.stderr
    assert "searched_1 on digits: 2 runs" in proc.stdout
    proc = run_cli([os.path.relpath(eval_dir, REPO / "cnn")], cwd=REPO / "cnn")
    assert proc.returncode == 0 and "random_0 on digits: 1 run" in proc.stdout


def test_unreadable_json_is_one_sentence_naming_the_file(eval_dir, tmp_path):
    run = copy_run(eval_dir, "searched_1", tmp_path)
    (run / "results.json").write_text('{"arch": "searched_1", "final": {')
    proc = run_cli([run])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {run / 'results.json'} is not valid JSON")
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("argument, words", [("no_such_folder", "does not exist"), ("no_such_*", "matches no")])
def test_missing_paths_are_one_sentence(tmp_path, argument, words):
    proc = run_cli([tmp_path / argument])
    assert proc.returncode == 2 and words in proc.stderr and proc.stderr.count("\n") == 1


# ------------------------------------------------------------------------------- acceptance

def cost_files(study):
    return [json.loads(p.read_text()) for p in sorted((study / "logs").glob("*/*/cost.json"))]


@pytest.fixture(scope="module")
def report(study):
    """The summary printed, and the report folder, of summarize_results.py run on the whole logs/."""
    out = study / "report"
    done = run_script("cnn/summarize_results.py", study / "logs", "--out", out)
    assert done.returncode == 0, done.stderr
    return done.stdout, out


def row_of(lines, first_cell):
    [line] = [line for line in lines if line.startswith(first_cell + " ")]
    return line.split()


def expected_method(runs_by_genotype, names):
    """The numbers of cnn/study.py's docstring, from the results.json files."""
    per_search = [[d["final"]["test_top1"] for _, d in runs_by_genotype[n]] for n in names]
    means = [statistics.fmean(v) for v in per_search]
    df = sum(len(v) - 1 for v in per_search)
    pooled = math.sqrt(sum((len(v) - 1) * statistics.variance(v) for v in per_search if len(v) > 1) / df) if df else None
    return statistics.fmean(means), statistics.stdev(means), pooled


def test_both_variance_columns_match_the_run_folders(eval_dir, report):
    out, folder = report
    runs = {name: results_of(eval_dir, name) for name in GENOTYPES}
    searched = [f"searched_{s}" for s in SEARCH_SEEDS]
    methods = block(out, "Search methods")
    mean, across, pooled = expected_method(runs, searched)
    assert row_of(methods, "darts")[:8] == ["darts", "digits", "digits", "2", "4", f"{mean:.2f}", f"{across:.2f}",
                                            f"{pooled:.2f}"]
    mean, across, pooled = expected_method(runs, RANDOM_GENOTYPES)
    assert pooled is None
    assert row_of(methods, "random (baseline)")[2:10] == ["digits", "digits", "2", "2", f"{mean:.2f}", f"{across:.2f}",
                                                          "-", "0"]   # a random search trains nothing
    with open(folder / "methods.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    mean, across, pooled = expected_method(runs, searched)
    assert float(rows["darts"]["final_test_top1_mean"]) == pytest.approx(mean)
    assert float(rows["darts"]["std_across_searches"]) == pytest.approx(across)
    assert float(rows["darts"]["std_across_training_seeds"]) == pytest.approx(pooled)
    assert rows["darts"]["pooled_df"] == "2" and rows["random"]["baseline"] == "True"
    assert rows["random"]["std_across_training_seeds"] == ""


def test_trainings_are_grouped_by_the_search_run_that_made_their_genotype(study, eval_dir, report):
    out, folder = report
    runs = {name: results_of(eval_dir, name) for name in GENOTYPES}
    table = block(out, "Searches: darts, searched on digits, trained on digits: 2 searches, 4 trainings")
    by_method_seed = search_folders(study)
    darts_folders = [by_method_seed[("darts", seed)] for seed in SEARCH_SEEDS]
    random_folder = by_method_seed[("random", RANDOM_SEED)]
    for seed, search_folder in zip(SEARCH_SEEDS, darts_folders):
        finals = [d["final"]["test_top1"] for _, d in runs[f"searched_{seed}"]]
        cost = json.loads((search_folder / "cost.json").read_text())
        row = row_of(table, search_folder.name)
        assert row[1:4] == [str(seed), f"searched_{seed}", "2"]
        assert " ".join(row[4:7]) == f"{statistics.fmean(finals):.2f} ± {statistics.stdev(finals):.2f}"
        assert row[7] == f"{cost['device_hours']:.4g}"
        assert cost["phases"]["search"]["epochs"] == 2 and set(cost["phases"]) == {"search"}
    with open(folder / "searches.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["genotype"], r["trainings"]) for r in rows] == [
        ("darts", "searched_1", "2"), ("darts", "searched_2", "2"), ("random", "random_0", "1"),
        ("random", "random_1", "1")]
    assert rows[0]["search_folder"] == str(darts_folders[0])
    assert [(r["search_folder"], r["search_seed"], r["search_device_hours"]) for r in rows[2:]] == [
        (str(random_folder), str(RANDOM_SEED), "0")] * 2   # one random search wrote both genotypes
    random_table = block(out, "Searches: random (baseline), searched on digits, trained on digits: 2 searches, 2 trainings")
    for name in RANDOM_GENOTYPES:
        [(_, data)] = results_of(eval_dir, name)
        [row] = [line.split() for line in random_table if f" {name} " in line]
        assert row == [random_folder.name, str(RANDOM_SEED), name, "1", f"{data['final']['test_top1']:.2f}", "±", "-", "0"]
    assert not any("search run not found" in line for line in random_table)
    assert "origin: darts search on digits, seed 2, run " + darts_folders[1].name in block(out, "searched_2 on")
    assert f"origin: random search on digits, seed {RANDOM_SEED}, run {random_folder.name}" in block(out, "random_1 on")


def test_the_gpu_day_total_adds_up_every_cost_json(study, report):
    out, folder = report
    costs = cost_files(study)
    assert len(costs) == 2 + 6   # the random search trains nothing and writes no cost.json
    assert not (search_folders(study)[("random", RANDOM_SEED)] / "cost.json").exists()
    assert "not counted" not in out   # ... and its cost is zero, not unknown
    gpu = {"search": 0.0, "selection": 0.0, "training": 0.0}
    cpu = 0.0
    for cost in costs:
        for session in cost["sessions"]:
            for entry in session["epochs"]:
                days = entry["seconds"] * session["device_count"] / 3600 / 24
                if session["device_type"] in GPU_TYPES:
                    gpu[entry["phase"]] += days
                else:
                    cpu += days

    def amount(value):
        return "0" if value == 0 else f"{value:.4g}"
    [line] = [line for line in out.splitlines() if line.startswith("total GPU-days of the study: ")]
    expected = (f"total GPU-days of the study: {amount(sum(gpu.values()))} (search {amount(gpu['search'])} + "
                f"selection {amount(gpu['selection'])} + training {amount(gpu['training'])})")
    assert line == expected + (f"; on CPUs: {amount(cpu)} device-days" if cpu else "")
    with open(folder / "cost.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(float(r["device_days"]) for r in rows) == pytest.approx(sum(gpu.values()) + cpu)
    assert {r["phase"] for r in rows if float(r["device_days"]) > 0} == {"search", "training"}


def test_a_selection_run_counts_in_the_cost_and_not_in_the_accuracies(eval_dir, tmp_path, capsys):
    [(original, _), _] = results_of(eval_dir, "searched_1")
    copy = Path(shutil.copytree(original, tmp_path / "selection", ignore=shutil.ignore_patterns("*.pt")))
    cost = json.loads((copy / "cost.json").read_text())
    for session in cost["sessions"]:   # as train.py --selection_run charges it
        for entry in session["epochs"]:
            entry["phase"] = "selection"
    (copy / "cost.json").write_text(json.dumps(cost))
    out, _ = summarize([*sorted(eval_dir.iterdir()), copy], capsys)
    assert not [line for line in block(out, "searched_1 on digits: 2 runs") if line.startswith("selection")]
    assert "1 selection run (train.py --selection_run): counted here, left out of the accuracies." in out
    selection_days = sum(e["seconds"] * s["device_count"] for s in cost["sessions"] for e in s["epochs"]) / 3600 / 24
    label = device_label(cost["sessions"][0]["device_type"], cost["sessions"][0]["device_name"])
    [row] = [line for line in block(out, "Cost of the study") if line.startswith(label)]
    assert row[len(label):].split()[2] == f"{selection_days:.4g}"   # runs, search, selection, ...
    with pytest.raises(SummaryError, match="other than selection runs"):
        summarize([copy], capsys)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, path
    return struct.unpack(">II", data[16:24])


def test_the_report_folder_holds_markdown_csv_and_valid_pngs(study, report):
    out, folder = report
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["accuracy_per_epoch.png", "accuracy_vs_size.png", "cost.csv", "genotypes.csv", "methods.csv",
                     "searches.csv", "summary.md"]
    for png in folder.glob("*.png"):
        width, height = png_size(png)
        assert 200 <= width <= 5000 and 200 <= height <= 5000, (png, width, height)
    markdown = (folder / "summary.md").read_text()
    assert "### Search methods" in markdown and "| darts | digits | digits | 2 | 4 |" in markdown
    assert "total GPU-days of the study" in markdown
    with open(folder / "genotypes.csv", newline="") as f:
        assert sorted(r["arch"] for r in csv.DictReader(f)) == GENOTYPES


def test_per_epoch_accuracy_comes_from_each_runs_tensorboard_log(eval_dir):
    for name in GENOTYPES:
        for folder, data in results_of(eval_dir, name):
            curve = summarize_results.test_accuracy_per_epoch(folder)
            assert sorted(curve) == [1, 2]
            assert curve[2] == pytest.approx(data["final"]["test_top1"], rel=1e-6)


def test_visualize_run_draws_the_cells_and_weights_of_a_search(study, tmp_path):
    run = search_folders(study)[("darts", SEARCH_SEEDS[0])]
    done = run_script("cnn/visualize.py", "--run", run, "--epochs", "1,2", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "cells_epochs_1-2.png"), str(tmp_path / "weights_epochs_1-2.png")]
    for png in tmp_path.iterdir():
        width, height = png_size(png)
        assert 200 <= width <= 5000 and 200 <= height <= 5000, (png, width, height)


def test_the_readme_shows_one_small_png_of_each_plot_kind():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = [REPO / p for p in re.findall(r"\]\((docs/images/[^)]+\.png)\)", readme)]
    kinds = ["accuracy_per_epoch", "accuracy_vs_size", "search_cells_epochs", "search_weights_epochs"]
    assert sorted(p.stem.split("_1")[0] for p in shown) == kinds
    for png in shown:
        width, height = png_size(png)
        assert 200 <= width <= 5000 and 200 <= height <= 5000 and png.stat().st_size < 200_000, png
