"""Export a trained network: into best_models/ with a manifest, or as an ONNX file checked by onnxruntime.

    python cnn/export_model.py logs/eval/digits_DARTS_V2-20261123-001143 --name digits_DARTS_V2
    python cnn/export_model.py --onnx digits_DARTS_V2.onnx --model_path best_models/digits_DARTS_V2.pt
    python cnn/export_model.py --onnx darts_v2.onnx --arch DARTS_V2 --dataset cifar10        # random init
    python cnn/export_model.py --onnx path.onnx --multi_channel --arch MULTI_CHANNEL_MAX_W_PATH --dataset cifar10

--name writes best_models/<name>.pt and its manifest (<name>.json) from the run's own records:
genotype, dataset, the exact command, the checkpoint's test accuracy and epoch, params, MACs,
git commit, sha256.

--onnx writes the evaluation network (logits only: no auxiliary head, no drop path) with a
dynamic batch axis at the dataset's image size, from a checkpoint (a run's model_best.pt,
--model_path, or a DARTS/D-DARTS release with --arch) or, without one, randomly initialised from
--arch and the size flags (DARTS defaults of the dataset's stem). The file is kept only if
onnxruntime's logits on real test images equal PyTorch's within the printed tolerance.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import time
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import torch
import torch.nn as nn
import torch.nn.functional as F

import cli
from checkpoint import CheckpointError, load_checkpoint, model_state_dict
from data import DATASETS, DataError, build_datasets, dataset_info
from evaluate_model import resolve_spec
from model import ModelSpec, load_model_weights
from multichannel import PathSpec
from onnx_export import CHECK_BATCH_SIZES, RTOL, export_onnx, require_onnx_packages
from operations import OPS
from paths import BEST_MODELS_DIR, REPO_ROOT
from run_dir import write_json


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export(run: Path, name: str, out_dir: Path = BEST_MODELS_DIR) -> Path:
    """Write <out_dir>/<name>.pt and <name>.json; returns the manifest path."""
    best = run / "model_best.pt"
    state = load_checkpoint(best)
    if state.get("kind") != "model":
        raise CheckpointError(f"{best} is not a model_best.pt written by train.py")
    results = json.loads((run / "results.json").read_text())
    info = json.loads((run / "args.json").read_text())
    recorded = shlex.split((run / "command.txt").read_text().splitlines()[0])
    command = shlex.join(["python", *recorded[1:]])  # the interpreter path is this machine's
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.pt"
    shutil.copyfile(best, target)
    manifest = {
        "checkpoint": target.name,
        "sha256": sha256(target),
        "genotype": state["spec"]["arch_name"],
        "genotype_text": state["spec"]["genotype"].strip(),
        "ops": state["spec"]["ops"],
        "init_channels": state["spec"]["init_channels"],
        "layers": state["spec"]["layers"],
        "dataset": state["dataset"],
        "command": command,
        "git_commit": info["git_commit"],
        "epoch": state["epoch"],
        "epochs": results["epochs"],
        "selected_on": results["best"]["selected_on"],
        "test_top1": round(state["scores"]["test_top1"], 2),
        "test_top5": round(state["scores"]["test_top5"], 2),
        "final_test_top1": round(results["final"]["test_top1"], 2),
        "params": results["params"],
        "macs": results["macs"],
        "train_seconds": round(results["wall_seconds"]),
    }
    path = out_dir / f"{name}.json"
    write_json(path, manifest)
    return path


def genotype_spec(arch: str, dataset: str, *, multi_channel: bool = False, init_channels: int | None = None,
                  layers: int | None = None, ops: str | None = None, mid_channels: int | None = None,
                  auxiliary: bool = False) -> ModelSpec | PathSpec:
    """A new network of a shipped or searched genotype (or multi-channel path) for `dataset`;
    unset sizes take the DARTS defaults of the dataset's stem."""
    info = dataset_info(dataset)
    if multi_channel:
        spec = PathSpec.resolve(arch, info.network, info.num_classes, mid_channels=mid_channels)
    else:
        spec = ModelSpec.resolve(arch, info.network, info.num_classes, init_channels=init_channels, layers=layers,
                                 ops=ops or "auto", mid_channels=mid_channels, auxiliary=auxiliary)
    spec.check_input_size(info.image_size)
    return spec


def evaluation_network(args: argparse.Namespace) -> tuple[nn.Module, ModelSpec | PathSpec, str]:
    """(network in eval mode without auxiliary head, its spec, its dataset): a checkpoint's weights,
    its stored spec overridden by the flags given (as evaluate_model.py does), or a random init."""
    if args.model_path is None:
        dataset = args.dataset or "cifar10"
        spec = genotype_spec(args.arch, dataset, multi_channel=args.multi_channel, init_channels=args.init_channels,
                             layers=args.layers, ops=args.ops, mid_channels=args.mid_channels)
        torch.manual_seed(0)
        return spec.build().eval(), spec, dataset
    state = load_checkpoint(args.model_path)
    weights = {k: v for k, v in model_state_dict(state).items() if not k.startswith("auxiliary_head.")}
    stored = state.get("spec") if isinstance(state.get("spec"), dict) else None
    dataset = args.dataset or state.get("dataset") or "cifar10"
    info = dataset_info(dataset)
    spec = resolve_spec(args, stored, weights, stored["num_classes"] if stored else info.num_classes, info.network)
    if spec.network != info.network:
        raise CheckpointError(f"{args.model_path} holds a network with the {spec.network} stem; --dataset {dataset} "
                              f"needs the {info.network} stem")
    model = spec.build()
    load_model_weights(model, spec, weights, args.model_path)
    return model.eval(), spec, dataset


