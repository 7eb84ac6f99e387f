"""Summarise a study: one table per genotype with mean ± std of its accuracies, the variance
across search seeds apart from the variance across training seeds, and what it all cost.

    python cnn/summarize_results.py logs/eval/*                     # run folders (or globs, or parents)
    python cnn/summarize_results.py 'logs/eval/SHARP*' --csv summary.csv --sort final
    python cnn/summarize_results.py logs --out report               # tables, CSV, Markdown and plots

Each run folder's results.json (written by train.py after every epoch) gives one run; runs are
grouped by genotype and dataset (``--group_by`` adds epochs or params). For every group a table
lists its runs and ends with a ``mean ± std`` row: final test top-1, best test top-1 (the
model_best.pt epoch), CIFAR-10.1 top-1 when the runs measured it, params and MACs in millions
and the wall time. The std is the sample standard deviation, ``-`` for a single run. ``--csv``
writes one row per group (means and stds in separate columns, at full precision).

Folders without a results.json, with a results.json of another kind, or (unless
``--include_incomplete``) whose run stopped before its last epoch are listed as skipped on stderr.
This replaces the sharpDARTS habit of ``ack-grep --match "cifar10.1" */*.txt``.

A genotype that train_search.py wrote names its search at its top (``# written by
train_search.py: <method> search on <dataset>, seed <seed>`` and ``# run: <run folder>``).
The ``Searches`` tables group the trainings by the search run that produced their genotype and
give, per method, the mean and both deviations described in cnn/study.py: the std across
searches (of each search's mean over its training seeds) and the pooled std across training
seeds within a search. Genotypes of a ``random`` search are the random-search baseline rows.

The cost table adds up the device-days in the cost.json of every run of the study (core/cost_file.py):
the training runs, the search runs found under the given paths or named by a genotype (looked
up in logs/search/ too), and the selection runs (``train.py --selection_run``, counted in the
cost and left out of the accuracies), per device and per phase, and prints the total GPU-days.

``--out DIR`` writes the same tables as Markdown (summary.md) and CSV (genotypes.csv,
searches.csv, methods.csv, cost.csv), and the plots next to them: accuracy_per_epoch.png (the
test accuracy per epoch of every run, from its tensorboard log: one colour per genotype, mean
line and mean ± std band) and accuracy_vs_size.png (mean accuracy against params and MACs).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cli
from cost_file import PHASES, Charge, load_run_charges
from errors import UserError
from plots import GenotypePoint, accuracy_against_size, accuracy_per_epoch
from study import (RANDOM, CostTotals, MethodSummary, Origin, SearchRun, Stat, cost_totals, is_search_run,
                   load_search_run, locate_search_run, read_origin, summarize_searches, trained_genotype_file)
from textfiles import write_text_atomic

RESULTS = "results.json"
RUN_MARKERS = ("args.json", "log.txt", "command.txt", "checkpoint.pt")  # what train.py writes besides results
GROUP_KEYS = ("arch", "dataset", "epochs", "params")
SORTS = ("name", "final", "best", "cifar10_1", "params", "runs")


class SummaryError(UserError):
    """Bad input for the summary, said in one sentence."""


@dataclass
class Run:
    """The numbers of one run folder that the summary uses."""
    folder: Path
    arch: str
    dataset: str
    epochs: int | None
    target_epochs: int | None
    params: float | None
    macs: float | None
    final_top1: float
    best_top1: float | None
    best_epoch: int | None
    selected_on: str | None
    cifar10_1_top1: float | None
    wall_seconds: float | None
    origin: Origin | None             # the search that wrote the genotype, if one did
    charges: list[Charge] | None      # from cost.json; None for a run without one

    @property
    def complete(self) -> bool:
        return self.target_epochs is None or self.epochs is None or self.epochs >= self.target_epochs

    @property
    def selection(self) -> bool:
        """A train.py --selection_run: it picks among candidates, so its accuracy is not an evaluation."""
        return self.charges is not None and any(c.phase == "selection" for c in self.charges)


@dataclass
class Group:
    key: tuple
    runs: list[Run]

    def stat(self, attribute: str) -> Stat:
        return Stat([getattr(r, attribute) for r in self.runs if getattr(r, attribute) is not None])


# ------------------------------------------------------------------------------------------ finding

def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand(arguments: list[str]) -> list[Path]:
    """Paths named on the command line, with globs expanded here too (they may arrive quoted)."""
    paths: list[Path] = []
    for argument in arguments:
        if _is_glob(argument) and not os.path.exists(argument):
            matches = sorted(glob.glob(argument))
            if not matches:
                raise SummaryError(f"{argument} matches no file or folder.")
            paths.extend(Path(m) for m in matches)
        elif os.path.exists(argument):
            paths.append(Path(argument))
        else:
            raise SummaryError(f"{argument} does not exist; give run folders such as logs/eval/* .")
    return paths


def _is_run_folder(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in RUN_MARKERS)


@dataclass
class Found:
    """What the given paths hold: train.py results, search run folders, and what was skipped and why."""
    results: list[Path]
    searches: list[Path]
    skipped: list[tuple[Path, str]]


def find_results(paths: list[Path]) -> Found:
    """results.json files and search run folders in or under the given paths."""
    found = Found([], [], [])
    seen: set[Path] = set()

    def add(path: Path, into: list[Path]) -> None:
        real = path.resolve()
        if real not in seen:  # the same run named twice (a folder and its parent) counts once
            seen.add(real)
            into.append(path)

    for path in paths:
        if path.is_file():
            if path.name != RESULTS:
                found.skipped.append((path, f"not a {RESULTS} file"))
            else:
                add(path, found.results)
            continue
        if not path.is_dir():
            found.skipped.append((path, "neither a file nor a folder"))
            continue
        anything = False
        for root, dirs, files in os.walk(path):
            folder = Path(root)
            dirs.sort()
            if RESULTS in files:
                add(folder / RESULTS, found.results)
            elif is_search_run(folder):
                add(folder, found.searches)
            elif _is_run_folder(folder):
                found.skipped.append((folder, f"no {RESULTS} (the run has not finished an epoch, or crashed before)"))
            else:
                continue
            anything = True
            dirs.clear()  # a run folder's subfolders (tensorboard/, weights/) hold no runs
        if not anything:
            found.skipped.append((path, f"no {RESULTS} in it or below it"))
    return found


# ------------------------------------------------------------------------------------------ reading

def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _integer(value) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _target_epochs(folder: Path) -> int | None:
    """The --epochs the run was asked for, from args.json (None when that file is absent or unreadable)."""
    try:
        info = json.loads((folder / "args.json").read_text())
    except (OSError, ValueError):
        return None
    args = info.get("args") if isinstance(info, dict) else None
    return _integer(args.get("epochs")) if isinstance(args, dict) else None


def load_run(results: Path) -> Run | str:
    """A Run from a results.json, or the reason it is not a train.py result; unreadable JSON raises."""
    try:
        data = json.loads(results.read_text())
    except OSError as exc:
        raise SummaryError(f"cannot read {results}: {exc.strerror or exc}.") from exc
    except ValueError as exc:
        raise SummaryError(f"{results} is not valid JSON ({exc}); delete it or rerun that training.") from exc
    if not isinstance(data, dict):
        return "its results.json is not a train.py result (not a JSON object)"
    final = data.get("final") if isinstance(data.get("final"), dict) else {}
    best = data.get("best") if isinstance(data.get("best"), dict) else {}
    final_top1 = _number(final.get("test_top1"))
    if not isinstance(data.get("arch"), str) or not isinstance(data.get("dataset"), str) or final_top1 is None:
        return "its results.json is not a train.py result (no arch, dataset or final test_top1)"
    folder = results.parent
    genotype_file = trained_genotype_file(folder, data["arch"])
    return Run(folder=folder, arch=data["arch"], dataset=data["dataset"],
               epochs=_integer(data.get("epochs")), target_epochs=_target_epochs(folder),
               params=_number(data.get("params")), macs=_number(data.get("macs")), final_top1=final_top1,
               best_top1=_number(best.get("test_top1")), best_epoch=_integer(best.get("epoch")),
               selected_on=best.get("selected_on") if isinstance(best.get("selected_on"), str) else None,
               cifar10_1_top1=_number(final.get("cifar10_1_top1")), wall_seconds=_number(data.get("wall_seconds")),
               origin=read_origin(genotype_file) if genotype_file else None, charges=load_run_charges(folder))


def load_runs(results_files: list[Path], include_incomplete: bool) -> tuple[list[Run], list[tuple[Path, str]]]:
    runs, skipped = [], []
    for results in results_files:
        run = load_run(results)
        if isinstance(run, str):
            skipped.append((results.parent, run))
        elif not run.complete and not include_incomplete:
            skipped.append((run.folder, f"incomplete, {run.epochs} of {run.target_epochs} epochs "
                                        "(--include_incomplete counts it)"))
        else:
            runs.append(run)
    return runs, skipped


# ------------------------------------------------------------------------------------------ grouping

def parse_group_by(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if not keys or unknown:
        raise SummaryError(f"--group_by takes a comma-separated list of {', '.join(GROUP_KEYS)}, "
                           f"but got {text!r}.")
    return keys


def group_runs(runs: list[Run], keys: tuple[str, ...], sort: str = "name") -> list[Group]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(getattr(run, k) for k in keys), []).append(run)
    result = [Group(key, sorted(members, key=lambda r: str(r.folder))) for key, members in groups.items()]
    name_order = sorted(result, key=lambda g: tuple("" if v is None else str(v) for v in g.key))
    if sort == "name":
        return name_order
    if sort == "runs":
        return sorted(name_order, key=lambda g: -len(g.runs))
    attribute = {"final": "final_top1", "best": "best_top1", "cifar10_1": "cifar10_1_top1", "params": "params"}[sort]
    descending = sort != "params"
    missing = [g for g in name_order if g.stat(attribute).mean is None]
    present = sorted((g for g in name_order if g.stat(attribute).mean is not None),
                     key=lambda g: g.stat(attribute).mean, reverse=descending)
    return present + missing


# ------------------------------------------------------------------------------------------ tables

@dataclass
class Table:
    """A titled table with footer rows and notes, written as aligned text or as Markdown."""
    title: str
    header: list[str]
    rows: list[list[str]]
    footer: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        every = [self.header, *self.rows, *self.footer]
        widths = [max(len(row[i]) for row in every) for i in range(len(self.header))]

        def line(cells: list[str]) -> str:
            return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(cells, widths)))
        rule = "  ".join("-" * w for w in widths)
        lines = [self.title, line(self.header), rule, *(line(r) for r in self.rows)]
        if self.footer:
            lines += [rule, *(line(r) for r in self.footer)]
        return "\n".join([*lines, *self.notes])

    def markdown(self) -> str:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
        align = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(self.header))) + "|"
        footer = [line([f"**{cell}**" if cell else cell for cell in row]) for row in self.footer]
        parts = [f"### {self.title}\n", line(self.header), align, *(line(r) for r in self.rows), *footer]
        return "\n".join(parts) + "".join(f"\n\n{note}" for note in self.notes)


def _plus_minus() -> str:
    try:
        "±".encode(sys.stdout.encoding or "ascii")
        return "±"
    except (UnicodeEncodeError, LookupError):
        return "+-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _millions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _amount(value: float | None) -> str:
    """Device-hours or device-days: four significant digits, 0 when nothing ran."""
    return "-" if value is None else "0" if value == 0 else f"{value:.4g}"


def _mean_std(stat: Stat, pm: str) -> str:
    if stat.mean is None:
        return "-"
    return f"{stat.mean:.2f} {pm} {'-' if stat.std is None else f'{stat.std:.2f}'}"


def _epochs_text(run: Run) -> str:
    if run.epochs is None:
        return "-"
    return str(run.epochs) if run.complete else f"{run.epochs}/{run.target_epochs}*"


def _title(group: Group, keys: tuple[str, ...]) -> str:
    named = dict(zip(keys, group.key))
    parts = [str(named.pop("arch", "any genotype"))]
    if "dataset" in named:
        parts.append(f"on {named.pop('dataset')}")
    for key, value in named.items():
        parts.append(f"{key} {_millions(value) + 'M' if key == 'params' else value}")
    n = len(group.runs)
    return f"{' '.join(parts)}: {n} run{'s' if n != 1 else ''}"


def _origin_text(origin: Origin) -> str:
    return (f"origin: {origin.method} search on {origin.dataset}, seed {origin.seed}"
            + (f", run {origin.search_run}" if origin.search_run else ""))


def format_group(group: Group, keys: tuple[str, ...], pm: str) -> Table:
    with_c10_1 = any(r.cifar10_1_top1 is not None for r in group.runs)
    header = ["run", "epochs", "final top-1", "best top-1 (epoch)"]
    header += ["CIFAR-10.1 top-1"] if with_c10_1 else []
    header += ["params (M)", "MACs (M)", "wall"]
    rows = []
    for run in group.runs:
        best = "-" if run.best_top1 is None else f"{run.best_top1:.2f} ({run.best_epoch if run.best_epoch else '-'})"
        row = [run.folder.name, _epochs_text(run), _pct(run.final_top1), best]
        row += [_pct(run.cifar10_1_top1)] if with_c10_1 else []
        row += [_millions(run.params), _millions(run.macs), _duration(run.wall_seconds)]
        rows.append(row)
    epochs = {r.epochs for r in group.runs}
    params = {r.params for r in group.runs}
    footer = [f"mean {pm} std", str(next(iter(epochs))) if len(epochs) == 1 else "mixed",
              _mean_std(group.stat("final_top1"), pm), _mean_std(group.stat("best_top1"), pm)]
    footer += [_mean_std(group.stat("cifar10_1_top1"), pm)] if with_c10_1 else []
    footer += [_millions(group.stat("params").mean), _millions(group.stat("macs").mean),
               _duration(group.stat("wall_seconds").mean)]
    notes = []
    selected = {r.selected_on for r in group.runs if r.selected_on}
    if selected == {"test"}:
        notes.append("best: the epoch with the highest test accuracy (model_best.pt); "
                     "choosing on test data flatters it.")
    elif selected:
        notes.append(f"best: the model_best.pt epoch, chosen on {' / '.join(sorted(selected))} accuracy.")
    if with_c10_1 and group.stat("cifar10_1_top1").n < len(group.runs):
        notes.append(f"CIFAR-10.1: measured in {group.stat('cifar10_1_top1').n} of {len(group.runs)} runs.")
    if any(not r.complete for r in group.runs):
        notes.append("*: stopped before its last epoch; its numbers are those of the last finished epoch.")
    differ = [name for name, values in (("epochs", epochs), ("params", params))
              if len(values) > 1 and name not in keys]
    if differ:
        notes.append(f"note: these runs differ in {' and '.join(differ)}; "
                     f"--group_by {','.join([*keys, *differ])} separates them.")
    origins = {r.origin for r in group.runs}
    if len(origins) == 1 and None not in origins:
        notes.append(_origin_text(next(iter(origins))))
    return Table(_title(group, keys), header, rows, [footer], notes)


def _method_name(summary: MethodSummary) -> str:
    return f"{summary.method} (baseline)" if summary.baseline else summary.method


METHODS_NOTES = [
    "final top-1: for each search, the mean final test top-1 over its training seeds; then the mean over searches.",
    "std across searches: the sample std of those per-search means (the variance that comes from the search seed).",
    "std across training seeds: the pooled std within searches, sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over the "
    "searches trained at least twice (the variance that comes from the training seed).",
    "search device-hours: the mean over searches of each search run's cost.json (search and selection phases); "
    "0 for a random search, which trains nothing and writes no cost.json.",
]


def methods_table(summaries: list[MethodSummary]) -> Table:
    header = ["method", "searched on", "trained on", "searches", "trainings", "final top-1", "std across searches",
              "std across training seeds", "search device-hours"]
    rows = [[_method_name(m), m.search_dataset, m.dataset, str(len(m.searches)), str(m.trainings),
             _pct(m.across_searches.mean), _pct(m.across_searches.std), _pct(m.within_search_std),
             _amount(m.search_device_hours.mean)] for m in summaries]
    return Table("Search methods: the variance across search seeds apart from the variance across training seeds",
                 header, rows, notes=METHODS_NOTES)


def searches_table(summary: MethodSummary, pm: str) -> Table:
    header = ["search run", "seed", "genotype", "trainings", "final top-1", "search device-hours"]
    rows = [[s.search.folder.name if s.search else (s.origin.search_run or "-"), str(s.origin.seed), s.genotype,
             str(s.finals.n), _mean_std(s.finals, pm), _amount(s.search.device_hours if s.search else None)]
            for s in summary.searches]
    across = summary.across_searches
    footer = [["across searches: mean, std", "", "", str(summary.trainings), _mean_std(across, pm),
               _amount(summary.search_device_hours.mean)],
              ["within searches: pooled std", "", "", f"{summary.pooled_df} df", _pct(summary.within_search_std), ""]]
    title = (f"Searches: {_method_name(summary)}, searched on {summary.search_dataset}, trained on {summary.dataset}: "
             f"{len(summary.searches)} search{'es' if len(summary.searches) != 1 else ''}, {summary.trainings} trainings")
    notes = [f"final top-1: mean {pm} std over each search's training seeds."]
    unknown = [s.genotype for s in summary.searches if s.search is None]
    if unknown:
        notes.append(f"search run not found (no `run:` comment, or its folder is not under the given paths nor in "
                     f"logs/search): {', '.join(unknown)}; its search cost is unknown.")
    return Table(title, header, rows, footer, notes)


def cost_table(totals: CostTotals, selection_runs: int, missing_searches: list[str]) -> Table:
    header = ["device", "runs", *PHASES, "total"]
    rows = [[device, str(len(totals.runs[device])), *(_amount(totals.days(device, p)) for p in PHASES),
             _amount(totals.days(device))] for device in totals.devices]
    footer = [["all devices", str(len(set().union(*totals.runs.values()))), *(_amount(totals.days(None, p))
               for p in PHASES), _amount(totals.days())]] if len(rows) > 1 else []
    cpu_days = totals.days() - totals.gpu_days()
    notes = [f"total GPU-days of the study: {_amount(totals.gpu_days())} "
             f"(search {_amount(totals.gpu_days('search'))} + selection {_amount(totals.gpu_days('selection'))} "
             f"+ training {_amount(totals.gpu_days('training'))})"
             + (f"; on CPUs: {_amount(cpu_days)} device-days" if cpu_days else "")]
    if selection_runs:
        notes.append(f"{selection_runs} selection run{'s' if selection_runs != 1 else ''} (train.py --selection_run): "
                     "counted here, left out of the accuracies.")
    if totals.without_record:
        notes.append(f"not counted, no cost.json (run before cost accounting): "
                     f"{', '.join(sorted(f.name for f in totals.without_record))}.")
    if missing_searches:
        notes.append(f"not counted, search runs named by genotypes but not found: {', '.join(sorted(missing_searches))}.")
    return Table("Cost of the study: device-days (wall time x devices) per phase, from each run's cost.json",
                 header, rows, footer, notes)


# ------------------------------------------------------------------------------------------ CSV

def _plain(value):
    return "" if value is None else value


CSV_COLUMNS = ["runs", "final_test_top1_mean", "final_test_top1_std", "best_test_top1_mean", "best_test_top1_std",
               "cifar10_1_top1_runs", "cifar10_1_top1_mean", "cifar10_1_top1_std", "params_m", "macs_m",
               "wall_seconds_mean", "epochs", "run_folders"]


def csv_row(group: Group, keys: tuple[str, ...]) -> dict[str, object]:
    final, best, c10_1 = group.stat("final_top1"), group.stat("best_top1"), group.stat("cifar10_1_top1")
    params, macs = group.stat("params").mean, group.stat("macs").mean
    epochs = sorted({r.epochs for r in group.runs if r.epochs is not None})
    row: dict[str, object] = {k: _plain(v) for k, v in zip(keys, group.key)}
    row.update({
        "runs": len(group.runs),
        "final_test_top1_mean": _plain(final.mean), "final_test_top1_std": _plain(final.std),
        "best_test_top1_mean": _plain(best.mean), "best_test_top1_std": _plain(best.std),
        "cifar10_1_top1_runs": c10_1.n, "cifar10_1_top1_mean": _plain(c10_1.mean),
        "cifar10_1_top1_std": _plain(c10_1.std),
        "params_m": "" if params is None else params / 1e6, "macs_m": "" if macs is None else macs / 1e6,
        "wall_seconds_mean": _plain(group.stat("wall_seconds").mean),
        "epochs": ";".join(str(e) for e in epochs),
        "run_folders": ";".join(str(r.folder) for r in group.runs),
    })
    return row


def write_rows(path: Path, columns: list[str], rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def write_csv(path: Path, groups: list[Group], keys: tuple[str, ...]) -> Path:
    columns = [*keys, *(c for c in CSV_COLUMNS if c not in keys)]
    return write_rows(path, columns, [csv_row(g, keys) for g in groups])


def search_rows(summaries: list[MethodSummary]) -> list[dict[str, object]]:
    return [{"method": m.method, "search_dataset": m.search_dataset, "dataset": m.dataset, "genotype": s.genotype,
             "search_seed": s.origin.seed, "search_run": _plain(s.origin.search_run),
             "search_folder": str(s.search.folder) if s.search else "", "trainings": s.finals.n,
             "final_test_top1_mean": s.finals.mean, "final_test_top1_std": _plain(s.finals.std),
             "search_device_hours": _plain(s.search.device_hours if s.search else None),
             "run_folders": ";".join(map(str, s.run_folders))}
            for m in summaries for s in m.searches]


def method_rows(summaries: list[MethodSummary]) -> list[dict[str, object]]:
    return [{"method": m.method, "baseline": m.baseline, "search_dataset": m.search_dataset, "dataset": m.dataset,
             "searches": len(m.searches), "trainings": m.trainings,
             "final_test_top1_mean": m.across_searches.mean,
             "std_across_searches": _plain(m.across_searches.std),
             "std_across_training_seeds": _plain(m.within_search_std), "pooled_df": m.pooled_df,
             "search_device_hours_mean": _plain(m.search_device_hours.mean)} for m in summaries]


def cost_rows(totals: CostTotals) -> list[dict[str, object]]:
    return [{"device": device, "gpu": totals.gpu[device], "phase": phase, "runs": len(totals.runs[device]),
             "device_hours": totals.days(device, phase) * 24, "device_days": totals.days(device, phase)}
            for device in totals.devices for phase in PHASES]


# ------------------------------------------------------------------------------------------ plots

def test_accuracy_per_epoch(folder: Path) -> dict[int, float]:
    """Each epoch's test top-1 from the run's tensorboard log ({} without one); a resumed run's
    log keeps the values of the epochs it ran again last."""
    logs = folder / "tensorboard"
    if not logs.is_dir():
        return {}
    events = EventAccumulator(str(logs), size_guidance={"scalars": 0})
    events.Reload()
    if "test_top1" not in events.Tags()["scalars"]:
        return {}
    return {e.step: e.value for e in events.Scalars("test_top1")}


def _origin_kind(origin: Origin | None) -> str:
    return "other" if origin is None else "random" if origin.method == RANDOM else "searched"


def write_plots(out: Path, runs: list[Run]) -> list[Path]:
    """accuracy_per_epoch.png and accuracy_vs_size.png; a genotype trained on several datasets is
    one entry per dataset."""
    several = len({r.dataset for r in runs}) > 1
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(f"{run.arch} ({run.dataset})" if several else run.arch, []).append(run)
    curves = {name: [c for c in map(test_accuracy_per_epoch, (r.folder for r in members)) if c]
              for name, members in by_name.items()}
    points = []
    for name, members in sorted(by_name.items()):
        group = Group((name,), members)
        final = group.stat("final_top1")
        params, macs = group.stat("params").mean, group.stat("macs").mean
        points.append(GenotypePoint(name, _origin_kind(members[0].origin), None if params is None else params / 1e6,
                                    None if macs is None else macs / 1e6, final.mean, final.std))
    written = [accuracy_against_size(points, out / "accuracy_vs_size.png")]
    if any(curves.values()):
        written.insert(0, accuracy_per_epoch({n: c for n, c in curves.items() if c}, out / "accuracy_per_epoch.png"))
    return written


def write_report(out: Path, tables: list[Table], groups: list[Group], keys: tuple[str, ...],
                 summaries: list[MethodSummary], totals: CostTotals, runs: list[Run]) -> list[Path]:
    """summary.md, the CSV files and the plots, in one folder."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.md"]
    write_text_atomic(written[0], "# Study summary\n\n" + "\n\n".join(t.markdown() for t in tables) + "\n")
    written.append(write_csv(out / "genotypes.csv", groups, keys))
    written.append(write_rows(out / "searches.csv", SEARCH_COLUMNS, search_rows(summaries)))
    written.append(write_rows(out / "methods.csv", METHOD_COLUMNS, method_rows(summaries)))
    written.append(write_rows(out / "cost.csv", COST_COLUMNS, cost_rows(totals)))
    return written + write_plots(out, runs)


