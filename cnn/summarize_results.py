"""Summarise many train.py runs: one table per genotype with mean ± std of their accuracies.

    python cnn/summarize_results.py logs/eval/*                     # run folders (or globs, or parents)
    python cnn/summarize_results.py 'logs/eval/SHARP*' --csv summary.csv --sort final

Each run folder's results.json (written by train.py after every epoch) gives one run; runs are
grouped by genotype and dataset (``--group_by`` adds epochs or params). For every group a table
lists its runs and ends with a ``mean ± std`` row: final test top-1, best test top-1 (the
model_best.pt epoch), CIFAR-10.1 top-1 when the runs measured it, params and MACs in millions
and the wall time. The std is the sample standard deviation, ``-`` for a single run. ``--csv``
writes one row per group (means and stds in separate columns, at full precision).

Folders without a results.json, with a results.json of another kind, or (unless
``--include_incomplete``) whose run stopped before its last epoch are listed as skipped on stderr.
This replaces the sharpDARTS habit of ``ack-grep --match "cifar10.1" */*.txt``.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import core_path  # noqa: F401  (puts core/ on the import path)
import cli
from errors import UserError

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

    @property
    def complete(self) -> bool:
        return self.target_epochs is None or self.epochs is None or self.epochs >= self.target_epochs


@dataclass
class Stat:
    """Mean and sample standard deviation of the values a group has (std None for fewer than 2)."""
    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


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


def find_results(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """results.json files in or under the given paths, and the folders skipped with the reason."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(results: Path) -> None:
        real = results.resolve()
        if real not in seen:  # the same run named twice (a folder and its parent) counts once
            seen.add(real)
            found.append(results)

    for path in paths:
        if path.is_file():
            if path.name != RESULTS:
                skipped.append((path, f"not a {RESULTS} file"))
            else:
                add(path)
            continue
        if not path.is_dir():
            skipped.append((path, "neither a file nor a folder"))
            continue
        anything = False
        for root, dirs, files in os.walk(path):
            folder = Path(root)
            dirs.sort()
            if RESULTS in files:
                add(folder / RESULTS)
                anything = True
                dirs.clear()  # a run folder's subfolders (tensorboard/) hold no runs
            elif _is_run_folder(folder):
                skipped.append((folder, f"no {RESULTS} (the run has not finished an epoch, or crashed before)"))
                anything = True
                dirs.clear()
        if not anything:
            skipped.append((path, f"no {RESULTS} in it or below it"))
    return found, skipped


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
    return Run(folder=results.parent, arch=data["arch"], dataset=data["dataset"],
               epochs=_integer(data.get("epochs")), target_epochs=_target_epochs(results.parent),
               params=_number(data.get("params")), macs=_number(data.get("macs")), final_top1=final_top1,
               best_top1=_number(best.get("test_top1")), best_epoch=_integer(best.get("epoch")),
               selected_on=best.get("selected_on") if isinstance(best.get("selected_on"), str) else None,
               cifar10_1_top1=_number(final.get("cifar10_1_top1")), wall_seconds=_number(data.get("wall_seconds")))


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


# ------------------------------------------------------------------------------------------ output

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


def _table(header: list[str], rows: list[list[str]], footer: list[str]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows, footer]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))
    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *(line(r) for r in rows), rule, line(footer)]


def format_group(group: Group, keys: tuple[str, ...], pm: str) -> list[str]:
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
    lines = [_title(group, keys), *_table(header, rows, footer)]
    selected = {r.selected_on for r in group.runs if r.selected_on}
    if selected == {"test"}:
        lines.append("best: the epoch with the highest test accuracy (model_best.pt); "
                     "choosing on test data flatters it.")
    elif selected:
        lines.append(f"best: the model_best.pt epoch, chosen on {' / '.join(sorted(selected))} accuracy.")
    if with_c10_1 and group.stat("cifar10_1_top1").n < len(group.runs):
        lines.append(f"CIFAR-10.1: measured in {group.stat('cifar10_1_top1').n} of {len(group.runs)} runs.")
    if any(not r.complete for r in group.runs):
        lines.append("*: stopped before its last epoch; its numbers are those of the last finished epoch.")
    differ = [name for name, values in (("epochs", epochs), ("params", params))
              if len(values) > 1 and name not in keys]
    if differ:
        lines.append(f"note: these runs differ in {' and '.join(differ)}; "
                     f"--group_by {','.join([*keys, *differ])} separates them.")
    return lines


