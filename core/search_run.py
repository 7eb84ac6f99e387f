"""The life of a search run, shared by cnn/ and rnn/: the genotype name it claims, its epochs
(``--stop_epoch``, early-stopping rules, a checkpoint after each) and the genotype it writes.

Epochs (``run_epochs``): each epoch is run by the domain (one ``EpochRecord``: its scalars, the
architecture weights as tables, and what would be derived now), then every ``StopRule`` observes
it, then it is reported and checkpointed. A rule that fires ends the search after that epoch's
checkpoint, which says so, so a resumed run goes straight to the end; ``--stop_epoch K`` ends
the process before epoch K + 1 without a genotype, and ``--resume`` continues exactly.

Genotype names: a search claims its file before it starts (``check_genotype_name``: a file that
another run, or no search, wrote is refused), and writes at the end to the name, or, if another
run wrote it meanwhile, to the first free ``<name>_<k>`` (``unclaimed_genotype_file``). Every
file a search writes names its run in a ``# run: <run folder>`` comment after ``GENOTYPE_MARK``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from errors import UserError
from weight_report import WeightTable

GENOTYPE_MARK = "written by train_search.py"
FINISHED = "finished"
STOPPED = "stopped"       # --stop_epoch: the process ends, the search continues with --resume


class SearchRunError(UserError):
    """A genotype name that a search may not write."""


# ----------------------------------------------------------------------------------------
# Genotype names
# ----------------------------------------------------------------------------------------

def genotype_writer(path: Path) -> str | None:
    """The run folder named in the `run:` comment of a genotype (or path) file a search wrote; None
    for any other file (shipped, hand-made, unreadable)."""
    try:
        comments = [line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")]
    except (OSError, UnicodeDecodeError):
        return None
    if not any(GENOTYPE_MARK in c for c in comments):
        return None
    return next((c.removeprefix("run:").split(";")[0].strip() for c in comments if c.startswith("run:")), None)


def check_genotype_name(path: Path, run_name: str | None) -> None:
    """Refuse a genotype name whose file exists, unless the run `run_name` wrote it (a resumed run
    may write its own genotype again): two searches never silently share a name."""
    if not path.exists():
        return
    writer = genotype_writer(path)
    if run_name is not None and writer == run_name:
        return
    if writer is None:
        raise SearchRunError(f"{path} exists and was not written by a search; choose another --genotype_name")
    raise SearchRunError(f"{path} exists, written by the search run {writer}; choose another --genotype_name, "
                         f"or delete that file to replace it")


def unclaimed_genotype_file(path: Path, run_name: str) -> Path:
    """`path`, or, if another run wrote it while this one ran, the first `<name>_<k>` that is free or
    this run's own (so a finished run derived again rewrites the same file)."""
    candidate, k = path, 1
    while candidate.exists() and genotype_writer(candidate) != run_name:
        k += 1
        candidate = path.with_name(f"{path.stem}_{k}{path.suffix}")
    return candidate


class SearchResult(Protocol):
    """What a search derives (a genotype, a multi-channel path): logged every epoch, written at the end."""
    label: str

    def text(self) -> str: ...

    def collapse(self) -> dict[str, float]: ...

    def write(self, path: Path, origin: str, run_dir: Path) -> None: ...

    def train_command(self, name: str, dataset: str) -> str: ...


def write_result(result: SearchResult, path: Path, run_dir: Path, origin: str, dataset: str,
                 log: logging.Logger) -> Path:
    """Write `result` to `path` (or the next free name, saying so), copy it into the run folder,
    log it and the command that trains it; returns the file written."""
    wanted, path = path, unclaimed_genotype_file(path, run_dir.name)
    if path != wanted:
        log.warning("%s was written by %s while this search ran, so this search writes %s instead", wanted,
                    genotype_writer(wanted) or "someone else", path)
    result.write(path, origin, run_dir)
    (run_dir / "genotype.txt").write_text(path.read_text())
    log.info("%s written to %s:\n%s", result.label, path, result.text())
    log.info("train it with: %s", result.train_command(path.stem, dataset))
    return path


# ----------------------------------------------------------------------------------------
# Epochs
# ----------------------------------------------------------------------------------------

@dataclass
class EpochRecord:
    """One finished epoch, as the stop rules and the report see it (identical on every rank)."""
    epoch: int                          # from 1
    searching: bool                     # the architecture moved in this epoch
    scalars: dict[str, float]           # losses, accuracies, learning rates, schedules; rules may add theirs
    tables: dict[str, WeightTable]      # the architecture weights
    result: Any                         # what would be derived now (a SearchResult)


class StopRule:
    """An early-stopping rule, evaluated after every epoch on every rank (so all stop together)."""

    def start(self, log: logging.Logger, resumed: bool) -> None:
        """Called once before the first epoch of this process."""

    def observe(self, record: EpochRecord, log: logging.Logger) -> str | None:
        """The reason to stop after this epoch, or None; may add its measure to record.scalars."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """What `state_dict` returned, from the checkpoint of a resumed run."""


def run_epochs(start: int, total: int, *, stop_epoch: int | None, run_epoch: Callable[[int], EpochRecord],
               rules: list[StopRule], report: Callable[[EpochRecord], None],
               save: Callable[[int, str | None], None], log: logging.Logger, run_dir: Path) -> str:
    """Epochs `start`..`total - 1` (from 0): run, observed by every rule, reported, checkpointed
    (`save(epochs done, stop reason)`). Returns FINISHED, STOPPED (--stop_epoch) or a rule's reason."""
    for epoch in range(start, total):
        if stop_epoch is not None and epoch >= stop_epoch:
            log.info("stopping after epoch %d as asked (--stop_epoch); continue with --resume %s", epoch, run_dir)
            return STOPPED
        record = run_epoch(epoch)
        reasons = [reason for reason in [rule.observe(record, log) for rule in rules] if reason]
        report(record)
        save(epoch + 1, reasons[0] if reasons else None)
        if reasons:
            log.info("%s: search stopped early", reasons[0])
            return reasons[0]
    return FINISHED
