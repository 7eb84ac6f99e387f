"""ONNX export: every genotype form and the multi-channel paths, checked against onnxruntime."""
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn as nn

import cli
import export_model
from checkpoint import load_checkpoint
from data import build_datasets
from onnx_export import RTOL, ExportError, export_onnx
from scripts import assert_one_sentence_error, run_script

TINY_TRAIN = ["--init_channels", "4", "--layers", "3", "--batch_size", "256", "--workers", "0", "--epochs", "1"]
# Three D-DARTS cells (one gene per layer, reductions at 1 and 2); node 4 of the first cell reads
# node 6, which is never computed, so that edge is skipped as D-DARTS skips it.
NESTED = ("Genotype_nested(genes=["
          "[('sep_conv_3x3', 2, 1), ('max_pool_3x3', 2, 0), ('skip_connect', 3, 2), ('dil_conv_3x3', 4, 0), "
          "('sep_conv_5x5', 4, 6), ('sep_conv_3x3', 5, 3)], "
          "[('dil_conv_5x5', 2, 1), ('max_pool_3x3', 2, 0), ('sep_conv_5x5', 3, 2), ('avg_pool_3x3', 3, 0)], "
          "[('sep_conv_3x3', 2, 0), ('skip_connect', 3, 2), ('dil_conv_3x3', 4, 1), ('sep_conv_3x3', 5, 4)]], "
          "concat=range(2, 6), reductions=[1, 2])")


def digits_test_images(n: int) -> torch.Tensor:
    _, test = build_datasets("digits", "")
    return torch.stack([test[i][0] for i in range(n)])


def onnx_logits(path: Path, images: torch.Tensor) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images.numpy()})[0]


def assert_same_logits(path: Path, network: nn.Module) -> None:
    """Our own comparison, independent of the script's, at batch sizes 1 and 7."""
    network.eval()
    for n in (1, 7):
        images = digits_test_images(n)
        with torch.no_grad():
            expected = network(images)[0].numpy()
        got = onnx_logits(path, images)
        assert got.shape == (n, 10)
        assert np.abs(got - expected).max() <= RTOL * np.abs(expected).max()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A real train.py run folder (DARTS_V2, C=4, 3 cells, one digits epoch)."""
    root = tmp_path_factory.mktemp("logs")
    done = run_script("cnn/train.py", "--arch", "DARTS_V2", "--dataset", "digits", *TINY_TRAIN,
                      env={"DARTS_LOGS_DIR": str(root)})
    assert done.returncode == 0, done.stderr
    return next(root.glob("eval/*"))


def test_script_exports_a_trained_run_checked_by_onnxruntime(trained_run, tmp_path):
    target = tmp_path / "out" / "digits.onnx"
    done = run_script("cnn/export_model.py", trained_run, "--onnx", target)
    assert done.returncode == 0, done.stderr
    check = re.search(r"check: onnxruntime \S+ vs PyTorch on 7 digits test images: max \|logit difference\| (\S+) "
                      r"<= tolerance (\S+) = 0.0001 x largest \|logit\| (\S+), batch sizes 1 and 7: passed", done.stdout)
    assert check, done.stdout
    diff, tolerance, scale = map(float, check.groups())
    assert diff <= tolerance == pytest.approx(1e-4 * scale, rel=0.01)
    assert sorted(p.name for p in target.parent.iterdir()) == ["digits.onnx"]

    model = onnx.load(str(target))
    batch_axis = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.dim_value
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["darts.spec"])["arch_name"] == "DARTS_V2" and metadata["darts.dataset"] == "digits"
    assert not any("auxiliary" in init.name for init in model.graph.initializer)

    args = export_model.parse_args(["--onnx", str(target), "--model_path", str(trained_run / "model_best.pt")])
    network, spec, dataset = export_model.evaluation_network(args)
    assert (spec.init_channels, spec.layers, dataset) == (4, 3, "digits")
    assert_same_logits(target, network)


@pytest.mark.parametrize("flags", [
    ["--arch", "ResNet18", "--init_channels", "4"],                               # DARTOpti Genotype_opt
    ["--arch", "NESTED", "--init_channels", "4"],                                 # D-DARTS Genotype_nested
    ["--multi_channel", "--arch", "MULTI_CHANNEL_HANDMADE_PATH"],                 # sharpDARTS PathSpec
], ids=["dartopti", "nested", "multi_channel"])
def test_each_genotype_form_exports_and_matches(flags, tmp_path, capsys):
    if "NESTED" in flags:
        (tmp_path / "nested.txt").write_text(NESTED + "\n")
        flags = [str(tmp_path / "nested.txt") if f == "NESTED" else f for f in flags]
    target = tmp_path / "net.onnx"
    args = export_model.parse_args(["--onnx", str(target), "--dataset", "digits", *flags])
    export_model.main(["--onnx", str(target), "--dataset", "digits", *flags])
    assert "weights: random init (seed 0)" in capsys.readouterr().out
    network, _, _ = export_model.evaluation_network(args)     # the same seed gives the same weights
    assert_same_logits(target, network)


class CountingCalls(nn.Module):
    """Python state that a trace freezes: every call scales the logits by the number of calls so far."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x).mean((2, 3)) * self.calls, None


