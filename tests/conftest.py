"""Make the flat `cnn/`, `core/` and `rnn/` modules importable the way the scripts import them.

rnn/ comes last: its scripts (train.py, evaluate_model.py, visualize.py) share names with cnn/'s
and are only run in subprocesses; its modules have names of their own."""
import sys
from pathlib import Path

import pytest
import torch

CNN_DIR = Path(__file__).resolve().parent.parent / "cnn"
if str(CNN_DIR) not in sys.path:
    sys.path.insert(0, str(CNN_DIR))
import core_path  # noqa: E402,F401  (core/ after cnn/)

RNN_DIR = Path(__file__).resolve().parent.parent / "rnn"
if str(RNN_DIR) not in sys.path:
    sys.path.insert(2, str(RNN_DIR))


def _torch_threads(n: int):
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread (and are not slowed down by other processes)."""
    yield from _torch_threads(1)


@pytest.fixture
def two_threads():
    """Two torch threads on any machine: what core/lanes.py needs to run its two lanes."""
    yield from _torch_threads(2)
