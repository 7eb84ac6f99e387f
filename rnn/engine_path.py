"""Puts core/ (the engine cnn/ and rnn/ share) on the import path, after this folder, as cnn/core_path.py does,
and sets the OpenMP defaults of core/openmp_env.py before torch loads."""
import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "core"))

import openmp_env  # noqa: E402

openmp_env.prefer_short_spin()
