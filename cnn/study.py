"""A study: searches, the trainings of the genotypes they found, and what all of it cost.

summarize_results.py reads run folders and uses this module to tell where each trained genotype
came from (the comments train_search.py writes at the top of a genotype file), to separate the
variance across search seeds from the variance across training seeds, and to add up the
device-days of search, selection and training (core/run_cost.py).

Statistics, for one search method (and the dataset it searched and the one trained on):

* each search run i gives one genotype, trained n_i times with different seeds; its mean m_i
  and sample std s_i are over those training seeds;
* ``mean`` is the mean of the m_i (every search weighs the same, however often it was trained);
* ``std across searches`` is the sample std of the m_i (needs two searches);
* ``std across training seeds`` is the pooled within-search std,
  sqrt(sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1)), over the searches trained at least twice.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import core_path  # noqa: F401  (puts core/ on the import path)
from cost_file import Charge, load_run_charges
from paths import GENOTYPES_DIR, LOGS_DIR, REPO_ROOT

ORIGIN_LINE = re.compile(r"#\s*written by train_search\.py: (\S+) search on (\S+), seed (-?\d+)\s*$")
RUN_LINE = re.compile(r"#\s*run: ([^;]+)")
RANDOM = "random"
SEARCH_MARKERS = ("weights", "genotype.txt")   # what train_search.py writes and train.py does not


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


# ------------------------------------------------------------------------------------------ origins

@dataclass(frozen=True)
class Origin:
    """The search a genotype file says produced it."""
    method: str
    dataset: str              # the dataset searched on
    seed: int
    search_run: str | None    # the run folder's name, from the `run:` comment


def read_origin(genotype_file: Path) -> Origin | None:
    """From the leading comments of a genotype (or path) file; None for a file no search wrote."""
    try:
        lines = genotype_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    comments = []
    for line in lines:
        if not line.strip().startswith("#"):
            break
        comments.append(line.strip())
    found = next((m for m in map(ORIGIN_LINE.match, comments) if m), None)
    if found is None:
        return None
    run = next((m.group(1).strip() for m in map(RUN_LINE.match, comments) if m), None)
    return Origin(found.group(1), found.group(2), int(found.group(3)), run)


def run_args(run_folder: Path) -> dict:
    """The flags a run folder's args.json records; empty when it has none or it is unreadable."""
    try:
        args = json.loads((run_folder / "args.json").read_text()).get("args", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return args if isinstance(args, dict) else {}


def trained_genotype_file(run_folder: Path, arch: str) -> Path | None:
    """The genotype file a train.py run read: its --arch from args.json (a path, from the repository
    or from cnn/ where the scripts run), else genotypes/<arch>.txt."""
    args = run_args(run_folder)
    given = args.get("arch") if isinstance(args.get("arch"), str) else arch
    folder = GENOTYPES_DIR / "multi_channel" if args.get("multi_channel") is True else GENOTYPES_DIR
    if Path(given).is_absolute():
        candidates = [Path(given)]
    else:
        candidates = [REPO_ROOT / given, REPO_ROOT / "cnn" / given, folder / f"{Path(given).stem}.txt"]
    return next((c for c in candidates if c.is_file()), None)


# ------------------------------------------------------------------------------------------ search runs

def is_search_run(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in SEARCH_MARKERS)


@dataclass
class SearchRun:
    folder: Path
    charges: list[Charge] | None      # None: no cost.json

    @property
    def device_hours(self) -> float | None:
        return None if self.charges is None else sum(c.device_hours for c in self.charges)


def load_search_run(folder: Path) -> SearchRun:
    """A random search trains nothing, so train_search.py writes it no cost.json: its cost is zero
    (not unknown, as for a search run before cost accounting)."""
    charges = load_run_charges(folder)
    return SearchRun(folder, [] if charges is None and run_args(folder).get("method") == RANDOM else charges)


def locate_search_run(name: str) -> SearchRun | None:
    """A search run that a genotype names and the given paths did not hold: logs/search/<name>."""
    folder = LOGS_DIR / "search" / name
    return load_search_run(folder) if folder.is_dir() else None


# ------------------------------------------------------------------------------------------ grouping

@dataclass
class SearchResult:
    """One searched genotype and its trainings on one dataset."""
    genotype: str
    origin: Origin
    dataset: str                      # trained on
    finals: Stat                      # final test top-1 over the training seeds
    run_folders: list[Path]
    search: SearchRun | None


@dataclass
class MethodSummary:
    """The searches of one method on one dataset, trained on one dataset (module docstring)."""
    method: str
    search_dataset: str
    dataset: str
    searches: list[SearchResult]

    @property
    def baseline(self) -> bool:
        return self.method == RANDOM

    @property
    def trainings(self) -> int:
        return sum(s.finals.n for s in self.searches)

    @property
    def across_searches(self) -> Stat:
        return Stat([s.finals.mean for s in self.searches])

    @property
    def pooled_df(self) -> int:
        return sum(s.finals.n - 1 for s in self.searches)

    @property
    def within_search_std(self) -> float | None:
        """sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)); None when no search was trained twice."""
        if self.pooled_df == 0:
            return None
        return math.sqrt(sum((s.finals.n - 1) * s.finals.std ** 2 for s in self.searches if s.finals.n > 1)
                         / self.pooled_df)

    @property
    def search_device_hours(self) -> Stat:
        return Stat([s.search.device_hours for s in self.searches
                     if s.search is not None and s.search.device_hours is not None])


def summarize_searches(runs: list, searches: dict[str, SearchRun]) -> list[MethodSummary]:
    """Training runs (with .arch, .dataset, .final_top1, .folder, .origin) of searched genotypes,
    grouped by genotype, then by method; random-search baselines last. `searches`: the search
    run folders known, by name."""
    by_genotype: dict[tuple, list] = {}
    for run in runs:
        if run.origin is not None:
            by_genotype.setdefault((run.origin, run.arch, run.dataset), []).append(run)
    by_method: dict[tuple, list[SearchResult]] = {}
    for (origin, arch, dataset), members in sorted(by_genotype.items(), key=lambda item: (item[0][1], item[0][2])):
        result = SearchResult(arch, origin, dataset, Stat([r.final_top1 for r in members]),
                              sorted(r.folder for r in members), searches.get(origin.search_run))
        by_method.setdefault((origin.method, origin.dataset, dataset), []).append(result)
    summaries = [MethodSummary(method, searched_on, dataset, sorted(results, key=lambda s: (s.origin.seed, s.genotype)))
                 for (method, searched_on, dataset), results in by_method.items()]
    return sorted(summaries, key=lambda m: (m.baseline, m.method, m.search_dataset, m.dataset))


# ------------------------------------------------------------------------------------------ cost

@dataclass
class CostTotals:
    """Device-hours of a study by (device, phase), the runs each counts, and the runs with no record."""
    device_hours: dict[tuple[str, str], float]
    gpu: dict[str, bool]                          # device label -> is it a GPU
    runs: dict[str, set[Path]]                    # device label -> run folders charged to it
    without_record: list[Path]

    @property
    def devices(self) -> list[str]:
        return sorted(self.gpu)

    def days(self, device: str | None = None, phase: str | None = None) -> float:
        return sum(hours for (d, p), hours in self.device_hours.items()
                   if device in (None, d) and phase in (None, p)) / 24

    def gpu_days(self, phase: str | None = None) -> float:
        return sum(self.days(d, phase) for d in self.devices if self.gpu[d])


def cost_totals(folders_and_charges: list[tuple[Path, list[Charge] | None]]) -> CostTotals:
    """Every run folder once (the same search named by two genotypes counts once)."""
    totals = CostTotals({}, {}, {}, [])
    seen: set[Path] = set()
    for folder, charges in folders_and_charges:
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        if charges is None:
            totals.without_record.append(folder)
            continue
        for c in charges:
            key = (c.device, c.phase)
            totals.device_hours[key] = totals.device_hours.get(key, 0.0) + c.device_hours
            totals.gpu[c.device] = c.gpu
            totals.runs.setdefault(c.device, set()).add(real)
    return totals

