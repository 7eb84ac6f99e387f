"""What every script shares: bad input ends as one sentence on stderr and exit status 2.

Flags are checked while they are parsed, with one argparse ``type`` per kind of number below, so
a run never starts (and never fails an epoch later) with a value it cannot use.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable

from errors import UserError


class FlagError(UserError):
    """A command line argparse cannot accept (unknown flag, bad value, conflicting flags)."""


def run(main: Callable[[], object]) -> None:
    """Call main(); a UserError ends with `error: ...` and exit 2, Ctrl-C with 130, else main's int status.

    Under torchrun every rank meets the same bad input; only rank 0 says so, unless the error
    names another reporting rank (`reporting_rank`: a rank that saw what rank 0 could not).
    """
    try:
        status = main()
    except UserError as exc:
        if os.environ.get("RANK", "0") == str(getattr(exc, "reporting_rank", 0)):
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one sentence through `run` (a FlagError), not a usage dump."""

    def error(self, message: str):
        raise FlagError(f"{message} (see {self.prog} --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None: resolved at run time)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def _kind(name: str, convert: Callable[[str], float], accept: Callable[[float], bool], description: str):
    """An argparse type: `convert` the text, then refuse it unless `accept`ed (NaN and inf never are)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {description}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"{text} is not {description}")
        return value

    parse.__name__ = name
    return parse


positive_int = _kind("positive_int", int, lambda v: v >= 1, "a positive integer")
non_negative_int = _kind("non_negative_int", int, lambda v: v >= 0, "an integer >= 0")
seed = _kind("seed", int, lambda v: 0 <= v < 2 ** 32, "a seed (an integer from 0 to 2**32 - 1)")
positive_float = _kind("positive_float", float, lambda v: v > 0, "a number > 0")
non_negative_float = _kind("non_negative_float", float, lambda v: v >= 0, "a number >= 0")
probability = _kind("probability", float, lambda v: 0 <= v < 1, "in [0, 1)")
portion = _kind("portion", float, lambda v: 0 < v < 1, "strictly between 0 and 1")
