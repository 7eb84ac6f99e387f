"""What every script shares: bad input ends as one sentence on stderr and exit status 2."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from errors import UserError


def run(main: Callable[[], object]) -> None:
    """Call main(); a UserError ends with `error: ...` and exit 2, Ctrl-C with 130, else main's int status.

    Under torchrun every rank meets the same bad input; only rank 0 says so.
    """
    try:
        status = main()
    except UserError as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None: resolved at run time)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)
