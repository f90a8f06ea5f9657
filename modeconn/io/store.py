"""Results as .npz + .json, and the partial grids of long jobs, in files that survive crashes.

Every write is atomic (`modeconn.io.atomic`: a temporary file renamed only once complete, a
result's .npz and .json together, with normal permission bits). Results open without modeconn
(`numpy.load`, `json.load`). A result that cannot be read (cut short by a crash or a full
disk, or garbage) is `UnreadableResult`, naming the file; jobs set such files aside
(`set_aside`: renamed to `<name>.corrupt`) and start afresh, saying so in one line.
Checkpoints are in `modeconn.io.checkpoints`.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from modeconn._messages import a_or_an
from modeconn.io.atomic import atomic_write, atomic_write_all, os_error
from modeconn.io.torch_files import one_line

__all__ = [
    "PartialGrid",
    "SavedResult",
    "UnreadableResult",
    "atomic_write",  # written in modeconn.io.atomic, imported from here as ever
    "atomic_write_all",
    "load_result",
    "plain_meta",
    "read_or_set_aside",
    "save_result",
    "set_aside",
    "versions",
    "environment",
]

log = logging.getLogger("modeconn")


def versions() -> dict[str, str]:
    """Library versions recorded in every result sidecar."""
    import platform

    import numpy

    from modeconn._version import __version__

    return {
        "modeconn": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def environment() -> dict[str, Any]:
    """What, besides the inputs and the versions, fixes a result's last bits on a CPU: the
    intra-op thread count and the kernel set (ATEN_CPU_CAPABILITY) of the process that wrote
    it. Recorded in every result sidecar as "environment"."""
    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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

    sidecar = {**meta, "versions": versions(), "environment": environment()}
    npz, _ = atomic_write_all(
        {
            base.with_suffix(".npz"): write_npz,
            base.with_suffix(".json"): lambda tmp: tmp.write_text(
                json.dumps(sidecar, indent=2, default=str)
            ),
        }
    )
    return npz


class UnreadableResult(ValueError):
    """A result file that exists but cannot be read: truncated, corrupt, or the half of an
    .npz + .json pair whose other half is missing. `path` is that file and `problem` says
    what is wrong with it ("'p.npz' is unreadable (truncated or corrupt: ...)")."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{problem}; rerun the job that wrote it to write it again")
        self.path, self.problem = path, problem


