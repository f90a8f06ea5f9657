"""Checkpoints: written atomically, loaded with `weights_only=True`, validated on load.

A checkpoint is a plain dict that `torch.load(path, weights_only=True)` reads without
modeconn:

    {"modeconn": FORMAT, "kind": "endpoint" | "curve", "meta": {...}, "state": {...},
     "training": {...} (optimizer, RNG states, history; absent in a finished file's use)}

`meta` says what the weights are: model name and arguments, number of classes, input shape,
data set, seed, epoch, whether training finished and, for curves, the curve type.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from modeconn.curves import Curve, build_curve
from modeconn.models import build_model
from modeconn.weights import WeightSpace

FORMAT = 1
KINDS = ("endpoint", "curve", "fge")  # fge: an FGE run in progress


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`.

    A crash leaves either the old file or the new one, never a half-written file. A full
    disk or a read-only directory raises an OSError that says so and that the file already
    at `path` (e.g. the partial results of a resumable job) is untouched.
    """
    return atomic_write_all({Path(path): write})[0]


def atomic_write_all(writers: Mapping[Path, Callable[[Path], None]]) -> list[Path]:
    """`atomic_write` for files that belong together: every file is written to a temporary
    file first, and only when all of them are complete are they renamed into place, so a
    failed write (full disk) leaves all the old files, never a mix of old and new."""
    temps: dict[Path, Path] = {}
    try:
        for path, write in writers.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as err:
                raise _os_error(
                    err,
                    f"cannot write to '{path.parent}': {err.strerror}. Choose a writable output "
                    f"directory{_kept(path)}",
                ) from err
            os.close(fd)
            temps[path] = Path(tmp)
            try:
                write(temps[path])
                with open(temps[path], "rb") as f:
                    os.fsync(f.fileno())
            except OSError as err:
                reason = err.strerror or str(err)
                hint = "free some space or" if err.errno == errno.ENOSPC else "check the disk, or"
                raise _os_error(
                    err,
                    f"could not write '{path}': {reason}. {hint.capitalize()} choose another "
                    f"output directory, then run the job again{_kept(path)}",
                ) from err
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return list(writers)


def _os_error(cause: OSError, message: str) -> OSError:
    error = OSError(message)
    error.errno = cause.errno
    return error


def _kept(path: Path) -> str:
    if path.exists():
        return f"; the existing '{path.name}' is intact (a resumable job continues from it)."
    return "."


@dataclass
class Checkpoint:
    kind: str
    meta: dict[str, Any]
    state: dict[str, Tensor]
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def finished(self) -> bool:
        return bool(self.meta.get("finished", False))


