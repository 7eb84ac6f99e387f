"""Puts core/ (the engine cnn/ and rnn/ share) on the import path, after this folder.

Every script here imports it before anything else, so the shared modules keep their flat names
(`import checkpoint`) whether a script runs as `python cnn/train.py` or `cd cnn && python train.py`,
and so that the OpenMP defaults of core/openmp_env.py are in the environment before torch loads."""
import sys
from pathlib import Path

CORE_DIR = str(Path(__file__).resolve().parent.parent / "core")
if CORE_DIR not in sys.path:
    sys.path.insert(1, CORE_DIR)

import openmp_env  # noqa: E402

openmp_env.prefer_short_spin()