SEARCH_COLUMNS = ["method", "search_dataset", "dataset", "genotype", "search_seed", "search_run", "search_folder",
                  "trainings", "final_test_top1_mean", "final_test_top1_std", "search_device_hours", "run_folders"]
METHOD_COLUMNS = ["method", "baseline", "search_dataset", "dataset", "searches", "trainings", "final_test_top1_mean",
                  "std_across_searches", "std_across_training_seeds", "pooled_df", "search_device_hours_mean"]
COST_COLUMNS = ["device", "gpu", "phase", "runs", "device_hours", "device_days"]


# ------------------------------------------------------------------------------------------ command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        description="Summarise a study: one table per genotype with mean ± std accuracies, the variance across "
                    "search seeds apart from across training seeds, and the cost in device-days.",
        epilog="Example: python cnn/summarize_results.py logs --out report")
    p.add_argument("paths", nargs="+", help="run folders, folders holding run folders, results.json files or globs")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write one row per group to this CSV file")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write the report here: summary.md, genotypes.csv, searches.csv, methods.csv, cost.csv, "
                        "accuracy_per_epoch.png and accuracy_vs_size.png")
    p.add_argument("--sort", default="name", choices=SORTS,
                   help="order of the groups: by name, or best first by final/best/CIFAR-10.1 accuracy, "
                        "smallest first by params, most runs first")
    p.add_argument("--group_by", default="arch,dataset",
                   help=f"comma-separated keys that make a group, from {', '.join(GROUP_KEYS)} (default arch,dataset)")
    p.add_argument("--include_incomplete", action="store_true",
                   help="count runs that stopped before their last epoch (their last finished epoch)")
    return p.parse_args(argv)