CSV_COLUMNS = ["runs", "final_test_top1_mean", "final_test_top1_std", "best_test_top1_mean", "best_test_top1_std",
               "cifar10_1_top1_runs", "cifar10_1_top1_mean", "cifar10_1_top1_std", "params_m", "macs_m",
               "wall_seconds_mean", "epochs", "run_folders"]


def csv_row(group: Group, keys: tuple[str, ...]) -> dict[str, object]:
    def plain(value):
        return "" if value is None else value
    final, best, c10_1 = group.stat("final_top1"), group.stat("best_top1"), group.stat("cifar10_1_top1")
    params, macs = group.stat("params").mean, group.stat("macs").mean
    epochs = sorted({r.epochs for r in group.runs if r.epochs is not None})
    row: dict[str, object] = {k: plain(v) for k, v in zip(keys, group.key)}
    row.update({
        "runs": len(group.runs),
        "final_test_top1_mean": plain(final.mean), "final_test_top1_std": plain(final.std),
        "best_test_top1_mean": plain(best.mean), "best_test_top1_std": plain(best.std),
        "cifar10_1_top1_runs": c10_1.n, "cifar10_1_top1_mean": plain(c10_1.mean),
        "cifar10_1_top1_std": plain(c10_1.std),
        "params_m": "" if params is None else params / 1e6, "macs_m": "" if macs is None else macs / 1e6,
        "wall_seconds_mean": plain(group.stat("wall_seconds").mean),
        "epochs": ";".join(str(e) for e in epochs),
        "run_folders": ";".join(str(r.folder) for r in group.runs),
    })
    return row


def write_csv(path: Path, groups: list[Group], keys: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [*keys, *(c for c in CSV_COLUMNS if c not in keys)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for group in groups:
            row = csv_row(group, keys)
            writer.writerow({c: row.get(c, "") for c in columns})


# ------------------------------------------------------------------------------------------ command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Summarise train.py run folders: one table per genotype with mean ± std accuracies.",
        epilog="Example: python cnn/summarize_results.py logs/eval/* --csv summary.csv")
    p.add_argument("paths", nargs="+", help="run folders, folders holding run folders, results.json files or globs")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write one row per group to this CSV file")
    p.add_argument("--sort", default="name", choices=SORTS,
                   help="order of the groups: by name, or best first by final/best/CIFAR-10.1 accuracy, "
                        "smallest first by params, most runs first")
    p.add_argument("--group_by", default="arch,dataset",
                   help=f"comma-separated keys that make a group, from {', '.join(GROUP_KEYS)} (default arch,dataset)")
    p.add_argument("--include_incomplete", action="store_true",
                   help="count runs that stopped before their last epoch (their last finished epoch)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keys = parse_group_by(args.group_by)
    results_files, skipped = find_results(expand(args.paths))
    runs, not_counted = load_runs(results_files, args.include_incomplete)
    skipped += not_counted
    for folder, reason in skipped:
        print(f"skipped {folder}: {reason}", file=sys.stderr)
    if not runs:
        raise SummaryError(f"nothing to summarise: none of the {len(args.paths)} given paths holds a usable "
                           f"train.py {RESULTS}.")
    groups = group_runs(runs, keys, args.sort)
    pm = _plus_minus()
    blocks = ["\n".join(format_group(g, keys, pm)) for g in groups]
    print("\n\n".join(blocks))
    if args.csv:
        write_csv(Path(args.csv), groups, keys)
        print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    cli.run(main)
