"""Tiny datasets written to disk in the real on-disk formats, for tests.

Each function writes under ``root`` and returns the path a loader should be given. Images are
random (seeded, so the files are the same every time); labels cycle through the classes so every
class appears once there are enough examples.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck"]


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random CIFAR rows: uint8, N x 3072, channel-major (R plane, G plane, B plane)."""
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    # The published files are Python 2 pickles with str keys; protocol 2 keeps that layout.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta); returns root."""
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    offset = 0
    for i, rows in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        labels = [int(j % 10) for j in rows]
        _dump(folder / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of 5",
            "labels": labels,
            "data": _images(rng, len(rows)),
            "filenames": [f"train_{offset + k}.png" for k in range(len(rows))],
        })
        offset += len(rows)
    _dump(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(j % 10) for j in range(n_test)],
        "data": _images(rng, n_test),
        "filenames": [f"test_{k}.png" for k in range(n_test)],
    })
    _dump(folder / "batches.meta", {
        "num_cases_per_batch": max(1, n_train // 5),
        "label_names": list(CIFAR10_LABEL_NAMES),
        "num_vis": 3072,
    })
    return root


def make_cifar100(root, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """Write ``root/cifar-100-python`` (train, test, meta); returns root."""
    root = Path(root)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [int(j % 100) for j in range(n)]
        _dump(folder / split, {
            "filenames": [f"{split}_{k}.png" for k in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": _images(rng, n),
        })
    _dump(folder / "meta", {
        "fine_label_names": [f"fine_{i:03d}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
    })
    return root


def make_imagefolder(root, classes: int = 3, per_class: int = 2, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{split}_{c}_{k}.png")
    return root


def make_cifar10_1(root, n: int = 10, version: str = "v6", seed: int = 0) -> Path:
    """Write ``cifar10.1_<version>_data.npy`` (uint8 N x 32 x 32 x 3) and ``..._labels.npy``; returns root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(root / f"cifar10.1_{version}_data.npy",
            rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8))
    np.save(root / f"cifar10.1_{version}_labels.npy", np.arange(n, dtype=np.int64) % 10)
    return root


def make_text_corpus(root, n_train: int = 240, n_valid: int = 30, n_test: int = 30) -> Path:
    """Write ``root/train.txt``, ``valid.txt`` and ``test.txt`` (the PTB layout: one sentence per line,
    words separated by spaces) from the first sentences of the offline pydoc corpus; returns root."""
    from corpus import pydoc_sentences
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sentences = pydoc_sentences()
    parts = {"train": sentences[:n_train], "valid": sentences[n_train:n_train + n_valid],
             "test": sentences[n_train + n_valid:n_train + n_valid + n_test]}
    for name, part in parts.items():
        (root / f"{name}.txt").write_text("".join(f" {' '.join(words)} \n" for words in part), encoding="utf-8")
    return root
