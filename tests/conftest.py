"""Make the flat `cnn/` and `core/` modules importable the way the scripts import them."""
import sys
from pathlib import Path

import pytest
import torch

CNN_DIR = Path(__file__).resolve().parent.parent / "cnn"
if str(CNN_DIR) not in sys.path:
    sys.path.insert(0, str(CNN_DIR))
import core_path  # noqa: E402,F401  (core/ after cnn/)


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread (and are not slowed down by other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
