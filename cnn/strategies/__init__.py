"""Every search method of cnn/train_search.py, one module each, found and registered on import.

A method is a ``CellStrategy`` subclass (strategies/base.py) decorated with
``@STRATEGIES.register``; an option that combines with any method (an early-stopping rule, a
selection procedure) is a ``SearchOption`` decorated with ``@OPTIONS.register``. Adding either is
one new module in this folder plus its test: nothing else lists them (the parser, ``--method``,
the benchmark and the registry-wide tests read the registries).
"""
import importlib
import pkgutil

from search_strategy import Registry

STRATEGIES = Registry()
OPTIONS = Registry()

from strategies.base import CellStrategy, SelectionContext  # noqa: E402 (the modules below import the registries)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["STRATEGIES", "OPTIONS", "CellStrategy", "SelectionContext"]
