"""Files that survive crashes: atomic writes, results as .npz + .json, partial grids.

Every write goes to a temporary file beside its target and is renamed only once complete (a
result's .npz and .json together), with the permission bits a normal write would give it
(the umask's), not the 0600 of a temporary file. Results open without modeconn
(`numpy.load`, `json.load`). Checkpoints are in `modeconn.checkpoints`.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor


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
            os.chmod(tmp, _mode_of_a_normal_write(path))  # mkstemp's 0600 would lock others out
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


def _mode_of_a_normal_write(path: Path) -> int:
    """The permission bits `open(path, "w")` would leave: an existing file keeps its own, a new
    one gets 0o666 minus the umask (so a group-shared directory stays shared)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask; read from /proc where possible, since setting it is process-wide."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _os_error(cause: OSError, message: str) -> OSError:
    error = OSError(message)
    error.errno = cause.errno
    return error


def _kept(path: Path) -> str:
    if path.exists():
        return f"; the existing '{path.name}' is intact (a resumable job continues from it)."
    return "."


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
            raise ValueError(
                f"'{path}' holds a {kind or 'non-modeconn'} result, not a {cls.result_kind}; "
                "load it with the matching result class"
            )
        meta.pop("versions", None)
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
