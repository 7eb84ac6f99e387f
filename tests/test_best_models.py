"""Every shipped checkpoint is what its manifest says it is."""
import json
import re
from pathlib import Path

import pytest

from export_model import sha256
from paths import BEST_MODELS_DIR
from scripts import run_ok

MANIFESTS = sorted(BEST_MODELS_DIR.glob("*.json"))


def test_at_least_one_model_is_shipped():
    assert MANIFESTS


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.stem)
def test_checkpoint_reproduces_its_manifest(manifest_path: Path):
    manifest = json.loads(manifest_path.read_text())
    checkpoint = BEST_MODELS_DIR / manifest["checkpoint"]
    assert sha256(checkpoint) == manifest["sha256"]
    assert "cnn/train.py" in manifest["command"] and f"--arch {manifest['genotype']}" in manifest["command"]
    out = run_ok("cnn/evaluate_model.py", "--model_path", str(checkpoint)).stdout
    top1 = float(re.search(r"test top-1 ([\d.]+)%", out).group(1))
    params = float(re.search(r"params ([\d.]+)M", out).group(1))
    assert top1 == pytest.approx(manifest["test_top1"], abs=0.005)
    assert params * 1e6 == pytest.approx(manifest["params"], abs=1)
