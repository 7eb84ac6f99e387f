"""Datasets, transforms and loaders for search, training and evaluation.

Supported names (``DATASETS``):

* ``cifar10`` / ``cifar100``: torchvision's on-disk "python version"
  (``<root>/cifar-10-batches-py``, ``<root>/cifar-100-python``). Downloaded once when missing and
  the network allows it.
* ``imagenet``: ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` image folders; an image that
  cannot be decoded is skipped with a warning naming its file (``SkippingImageFolder``).
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, no
  download), a laptop-sized stand-in for quick searches and tests. The split is fixed:
  ``numpy.random.RandomState(0).permutation(1797)``, the first 1437 indices are the training set and
  the last 360 the test set. Images are upsampled once at load time from 8x8 to 16x16 (bilinear),
  scaled from 0..16 to [0, 1], replicated to three channels (the DARTS stems take RGB) and
  normalised with the per-channel mean/std of the training split.

Besides these, ``cifar10_1_dataset`` reads the CIFAR-10.1 extra test set from its published
``.npy`` files.

``DeviceLoader`` (``--data_on_device``) holds CIFAR, digits or CIFAR-10.1 on the device (CIFAR as uint8,
150 MB for CIFAR-10) and augments whole batches there, with the random crop, flip, normalisation and
cutout of the dataset's own transform: no worker processes and no host-to-device copies per step.

Integrity of CIFAR files: torchvision's CIFAR classes compare the md5 of every extracted file on
each construction. Here they are subclassed with the checksums of the *extracted* files set to
``None`` (torchvision's own "presence only" value of ``check_integrity``): the downloaded archive
is still md5-verified by torchvision, while the extracted batches are checked for presence and then
for content as they are read (a file that does not unpickle, or holds images of the wrong shape,
gives a ``DataError``). This avoids hashing ~180 MB at every start and accepts any copy in the real
layout, including the tiny ones the tests write.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from errors import UserError


class DataError(UserError):
    """A dataset is missing or unusable; the message says what is wrong and what to do."""


class EmptySplitError(DataError):
    """A train/valid split with an empty part; `sizes` lets the caller say what each part is for."""

    def __init__(self, first: int, second: int):
        super().__init__(f"a split of {first + second} examples into {first} and {second} leaves a part empty")
        self.sizes = (first, second)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int  # side of the network input
    network: str  # "cifar" (NetworkCIFAR stem) or "imagenet" (NetworkImageNet stem)


_INFO = {
    "cifar10": DatasetInfo("cifar10", 10, 32, "cifar"),
    "cifar100": DatasetInfo("cifar100", 100, 32, "cifar"),
    "imagenet": DatasetInfo("imagenet", 1000, 224, "imagenet"),
    "digits": DatasetInfo("digits", 10, 16, "cifar"),
}
DATASETS: tuple[str, ...] = tuple(_INFO)

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.50707519, 0.48654887, 0.44091785)
CIFAR100_STD = (0.26733428, 0.25643846, 0.27615049)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

DIGITS_TRAIN_SIZE = 1437
DIGITS_SPLIT_SEED = 0

DOWNLOAD_TIMEOUT_S = 15.0


def _canonical(name: str) -> str:
    key = str(name).lower()
    if key not in _INFO:
        raise DataError(f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Static facts about a dataset (classes, input side, which network stem)."""
    return _INFO[_canonical(name)]


# --------------------------------------------------------------------------- transforms


class Cutout:
    """Zero a ``length`` x ``length`` square (clipped at the borders) of a CHW tensor.

    The centre is drawn uniformly over the image with torch's RNG, so ``torch.manual_seed`` (and
    the per-worker seeds the DataLoader derives from its generator) make it reproducible. The input
    is not modified; a new tensor is returned.
    """

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"Cutout length must be at least 1, got {length}.")
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2], img.shape[-1]
        cy = int(torch.randint(h, (1,)))
        cx = int(torch.randint(w, (1,)))
        top, left = cy - self.length // 2, cx - self.length // 2
        y1, y2 = max(top, 0), min(top + self.length, h)
        x1, x2 = max(left, 0), min(left + self.length, w)
        out = img.clone()
        out[..., y1:y2, x1:x2] = 0
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