def test_a_file_that_does_not_reproduce_the_network_is_not_kept(tmp_path):
    target = tmp_path / "counting.onnx"
    with pytest.raises(ExportError, match=r"differ from PyTorch's .* so .*counting.onnx was not written"):
        export_onnx(CountingCalls(), digits_test_images(7), target, {})
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_is_one_sentence_naming_it(tmp_path):
    done = run_script("tests/patched_script.py", "--hide_package", "onnxruntime", "--",
                      "cnn/export_model.py", "--onnx", tmp_path / "x.onnx", "--arch", "DARTS_V2")
    assert_one_sentence_error(done, "needs the package onnxruntime", "pip install onnxruntime")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to do"),
    (["--name", "x"], "--name needs a run folder"),
    (["run", "--name", "digits-x"], "--name must be a Python identifier"),
    (["--onnx", "x.onnx"], "--onnx needs a run folder, --model_path or --arch"),
    (["run", "--onnx", "x.onnx", "--model_path", "m.pt"], "not both"),
    (["--onnx", "x.onnx", "--multi_channel"], "--multi_channel builds a new network from --arch"),
    (["--onnx", "x.onnx", "--arch", "DARTS_V2", "--rtol", "nan"], "--rtol must be a finite number"),
])
def test_flag_combinations_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: export_model.parse_args(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err, err


def test_copy_into_best_models_still_writes_checkpoint_and_manifest(trained_run, tmp_path):
    manifest_path = export_model.export(trained_run, "tiny_DARTS_V2", out_dir=tmp_path)
    manifest = json.loads(manifest_path.read_text())
    copied = tmp_path / "tiny_DARTS_V2.pt"
    assert manifest["checkpoint"] == copied.name and manifest["sha256"] == export_model.sha256(copied)
    assert (manifest["genotype"], manifest["init_channels"], manifest["layers"]) == ("DARTS_V2", 4, 3)
    assert load_checkpoint(copied)["scores"]["test_top1"] == pytest.approx(manifest["test_top1"], abs=0.005)


@pytest.mark.slow
def test_full_size_darts_v2_exports(tmp_path):
    """C=36, 20 cells at 32 px: a few minutes of tracing on 2 CPU cores."""
    done = run_script("cnn/export_model.py", "--onnx", tmp_path / "darts_v2.onnx", "--arch", "DARTS_V2",
                      "--data", tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert "digits test images resized to 32 px (cifar10 is not under" in done.stdout
    assert "images [batch, 3, 32, 32] -> logits [batch, 10]" in done.stdout
