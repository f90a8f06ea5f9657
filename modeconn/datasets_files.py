"""Data sets read from the user's own files: one tensor file (`dataset=tensors`).

`tensors` reads a `.npz` or `.pt` file of train/test inputs and labels; `own_file` checks
the path of any such input (nothing of the user's is ever downloaded). `modeconn.data`
registers the data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from modeconn.data import Dataset

# The arrays a tensor file must hold (dataset=tensors).
TENSOR_KEYS = ("train_x", "train_y", "test_x", "test_y")


def own_file(name: str, root: str | Path | None, download: bool, what: str) -> Path:
    """Check `root` for data sets read from the user's own files, which nothing downloads."""
    if download:
        raise ValueError(
            f"dataset {name!r} is read from your own {what}; nothing is downloaded: "
            "drop download=True (dataset.download=true)"
        )
    if root is None:
        where = "dataset.path=my.pt or my.npz" if name == "tensors" else "dataset.root=DIR"
        raise ValueError(
            f"dataset {name!r} is read from your own {what}: pass its path ({where} on the "
            "command line)"
        )
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {name!r}: {what} '{path}' does not exist; fix the path")
    return path


def tensors(
    root: str | Path | None = None,
    download: bool = False,
    *,
    path: str | Path | None = None,
    num_classes: int | None = None,
) -> Dataset:
    """A classification data set from one file: `.npz` (numpy.savez) or `.pt` (torch.save of
    a dict) holding train_x, train_y, test_x, test_y.

    x: (N, *input_shape) numbers, used as they are (normalise them beforehand), as float32.
    y: (N,) integer class labels in [0, num_classes). num_classes: given, else a 'num_classes'
    entry of the file, else the largest label + 1. `root` is another name for `path` (the apps
    pass every data set's location as its root).
    """
    if path is not None and root is not None and Path(path) != Path(root):
        raise ValueError(f"tensors: path={str(path)!r} and root={str(root)!r} differ; give one")
    file = own_file("tensors", path if path is not None else root, download, "tensor file")
    arrays = _read_tensor_file(file)
    missing = [k for k in TENSOR_KEYS if k not in arrays]
    if missing:
        raise ValueError(
            f"'{file}' lacks {', '.join(missing)}; a tensor data set holds "
            f"{', '.join(TENSOR_KEYS)} (it has: {', '.join(sorted(arrays)) or 'nothing'})"
        )
    split = {}
    for part in ("train", "test"):
        x = _as_tensor(arrays[f"{part}_x"], f"{part}_x", file)
        y = _labels(arrays[f"{part}_y"], f"{part}_y", file)
        if x.ndim < 2:
            raise ValueError(
                f"'{file}': {part}_x has shape {tuple(x.shape)}; inputs are (N, "
                "*input_shape), e.g. x.reshape(-1, 1) for one feature"
            )
        if len(x) != len(y):
            raise ValueError(
                f"'{file}': {part}_x has {len(x)} samples but {part}_y has "
                f"{len(y)} labels; they must be paired one to one"
            )
        if len(x) == 0:
            raise ValueError(f"'{file}': the {part} split is empty")
        split[part] = (x.float(), y)
    if split["train"][0].shape[1:] != split["test"][0].shape[1:]:
        raise ValueError(
            f"'{file}': train_x samples have shape {tuple(split['train'][0].shape[1:])} "
            f"but test_x samples {tuple(split['test'][0].shape[1:])}; they must agree"
        )
    largest = int(max(split["train"][1].max(), split["test"][1].max()))
    if num_classes is None and "num_classes" in arrays:
        num_classes = int(np.asarray(arrays["num_classes"]).item())
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(
            f"'{file}': label {largest} does not fit num_classes={num_classes}; "
            f"labels are 0..num_classes-1 (give num_classes={largest + 1} or more)"
        )
    from modeconn.data import Dataset  # here: modeconn.data imports this module

    (train_x, train_y), (test_x, test_y) = split["train"], split["test"]
    return Dataset("tensors", train_x, train_y, test_x, test_y, num_classes=num_classes)


def _read_tensor_file(file: Path) -> dict[str, object]:
    """The named arrays of a .npz file, or the dict of a .pt file; nothing is unpickled."""
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:  # torch/numpy read errors have no common type
        kind = "npz file" if file.suffix == ".npz" else "torch file"
        raise ValueError(
            f"'{file}' is not a readable {kind} of tensors (corrupt, truncated, of another "
            f"format, or holding pickled objects); save a dict of tensors or arrays with "
            f"torch.save({{'train_x': ..., ...}}, path) or numpy.savez(path, train_x=..., ...)"
        ) from None
    if not isinstance(payload, dict):
        raise ValueError(
            f"'{file}' holds a {type(payload).__name__}, not a dict with "
            f"{', '.join(TENSOR_KEYS)}; save one with torch.save({{...}}, path)"
        )
    return {str(k): v for k, v in payload.items()}


def _as_tensor(value: object, key: str, file: Path) -> Tensor:
    try:
        t = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"'{file}': {key} is not an array of numbers ({err})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"'{file}': {key} holds {t.dtype} values; it must hold real numbers")
    return t


def _labels(value: object, key: str, file: Path) -> Tensor:
    y = _as_tensor(value, key, file)
    if y.is_floating_point():
        raise ValueError(
            f"'{file}': {key} holds {str(y.dtype).removeprefix('torch.')} values; class labels "
            "must be integers 0..K-1: save y.long() (torch) or y.astype('int64') (numpy)"
        )
    if y.ndim != 1:
        raise ValueError(
            f"'{file}': {key} has shape {tuple(y.shape)}; labels are (N,), one "
            "class index per sample (y.reshape(-1) if it is (N, 1))"
        )
    if len(y) and int(y.min()) < 0:
        raise ValueError(
            f"'{file}': {key} holds the negative label {int(y.min())}; class labels are 0..K-1"
        )
    return y.long()
