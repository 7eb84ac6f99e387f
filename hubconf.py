"""torch.hub entry points: any shipped genotype as a new network, and each checkpoint in best_models/.

    net = torch.hub.load("<owner>/<repo>", "genotype_network", arch="DARTS_V2", dataset="cifar10")
    net = torch.hub.load("<owner>/<repo>", "digits_DARTS_V2", pretrained=True)
    logits, logits_aux = net(images)     # as in DARTS: logits_aux is None without auxiliary head or in eval mode

`torch.hub.list` shows one entry per checkpoint, named after its manifest (best_models/<name>.json).
"""
import importlib as _importlib
import json as _json
import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "numpy"]

_REPO = _Path(__file__).resolve().parent
_FOLDERS = [str(_REPO / "cnn"), str(_REPO / "core")]


def _import_cnn(*names: str) -> list:
    """The flat cnn/ and core/ modules, imported by the names the scripts use, with those folders on
    sys.path only meanwhile; modules of the same names imported before (a caller's own `model`, say)
    are put back afterwards, and ours leave sys.modules (they keep references to each other)."""
    flat = {path.stem for folder in _FOLDERS for path in _Path(folder).glob("*.py")}
    saved = {name: _sys.modules.pop(name) for name in flat if name in _sys.modules}
    _sys.path[0:0] = _FOLDERS
    try:
        return [_importlib.import_module(name) for name in names]
    finally:
        for folder in _FOLDERS:
            _sys.path.remove(folder)
        for name in flat:
            _sys.modules.pop(name, None)
        _sys.modules.update(saved)


_checkpoint, _export_model = _import_cnn("checkpoint", "export_model")


def genotype_network(arch: str = "DARTS_V2", dataset: str = "cifar10", *, init_channels: int | None = None,
                     layers: int | None = None, ops: str = "auto", mid_channels: int | None = None,
                     auxiliary: bool = False, multi_channel: bool = False):
    """A randomly initialised evaluation network of any genotype in genotypes/ (a name or a file).

    Sizes left unset take the DARTS defaults of the dataset's stem: C=36, 20 cells for CIFAR-10,
    CIFAR-100 and digits (10, 100, 10 classes); C=48, 14 cells, 1000 classes for ImageNet. A
    D-DARTS or DARTOpti genotype has one layer per cell unless `layers` asks for more. `ops`
    chooses the op family (auto: the genotype's), `mid_channels` the sharpDARTS choke width.
    `auxiliary=True` adds DARTS's auxiliary head; `multi_channel=True` reads `arch` as a
    sharpDARTS multi-channel path (genotypes/multi_channel/). The network returns
    (logits, auxiliary logits or None), in training mode.
    """
    spec = _export_model.genotype_spec(arch, dataset, multi_channel=multi_channel, init_channels=init_channels,
                                       layers=layers, ops=ops, mid_channels=mid_channels, auxiliary=auxiliary)
    return spec.build()


def _checkpoint_entry(manifest_path: _Path):
    manifest = _json.loads(manifest_path.read_text())
    checkpoint = manifest_path.parent / manifest["checkpoint"]

    def entry(pretrained: bool = True):
        if pretrained:
            digest = _export_model.sha256(checkpoint)
            if digest != manifest["sha256"]:
                raise _checkpoint.CheckpointError(
                    f"{checkpoint} does not match the sha256 in {manifest_path.name} (it is {digest}): "
                    f"the file was damaged or replaced; restore it (git checkout -- best_models)")
        args = _export_model.build_parser().parse_args(["--model_path", str(checkpoint)])
        network, spec, _ = _export_model.evaluation_network(args)
        return network if pretrained else spec.build()

    entry.__name__ = entry.__qualname__ = manifest_path.stem
    entry.__doc__ = (
        f"{manifest['genotype']} (C={manifest['init_channels']}, {manifest['layers']} cells) trained on "
        f"{manifest['dataset']}: {manifest['test_top1']}% test top-1 at epoch {manifest['epoch']} of "
        f"{manifest['epochs']}, {manifest['params']:,} params.\n\n"
        f"pretrained=True loads best_models/{manifest['checkpoint']} after checking its sha256 against "
        f"best_models/{manifest_path.name}, in eval mode; pretrained=False gives the same network randomly "
        f"initialised. Trained with: {manifest['command']}")
    return entry


for _manifest in sorted((_REPO / "best_models").glob("*.json")):
    globals()[_manifest.stem] = _checkpoint_entry(_manifest)
