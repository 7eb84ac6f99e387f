"""Params, MACs and top-1/top-5 accuracy of a checkpoint: ours, or one published with DARTS or D-DARTS.

    python cnn/evaluate_model.py --model_path best_models/digits_DARTS_V2.pt --dataset digits
    python cnn/evaluate_model.py --arch DARTS_V2 --model_path cifar10_model.pt --auxiliary   # a DARTS release

Our checkpoints carry their genotype and sizes, so --arch and the size flags are optional for
them; flags that are given override what the checkpoint says.
"""
from __future__ import annotations

import argparse

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import torch.nn as nn

import cli
from checkpoint import CheckpointError, load_checkpoint, model_file, model_state_dict
from data import DATASETS, build_datasets, cifar10_1_dataset, cifar10_1_dir, dataset_info, default_workers, make_loader
from metrics import count_macs, count_parameters
from model import ModelSpec, load_model_weights
from multichannel import PathSpec
from operations import OPS
from paths import REPO_ROOT
from runtime import Precision, resolve_device, tune_runtime
from training import evaluate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description="Evaluate a checkpoint: params, MACs, top-1 and top-5.",
                           formatter_class=cli.HelpFormatter)
    p.add_argument("--model_path", required=True, type=model_file,
                   help="checkpoint file (ours, or a plain DARTS/D-DARTS state_dict), or a run folder (its "
                        "model_best.pt)")
    p.add_argument("--arch", default=None, help="genotype name or file (default: the one stored in the checkpoint)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="default: the checkpoint's, else cifar10")
    p.add_argument("--data", default=str(REPO_ROOT / "data"), help="dataset root directory")
    p.add_argument("--init_channels", type=cli.positive_int, default=None)
    p.add_argument("--layers", type=cli.positive_int, default=None)
    p.add_argument("--ops", default=None, choices=["auto", *OPS], help="op family (default: the checkpoint's, else auto)")
    p.add_argument("--mid_channels", type=cli.positive_int, default=None)
    p.add_argument("--auxiliary", action="store_true",
                   help="accepted for DARTS compatibility; the auxiliary head is detected from the weights")
    p.add_argument("--cifar10_1", default=None, help="directory of the CIFAR-10.1 .npy files (default: looked for under --data)")
    p.add_argument("--batch_size", type=cli.positive_int, default=256)
    p.add_argument("--workers", type=cli.non_negative_int, default=None,
                   help="data loader workers (default 0 for digits, else min(4, cores))")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--no_accuracy", action="store_true", help="only count params and MACs (no dataset needed)")
    return p.parse_args(argv)


def resolve_spec(args: argparse.Namespace, stored: dict | None, weights: dict, num_classes: int,
                 network: str) -> ModelSpec | PathSpec:
    """Flags first, then what the checkpoint stored, then the DARTS defaults."""
    auxiliary = any(k.startswith("auxiliary_head.") for k in weights)
    try:
        if stored and stored.get("kind") == "multi_channel":
            return PathSpec(**{**stored, "path": tuple(stored["path"])})
        if stored and args.arch in (None, stored["arch_name"]):
            overrides = {"init_channels": args.init_channels, "layers": args.layers,
                         "mid_channels": args.mid_channels, "ops": None if args.ops in (None, "auto") else args.ops}
            return ModelSpec(**{**stored, **{k: v for k, v in overrides.items() if v is not None},
                                "auxiliary": auxiliary})
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{args.model_path} holds a 'spec' this version cannot read ({type(e).__name__}: {e}): "
                              f"it was not written by train.py") from None
    if args.arch is None:
        raise CheckpointError(f"{args.model_path} does not say which genotype it holds: pass --arch")
    return ModelSpec.resolve(args.arch, network, num_classes, init_channels=args.init_channels, layers=args.layers,
                             ops=args.ops or "auto", mid_channels=args.mid_channels, auxiliary=auxiliary)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    tune_runtime(device)
    state = load_checkpoint(args.model_path)
    if str(state.get("kind")).startswith("lm_"):
        raise CheckpointError(f"{args.model_path} holds a language model: evaluate it with rnn/evaluate_model.py")
    weights = model_state_dict(state)
    stored = state.get("spec") if isinstance(state.get("spec"), dict) else None
    dataset = args.dataset or state.get("dataset") or "cifar10"
    info = dataset_info(dataset)
    test_set = None
    num_classes = (stored or {}).get("num_classes", info.num_classes)
    if not args.no_accuracy:
        _, test_set = build_datasets(dataset, args.data)
        num_classes = len(getattr(test_set, "classes", [])) or num_classes
    spec = resolve_spec(args, stored, weights, num_classes, info.network)
    if (spec.network, spec.num_classes) != (info.network, num_classes):
        raise CheckpointError(f"{args.model_path} holds a {spec.num_classes}-class network with the {spec.network} "
                              f"stem; --dataset {dataset} needs {num_classes} classes and the {info.network} stem")
    model = spec.build()
    load_model_weights(model, spec, weights, args.model_path)
    model.to(device)

    print(spec.describe())
    print(f"params {count_parameters(model) / 1e6:.6f}M (without auxiliary head) | "
          f"MACs {count_macs(model, info.image_size, device) / 1e6:.2f}M at {info.image_size}x{info.image_size}")
    if test_set is None:
        return
    workers = default_workers(dataset) if args.workers is None else args.workers
    precision, criterion = Precision(device, args.amp), nn.CrossEntropyLoss()
    test = evaluate(model, make_loader(test_set, args.batch_size, workers=workers), criterion,
                    device, precision)
    print(f"{dataset} test top-1 {test.top1:.2f}% | top-5 {test.top5:.2f}% | loss {test.loss:.4f} "
          f"({len(test_set)} images)")
    extra_dir = cifar10_1_dir(dataset, args.data, args.cifar10_1)
    if extra_dir:
        extra_set = cifar10_1_dataset(extra_dir)
        extra = evaluate(model, make_loader(extra_set, args.batch_size, workers=workers), criterion,
                         device, precision, desc="cifar10.1")
        print(f"cifar10.1 top-1 {extra.top1:.2f}% | top-5 {extra.top5:.2f}% ({len(extra_set)} images)")


if __name__ == "__main__":
    cli.run(main)