def save_checkpoint(
    path: str | Path,
    kind: str,
    state: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically. `meta` must hold plain values (str, int, float, list...)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got '{kind}'")
    payload = {
        "modeconn": FORMAT,
        "kind": kind,
        "meta": dict(meta),
        "state": {k: v.detach().cpu() for k, v in state.items()},
        "training": dict(training or {}),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, expect: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint; `expect` ("endpoint" or "curve") checks its kind."""
    path = Path(path)
    if not path.is_file():
        hint = (
            "train one with `python -m modeconn.apps.train` (endpoints) or "
            "`python -m modeconn.apps.connect` (curves), or fix the path"
        )
        raise FileNotFoundError(f"checkpoint '{path}' does not exist: {hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"'{path}' is not a readable checkpoint (corrupt, truncated or not written by "
            f"torch.save?): {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    if not isinstance(payload, dict) or "modeconn" not in payload:
        raise ValueError(
            f"'{path}' is a torch file but not a modeconn checkpoint (no 'modeconn' key). "
            "Load plain state dicts in Python and pass them as start/end instead."
        )
    kind = payload["kind"]
    if expect is not None and kind != expect:
        raise ValueError(
            f"'{path}' is a {kind} checkpoint, but {'an' if expect == 'endpoint' else 'a'} "
            f"{expect} checkpoint is expected here. "
            + {
                "endpoint": "Pass the checkpoints of the two trained endpoint networks.",
                "curve": "Pass a curve checkpoint written by `python -m modeconn.apps.connect`.",
            }.get(expect, "Use another checkpoint path (or delete the file) to start afresh.")
        )
    return Checkpoint(kind, payload["meta"], payload["state"], payload.get("training", {}), path)


def model_from_checkpoint(ckpt: Checkpoint) -> nn.Module:
    """Build the architecture a checkpoint's metadata names (weights not loaded)."""
    m = ckpt.meta
    return build_model(
        m["model"],
        num_classes=m["num_classes"],
        input_shape=tuple(m["input_shape"]),
        **m.get("model_args", {}),
    )


def load_endpoint(path: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, Checkpoint]:
    """Load a finished endpoint checkpoint into `model` (built from its metadata if None).

    A checkpoint of another architecture fails with a message naming the first mismatched
    tensor; an unfinished one fails with the epoch it reached.
    """
    ckpt = load_checkpoint(path, expect="endpoint")
    if not ckpt.finished:
        raise ValueError(
            f"'{path}' holds an unfinished training run (epoch {ckpt.meta.get('epoch')} of "
            f"{ckpt.meta.get('epochs')}). Rerun the same training command to resume and finish it."
        )
    model = model_from_checkpoint(ckpt) if model is None else model
    load_state(model, ckpt.state, what=f"checkpoint '{path}'")
    return model, ckpt


def load_state(model: nn.Module, state: Mapping[str, Tensor], what: str = "state") -> None:
    """`model.load_state_dict(state)` with an error naming the first mismatched tensor."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise ValueError(
                f"{what} does not match the architecture: tensor '{name}' (shape "
                f"{tuple(tensor.shape)}) is missing from it. Was it trained with another model?"
            )
        if state[name].shape != tensor.shape:
            raise ValueError(
                f"{what} does not match the architecture: tensor '{name}' has shape "
                f"{tuple(state[name].shape)}, the model expects {tuple(tensor.shape)}. "
                "Was it trained with another model or other model arguments?"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise ValueError(
            f"{what} does not match the architecture: it has tensor '{extra[0]}' "
            "that the model does not have. Was it trained with another model?"
        )
    model.load_state_dict(state)


def load_curve(path: str | Path) -> tuple[Curve, Checkpoint]:
    """Rebuild a trained curve (and its base network) from a curve checkpoint."""
    ckpt = load_checkpoint(path, expect="curve")
    model = model_from_checkpoint(ckpt)
    space = WeightSpace.from_module(model)
    try:
        start, end = space.unflatten(ckpt.state["start"]), space.unflatten(ckpt.state["end"])
    except ValueError as err:
        raise ValueError(f"curve checkpoint '{path}' does not match its own model: {err}") from err
    args = {k: v for k, v in ckpt.meta["curve"].items() if k != "type"}
    curve = build_curve(ckpt.meta["curve"]["type"], model, start, end, **args)
    with torch.no_grad():
        curve.bends.copy_(ckpt.state["bends"])
    return curve, ckpt


def versions() -> dict[str, str]:
    """Library versions recorded in every result sidecar."""
    import platform

    import numpy

    import modeconn

    return {
        "modeconn": modeconn.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def save_result(path: str | Path, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write `path`.npz (arrays) and `path`.json (config, versions, timings), each atomically.

    Both files open without modeconn: `numpy.load(p.npz)` and `json.load(open(p.json))`.
    Returns the .npz path.
    """
    import json

    import numpy as np

    base = Path(path).with_suffix("")
    arrays = {
        k: np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in arrays.items()
    }

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    sidecar = {**meta, "versions": versions()}
    npz, _ = atomic_write_all(
        {
            base.with_suffix(".npz"): write_npz,
            base.with_suffix(".json"): lambda tmp: tmp.write_text(
                json.dumps(sidecar, indent=2, default=str)
            ),
        }
    )
    return npz


def load_result(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the arrays and the sidecar written by `save_result` (path with or without suffix)."""
    import json

    import numpy as np

    base = Path(path).with_suffix("")
    npz, sidecar = base.with_suffix(".npz"), base.with_suffix(".json")
    for f in (npz, sidecar):
        if not f.is_file():
            raise FileNotFoundError(f"result file '{f}' does not exist; check the path")
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(sidecar.read_text())


def plain_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`meta` as the JSON sidecar will hold it (tuples become lists), so save/load is exact."""
    import json

    return json.loads(json.dumps(dict(meta), default=str))


class SavedResult:
    """Mixin for result dataclasses: array/scalar fields + a `meta` dict, as .npz + .json.

    Every field except `meta` goes to the .npz file (numeric or string arrays, scalars as 0-d
    arrays, no pickles; fields that are None are left out and load as None). `meta` goes to the
    JSON sidecar with a "result" key naming the class, and `save_result` adds the library
    versions. `load` drops those two keys, so `load(save(r)) == r`.
    """

    result_kind: ClassVar[str] = ""
    meta: dict[str, Any]

    def save(self, path: str | Path) -> Path:
        """Write `path`.npz and `path`.json atomically; returns the .npz path."""
        import numpy as np

        arrays = {
            f.name: np.asarray(getattr(self, f.name))
            for f in fields(self)
            if f.name != "meta" and getattr(self, f.name) is not None
        }
        return save_result(path, arrays, {**self.meta, "result": self.result_kind})

    @classmethod
    def load(cls, path: str | Path):
        """Read a result written by `save` (path with or without suffix)."""
        arrays, meta = load_result(path)
        kind = meta.pop("result", None)
        if kind != cls.result_kind:
            raise ValueError(
                f"'{path}' holds a {kind or 'non-modeconn'} result, not a {cls.result_kind}; "
                "load it with the matching result class"
            )
        meta.pop("versions", None)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "meta":
                continue
            if f.name not in arrays:
                if f.default is not None:
                    raise ValueError(f"'{path}' lacks the array '{f.name}'; the file is damaged")
                kwargs[f.name] = None
                continue
            value = arrays[f.name]
            kwargs[f.name] = value.item() if value.ndim == 0 else value
        return cls(**kwargs, meta=meta)

    def __eq__(self, other: object) -> bool:
        import numpy as np

        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                a, b = np.asarray(a), np.asarray(b)
                if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                    return False
            elif a != b and not (
                isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
            ):
                return False
        return True


class PartialGrid:
    """Results of a long job over a grid of points, saved atomically as they come in.

    A point counts as done by an explicit mask, never by its value (a loss of 0 or NaN is a
    result). The file is `path`.npz + `path`.json (the arrays, the `done` mask and the job's
    configuration); reopening it with a different configuration fails with the differing keys.
    """

    def __init__(
        self,
        path: str | Path,
        config: Mapping[str, Any],
        shape: tuple[int, ...],
        names: tuple[str, ...],
        save_every_s: float = 30.0,
    ):
        import numpy as np

        self.path, self.config = Path(path), plain_meta(config)
        self.save_every_s, self._saved_at = save_every_s, time.monotonic()
        if self.path.with_suffix(".npz").exists():
            arrays, meta = load_result(self.path)
            stored = meta.get("config", {})
            differing = sorted(
                k for k in set(stored) | set(self.config) if stored.get(k) != self.config.get(k)
            )
            if differing:
                raise ValueError(
                    f"cannot resume from '{self.path}.npz': it was written for another job; "
                    f"differing keys: {', '.join(differing)}. Use another output directory, "
                    "or delete the file to start afresh."
                )
            self.values = {n: arrays[n] for n in names}
            self.done = arrays["done"].astype(bool)
        else:
            self.values = {n: np.full(shape, np.nan) for n in names}
            self.done = np.zeros(shape, dtype=bool)

    def record(self, index: tuple[int, ...], values: Mapping[str, float]) -> None:
        """Store one point's values, mark it done, and save if `save_every_s` has passed."""
        for name, value in values.items():
            self.values[name][index] = value
        self.done[index] = True
        if time.monotonic() - self._saved_at >= self.save_every_s:
            self.save()

    def save(self) -> None:
        save_result(
            self.path, {**self.values, "done": self.done}, {"config": self.config, "partial": True}
        )
        self._saved_at = time.monotonic()

    def remove(self) -> None:
        self.remove_files(self.path)

    @staticmethod
    def remove_files(path: str | Path) -> None:
        for suffix in (".npz", ".json"):
            Path(path).with_suffix(suffix).unlink(missing_ok=True)


def merge_partials(paths: list[str | Path], into: str | Path) -> int:
    """Join the `PartialGrid` files of shards of one job into `into`; returns points done.

    Refuses shards written for different configurations (naming the differing keys).
    """
    import numpy as np

    if not paths:
        raise ValueError("merge_partials needs at least one shard file")
    first_arrays, first_meta = load_result(paths[0])
    config = first_meta.get("config", {})
    names = tuple(k for k in first_arrays if k != "done")
    merged = PartialGrid(into, config, first_arrays["done"].shape, names, save_every_s=0)
    for path in paths:
        arrays, meta = load_result(path)
        other = meta.get("config", {})
        differing = sorted(k for k in set(other) | set(config) if other.get(k) != config.get(k))
        if differing:
            raise ValueError(
                f"cannot merge '{path}' with '{paths[0]}': they are shards of different jobs; "
                f"differing keys: {', '.join(differing)}"
            )
        done = arrays["done"].astype(bool)
        for name in names:
            merged.values[name][done] = arrays[name][done]
        merged.done |= done
    merged.save()
    return int(np.count_nonzero(merged.done))
