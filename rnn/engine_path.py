"""Puts core/ (the engine cnn/ and rnn/ share) on the import path, after this folder, as cnn/core_path.py does."""
import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "core"))