def _finish(steps: list, mean, std, cutout_length: int) -> T.Compose:
    """Append normalisation and the optional cutout to a list of transforms."""
    steps = steps + [T.Normalize(mean, std)]
    if cutout_length > 0:
        steps.append(Cutout(cutout_length))
    return T.Compose(steps)


def build_transforms(name: str, *, cutout_length: int = 0, auto_augment: bool = False,
                     mean=None, std=None) -> tuple[T.Compose, T.Compose]:
    """(train, test) transforms of a dataset; ``mean``/``std`` are needed (and used) for digits only.

    digits: the training images are in-memory [0, 1] tensors; training adds a random 16-pixel crop
    with 2 pixels of zero (background) padding and no flips, since a flipped digit is another
    digit. ``auto_augment`` uses torchvision's SVHN policy (learned on house-number digits; it has
    no flips) on a uint8 copy of the image.
    """
    key = _canonical(name)
    if key in ("cifar10", "cifar100"):
        mean, std = (CIFAR10_MEAN, CIFAR10_STD) if key == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
        train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        if auto_augment:
            train.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10))
        train.append(T.ToTensor())
        return _finish(train, mean, std, cutout_length), _finish([T.ToTensor()], mean, std, 0)
    if key == "imagenet":
        train = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.2)]
        if auto_augment:
            train.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET))
        train.append(T.ToTensor())
        test = [T.Resize(256), T.CenterCrop(224), T.ToTensor()]
        return (_finish(train, IMAGENET_MEAN, IMAGENET_STD, cutout_length),
                _finish(test, IMAGENET_MEAN, IMAGENET_STD, 0))
    # digits
    if mean is None or std is None:
        raise ValueError("digits transforms need the training split's mean and std.")
    side = _INFO["digits"].image_size
    train = [T.RandomCrop(side, padding=2)]
    if auto_augment:
        train += [T.ConvertImageDtype(torch.uint8), T.AutoAugment(T.AutoAugmentPolicy.SVHN),
                  T.ConvertImageDtype(torch.float32)]
    return _finish(train, mean, std, cutout_length), _finish([], mean, std, 0)


# --------------------------------------------------------------------------- datasets


class InMemoryDataset(Dataset):
    """Images held in memory (a tensor, or an array of HWC uint8 images) with integer labels."""

    def __init__(self, images, targets, transform=None, classes=None):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels.")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


def _without_md5(entries):
    return [[filename, None] for filename, _ in entries]


class _CIFAR10(tv_datasets.CIFAR10):
    # See the module docstring: presence is checked here, content while loading.
    train_list = _without_md5(tv_datasets.CIFAR10.train_list)
    test_list = _without_md5(tv_datasets.CIFAR10.test_list)
    meta = {**tv_datasets.CIFAR10.meta, "md5": None}


class _CIFAR100(tv_datasets.CIFAR100):
    train_list = _without_md5(tv_datasets.CIFAR100.train_list)
    test_list = _without_md5(tv_datasets.CIFAR100.test_list)
    meta = {**tv_datasets.CIFAR100.meta, "md5": None}


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _cifar_files(cls, root: Path) -> list[Path]:
    folder = root / cls.base_folder
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [folder / n for n in names]


