"""Image data sets in torchvision's on-disk layout read into whole tensors; CIFAR augmentation.

Also the user's own images in ImageFolder's layout (`load_image_folder`), read with Pillow.

MNIST and Fashion-MNIST go through torchvision itself: we take `.data` / `.targets` (one
uint8 tensor each) and skip its per-item PIL transforms, which are ~100x slower than one
tensor op. CIFAR is read from its pickled batches by `_read_cifar_batches` (see there why).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

# Per-channel mean / std of the training pixels in [0, 1] (the values everyone uses).
MNIST_STATS = {"mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,))}
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_MNIST_CLASSES = {
    "mnist": torchvision.datasets.MNIST,
    "fashion_mnist": torchvision.datasets.FashionMNIST,
}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_MNIST_FILES += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

_CIFAR_CLASSES = {
    "cifar10": torchvision.datasets.CIFAR10,
    "cifar100": torchvision.datasets.CIFAR100,
}
# Folder under root and the batch files of each split, as in the official python archives.
_CIFAR_FILES = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}

Split = tuple[Tensor, Tensor, Tensor, Tensor]  # train_x, train_y, test_x, test_y


def _how_to_fix(name: str, root: Path, folder: Path, what: str) -> str:
    return (
        f"{name}: data files not found in {folder} ({what}). Download them once with "
        f"load_dataset({name!r}, root={str(root)!r}, download=True) "
        f"(on the command line: dataset.download=true) on a machine with internet access, "
        f"or copy the files into {folder}."
    )


def normalise(pixels: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 images (N, C, H, W) -> float32 (x / 255 - mean) / std, per channel."""
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return (pixels.float() / 255.0 - mean_t) / std_t


def load_mnist(name: str, root: Path, download: bool) -> Split:
    """MNIST / Fashion-MNIST from <root>/<MNIST|FashionMNIST>/raw: images (N, 1, 28, 28)."""
    cls = _MNIST_CLASSES[name]
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except RuntimeError as err:
            if download:  # a failed download: torchvision's own message says what went wrong
                raise
            folder = root / cls.__name__ / "raw"
            need = f"need {', '.join(_MNIST_FILES)}"
            raise FileNotFoundError(_how_to_fix(name, root, folder, need)) from err
        splits.append(normalise(ds.data.unsqueeze(1), *MNIST_STATS[name]))
        splits.append(torch.as_tensor(ds.targets, dtype=torch.int64))
    return splits[0], splits[1], splits[2], splits[3]


