"""Data loading on tiny datasets written in the real on-disk formats."""
import pickle
import socket

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets

import data
from data import (DATASETS, Cutout, DataError, DeviceAugment, DeviceDataError, DeviceLoader, build_datasets,
                  cifar10_1_dataset, dataset_info, find_cifar10_1, make_loader, split_train_valid)
from sampling import EvalShard, SeededSamples, ShardedOrder
from tiny_datasets import make_cifar10, make_cifar10_1, make_cifar100, make_imagefolder


# --------------------------------------------------------------------------- names


def test_dataset_info_for_every_name():
    assert DATASETS == ("cifar10", "cifar100", "imagenet", "digits")
    assert dataset_info("cifar10") == data.DatasetInfo("cifar10", 10, 32, "cifar")
    assert dataset_info("cifar100").num_classes == 100
    assert (dataset_info("imagenet").num_classes, dataset_info("imagenet").image_size,
            dataset_info("imagenet").network) == (1000, 224, "imagenet")
    assert (dataset_info("digits").image_size, dataset_info("digits").network) == (16, "cifar")


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="cifar10, cifar100, imagenet, digits"):
        dataset_info("mnist")
    with pytest.raises(DataError, match="Unknown dataset 'svhn'"):
        build_datasets("svhn", tmp_path)


# --------------------------------------------------------------------------- CIFAR


