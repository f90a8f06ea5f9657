"""Data sets: built-in ones, files in torchvision's layout written here, batching, augmentation."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from modeconn.data.catalogue import dataset_names, load_dataset
from modeconn.data.sets import Dataset
from modeconn.data.torchvision_files import CIFAR_STATS, MNIST_STATS, RandomCropFlip, crop_flip

# ---------------------------------------------------------------------------------------------
# Built-in data sets


def test_digits_has_documented_shapes():
    data = load_dataset("digits")
    assert (data.train_x.shape, data.test_x.shape) == ((1437, 1, 8, 8), (360, 1, 8, 8))
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10


def test_digits_labels_cover_all_ten_classes():
    data = load_dataset("digits")
    labels = torch.cat([data.train_y, data.test_y])
    assert labels.min() == 0 and labels.max() == 9
    assert len(labels.unique()) == 10


def test_digits_train_inputs_are_standardised():
    x = load_dataset("digits").train_x
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-4


def test_digits_split_is_reproducible():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


def test_digits_split_partitions_all_1797_images():
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    expected = torch.bincount(torch.as_tensor(load_digits().target))
    assert torch.equal(torch.bincount(torch.cat([data.train_y, data.test_y])), expected)
    assert len(data.train_y) + len(data.test_y) == 1797


def test_digits_has_no_augmentation():
    assert load_dataset("digits").augment is None


@pytest.mark.parametrize(("name", "classes"), [("spiral", 3), ("moons", 2)])
def test_synthetic_sets_are_deterministic(name, classes):
    a, b = load_dataset(name), load_dataset(name)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.train_y, b.train_y) and torch.equal(a.test_y, b.test_y)


@pytest.mark.parametrize(("name", "classes"), [("spiral", 3), ("moons", 2)])
def test_synthetic_sets_have_2d_inputs_and_all_classes(name, classes):
    data = load_dataset(name, n_train=90, n_test=30)
    assert data.train_x.shape == (90, 2) and data.test_x.shape == (30, 2)
    assert data.num_classes == classes
    assert torch.equal(data.train_y.unique(), torch.arange(classes))


def test_synthetic_seed_changes_the_points():
    a, b = load_dataset("spiral", seed=0), load_dataset("spiral", seed=1)
    assert not torch.equal(a.train_x, b.train_x)


def test_spiral_classes_are_separable_by_neighbours():
    from sklearn.neighbors import KNeighborsClassifier

    data = load_dataset("spiral")
    knn = KNeighborsClassifier(5).fit(data.train_x.numpy(), data.train_y.numpy())
    assert knn.score(data.test_x.numpy(), data.test_y.numpy()) > 0.9


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="digits"):
        load_dataset("imagenet-ish")
    assert {"digits", "cifar10", "mnist"} <= set(dataset_names())


def test_unknown_builder_argument_is_rejected():
    with pytest.raises(TypeError):
        load_dataset("spiral", n_trian=10)


# ---------------------------------------------------------------------------------------------
# File-based data sets, from files written in torchvision's on-disk layout


def _write_cifar(root: Path, counts: list[int], bytes_keys: bool, seed: int = 0) -> list:
    """Write tiny CIFAR-10 python batches; return [(images (n,3,32,32) uint8, labels)] per file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    written = []
    for name, n in zip(names, counts, strict=True):
        images = rng.randint(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)
        labels = rng.randint(0, 10, size=n).tolist()
        # One row per image: the red plane, then green, then blue, each row-major (CIFAR docs).
        rows = np.stack(
            [np.concatenate([im[0].ravel(), im[1].ravel(), im[2].ravel()]) for im in images]
        )
        with open(folder / name, "wb") as f:
            pickle.dump({key("data"): rows, key("labels"): labels}, f, protocol=2)
        written.append((images, labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({key("label_names"): [f"class{i}" for i in range(10)]}, f, protocol=2)
    return written


def _unnormalise(x: torch.Tensor, stats) -> torch.Tensor:
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
    return ((x * std + mean) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_pixels_and_labels_round_trip(tmp_path, bytes_keys):
    written = _write_cifar(tmp_path, [3, 2, 2, 1, 2, 4], bytes_keys)
    data = load_dataset("cifar10", root=tmp_path)
    train_images = np.concatenate([im for im, _ in written[:5]])
    train_labels = sum((lab for _, lab in written[:5]), [])
    pixels = _unnormalise(data.train_x, CIFAR_STATS["cifar10"])
    assert torch.equal(pixels, torch.from_numpy(train_images))
    assert data.train_y.tolist() == train_labels
    assert torch.equal(
        _unnormalise(data.test_x, CIFAR_STATS["cifar10"]), torch.from_numpy(written[5][0])
    )
    assert data.test_y.tolist() == written[5][1]


def test_cifar10_has_shapes_classes_and_augmentation(tmp_path):
    _write_cifar(tmp_path, [2, 2, 2, 2, 2, 3], bytes_keys=False)
    data = load_dataset("cifar10", root=str(tmp_path))
    assert data.train_x.shape == (10, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    assert data.num_classes == 10 and isinstance(data.augment, RandomCropFlip)


def test_cifar10_padding_is_a_black_pixel(tmp_path):
    _write_cifar(tmp_path, [1, 1, 1, 1, 1, 1], bytes_keys=False)
    fill = torch.tensor(load_dataset("cifar10", root=tmp_path).augment.fill).view(1, 3, 1, 1)
    assert torch.equal(
        _unnormalise(fill, CIFAR_STATS["cifar10"]), torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    )


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX file as in the MNIST distribution: big-endian magic (uint8, ndim), then dims, data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(raw: Path, n_train: int, n_test: int) -> dict:
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = (rng.randint(0, 256, size=(n, 28, 28)), rng.randint(0, 10, size=n))
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", arrays[prefix][0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", arrays[prefix][1])
    return arrays


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_pixels_and_labels_round_trip(tmp_path, name, folder):
    arrays = _write_mnist(tmp_path / folder / "raw", n_train=7, n_test=5)
    data = load_dataset(name, root=tmp_path)
    for x, y, (images, labels) in (
        (data.train_x, data.train_y, arrays["train"]),
        (data.test_x, data.test_y, arrays["t10k"]),
    ):
        assert x.shape == (len(images), 1, 28, 28)
        assert torch.equal(
            _unnormalise(x, MNIST_STATS[name]), torch.from_numpy(images[:, None].astype(np.uint8))
        )
        assert torch.equal(y, torch.from_numpy(labels).long())
    assert data.augment is None


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
    ],
)
def test_missing_files_say_where_and_how_to_download(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / folder) in message and "download=True" in message


def test_file_based_set_without_root_asks_for_root():
    with pytest.raises(ValueError, match="root="):
        load_dataset("cifar10")


# ---------------------------------------------------------------------------------------------
# Augmentation


def _reference_crop_flip(x, dy, dx, flip, fill, p):
    """Pad every image by p with `fill`, crop at (p+dy, p+dx), flip: one image at a time."""
    out = []
    h, w = x.shape[-2:]
    for img, a, b, f in zip(x, dy.tolist(), dx.tolist(), flip.tolist(), strict=True):
        padded = fill.expand(-1, h + 2 * p, w + 2 * p).clone()
        padded[:, p : p + h, p : p + w] = img
        crop = padded[:, p + a : p + a + h, p + b : p + b + w]
        out.append(crop.flip(-1) if f else crop)
    return torch.stack(out)


def test_unshifted_unflipped_crop_is_the_input():
    x = torch.randn(5, 3, 8, 8)
    zero = torch.zeros(5, dtype=torch.long)
    assert torch.equal(crop_flip(x, zero, zero, torch.zeros(5, dtype=torch.bool)), x)


def test_flip_only_mirrors_columns():
    x = torch.randn(4, 3, 6, 6)
    zero = torch.zeros(4, dtype=torch.long)
    assert torch.equal(crop_flip(x, zero, zero, torch.ones(4, dtype=torch.bool)), x.flip(-1))


def test_crop_flip_matches_per_image_pad_crop_flip():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 3, 10, 10, generator=gen)
    dy, dx = torch.randint(-4, 5, (2, 64), generator=gen)
    flip = torch.rand(64, generator=gen) < 0.5
    fill = torch.tensor([-1.0, 0.5, 2.0]).view(3, 1, 1)
    expected = _reference_crop_flip(x, dy, dx, flip, fill, p=4)
    assert torch.equal(crop_flip(x, dy, dx, flip, fill.flatten()), expected)


