"""The named data sets (embedded, synthetic, torchvision-format files, own tensor files) and
`load_dataset(name)`; the `Dataset` they return is `modeconn.data.sets`.

Everything used for mode connectivity fits in memory (CIFAR-10's train set is 600 MB as
float32), so a `Dataset` is four tensors plus an optional batch-level training augmentation,
and `batches()` slices them. No DataLoader sits between the reader and the data: evaluation
is exact and fast, and the whole set can move to the GPU once with `.to(device)`.

The augmentation is used only by training loops (`batches(augment=True)`); evaluation and
BatchNorm statistics always see the plain train data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from modeconn.data import torchvision_files as tv
from modeconn.data.files import own_file, tensors
from modeconn.data.sets import Dataset
from modeconn.data.tasks import REGRESSION


def _standardise(train: Tensor, test: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """(x - mean) / std with mean and std of the train set over `dims` (train stats only)."""
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True)
    return (train - mean) / std, (test - mean) / std


def digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package): (1, 8, 8), 10 classes.

    Fixed split: numpy RandomState(0) permutation (a frozen stream, the same in every numpy
    version), first 1437 for training, last 360 for testing. Pixels / 16, then standardised
    with the scalar mean and std of the train pixels.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(raw.target, dtype=torch.int64)
    order = torch.as_tensor(np.random.RandomState(0).permutation(len(labels)))
    train, test = order[:1437], order[1437:]
    train_x, test_x = _standardise(images[train], images[test], dims=(0, 1, 2, 3))
    return Dataset("digits", train_x, labels[train], test_x, labels[test], num_classes=10)


def spiral(n_train: int = 1500, n_test: int = 600, noise: float = 0.2, seed: int = 0) -> Dataset:
    """Three interleaved spiral arms in 2-D, 3 classes, input shape (2,).

    A point of class k at radius r ~ U(0, 1) sits at angle 2*pi*k/3 + 4*r + noise * N(0, 1)
    (noise in radians, so arms blur more far out). Labels cycle 0, 1, 2 so any prefix is
    balanced. Coordinates are standardised per feature with train statistics.
    """
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    labels = torch.arange(n) % 3
    radius = torch.rand(n, generator=gen)
    angle = 2 * torch.pi * labels / 3 + 4 * radius + noise * torch.randn(n, generator=gen)
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    train_x, test_x = _standardise(points[:n_train], points[n_train:], dims=(0,))
    return Dataset("spiral", train_x, labels[:n_train], test_x, labels[n_train:], num_classes=3)


def moons(n_train: int = 1000, n_test: int = 500, noise: float = 0.1, seed: int = 0) -> Dataset:
    """scikit-learn's two interleaving half-circles, 2 classes, input shape (2,).

    Deterministic given `seed`; standardised per feature with train statistics.
    """
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_train + n_test, noise=noise, random_state=seed)
    points = torch.as_tensor(x, dtype=torch.float32)
    labels = torch.as_tensor(y, dtype=torch.int64)
    train_x, test_x = _standardise(points[:n_train], points[n_train:], dims=(0,))
    return Dataset("moons", train_x, labels[:n_train], test_x, labels[n_train:], num_classes=2)


def toy1d(
    n_train: int = 40,
    n_test: int = 40,
    noise: float = 0.1,
    seed: int = 0,
    noise_scale: float | None = None,
    gap: float = 0.5,
) -> Dataset:
    """A 1-D regression toy with a gap in the data: input shape (1,), one target.

    After the toy of Izmailov et al. 2019 (subspace inference) that the mode-connectivity
    blog's figure 7 draws: inputs in two clusters, x ~ U[-1, -gap] and U[gap, 1] (half of
    the samples each, alternating, train and test alike), nothing in between; targets
    y = sin(3 x) + 0.5 x + noise * N(0, 1) (noise 0.1). Inputs and targets are used as they
    are (already of unit scale). Seeded: the same tensors for the same arguments.
    gap 0.5 (the middle half of [-1, 1] empty) rather than a narrower one: with 0.3, ReLU
    networks bridge the gap almost linearly and the functions along a curve differ in it
    no more than on the data for some seeds; with 0.5 they differ 3-12x more (seeds 1-8).
    noise_scale: the standard deviation of the reported Gaussian NLL (None: fitted at each
    point); the generating noise is `noise`.
    """
    if not 0 <= gap < 1:
        raise ValueError(f"toy1d: gap must lie in [0, 1), got {gap}")
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[Tensor, Tensor]:
        side = torch.arange(n) % 2  # alternate clusters: any prefix is balanced
        x = -1 + (1 - gap) * torch.rand(n, generator=gen) + (1 + gap) * side
        y = toy1d_function(x) + noise * torch.randn(n, generator=gen)
        return x.reshape(-1, 1), y.reshape(-1, 1)

    (train_x, train_y), (test_x, test_y) = split(n_train), split(n_test)
    return Dataset(
        "toy1d", train_x, train_y, test_x, test_y, 1, task=REGRESSION, noise_scale=noise_scale
    )


def toy1d_function(x: Tensor) -> Tensor:
    """The noise-free target of `toy1d`: sin(3 x) + 0.5 x."""
    return torch.sin(3 * x) + 0.5 * x


def _from_files(name: str, root: str | Path | None, download: bool) -> Path:
    """Check and expand `root` for data sets read from files (the user's input boundary)."""
    if root is None:
        raise ValueError(
            f"dataset {name!r} is read from files: pass root=... (the folder that holds or "
            f"will hold its files; on the command line dataset.root=/path/to/data), and "
            f"download=True once on a machine with internet access if it is not there yet"
        )
    return Path(root).expanduser()


def mnist(root: str | Path | None = None, download: bool = False) -> Dataset:
    """MNIST, (1, 28, 28), 10 classes, from <root>/MNIST/raw (torchvision layout)."""
    splits = tv.load_mnist("mnist", _from_files("mnist", root, download), download)
    return Dataset("mnist", *splits, num_classes=10)


def fashion_mnist(root: str | Path | None = None, download: bool = False) -> Dataset:
    """Fashion-MNIST, (1, 28, 28), 10 classes, from <root>/FashionMNIST/raw."""
    path = _from_files("fashion_mnist", root, download)
    return Dataset("fashion_mnist", *tv.load_mnist("fashion_mnist", path, download), num_classes=10)


def cifar10(root: str | Path | None = None, download: bool = False) -> Dataset:
    """CIFAR-10, (3, 32, 32), 10 classes, from <root>/cifar-10-batches-py; crop+flip augment."""
    splits = tv.load_cifar("cifar10", _from_files("cifar10", root, download), download)
    return Dataset("cifar10", *splits, num_classes=10, augment=tv.cifar_augment("cifar10"))


def cifar100(root: str | Path | None = None, download: bool = False) -> Dataset:
    """CIFAR-100 (fine labels), (3, 32, 32), 100 classes, from <root>/cifar-100-python."""
    splits = tv.load_cifar("cifar100", _from_files("cifar100", root, download), download)
    return Dataset("cifar100", *splits, num_classes=100, augment=tv.cifar_augment("cifar100"))


def imagefolder(
    root: str | Path | None = None,
    download: bool = False,
    *,
    size: int | list[int] | tuple[int, int] | None = None,
) -> Dataset:
    """Images in torchvision's ImageFolder layout: root/train/<class>/*.png and root/test/
    (or root/val/) <class>/*.png, any format Pillow reads.

    Classes are the sorted folder names of train/ (labels 0..K-1); test/ may lack some. Images
    are grey (1 channel) if all are, else RGB; all of one size, or resized to `size` (an int
    for size x size, or (H, W); bilinear, aspect ratio not kept). Pixels are normalised per
    channel with the mean and std of the train images. No augmentation.
    """
    folder = own_file("imagefolder", root, download, "image folder")
    if size is not None:
        pair = [size, size] if isinstance(size, int) else list(size)
        if len(pair) != 2 or not all(isinstance(s, int) and s >= 1 for s in pair):
            raise ValueError(
                f"imagefolder: size must be an int >= 1 or a pair (H, W), got {size!r}"
            )
        size = (pair[0], pair[1])
    train_x, train_y, test_x, test_y, classes = tv.load_image_folder(folder, size)
    return Dataset("imagefolder", train_x, train_y, test_x, test_y, num_classes=len(classes))


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "spiral": spiral,
    "moons": moons,
    "toy1d": toy1d,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "tensors": tensors,
    "imagefolder": imagefolder,
}

# Built in (no files): these ignore `root` and `download`, so one config shape fits all.
_BUILT_IN = {"digits", "spiral", "moons", "toy1d"}


def dataset_names() -> list[str]:
    """Names accepted by `load_dataset`, sorted."""
    return sorted(DATASETS)


def load_dataset(
    name: str, root: str | Path | None = None, *, download: bool = False, **kwargs: object
) -> Dataset:
    """Build the data set registered as `name`.

    root: folder holding the files of file-based sets (mnist, fashion_mnist, cifar10,
    cifar100) in torchvision's layout, your own image folder (imagefolder) or tensor file
    (tensors); ignored by the built-in digits / spiral / moons / toy1d.
    download: fetch missing files with torchvision first (needs internet access).
    kwargs: passed to the builder, e.g. load_dataset("spiral", n_train=300, noise=0.1),
    load_dataset("tensors", path="my.npz"), load_dataset("imagefolder", root="pics", size=32).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
    if name in _BUILT_IN:
        return DATASETS[name](**kwargs)
    return DATASETS[name](root=root, download=download, **kwargs)