def _first_missing_folder(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what a download would create)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _load_cifar(key: str, root: Path, train_tf, test_tf, download: bool):
    """A complete copy is read; no copy is downloaded (into a --data folder created only if the
    download succeeds); an incomplete copy is refused, naming its missing files."""
    cls, label = (_CIFAR10, "CIFAR-10") if key == "cifar10" else (_CIFAR100, "CIFAR-100")
    folder = root / cls.base_folder
    absent = [p.name for p in _cifar_files(cls, root) if not p.is_file()]
    if absent and folder.is_dir():
        raise DataError(f"{label} under {folder} is incomplete: {', '.join(absent)} missing; put a full copy "
                        f"of the python version ({cls.filename}, extracted) there.")
    not_found = (f"{label} not found under {root}: put the python version ({cls.filename}, "
                 f"extracted to {folder}) there, or run with network access to download it")
    if absent and not download:
        raise DataError(not_found + ".")
    created = _first_missing_folder(root)
    try:
        if absent:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                train = cls(root, train=True, transform=train_tf, download=True)
        else:
            train = cls(root, train=True, transform=train_tf, download=False)
        test = cls(root, train=False, transform=test_tf, download=False)
    except Exception as exc:  # network, unpickling or layout failures all end the same way
        if absent:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise DataError(f"{not_found} (download failed: {exc}).") from exc
        raise DataError(f"{label} files under {folder} could not be read ({exc}): "
                        f"delete that folder and put a fresh copy of {cls.filename} there.") from exc
    for part in (train, test):
        labels = np.asarray(part.targets)
        if labels.size and (labels.min() < 0 or labels.max() >= len(part.classes)):
            raise DataError(f"{label} files under {root / cls.base_folder} hold labels outside "
                            f"0..{len(part.classes) - 1}: replace them with a fresh copy of {cls.filename}.")
    return train, test


class SkippingImageFolder(tv_datasets.ImageFolder):
    """An ImageFolder that skips an image it cannot decode, with a warning naming the file: the
    next readable image of the folder takes its place, so one bad file does not end a run."""

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                sample = self.loader(path)
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
                warnings.warn(f"skipping unreadable image {path} ({type(exc).__name__}: {exc})", stacklevel=2)
                continue
            if self.transform is not None:
                sample = self.transform(sample)
            return sample, target
        raise DataError(f"no image under {self.root} can be read")


def _load_imagenet(root: Path, train_tf, test_tf):
    hint = (f"ImageNet not found under {root}: it needs {root / 'train'}/<class>/*.JPEG and "
            f"{root / 'val'}/<class>/*.JPEG (the validation images sorted into the same class folders).")
    parts = []
    for split, tf in (("train", train_tf), ("val", test_tf)):
        folder = root / split
        if not folder.is_dir():
            raise DataError(hint)
        try:
            parts.append(SkippingImageFolder(folder, transform=tf))
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"{hint} ({exc})") from exc
    train, val = parts
    if train.classes != val.classes:
        raise DataError(f"ImageNet under {root}: train/ has {len(train.classes)} class folders and "
                        f"val/ has {len(val.classes)} with different names; give both the same class folders.")
    return train, val


def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as float [0, 1] tensors of shape (N, 3, 16, 16) in the fixed split order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(bunch.target))
    images = torch.as_tensor(bunch.images[order], dtype=torch.float32).unsqueeze(1) / 16.0
    side = _INFO["digits"].image_size
    images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    return images, torch.as_tensor(bunch.target[order], dtype=torch.long)


def _load_digits(cutout_length: int, auto_augment: bool):
    images, labels = _digits_arrays()
    n_train = DIGITS_TRAIN_SIZE
    train_images = images[:n_train]
    mean = train_images.mean(dim=(0, 2, 3)).tolist()
    std = train_images.std(dim=(0, 2, 3)).tolist()
    train_tf, test_tf = build_transforms("digits", cutout_length=cutout_length,
                                         auto_augment=auto_augment, mean=mean, std=std)
    classes = [str(i) for i in range(10)]
    train = InMemoryDataset(train_images, labels[:n_train].tolist(), train_tf, classes)
    test = InMemoryDataset(images[n_train:], labels[n_train:].tolist(), test_tf, classes)
    return train, test