def test_random_crop_flip_keeps_shape_and_is_seeded():
    augment = RandomCropFlip(padding=4, fill=(0.0, 0.0, 0.0))
    x = torch.randn(16, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)


def _image_dataset(n: int = 20) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = torch.arange(n) % 10
    return Dataset("toy", x, y, x[:4], y[:4], num_classes=10, augment=RandomCropFlip(2, (0.0,) * 3))


def test_batches_without_augment_flag_return_plain_data():
    data = _image_dataset()
    xs = torch.cat([x for x, _ in data.batches("train", 8, generator=torch.Generator())])
    assert torch.equal(xs, data.train_x)


def test_batches_with_augment_flag_change_inputs_not_labels():
    data = _image_dataset()
    gen = torch.Generator().manual_seed(0)
    pairs = list(data.batches("train", 8, augment=True, generator=gen))
    assert not torch.equal(torch.cat([x for x, _ in pairs]), data.train_x)
    assert torch.equal(torch.cat([y for _, y in pairs]), data.train_y)


# ---------------------------------------------------------------------------------------------
# Dataset methods


def _index_dataset(n: int = 10) -> Dataset:
    """Inputs equal to their index, so batches show which samples they hold."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1)
    return Dataset("index", x, torch.arange(n), x[:3], torch.arange(3), num_classes=n)


def test_shuffled_epoch_visits_every_sample_once():
    data = _index_dataset(10)
    seen = torch.cat(
        [y for _, y in data.batches(batch_size=3, shuffle=True, generator=torch.Generator())]
    )
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))


def test_shuffle_order_follows_the_generator():
    data = _index_dataset(50)

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in data.batches(batch_size=7, shuffle=True, generator=gen)])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))


def test_batches_keep_inputs_and_labels_paired():
    data = _index_dataset(10)
    for x, y in data.batches(batch_size=4, shuffle=True, generator=torch.Generator()):
        assert torch.equal(x.view(-1).long(), y)


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [4, 4, 2]), (True, [4, 4])])
def test_batch_sizes_respect_drop_last(drop_last, sizes):
    batches = _index_dataset(10).batches(batch_size=4, drop_last=drop_last)
    assert [len(x) for x, _ in batches] == sizes


def test_test_split_batches_hold_the_test_set():
    data = _index_dataset(10)
    assert torch.equal(torch.cat([y for _, y in data.batches("test", 2)]), data.test_y)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        next(_index_dataset().batches("val"))


def test_subset_keeps_the_first_samples():
    data = load_dataset("digits").subset(train=100, test=20)
    full = load_dataset("digits")
    assert torch.equal(data.train_x, full.train_x[:100]) and torch.equal(
        data.test_y, full.test_y[:20]
    )


def test_to_moves_every_tensor():
    moved = _index_dataset().to("meta")
    tensors = (moved.train_x, moved.train_y, moved.test_x, moved.test_y)
    assert all(t.device.type == "meta" for t in tensors)


def test_mismatched_inputs_and_labels_are_rejected():
    with pytest.raises(ValueError, match="labels"):
        Dataset(
            "bad",
            torch.zeros(3, 2),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(1, 2),
            torch.zeros(1),
            2,
        )


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for name, n in (("train", 6), ("test", 4)):
        rows = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        entry = {"data": rows, "fine_labels": list(range(90, 90 + n)), "coarse_labels": [0] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    data = load_dataset("cifar100", root=tmp_path)
    assert data.num_classes == 100 and data.train_y.tolist() == list(range(90, 96))
    assert data.test_x.shape == (4, 3, 32, 32)
