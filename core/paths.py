"""Repository locations, found from this file so scripts work from any current directory.

DARTS_LOGS_DIR in the environment moves the run folders elsewhere (the tests use it).
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GENOTYPES_DIR = REPO_ROOT / "genotypes"
LOGS_DIR = Path(os.environ.get("DARTS_LOGS_DIR", REPO_ROOT / "logs"))
BEST_MODELS_DIR = REPO_ROOT / "best_models"