def load_result(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the arrays and the sidecar written by `save_result` (path with or without suffix).

    A missing file is a FileNotFoundError; a damaged one (or an .npz without its sidecar) an
    `UnreadableResult` naming it."""
    import json

    import numpy as np

    base = Path(path).with_suffix("")
    npz, sidecar = base.with_suffix(".npz"), base.with_suffix(".json")
    if not npz.is_file():
        raise FileNotFoundError(f"result file '{npz}' does not exist; check the path")
    if not sidecar.is_file():
        raise UnreadableResult(sidecar, f"'{sidecar}', the sidecar of '{npz.name}', is missing")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except PermissionError:
        raise
    except Exception as err:  # zipfile and numpy fail on damaged bytes in many ways
        raise UnreadableResult(npz, _unreadable(npz, err)) from None
    try:
        meta = json.loads(sidecar.read_text())
    except PermissionError:
        raise
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise UnreadableResult(sidecar, _unreadable(sidecar, err)) from None
    if not isinstance(meta, dict):
        raise UnreadableResult(sidecar, _unreadable(sidecar, "not a JSON object"))
    return arrays, meta


def _unreadable(path: Path, err: Exception | str) -> str:
    """ "'p.npz' is unreadable (truncated or corrupt: File is not a zip file)" ("empty")."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    detail = one_line(str(err)) or type(err).__name__
    return f"'{path}' is unreadable ({'empty' if empty else f'truncated or corrupt: {detail}'})"


def set_aside(path: str | Path) -> list[Path]:
    """Rename the files of the result `path` (.npz and .json, those that exist) to
    `<name>.corrupt`, or `<name>.corrupt2`, 3, ... where an earlier one is kept: damaged files
    stay for a look, never replacing each other, out of the way of a fresh run. Returns the
    new paths."""
    base = Path(path).with_suffix("")
    files = [f for f in (base.with_suffix(".npz"), base.with_suffix(".json")) if f.exists()]
    for n in itertools.count(1):
        aside = [f.with_name(f"{f.name}.corrupt{n if n > 1 else ''}") for f in files]
        if not any(a.exists() or a.is_symlink() for a in aside):
            break
    for f, a in zip(files, aside, strict=True):
        try:
            os.rename(f, a)
        except OSError as err:
            raise os_error(
                err,
                f"cannot move the unreadable '{f}' aside: {err.strerror}. Move or delete it, "
                "then run the job again",
            ) from err
    return aside


def read_or_set_aside(
    path: str | Path,
    lead: str,
    then: str = "",
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The arrays and sidecar of the result at `path`; None when its .npz does not exist, or
    when the result is damaged (`UnreadableResult`, also from `check(arrays, meta)`): then
    its files are set aside (`set_aside`) and one warning says so, e.g. "cannot resume:
    'o/x-partial.npz' is unreadable (truncated or corrupt: ...); kept the files as
    'o/x-partial.npz.corrupt' and 'o/x-partial.json.corrupt'; starting afresh".

    lead: the warning's first words; then: its last ones (what the job does instead)."""
    base = Path(path).with_suffix("")
    if not base.with_suffix(".npz").exists():
        return None
    try:
        loaded = load_result(base)
        if check is not None:
            check(*loaded)
        return loaded
    except UnreadableResult as err:
        problem = err.problem
    kept = [f"'{p}'" for p in set_aside(base)]
    where = f"kept it as {kept[0]}" if len(kept) == 1 else f"kept the files as {' and '.join(kept)}"
    log.warning("%s: %s; %s%s", lead, problem, where, f"; {then}" if then else "")
    return None


def plain_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`meta` as the JSON sidecar will hold it (tuples become lists), so save/load is exact."""
    import json

    return json.loads(json.dumps(dict(meta), default=str))


class SavedResult:
    """Mixin for result dataclasses: array/scalar fields + a `meta` dict, as .npz + .json.

    Every field except `meta` goes to the .npz file (numeric or string arrays, scalars as 0-d
    arrays, no pickles; fields that are None are left out and load as None). `meta` goes to the
    JSON sidecar with a "result" key naming the class, and `save_result` adds the library
    versions and the `environment`. `load` drops those three keys, so `load(save(r)) == r`.
    """

    result_kind: ClassVar[str] = ""
    meta: dict[str, Any]

    def save(self, path: str | Path) -> Path:
        """Write `path`.npz and `path`.json atomically; returns the .npz path."""
        return save_result(path, self._arrays(), {**self.meta, "result": self.result_kind})

    def _arrays(self) -> dict[str, Any]:
        """What goes to the .npz file: every field but `meta` that is not None."""
        import numpy as np

        return {
            f.name: np.asarray(getattr(self, f.name))
            for f in fields(self)
            if f.name != "meta" and getattr(self, f.name) is not None
        }

    @classmethod
    def load(cls, path: str | Path):
        """Read a result written by `save` (path with or without suffix)."""
        arrays, meta = load_result(path)
        kind = meta.pop("result", None)
        if kind != cls.result_kind:
            held = a_or_an(str(kind)) if kind else "a result modeconn did not write"
            raise ValueError(
                f"'{path}' holds {held}, not {a_or_an(cls.result_kind)}; load it with the "
                "matching result class"
            )
        meta.pop("versions", None)
        meta.pop("environment", None)
        return cls._from_arrays(arrays, meta, path)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, Any], meta: dict[str, Any], path: str | Path):
        """The result from the arrays and metadata `load` read (the inverse of `_arrays`)."""
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
        mine, theirs = self._arrays(), other._arrays()
        if set(mine) != set(theirs) or self.meta != other.meta:
            return False
        for name, a in mine.items():
            b = theirs[name]
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                return False
        return True


class PartialGrid:
    """Results of a long job over a grid of points, saved atomically as they come in.

    A point counts as done by an explicit mask, never by its value (a loss of 0 or NaN is a
    result). The file is `path`.npz + `path`.json (the arrays, the `done` mask and the job's
    configuration); reopening it with a different configuration fails with the differing keys.
    `finished`: the job ran to its end (an adaptive job's shard, which leaves nodes undone),
    recorded in the sidecar when true.
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
        shape = tuple(int(s) for s in shape)

        def resumable(arrays: dict[str, Any], meta: dict[str, Any]) -> None:
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
            bad = [n for n in (*names, "done") if n not in arrays or arrays[n].shape != shape]
            if bad:
                npz = self.path.with_suffix(".npz")
                problem = f"'{npz}' is unreadable (no {shape} array '{bad[0]}' in it)"
                raise UnreadableResult(npz, problem)

        loaded = read_or_set_aside(self.path, "cannot resume", "starting afresh", resumable)
        self.finished = False
        if loaded is not None:
            arrays = loaded[0]
            self.values = {n: arrays[n] for n in names}
            self.done = arrays["done"].astype(bool)
            self.finished = bool(loaded[1].get("finished", False))
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
        meta = {
            "config": self.config,
            "partial": True,
            **({"finished": True} if self.finished else {}),
        }
        save_result(self.path, {**self.values, "done": self.done}, meta)
        self._saved_at = time.monotonic()

    def remove(self) -> None:
        self.remove_files(self.path)

    @staticmethod
    def remove_files(path: str | Path) -> None:
        for suffix in (".npz", ".json"):
            Path(path).with_suffix(suffix).unlink(missing_ok=True)