def build_datasets(name: str, root: str | Path, *, cutout_length: int = 0, auto_augment: bool = False,
                   download: bool = True) -> tuple[Dataset, Dataset]:
    """(train, test) datasets: training augmentation on train, plain preprocessing on test.

    ``root`` is ignored for digits. Each returned dataset has ``classes`` (its class names); for
    ImageNet their number is whatever the class folders hold.
    """
    key = _canonical(name)
    if key == "digits":
        return _load_digits(cutout_length, auto_augment)
    root = Path(root).expanduser()
    train_tf, test_tf = build_transforms(key, cutout_length=cutout_length, auto_augment=auto_augment)
    if key == "imagenet":
        return _load_imagenet(root, train_tf, test_tf)
    return _load_cifar(key, root, train_tf, test_tf, download)


# --------------------------------------------------------------------------- CIFAR-10.1

_CIFAR10_1_VERSIONS = ("v6", "v4")


def _cifar10_1_files(folder: Path) -> tuple[Path, Path] | None:
    for version in _CIFAR10_1_VERSIONS:
        data = folder / f"cifar10.1_{version}_data.npy"
        labels = folder / f"cifar10.1_{version}_labels.npy"
        if data.is_file() and labels.is_file():
            return data, labels
    return None


def find_cifar10_1(root: str | Path) -> Path | None:
    """The folder holding the CIFAR-10.1 files: ``root`` or ``root/cifar10.1``; None if neither."""
    root = Path(root).expanduser()
    for folder in (root, root / "cifar10.1"):
        if _cifar10_1_files(folder) is not None:
            return folder
    return None


def cifar10_1_dir(dataset: str, root: str | Path, given: str | Path | None) -> Path | None:
    """Where to score CIFAR-10.1: the folder given, else one found beside CIFAR-10's files."""
    if given:
        return Path(given)
    return find_cifar10_1(root) if _canonical(dataset) == "cifar10" else None


def cifar10_1_dataset(path: str | Path) -> Dataset:
    """The CIFAR-10.1 test set (v6, else v4) with CIFAR-10 test preprocessing.

    ``path`` is the folder holding ``cifar10.1_v6_data.npy`` and ``cifar10.1_v6_labels.npy`` (or
    a folder whose ``cifar10.1`` subfolder does).
    """
    path = Path(path).expanduser()
    folder = find_cifar10_1(path)
    if folder is None:
        raise DataError(f"CIFAR-10.1 not found in {path}: put cifar10.1_v6_data.npy and "
                        f"cifar10.1_v6_labels.npy (from github.com/modestyachts/CIFAR-10.1, "
                        f"folder datasets/) there.")
    data_file, labels_file = _cifar10_1_files(folder)
    try:
        images = np.load(data_file, allow_pickle=False)
        labels = np.load(labels_file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"CIFAR-10.1 files in {folder} could not be read ({exc}): download them again.") from exc
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DataError(f"{data_file} holds {images.dtype} images of shape {images.shape}, "
                        f"not uint8 N x 32 x 32 x 3: download it again.")
    if labels.shape != (len(images),) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{labels_file} must hold {len(images)} labels in 0..9: download it again.")
    _, test_tf = build_transforms("cifar10")
    return InMemoryDataset(images, labels.tolist(), test_tf, CIFAR10_CLASSES)


# --------------------------------------------------------------------------- splits and loaders


def with_transform(dataset: Dataset, transform) -> Dataset:
    """The same samples with another transform (a held-out part of a training set scored like the test set)."""
    view = copy.copy(dataset)
    view.transform = transform
    return view


