"""hubconf.py: torch.hub builds every shipped genotype and loads every shipped checkpoint."""
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from data import build_datasets, make_loader
from metrics import count_parameters
from paths import BEST_MODELS_DIR
from scripts import REPO
from runtime import Precision
from training import evaluate

MANIFESTS = sorted(BEST_MODELS_DIR.glob("*.json"))


def hub_network(entry: str, **kwargs) -> nn.Module:
    return torch.hub.load(str(REPO), entry, source="local", **kwargs)


@pytest.mark.parametrize("kwargs, params", [
    ({"arch": "DARTS_V2"}, 3_349_342),                                   # C=36, 20 cells, CIFAR-10
    ({"arch": "DARTS_V2", "dataset": "imagenet"}, 4_718_752),            # C=48, 14 cells, 1000 classes
    ({"arch": "D-DARTS_threshold_sparse_cifar10_0.85_50"}, 1_244_242),   # C=36, one layer per cell (8)
    ({"arch": "MULTI_CHANNEL_HANDMADE_PATH", "multi_channel": True}, 1_035_882),
])
def test_genotype_network_has_the_published_size(kwargs, params):
    network = hub_network("genotype_network", **kwargs)
    assert count_parameters(network) == params
    assert not any("auxiliary" in name for name, _ in network.named_parameters())


def test_the_auxiliary_head_is_on_request_and_not_counted():
    network = hub_network("genotype_network", arch="DARTS_V2", auxiliary=True)
    assert count_parameters(network) == 3_349_342
    assert sum(p.numel() for p in network.auxiliary_head.parameters()) > 0


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.stem)
def test_pretrained_entry_reproduces_its_manifest_accuracy(manifest_path, one_thread):
    manifest = json.loads(manifest_path.read_text())
    network = hub_network(manifest_path.stem, pretrained=True)
    assert not network.training and count_parameters(network) == manifest["params"]
    _, test_set = build_datasets(manifest["dataset"], REPO / "data")
    result = evaluate(network, make_loader(test_set, 256), nn.CrossEntropyLoss(), torch.device("cpu"),
                      Precision(torch.device("cpu"), False))
    assert result.top1 == pytest.approx(manifest["test_top1"], abs=0.005)


def test_pretrained_false_gives_the_same_network_untrained():
    trained = hub_network("digits_DARTS_V2", pretrained=True)
    fresh = hub_network("digits_DARTS_V2", pretrained=False)
    assert trained.state_dict().keys() == fresh.state_dict().keys()
    assert not torch.equal(trained.classifier.weight, fresh.classifier.weight)


def hub_copy(root: Path) -> Path:
    """What torch.hub downloads from GitHub: the files hubconf.py needs, in a folder of their own."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "hubconf.py", root)
    for folder in ("cnn", "genotypes", "best_models"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_damaged_checkpoint_is_refused_by_its_sha256(tmp_path):
    repo = hub_copy(tmp_path / "repo")
    damaged = repo / "best_models" / "digits_DARTS_V2.pt"
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    # the copy's own CheckpointError class (hubconf imports the copy's modules), a ValueError like ours
    with pytest.raises(ValueError, match=r"digits_DARTS_V2.pt does not match the sha256 in digits_DARTS_V2.json"):
        torch.hub.load(str(repo), "digits_DARTS_V2", source="local")


def test_hub_list_and_help_from_a_github_cache(tmp_path):
    """torch.hub.list and help read GitHub repositories only: an existing cache folder is used offline."""
    hub_dir = tmp_path / "hub"
    hub_copy(hub_dir / "owner_darts_main")
    old_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(hub_dir))
    try:
        entries = torch.hub.list("owner/darts:main", trust_repo=True, skip_validation=True, verbose=False)
        docs = {e: torch.hub.help("owner/darts:main", e, trust_repo=True, skip_validation=True) for e in entries}
    finally:
        torch.hub.set_dir(old_dir)
    assert sorted(entries) == sorted(["genotype_network", *(p.stem for p in MANIFESTS)])
    assert "C=36, 20 cells for CIFAR-10" in docs["genotype_network"]
    for manifest_path in MANIFESTS:
        manifest = json.loads(manifest_path.read_text())
        assert f"{manifest['test_top1']}% test top-1" in docs[manifest_path.stem]
        assert manifest["command"] in docs[manifest_path.stem]


def test_loading_leaves_sys_path_and_the_callers_modules_alone(monkeypatch):
    """A caller's own `model` module stays what it was; cnn/ is on sys.path only while hubconf imports."""
    own_model = types.ModuleType("model")
    monkeypatch.setitem(sys.modules, "model", own_model)
    path_before = list(sys.path)
    network = hub_network("genotype_network", arch="DARTS_V1", init_channels=8, layers=5)
    assert sys.path == path_before and sys.modules["model"] is own_model
    assert type(network).__module__ == "model" and type(network).__name__ == "NetworkCIFAR"