def study_searches(found: Found, runs: list[Run]) -> tuple[dict[str, SearchRun], list[str]]:
    """The search runs of the study by name: those under the given paths and those the trained
    genotypes name (found in logs/search); and the names not found."""
    searches = {folder.name: load_search_run(folder) for folder in found.searches}
    missing = []
    for name in sorted({r.origin.search_run for r in runs if r.origin and r.origin.search_run} - set(searches)):
        located = locate_search_run(name)
        if located is None:
            missing.append(name)
        else:
            searches[name] = located
    return searches, missing


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keys = parse_group_by(args.group_by)
    found = find_results(expand(args.paths))
    runs, not_counted = load_runs(found.results, args.include_incomplete)
    for folder, reason in found.skipped + not_counted:
        print(f"skipped {folder}: {reason}", file=sys.stderr)
    evaluated = [r for r in runs if not r.selection]
    if not evaluated:
        raise SummaryError(f"nothing to summarise: none of the {len(args.paths)} given paths holds a usable "
                           f"train.py {RESULTS}" + (" other than selection runs." if runs else "."))
    searches, missing = study_searches(found, runs)
    summaries = summarize_searches(evaluated, searches)
    totals = cost_totals([(s.folder, s.charges) for s in searches.values()] + [(r.folder, r.charges) for r in runs])
    groups = group_runs(evaluated, keys, args.sort)
    pm = _plus_minus()
    tables = [format_group(g, keys, pm) for g in groups]
    if summaries:
        tables += [methods_table(summaries), *(searches_table(m, pm) for m in summaries)]
    tables.append(cost_table(totals, len(runs) - len(evaluated), missing))
    print("\n\n".join(t.text() for t in tables))
    if args.csv:
        write_csv(Path(args.csv), groups, keys)
        print(f"\nwrote {args.csv}")
    if args.out:
        written = write_report(args.out, tables, groups, keys, summaries, totals, evaluated)
        print("\n" + "\n".join(f"wrote {path}" for path in written))


if __name__ == "__main__":
    cli.run(main)