def split_train_valid(dataset: Dataset, train_portion: float, seed: int) -> tuple[Subset, Subset]:
    """Split a training set into disjoint (train, valid) subsets.

    The indices are a permutation drawn from ``torch.Generator().manual_seed(seed)``; the first
    ``floor(train_portion * len(dataset))`` go to train, the rest to valid. Both keep the dataset's
    (training) transform. A split that would leave a part empty is an EmptySplitError.
    """
    n = len(dataset)
    if not 0.0 < train_portion < 1.0:
        raise ValueError(f"train_portion must be strictly between 0 and 1, got {train_portion}.")
    n_train = int(np.floor(train_portion * n))
    if n_train == 0 or n_train == n:
        raise EmptySplitError(n_train, n - n_train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return Subset(dataset, order[:n_train]), Subset(dataset, order[n_train:])


def default_workers(name: str) -> int:
    """Loader processes: none for the in-memory digits, else up to 4 within the machine's cores."""
    return 0 if _canonical(name) == "digits" else min(4, os.cpu_count() or 1)


def make_loader(dataset: Dataset, batch_size: int, *, workers: int = 0, sampler=None) -> DataLoader:
    """A DataLoader in `sampler`'s order (``sampling.ShardedOrder`` for training, ``EvalShard`` for
    scoring), or in dataset order. Randomness lives in the sampler and in ``sampling.SeededSamples``,
    not in the loader, so batches do not depend on the number of workers. The loader has a
    generator of its own: every ``iter()`` draws a base seed from it, and drawing from torch's
    global generator instead would shift the model's random draws (drop path, D-DARTS ablation)
    by when iterators are created, e.g. differently after a resume. Memory is pinned only when
    CUDA is available. Workers stay alive from one epoch to the next (starting them costs seconds per
    epoch, while the GPU waits); their random state plays no part, so this changes no batch."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- images held on the device


class DeviceDataError(DataError):
    """A dataset or transform that --data_on_device cannot hold or apply on the device."""


@dataclass(frozen=True)
class DeviceAugment:
    """The steps of a dataset's torchvision transform, applied to whole batches on the device in the
    same order and with the same distributions: a random crop of the image's own size after zero
    padding, a horizontal flip, scaling of uint8 pixels to [0, 1], normalisation, cutout."""
    crop_padding: int = 0
    flip_probability: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    cutout_length: int = 0

    @property
    def random(self) -> bool:
        return bool(self.crop_padding or self.flip_probability or self.cutout_length)

    @classmethod
    def from_transform(cls, transform) -> "DeviceAugment":
        steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
        found: dict = {}
        for step in steps:
            if isinstance(step, T.RandomCrop) and step.padding_mode == "constant" and step.fill == 0 \
                    and not step.pad_if_needed and isinstance(step.padding, int):
                found["crop_padding"] = step.padding
            elif isinstance(step, T.RandomHorizontalFlip):
                found["flip_probability"] = step.p
            elif isinstance(step, T.ToTensor):
                continue
            elif isinstance(step, T.Normalize):
                found["mean"], found["std"] = tuple(map(float, step.mean)), tuple(map(float, step.std))
            elif isinstance(step, Cutout):
                found["cutout_length"] = step.length
            else:
                raise DeviceDataError(f"--data_on_device applies random crops, flips, normalisation and cutout on "
                                      f"the device, not {step!r}: drop --data_on_device or that augmentation "
                                      f"(e.g. --auto_aug)")
        return cls(**found)

    def parameters(self, seeds: list[int], height: int, width: int) -> np.ndarray:
        """Per sample (crop top, crop left, flipped, cutout centre row, cutout centre column), drawn
        uniformly from five numbers that are a function of the sample's seed alone (splitmix64), so
        a sample is augmented the same whatever batch or rank it falls in."""
        z = np.asarray(seeds, dtype=np.uint64)[:, None] + \
            np.arange(1, 6, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        uniform = ((z ^ (z >> np.uint64(31))) >> np.uint64(11)).astype(np.float64) / 2.0**53
        crop = 2 * self.crop_padding + 1
        return np.stack([np.floor(uniform[:, 0] * crop), np.floor(uniform[:, 1] * crop),
                         uniform[:, 2] < self.flip_probability,
                         np.floor(uniform[:, 3] * height), np.floor(uniform[:, 4] * width)], axis=1).astype(np.int64)

    def __call__(self, x: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """Float images of a batch (B, C, H, W) from stored ones (uint8, or float in [0, 1]), with the
        `parameters` of its samples."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        B, C, H, W = x.shape
        if self.crop_padding:
            p = self.crop_padding
            rows = (params[:, 0, None] + torch.arange(H, device=x.device))[:, :, None]
            cols = (params[:, 1, None] + torch.arange(W, device=x.device))[:, None, :]
            batch = torch.arange(B, device=x.device)[:, None, None]
            x = F.pad(x, (p, p, p, p))[batch, :, rows, cols].permute(0, 3, 1, 2)
        if self.flip_probability:
            x = torch.where(params[:, 2, None, None, None].bool(), x.flip(3), x)
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device)[:, None, None]
            x = (x - mean) / torch.tensor(self.std, device=x.device)[:, None, None]
        if self.cutout_length:
            L = self.cutout_length
            top, left = params[:, 3, None] - L // 2, params[:, 4, None] - L // 2
            ys, xs = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
            in_rows = (ys >= top) & (ys < top + L)
            in_cols = (xs >= left) & (xs < left + L)
            x = x.masked_fill(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0.0)
        return x


