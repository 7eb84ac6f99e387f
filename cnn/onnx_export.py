"""An evaluation network as an ONNX file, kept only after onnxruntime reproduced PyTorch's logits.

The exporter is torch.onnx's torch.export-based one (``dynamo=True``, which needs onnxscript):
the one PyTorch maintains and the default since PyTorch 2.9, which deprecated the
TorchScript-based exporter. The graph takes float32 images ``[batch, 3, H, W]``, normalised as
the dataset's test transform normalises them, and returns the logits ``[batch, classes]``: no
auxiliary head, no drop path. The batch axis is dynamic; the image size is the one exported.
"""
from __future__ import annotations

import importlib
import inspect
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from errors import UserError

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# The check runs both: one image is the deployment case, 7 differs from the traced batch of 2.
CHECK_BATCH_SIZES = (1, 7)
# Largest |onnxruntime - PyTorch| logit difference allowed, as a fraction of the largest |logit|.
# Measured: about 1e-7 of it (float32 rounding, onnxruntime fuses conv and BatchNorm).
RTOL = 1e-4


class ExportError(UserError):
    """An export that cannot be made here, or whose file did not reproduce the network."""


def require_onnx_packages() -> None:
    """One sentence naming every missing package, before any work is done."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs the package{'s' * (len(missing) > 1)} {' and '.join(missing)}, "
                          f"not installed here: pip install {' '.join(missing)}")
    if "dynamic_shapes" not in inspect.signature(torch.onnx.export).parameters:
        raise ExportError(f"ONNX export needs the torch.export-based exporter, which PyTorch {torch.__version__} "
                          f"lacks: upgrade torch (tested with 2.14.1)")


class Logits(nn.Module):
    """What a deployed classifier returns: the logits alone (our networks also return the auxiliary ones)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)[0]


@dataclass(frozen=True)
class Check:
    """onnxruntime's logits against PyTorch's on the same images."""
    max_diff: float
    logit_scale: float    # largest |logit| PyTorch gave
    rtol: float

    @property
    def tolerance(self) -> float:
        return self.rtol * self.logit_scale

    @property
    def passed(self) -> bool:
        return self.max_diff <= self.tolerance   # False for NaN

    def describe(self) -> str:
        return (f"max |logit difference| {self.max_diff:.2e} {'<=' if self.passed else '>'} tolerance "
                f"{self.tolerance:.2e} = {self.rtol:g} x largest |logit| {self.logit_scale:.3g}, "
                f"batch sizes {' and '.join(map(str, CHECK_BATCH_SIZES))}")


def check_onnx(path: str | Path, model: nn.Module, images: torch.Tensor, rtol: float = RTOL) -> Check:
    """Run the file in onnxruntime at every batch size of CHECK_BATCH_SIZES and compare with `model`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    max_diff, scale = 0.0, 0.0
    for n in CHECK_BATCH_SIZES:
        batch = images[:n]
        with torch.no_grad():
            expected = model(batch).double()
        got = torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0]).double()
        if got.shape != expected.shape:
            raise ExportError(f"onnxruntime returned logits of shape {tuple(got.shape)} for a batch of {n}, "
                              f"PyTorch {tuple(expected.shape)}")
        max_diff = max(max_diff, (got - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
    return Check(max_diff, scale, rtol)


def export_onnx(network: nn.Module, images: torch.Tensor, target: str | Path, metadata: dict[str, str],
                rtol: float = RTOL) -> Check:
    """Write `network` (eval mode, logits only) to `target`, checked on `images` (at least
    max(CHECK_BATCH_SIZES) real ones); a failed check leaves no file and raises ExportError."""
    if len(images) < max(CHECK_BATCH_SIZES):
        raise ExportError(f"the ONNX check needs {max(CHECK_BATCH_SIZES)} images, got {len(images)}")
    model = Logits(network).eval()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(model, (images[:2],), dynamo=True, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes={"images": {0: batch}}, verbose=False)
        program.model.metadata_props.update(metadata)
        program.save(tmp, external_data=False)
        check = check_onnx(tmp, model, images, rtol)
        if not check.passed:
            raise ExportError(f"onnxruntime's logits differ from PyTorch's ({check.describe()}), "
                              f"so {target} was not written")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return check
