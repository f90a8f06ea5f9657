"""Data sets read from the user's own files: one tensor file (`dataset=tensors`).

`tensors` reads a `.npz` or `.pt` file of train/test inputs and labels (classification) or
real-valued targets (regression); `own_file` checks the path of any such input (nothing of
the user's is ever downloaded). `modeconn.data.catalogue` registers the data set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from modeconn._messages import a_or_an
from modeconn.data.sets import Dataset
from modeconn.data.tasks import CLASSIFICATION, REGRESSION, TASKS

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
    task: str = CLASSIFICATION,
    noise_scale: float | None = None,
) -> Dataset:
    """A data set from one file: `.npz` (numpy.savez) or `.pt` (torch.save of a dict)
    holding train_x, train_y, test_x, test_y.

    x: (N, *input_shape) finite numbers, used as they are (normalise them beforehand), as
    float32. task "classification" (the default): y (N,) integer class labels in
    [0, num_classes); num_classes: given, else a 'num_classes' entry of the file, else the
    largest label + 1. task "regression": y (N, K) finite real targets (integers are cast),
    stored as float32 (N, K) like toy1d's; (N,) is read as K = 1. num_classes is then K, the
    network's output size (a given one must equal it); noise_scale is the sigma of the
    Gaussian NLL (None: fitted at every point, `modeconn.data.tasks`). `root` is another name for
    `path` (the apps pass every data set's location as its root).
    """
    if task not in TASKS:
        raise ValueError(
            f"tensors: unknown task {task!r}; valid tasks: {', '.join(TASKS)} (dataset.task=...)"
        )
    noise_scale = _noise_scale(noise_scale, task)
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
        x = _inputs(arrays[f"{part}_x"], f"{part}_x", file)
        read = _labels if task == CLASSIFICATION else _targets
        y = read(arrays[f"{part}_y"], f"{part}_y", file)
        if len(x) != len(y):
            kind = "labels" if task == CLASSIFICATION else "targets"
            raise ValueError(
                f"'{file}': {part}_x has {len(x)} samples but {part}_y has "
                f"{len(y)} {kind}; they must be paired one to one"
            )
        if len(x) == 0:
            raise ValueError(f"'{file}': the {part} split is empty")
        split[part] = (x, y)
    if split["train"][0].shape[1:] != split["test"][0].shape[1:]:
        raise ValueError(
            f"'{file}': train_x samples have shape {tuple(split['train'][0].shape[1:])} "
            f"but test_x samples {tuple(split['test'][0].shape[1:])}; they must agree"
        )
    if num_classes is None and "num_classes" in arrays:
        num_classes = int(np.asarray(arrays["num_classes"]).item())
    if task == CLASSIFICATION:
        num_classes = _classes(split["train"][1], split["test"][1], num_classes, file)
    else:
        num_classes = _outputs(split["train"][1], split["test"][1], num_classes, file)

    (train_x, train_y), (test_x, test_y) = split["train"], split["test"]
    return Dataset(
        "tensors",
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes=num_classes,
        task=task,
        noise_scale=noise_scale,
    )


def _noise_scale(value: object, task: str) -> float | None:
    """A given noise scale as a float > 0 (regression only), or None."""
    if value is None:
        return None
    if task != REGRESSION:
        raise ValueError(
            f"tensors: noise_scale={value!r} is the Gaussian NLL's sigma of a regression data "
            "set; add dataset.task=regression or drop dataset.noise_scale"
        )
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not (math.isfinite(number) and number > 0):
        raise ValueError(
            f"tensors: noise_scale must be a number > 0 (the Gaussian NLL's sigma) or null to "
            f"fit it at every point, got {value!r}"
        )
    return float(number)


def _classes(train_y: Tensor, test_y: Tensor, num_classes: int | None, file: Path) -> int:
    """The number of classes: `num_classes` if given (checked against the labels), else the
    largest label + 1."""
    largest = int(max(train_y.max(), test_y.max()))
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(
            f"'{file}': label {largest} does not fit num_classes={num_classes}; "
            f"labels are 0..num_classes-1 (give num_classes={largest + 1} or more)"
        )
    return num_classes


def _outputs(train_y: Tensor, test_y: Tensor, num_classes: int | None, file: Path) -> int:
    """K, the targets per sample of (N, K) train and test targets, which must agree (and
    agree with a given num_classes)."""
    k, k_test = train_y.shape[1], test_y.shape[1]
    if k != k_test:
        raise ValueError(
            f"'{file}': train_y has shape {tuple(train_y.shape)} but test_y "
            f"{tuple(test_y.shape)}; both splits need the same number of targets per sample"
        )
    if num_classes is not None and num_classes != k:
        raise ValueError(
            f"'{file}': num_classes={num_classes} but the regression targets have {k} values "
            f"per sample (shape (N, {k})); drop num_classes, or give num_classes={k}"
        )
    return k


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
            f"'{file}' holds {a_or_an(type(payload).__name__)}, not a dict with "
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
            "must be integers 0..K-1: save y.long() (torch) or y.astype('int64') (numpy), "
            "or give dataset.task=regression for real-valued targets"
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


def _finite(t: Tensor, key: str, file: Path) -> Tensor:
    """`t` if it holds no NaN or inf, else a ValueError naming the file, key and count."""
    if t.is_floating_point():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(
                f"'{file}': {key} holds {bad} NaN or inf value{'s' if bad > 1 else ''}; "
                "remove or impute those samples before saving"
            )
    return t


def _inputs(value: object, key: str, file: Path) -> Tensor:
    """Inputs x (N, *input_shape) as float32, finite."""
    x = _as_tensor(value, key, file)
    if x.ndim < 2:
        raise ValueError(
            f"'{file}': {key} has shape {tuple(x.shape)}; inputs are (N, *input_shape), "
            "e.g. x.reshape(-1, 1) for one feature"
        )
    return _finite(x.float(), key, file)


def _targets(value: object, key: str, file: Path) -> Tensor:
    """Regression targets as float32 (N, K): (N, K) as given, (N,) as (N, 1)."""
    y = _as_tensor(value, key, file)
    if y.ndim not in (1, 2):
        raise ValueError(
            f"'{file}': {key} has shape {tuple(y.shape)}; regression targets are (N, K) or "
            "(N,) for one target: y.reshape(len(y), -1)"
        )
    y = _finite(y, key, file).float()
    if not bool(torch.isfinite(y).all()):  # finite as float64, not as float32
        raise ValueError(
            f"'{file}': {key} holds values beyond float32's range (about 3.4e38); rescale "
            "the targets (standardise them) before saving"
        )
    y = y.unsqueeze(1) if y.ndim == 1 else y
    if y.shape[1] == 0:
        raise ValueError(f"'{file}': {key} has shape {tuple(y.shape)}: no targets per sample")
    return y