def check_images(dataset: str, root: str | Path) -> tuple[torch.Tensor, str]:
    """Real test images at the network's input size, and what they are: the dataset's test split
    when it is on disk (digits always is), else scikit-learn's digits resized to that size."""
    size = dataset_info(dataset).image_size
    try:
        _, test = build_datasets(dataset, root, download=False)
        what = f"{dataset} test images"
    except DataError:
        _, test = build_datasets("digits", root)
        what = f"digits test images resized to {size} px ({dataset} is not under {root})"
    images = torch.stack([test[i][0] for i in range(max(CHECK_BATCH_SIZES))])
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images, what


def write_onnx(args: argparse.Namespace) -> None:
    require_onnx_packages()
    import onnxruntime

    network, spec, dataset = evaluation_network(args)
    print(spec.describe())
    print(f"weights: {args.model_path or 'random init (seed 0)'}")
    images, what = check_images(dataset, args.data)
    metadata = {"darts.spec": json.dumps(spec.to_dict()), "darts.dataset": dataset,
                "darts.weights": str(args.model_path or "random init"),
                "darts.input": "float32 images [batch, 3, H, W] normalised as the dataset's test transform"}
    start = time.perf_counter()
    check = export_onnx(network, images, args.onnx, metadata, args.rtol)
    size = images.shape[-1]
    print(f"check: onnxruntime {onnxruntime.__version__} vs PyTorch on {len(images)} {what}: {check.describe()}: passed")
    print(f"wrote {args.onnx} ({Path(args.onnx).stat().st_size / 1e6:.2f} MB, images [batch, 3, {size}, {size}] -> "
          f"logits [batch, {spec.num_classes}], {time.perf_counter() - start:.1f} s)")


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(description="Export a network: a run's model_best.pt into best_models/ with a "
                                       "manifest (--name), or an ONNX file checked by onnxruntime (--onnx).",
                           formatter_class=cli.HelpFormatter)
    p.add_argument("run", nargs="?", default=None, help="a logs/eval/<run> folder written by train.py")
    p.add_argument("--name", default=None, help="copy the run's model_best.pt to best_models/<name>.pt with a manifest")
    p.add_argument("--onnx", default=None, help="write this .onnx file")
    p.add_argument("--model_path", default=None,
                   help="checkpoint for --onnx (ours, or a DARTS/D-DARTS release with --arch); default: the run's "
                        "model_best.pt, or, without a run, a random init of --arch")
    p.add_argument("--arch", default=None, help="genotype name or file (default: the one stored in the checkpoint)")
    p.add_argument("--multi_channel", action="store_true",
                   help="--arch is a sharpDARTS multi-channel path (genotypes/multi_channel/)")
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="fixes the input size and the check images (default: the checkpoint's, else cifar10)")
    p.add_argument("--data", default=str(REPO_ROOT / "data"),
                   help="dataset root; its test split gives the check images, else scikit-learn's digits do")
    p.add_argument("--init_channels", type=cli.positive_int, default=None)
    p.add_argument("--layers", type=cli.positive_int, default=None)
    p.add_argument("--ops", default=None, choices=["auto", *OPS], help="op family (default: the checkpoint's, else auto)")
    p.add_argument("--mid_channels", type=cli.positive_int, default=None)
    p.add_argument("--rtol", type=float, default=RTOL,
                   help="largest onnxruntime vs PyTorch logit difference allowed, as a fraction of the largest |logit|")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.name is None and args.onnx is None:
        p.error("nothing to do: give --name (copy a run into best_models/), --onnx FILE, or both")
    if args.name is not None and args.run is None:
        p.error("--name needs a run folder")
    if args.name is not None and not args.name.isidentifier():
        p.error("--name must be a Python identifier (letters, digits and _), since it names the torch.hub entry")
    if args.run is not None and args.model_path is not None:
        p.error("give a run folder or --model_path, not both")
    if args.multi_channel and (args.arch is None or args.model_path is not None or args.run is not None):
        p.error("--multi_channel builds a new network from --arch, a path name in genotypes/multi_channel/; "
                "a checkpoint says by itself that it holds one")
    if args.onnx is not None and args.run is None and args.model_path is None and args.arch is None:
        p.error("--onnx needs a run folder, --model_path or --arch")
    if args.onnx is not None and Path(args.onnx).is_dir():
        p.error(f"--onnx names the file to write; {args.onnx} is a folder")
    if not 0 <= args.rtol < float("inf"):
        p.error("--rtol must be a finite number of at least 0")
    if args.run is not None and args.onnx is not None:
        args.model_path = str(Path(args.run) / "model_best.pt")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.onnx is not None:
        write_onnx(args)
    if args.name is not None:
        print(f"wrote {export(Path(args.run), args.name)}")


if __name__ == "__main__":
    cli.run(main)