def _read_cifar_batches(paths: list[Path]) -> tuple[Tensor, Tensor]:
    """Pickled CIFAR batches -> uint8 images (N, 3, 32, 32) and int64 labels (N,).

    Each file is a pickled dict with "data", a (n, 3072) uint8 array whose rows are the red,
    then green, then blue 32x32 plane in row-major order (so reshape gives C, H, W), and
    "labels" (CIFAR-10) or "fine_labels" (CIFAR-100). The official files are Python 2 pickles,
    whose keys come back as str with encoding="latin1"; files written by Python 3 may have
    bytes keys, so both are accepted.
    """
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8)
        ys = entry["labels"] if "labels" in entry else entry["fine_labels"]
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(ys) != len(data):
            raise ValueError(
                f"{path}: expected 'data' of shape (n, 3072) and n labels, got data of shape "
                f"{data.shape} and {len(ys)} labels; the file is not a CIFAR python batch"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        labels.append(torch.as_tensor(ys, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def load_cifar(name: str, root: Path, download: bool) -> Split:
    """CIFAR-10 / CIFAR-100 from <root>/cifar-10-batches-py or <root>/cifar-100-python.

    Decision: torchvision only downloads (and md5-checks the archive); we read the batches.
    torchvision's CIFAR10 refuses any file whose md5 differs from the official one and has no
    supported switch to turn that off (only subclassing or monkeypatching), so it could not
    read re-packed copies or the small files the tests write. The python-batch format is
    documented by the CIFAR authors and takes a dozen lines to read, and reading it ourselves
    keeps a single loading path for real and generated files alike.
    """
    folder_name, train_files, test_files = _CIFAR_FILES[name]
    folder = root / folder_name
    if download:
        _CIFAR_CLASSES[name](str(root), train=False, download=True)
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(_how_to_fix(name, root, folder, f"missing {', '.join(missing)}"))
    train_x, train_y = _read_cifar_batches([folder / f for f in train_files])
    test_x, test_y = _read_cifar_batches([folder / f for f in test_files])
    mean, std = CIFAR_STATS[name]
    return normalise(train_x, mean, std), train_y, normalise(test_x, mean, std), test_y


def crop_flip(
    x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, fill: Tensor | float = 0.0
) -> Tensor:
    """Shift each image by (dy, dx) pixels, filling uncovered pixels, then mirror where `flip`.

    x: (N, C, H, W); dy, dx: (N,) int offsets; flip: (N,) bool; fill: scalar or (C,).
    out[n, :, i, j] = x[n, :, i + dy[n], j' + dx[n]] with j' = W-1-j if flip[n] else j — the
    same as padding by max |offset|, cropping H x W at that offset, then a horizontal flip.
    Two `gather`s (rows, then columns), no loop over samples.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + dy.to(x.device).view(n, 1)  # (N, H)
    cols = torch.arange(w, device=x.device) + dx.to(x.device).view(n, 1)  # (N, W)
    cols = torch.where(flip.to(x.device).view(n, 1), cols.flip(1), cols)
    row_inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1)
    col_inside = ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
    shape = (n, c, h, w)
    out = x.gather(2, rows.clamp(0, h - 1).view(n, 1, h, 1).expand(shape))  # pick rows
    out = out.gather(3, cols.clamp(0, w - 1).view(n, 1, 1, w).expand(shape))  # then columns
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return torch.where(row_inside & col_inside, out, fill_t)


@dataclass(frozen=True)
class RandomCropFlip:
    """Batched RandomCrop(size, padding) + RandomHorizontalFlip, drawn per sample.

    `fill` is the per-channel value of the padding. The data are already normalised, so to
    match the usual torchvision pipeline (zero-pad the raw image, then normalise) it is the
    normalised value of a black pixel, -mean / std.
    """

    padding: int = 4
    fill: tuple[float, ...] = (0.0,)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x: (N, C, H, W) -> (N, C, H, W); random draws come from `generator` (may be None)."""
        n, p = x.shape[0], self.padding
        device = generator.device if generator is not None else x.device
        offsets = torch.randint(-p, p + 1, (2, n), generator=generator, device=device)
        flip = torch.rand(n, generator=generator, device=device) < 0.5
        return crop_flip(x, offsets[0], offsets[1], flip, torch.tensor(self.fill))


def cifar_augment(name: str) -> RandomCropFlip:
    """Standard CIFAR training augmentation: 4-pixel black padding, 32x32 crop, random flip."""
    mean, std = CIFAR_STATS[name]
    return RandomCropFlip(padding=4, fill=tuple(-m / s for m, s in zip(mean, std, strict=True)))


# What Pillow reads and ImageFolder accepts; other files (.DS_Store, notes) are skipped.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_GREY_MODES = ("1", "L", "LA")


def _image_files(split: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = split / name
        if not folder.is_dir():
            continue
        found = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(
                f"class folder '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                "add some or remove the folder"
            )
        files += [(f, label) for f in found]
    return files


def load_image_folder(
    root: Path, size: tuple[int, int] | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    """root/train/<class>/* and root/test/<class>/* (or val/) -> normalised split + classes.

    Labels index the sorted class folders of train/; a test class folder must exist in train/.
    Images: grey if every one is, else RGB; resized to `size` = (H, W) if given (bilinear),
    else all must share one size. Normalised per channel with the train pixels' mean / std.
    """
    from PIL import Image, UnidentifiedImageError

    layout = "the layout is root/train/<class>/*.png and root/test/<class>/*.png (or val/)"
    train = root / "train"
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not train.is_dir() or test is None:
        lacks = "train/" if not train.is_dir() else "test/ (or val/)"
        raise FileNotFoundError(f"image folder '{root}' has no {lacks} folder: {layout}")
    classes = sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"'{train}' holds no class folders: {layout}")
    unknown = sorted(
        d.name
        for d in test.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name not in classes
    )
    if unknown:
        raise ValueError(
            f"'{test}' has class folders that train/ lacks: {', '.join(unknown)}; every class "
            "needs training images"
        )
    splits = [_image_files(train, classes), _image_files(test, classes)]
    if not splits[1]:
        raise ValueError(f"'{test}' holds no class folders with images: {layout}")
    files = [f for part in splits for f, _ in part]
    headers = []  # (mode, (width, height)) of every image, read without decoding the pixels
    for file in files:
        try:
            with Image.open(file) as im:
                headers.append((im.mode, im.size))
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"cannot read image '{file}': {err}") from None
    grey = all(mode in _GREY_MODES for mode, _ in headers)
    odd = next((i for i, (_, wh) in enumerate(headers) if wh != headers[0][1]), None)
    if size is None and odd is not None:
        (w0, h0), (w, h) = headers[0][1], headers[odd][1]
        raise ValueError(
            f"images differ in size ('{files[0]}' is {h0}x{w0}, '{files[odd]}' is {h}x{w}); "
            f"resize them all with size={h0} or size=[{h0}, {w0}] (dataset.size=... on the "
            "command line)"
        )
    arrays: list[list[np.ndarray]] = [[], []]
    for i, part in enumerate(splits):
        for file, _ in part:
            with Image.open(file) as im:
                im = im.convert("L" if grey else "RGB")
                if size is not None:
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.uint8)
            arrays[i].append(pixels[None] if grey else pixels.transpose(2, 0, 1))
    train_px, test_px = (torch.from_numpy(np.stack(a)) for a in arrays)
    scaled = train_px.float() / 255.0
    mean = tuple(scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(max(s, 1e-6) for s in scaled.std(dim=(0, 2, 3)).tolist())  # one-colour sets
    labels = [torch.tensor([y for _, y in files], dtype=torch.int64) for files in splits]
    return (
        normalise(train_px, mean, std),
        labels[0],
        normalise(test_px, mean, std),
        labels[1],
        classes,
    )