def _normalised(row: np.ndarray, mean, std) -> torch.Tensor:
    img = torch.as_tensor(row.reshape(3, 32, 32), dtype=torch.float32) / 255.0
    return (img - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_cifar10_reads_the_torchvision_layout(tmp_path):
    make_cifar10(tmp_path, n_train=20, n_test=10)
    train, test = build_datasets("cifar10", tmp_path, download=False)
    assert (len(train), len(test)) == (20, 10)
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    img, label = train[3]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert sorted(set(train.targets)) == list(range(10))
    # The test transform is exactly ToTensor + Normalize of the stored pixels.
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    img, label = test[4]
    assert label == batch["labels"][4]
    assert torch.allclose(img, _normalised(batch["data"][4], data.CIFAR10_MEAN, data.CIFAR10_STD), atol=1e-5)


def test_stock_torchvision_rejects_tiny_files_that_we_accept(tmp_path):
    # Why data.py uses presence-only checks: torchvision compares the md5 of the real files.
    make_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        tv_datasets.CIFAR10(tmp_path, train=True, download=False)
    assert len(build_datasets("cifar10", tmp_path, download=False)[0]) == 20


def test_cifar100_with_cutout_and_autoaugment(tmp_path):
    make_cifar100(tmp_path, n_train=12, n_test=6)
    train, test = build_datasets("cifar100", tmp_path, cutout_length=16, auto_augment=True, download=False)
    assert (len(train), len(test)) == (12, 6)
    assert len(train.classes) == 100
    assert all(0 <= t < 100 for t in train.targets + test.targets)
    torch.manual_seed(0)
    for i in range(len(train)):
        img, _ = train[i]
        assert img.shape == (3, 32, 32)
    assert test[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("name, label, archive", [
    ("cifar10", "CIFAR-10", "cifar-10-python.tar.gz"),
    ("cifar100", "CIFAR-100", "cifar-100-python.tar.gz"),
])
def test_missing_cifar_says_where_to_put_it(tmp_path, name, label, archive):
    with pytest.raises(DataError) as err:
        build_datasets(name, tmp_path, download=False)
    message = str(err.value)
    assert message.startswith(f"{label} not found under {tmp_path}")
    assert archive in message and "network access" in message


def test_failed_download_is_a_data_error_and_restores_the_timeout(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket, "create_connection", offline)
    previous = socket.getdefaulttimeout()
    with pytest.raises(DataError, match="CIFAR-10 not found .*download failed"):
        build_datasets("cifar10", tmp_path / "nowhere", download=True)
    assert socket.getdefaulttimeout() == previous


def test_corrupted_cifar_file_is_a_data_error(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="could not be read.*delete that folder"):
        build_datasets("cifar10", tmp_path, download=False)


# --------------------------------------------------------------------------- ImageNet


def test_imagenet_folders(tmp_path):
    make_imagefolder(tmp_path, classes=3, per_class=2, size=64)
    train, val = build_datasets("imagenet", tmp_path, cutout_length=56)
    assert (len(train), len(val)) == (6, 6)
    assert len(train.classes) == 3 and train.classes == val.classes
    img, label = train[5]
    assert img.shape == (3, 224, 224) and label == 2
    img, label = val[0]
    assert img.shape == (3, 224, 224) and label == 0
    torch.testing.assert_close(val[1][0], val[1][0])  # plain preprocessing is deterministic


def test_missing_imagenet_names_the_folders(tmp_path):
    with pytest.raises(DataError) as err:
        build_datasets("imagenet", tmp_path)
    assert "train" in str(err.value) and "val" in str(err.value) and "<class>" in str(err.value)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="ImageNet not found"):  # folders without classes
        build_datasets("imagenet", tmp_path)


def test_imagenet_train_and_val_must_share_classes(tmp_path):
    make_imagefolder(tmp_path, classes=2)
    (tmp_path / "val" / "n00000001").rename(tmp_path / "val" / "other")
    with pytest.raises(DataError, match="same class folders"):
        build_datasets("imagenet", tmp_path)


# --------------------------------------------------------------------------- CIFAR-10.1


def test_cifar10_1_from_npy(tmp_path):
    make_cifar10_1(tmp_path, n=10)
    ds = cifar10_1_dataset(tmp_path)
    assert len(ds) == 10
    img, label = ds[7]
    assert img.shape == (3, 32, 32) and label == 7
    raw = np.load(tmp_path / "cifar10.1_v6_data.npy")[7]
    expected = _normalised(raw.transpose(2, 0, 1), data.CIFAR10_MEAN, data.CIFAR10_STD)
    assert torch.allclose(img, expected, atol=1e-5)


def test_cifar10_1_v4_names_and_subfolder(tmp_path):
    assert find_cifar10_1(tmp_path) is None
    make_cifar10_1(tmp_path / "cifar10.1", n=4, version="v4")
    assert find_cifar10_1(tmp_path) == tmp_path / "cifar10.1"
    assert find_cifar10_1(tmp_path / "cifar10.1") == tmp_path / "cifar10.1"
    assert len(cifar10_1_dataset(tmp_path)) == 4


def test_missing_cifar10_1_names_both_files(tmp_path):
    with pytest.raises(DataError) as err:
        cifar10_1_dataset(tmp_path)
    message = str(err.value)
    assert "cifar10.1_v6_data.npy" in message and "cifar10.1_v6_labels.npy" in message
    assert str(tmp_path) in message


def test_cifar10_1_with_wrong_shape_is_a_data_error(tmp_path):
    np.save(tmp_path / "cifar10.1_v6_data.npy", np.zeros((3, 28, 28, 3), dtype=np.uint8))
    np.save(tmp_path / "cifar10.1_v6_labels.npy", np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="not uint8 N x 32 x 32 x 3"):
        cifar10_1_dataset(tmp_path)


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return build_datasets("digits", "unused")


def test_digits_split_sizes_shapes_and_labels(digits):
    train, test = digits
    assert (len(train), len(test)) == (1437, 360)
    img, label = train[0]
    assert img.shape == (3, 16, 16) and img.dtype == torch.float32
    assert sorted(set(train.targets)) == list(range(10)) and set(test.targets) <= set(range(10))


def test_digits_split_is_the_documented_permutation_and_stable(digits):
    from sklearn.datasets import load_digits

    train, test = digits
    order = np.random.RandomState(0).permutation(1797)
    target = load_digits().target
    assert train.targets == target[order[:1437]].tolist()
    assert test.targets == target[order[1437:]].tolist()
    train2, test2 = build_datasets("digits", "unused")
    assert train2.targets == train.targets
    assert torch.equal(test2.images, test.images)
    torch.testing.assert_close(test2[11][0], test[11][0])


def test_digits_normalised_with_train_statistics(digits):
    train, test = digits
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey replicated to RGB
    normalised = torch.stack([test.transform(x) for x in train.images])
    assert abs(float(normalised.mean())) < 1e-4
    assert abs(float(normalised.std()) - 1.0) < 1e-3


def test_digits_training_augmentation(digits):
    train, _ = digits
    torch.manual_seed(0)
    views = torch.stack([train[5][0] for _ in range(8)])
    assert views.shape == (8, 3, 16, 16)
    assert not all(torch.equal(views[0], v) for v in views[1:])  # random crops move the digit
    aug_train, _ = build_datasets("digits", "unused", cutout_length=4, auto_augment=True)
    for i in range(20):
        img, _ = aug_train[i]
        assert img.shape == (3, 16, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()
    assert torch.equal(aug_train.images, train.images)  # transforms never write into the stored images


# --------------------------------------------------------------------------- cutout


def test_cutout_zeroes_a_square_of_the_right_size():
    cut = Cutout(8)
    full = 0
    for seed in range(40):
        torch.manual_seed(seed)
        img = torch.ones(3, 32, 32)
        out = cut(img)
        assert torch.equal(img, torch.ones(3, 32, 32))  # input untouched
        zero = out[0] == 0
        assert torch.equal(zero, out[1] == 0) and torch.equal(zero, out[2] == 0)
        rows, cols = zero.any(1), zero.any(0)
        assert torch.equal(zero, rows[:, None] & cols[None, :])  # a rectangle
        h, w = int(rows.sum()), int(cols.sum())
        assert 4 <= h <= 8 and 4 <= w <= 8
        inside = lambda m: not bool(m[0]) and not bool(m[-1])  # noqa: E731
        if inside(rows):
            assert h == 8
        if inside(cols):
            assert w == 8
        full += (h, w) == (8, 8)
    assert full > 10
    torch.manual_seed(3)
    first = cut(torch.ones(3, 32, 32))
    torch.manual_seed(3)
    assert torch.equal(first, cut(torch.ones(3, 32, 32)))


# --------------------------------------------------------------------------- splits and loaders


class _Range(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i


def test_split_train_valid_deterministic_and_disjoint():
    ds = _Range(101)
    a_train, a_valid = split_train_valid(ds, 0.5, seed=2)
    b_train, b_valid = split_train_valid(ds, 0.5, seed=2)
    assert a_train.indices == b_train.indices and a_valid.indices == b_valid.indices
    assert (len(a_train), len(a_valid)) == (50, 51)
    assert set(a_train.indices).isdisjoint(a_valid.indices)
    assert sorted(a_train.indices + a_valid.indices) == list(range(101))
    assert split_train_valid(ds, 0.5, seed=3)[0].indices != a_train.indices
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_train_valid(ds, 1.0, seed=0)


def _order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_make_loader_follows_its_sampler_or_the_dataset_order():
    ds = _Range(50)
    plain = make_loader(ds, 8)
    assert plain.pin_memory == torch.cuda.is_available()
    assert _order(plain) == list(range(50))
    assert _order(make_loader(ds, 8, sampler=EvalShard(50, 1, 3))) == list(range(1, 50, 3))
    state = torch.get_rng_state()
    list(make_loader(ds, 8))
    assert torch.equal(state, torch.get_rng_state())     # the model's random draws do not depend on loaders


def test_seeded_samples_augment_the_same_with_any_number_of_workers(digits):
    # what makes --resume exact and torchrun shares equal one process's batches: a sample's
    # augmentation depends on (seed, pass, position) only
    train, _ = digits
    subset = torch.utils.data.Subset(train, range(48))
    epochs = []
    for workers in (0, 2):
        order = ShardedOrder(len(subset), seed=1)
        order.set_epoch(3)
        epochs.append(list(make_loader(SeededSamples(subset), 16, workers=workers, sampler=order)))
    for (x, y), (x2, y2) in zip(*epochs, strict=True):
        assert torch.equal(y, y2) and torch.equal(x, x2)
    order = ShardedOrder(len(subset), seed=1)
    order.set_epoch(4)
    assert not torch.equal(next(iter(make_loader(SeededSamples(subset), 16, sampler=order)))[0], epochs[0][0][0])


# --------------------------------------------------------------------------- images held on the device


def _augmented_by_hand(image: np.ndarray, params, padding: int, mean, std, cutout: int) -> torch.Tensor:
    """The CIFAR training transform of one stored HWC uint8 image, written out with numpy: zero padding,
    crop at (top, left), flip, scale to [0, 1], normalise, zero a cutout square clipped at the borders."""
    top, left, flip, cy, cx = (int(v) for v in params)
    h, w = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    out = padded[top:top + h, left:left + w]
    if flip:
        out = out[:, ::-1]
    out = (out.astype(np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
    out = out.transpose(2, 0, 1).copy()
    y0, x0 = cy - cutout // 2, cx - cutout // 2
    out[:, max(y0, 0):max(y0 + cutout, 0), max(x0, 0):max(x0 + cutout, 0)] = 0.0
    return torch.from_numpy(out)


def test_device_loader_augments_cifar_as_the_cpu_transform_does(tmp_path):
    make_cifar10(tmp_path, n_train=20, n_test=10)
    train, test = build_datasets("cifar10", tmp_path, download=False, cutout_length=16)
    order = ShardedOrder(len(train), seed=3, batch_size=8)
    loader = DeviceLoader(train, 8, torch.device("cpu"), sampler=order)
    assert len(loader) == 3
    batches = list(loader)
    assert [x.shape[0] for x, _ in batches] == [8, 8, 4]
    items = list(order)
    params = loader.augment.parameters([seed for _, seed in items], 32, 32)
    x, y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    for i, (index, _) in enumerate(items):
        assert int(y[i]) == train.targets[index]
        want = _augmented_by_hand(train.data[index], params[i], 4, data.CIFAR10_MEAN, data.CIFAR10_STD, 16)
        torch.testing.assert_close(x[i], want, rtol=0, atol=1e-6)
    # the test split: plain normalisation, in dataset order
    x_test, y_test = next(iter(DeviceLoader(test, 10, torch.device("cpu"))))
    torch.testing.assert_close(x_test, torch.stack([test[i][0] for i in range(10)]), rtol=0, atol=1e-6)
    assert y_test.tolist() == test.targets


def test_device_augmentation_draws_cover_every_crop_flip_and_cutout_centre():
    augment = DeviceAugment(crop_padding=4, flip_probability=0.5, cutout_length=16)
    params = augment.parameters(list(range(20_000)), 32, 32)
    assert set(params[:, 0]) == set(params[:, 1]) == set(range(9))
    assert set(params[:, 3]) == set(params[:, 4]) == set(range(32))
    assert abs(params[:, 2].mean() - 0.5) < 0.02
    assert np.array_equal(augment.parameters([7, 7], 32, 32)[0], augment.parameters([7, 1], 32, 32)[0])


def test_device_loader_refuses_what_it_cannot_apply_on_the_device(tmp_path):
    make_cifar10(tmp_path, n_train=20, n_test=10)
    train, _ = build_datasets("cifar10", tmp_path, download=False, auto_augment=True)
    with pytest.raises(DeviceDataError, match="--auto_aug"):
        DeviceLoader(train, 8, torch.device("cpu"))
