"""Search strategies as objects, the part both domains share: the registry, the typed settings, the
flags a strategy owns, and the hooks the search loop calls; and search options, procedures that
combine with any strategy (``SearchOption``: early-stopping rules, a selection after training).

A strategy is one class registered under its ``--method`` name. It declares

* ``config_type``: a frozen dataclass of every setting it reads, filled from the resolved flags
  by field name (``make_config``); nothing below the script sees the argparse namespace;
* ``DEFAULTS``: the values of the flags the user left unset, with ``SOURCE`` saying where they
  come from (paper, table, original script), and ``SUMMARY``, what the method changes;
* ``FLAGS``: its own command-line flags (``Flag``), added to the script's parser; a flag that
  the chosen method's config does not read is refused in one sentence;
* ``SELECTED_BY`` / ``HINT_FLAGS``: flags of the original scripts that select it when
  ``--method auto``: one that decides alone (DARTOpti's ``--arch_baseline``), or hints of which
  two methods' must not be mixed;
* ``VARIANTS``: named extra flags the benchmark measures and the registry-wide tests run
  (default: the method alone);

and overrides the hooks it needs (each has a neutral default here or in the domain's base):
``begin_epoch`` (schedules: temperatures, coefficients), ``arch_terms`` (what it adds to the
architecture objective, see core/architect.py), ``stop_rules`` (early stopping, see
core/search_run.py), and the domain's own hooks (the cnn base adds the supernet, the network
loss and the derivation).
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from architect import ArchTerms
from errors import UserError


class StrategyError(UserError):
    """A method or a combination of flags that no strategy can run."""


@dataclass(frozen=True)
class Flag:
    """A strategy's own flag: argparse arguments, default None (the strategy's DEFAULTS fill it)."""
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


class Configurable:
    """A registered class with a name, its own flags and a typed config built from the flags."""
    name: ClassVar[str] = ""
    config_type: ClassVar[type] = object
    FLAGS: ClassVar[tuple[Flag, ...]] = ()
    SOURCE: ClassVar[str] = ""
    SUMMARY: ClassVar[str] = ""

    def __init__(self, config) -> None:
        self.config = config

    @classmethod
    def make_config(cls, values: argparse.Namespace | dict):
        """The typed config from resolved flags (by field name; lists become tuples)."""
        values = vars(values) if isinstance(values, argparse.Namespace) else values
        missing = [f.name for f in dataclasses.fields(cls.config_type) if f.name not in values]
        if missing:
            raise StrategyError(f"--method {cls.name} needs {', '.join('--' + m for m in missing)}")
        return cls.config_type(**{f.name: tuple(v) if isinstance(v := values[f.name], list) else v
                                  for f in dataclasses.fields(cls.config_type)})


class Strategy(Configurable):
    """Base of every strategy (module docstring); a strategy object holds its typed config."""
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    SELECTED_BY: ClassVar[str | None] = None
    HINT_FLAGS: ClassVar[tuple[str, ...]] = ()
    VARIANTS: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def variants(cls) -> dict[str, tuple[str, ...]]:
        return cls.VARIANTS or {cls.name: ()}

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Called before every epoch (from 0, resumed runs too); returns the schedule values it set,
        which the search logs and plots."""
        return {}

    def arch_terms(self, model, loss, evaluate) -> ArchTerms:
        """What this method adds to the architecture objective (core/architect.py); nothing here."""
        return ArchTerms()

    def stop_rules(self, model) -> list:
        """Early-stopping rules (core/search_run.StopRule) evaluated after every epoch."""
        return []


class SearchOption(Configurable):
    """A procedure that combines with any method that has architecture weights, switched on by its
    own flag ``ENABLED_BY`` (given, and not False): early stopping rules (DARTS+'s
    ``--early_stop``), or a selection after the supernet's training that replaces the method's
    derivation (DARTS-PT's ``--selection pt``)."""
    ENABLED_BY: ClassVar[str] = ""
    selects: ClassVar[bool] = False

    @classmethod
    def enabled(cls, args: argparse.Namespace) -> bool:
        return getattr(args, cls.ENABLED_BY, None) not in (None, False)

    def check(self, strategy: Strategy) -> None:
        """Refuse a method this option cannot work with, in one sentence."""

    def stop_rules(self, model, strategy: Strategy) -> list:
        return []

    def select(self, context):
        """The result that replaces the method's derivation (``selects`` options only)."""
        raise NotImplementedError


class Registry(dict):
    """name -> strategy (or search option) class."""

    def register(self, cls: type[Configurable]) -> type[Configurable]:
        """Class decorator: adds `cls` under its ``name``; a name is registered once."""
        if not cls.name or cls.name in self:
            raise ValueError(f"strategy name {cls.name!r} is empty or taken")
        self[cls.name] = cls
        return cls

    def lookup(self, name: str) -> type[Configurable]:
        if name not in self:
            raise StrategyError(f"unknown --method {name!r}; use one of {', '.join(self)}")
        return self[name]

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """Every strategy's own flags, one argument group per strategy that has some."""
        seen: set[str] = set()
        for name, cls in self.items():
            flags = [f for f in cls.FLAGS if f.name not in seen]
            if flags:
                group = parser.add_argument_group(f"--method {name}")
                for flag in flags:
                    group.add_argument(flag.name, default=None, **flag.kwargs)
                    seen.add(flag.name)

    def check_flags(self, method: str, args: argparse.Namespace) -> None:
        """Refuse a strategy flag given on the command line that the chosen method does not read."""
        reads = {f.name for f in dataclasses.fields(self[method].config_type)}
        for owner, cls in self.items():
            for flag in cls.FLAGS:
                if getattr(args, flag.dest, None) is not None and flag.dest not in reads:
                    raise StrategyError(f"{flag.name} is a flag of --method {owner}, not of --method {method}")

    def infer(self, given_flags: Iterable[str], default: str) -> tuple[str, str]:
        """(method, why) from the flags given: a SELECTED_BY flag decides; else the HINT_FLAGS, and
        two methods' hints at once ask for --method."""
        given = set(given_flags)
        for name, cls in self.items():
            if cls.SELECTED_BY in given:
                return name, f"inferred from {cls.SELECTED_BY}"
        found = {name: [f for f in cls.HINT_FLAGS if f in given] for name, cls in self.items()}
        found = {name: flags for name, flags in found.items() if flags}
        if len(found) > 1:
            raise StrategyError(f"the flags {', '.join(sum(found.values(), []))} belong to different methods "
                                f"({' and '.join(found)}); pass --method to choose one")
        if found:
            method, flags = next(iter(found.items()))
            return method, f"inferred from {', '.join(flags)}"
        return default, "the default (no flag of another method given)"