def _held_images(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor, object]:
    """(images N x C x H x W, labels, transform) of an in-memory dataset or a Subset of one."""
    if isinstance(dataset, Subset):
        images, labels, transform = _held_images(dataset.dataset)
        index = torch.as_tensor(dataset.indices, dtype=torch.long)
        return images[index], labels[index], transform
    labels = torch.as_tensor(getattr(dataset, "targets", []), dtype=torch.long)
    images = getattr(dataset, "data", None) if isinstance(dataset, tv_datasets.CIFAR10) else \
        getattr(dataset, "images", None) if isinstance(dataset, InMemoryDataset) else None
    if images is None:
        raise DeviceDataError("--data_on_device holds CIFAR-10, CIFAR-100, digits and CIFAR-10.1 on the device; "
                              "ImageNet is read from disk: drop --data_on_device")
    if isinstance(images, np.ndarray):      # uint8 N x H x W x C; as N x C x H x W it is channels-last, no copy
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    return images, labels, dataset.transform


DATA_ON_DEVICE_HELP = ("hold CIFAR (as uint8) or digits on the device and crop, flip, cut out and normalise whole "
                       "batches there: no loader workers, no copy per step (not with --auto_aug or ImageNet)")


def data_on_device_refusal(dataset: str, auto_aug: bool) -> str | None:
    """Why --data_on_device cannot serve this dataset and augmentation, or None."""
    if auto_aug or dataset == "imagenet":
        return ("--data_on_device augments CIFAR and digits with crops, flips and cutout on the device: drop "
                + ("--auto_aug" if auto_aug else "it for ImageNet, which is read from disk"))
    return None


class DeviceLoader:
    """Batches of an in-memory image set held on `device` and augmented there (``DeviceAugment``), in the
    order of `sampler` as ``make_loader`` would give them: (index, seed) pairs (``sampling.ShardedOrder``)
    or indices (``EvalShard``, or dataset order when None)."""

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, sampler=None):
        images, labels, transform = _held_images(dataset)
        self.images, self.labels = images.to(device), labels.to(device)
        self.augment = DeviceAugment.from_transform(transform)
        self.batch_size, self.device = batch_size, device
        self.sampler = sampler if sampler is not None else range(len(labels))

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        items = list(self.sampler)
        for start in range(0, len(items), self.batch_size):
            yield self._batch(items[start:start + self.batch_size])

    def _batch(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        seeded = isinstance(items[0], tuple)
        if self.augment.random and not seeded:
            raise ValueError("random augmentation needs (index, seed) items: use a sampling.ShardedOrder sampler")
        indices = [item[0] for item in items] if seeded else items
        index = torch.as_tensor(indices, dtype=torch.long).to(self.device, non_blocking=True)
        params = None
        if self.augment.random:
            height, width = self.images.shape[-2:]
            params = torch.from_numpy(self.augment.parameters([item[1] for item in items], height, width))
            params = params.to(self.device, non_blocking=True)
        return self.augment(self.images[index], params), self.labels[index]
