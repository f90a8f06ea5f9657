"""Checkpoints: written atomically, loaded with `weights_only=True`, validated on load.

A checkpoint is a plain dict that `torch.load(path, weights_only=True)` reads without
modeconn:

    {"modeconn": FORMAT, "kind": "endpoint" | "curve", "meta": {...}, "state": {...},
     "training": {...} (optimizer, RNG states, history; absent in a finished file's use)}

`meta` says what the weights are: model name and arguments, number of classes, input shape,
data set, seed, epoch, whether training finished and, for curves, the curve type.

Endpoints may also be other people's files: a plain `torch.save(model.state_dict())` (or one
inside a training checkpoint, or a 2018 reference-code checkpoint) is read by `load_endpoint`
once it is told the architecture and data set. Files are written with the permission bits a
normal write would give them (the umask's), not the 0600 of a temporary file.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
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
log = logging.getLogger("modeconn")


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


_NO_FILE_HINT = (
    "train one with `python -m modeconn.apps.train` (endpoints) or "
    "`python -m modeconn.apps.connect` (curves), or fix the path"
)
_PLAIN_HINT = (
    "name its architecture and data set: model=<name> dataset=<name> on the command line "
    "(e.g. model=preresnet20 dataset=cifar10), load_endpoint(path, meta=endpoint_meta(...)) "
    "or load_endpoint(path, model) in Python"
)


def load_checkpoint(path: str | Path, expect: str | None = None) -> Checkpoint:
    """Read and validate a modeconn checkpoint; `expect` ("endpoint", "curve", "fge") checks
    its kind. Plain state dicts are read by `load_endpoint`, which is told the architecture."""
    path = Path(path)
    return _checkpoint_from(read_torch_file(path), path, expect)


def read_torch_file(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with one-line errors.

    Nothing in the file is ever executed, and no message advises loading it so: a whole
    pickled model, other pickled objects and unreadable bytes are each reported as such.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist: {_NO_FILE_HINT}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as err:
        raise PermissionError(
            f"cannot read '{path}': {err.strerror}; check its permissions"
        ) from None
    except Exception as err:  # torch.load's failures have no common type
        raise ValueError(_why_unreadable(path, err)) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: str) -> str:
    """Another library's message as one plain line: ANSI colour codes removed, first line."""
    lines = _ANSI.sub("", text).strip().splitlines()
    return lines[0].strip() if lines else ""


def _why_unreadable(path: Path, err: Exception) -> str:
    globals_, module = _pickled_globals(path)
    if module:
        return (
            f"'{path}' holds a whole pickled model (torch.save(model)); save its state_dict() "
            f"instead: torch.save(model.state_dict(), '{path.name}')"
        )
    foreign = list(
        dict.fromkeys(g for g in globals_ if not g.startswith(("torch.", "collections.")))
    )
    if foreign:
        return (
            f"'{path}' holds pickled Python objects ({', '.join(foreign[:3])}), "
            f"which modeconn does not unpickle; save tensors only, e.g. "
            f"torch.save(model.state_dict(), '{path.name}')"
        )
    reason = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", one_line(str(err))).split(". ")[0]
    if isinstance(err, pickle.UnpicklingError) or "weights" in reason.lower():
        reason = ""  # torch's text here is advice on unpickling code, never shown
    if path.stat().st_size == 0:
        reason = "the file is empty"
    what = "corrupt, truncated or not a torch file"
    return f"'{path}' is not a readable checkpoint ({what})" + (f": {reason}" if reason else "")


def _pickled_globals(path: Path) -> tuple[list[str], bool]:
    """The classes and functions a torch file's pickle names, found by reading its opcodes
    (nothing is unpickled), and whether it pickles an nn.Module (whose `__dict__` holds
    `_modules` and `_parameters`)."""
    import io
    import pickletools

    try:
        with zipfile.ZipFile(path) as archive:
            streams = [archive.read(n) for n in archive.namelist() if n.endswith("/data.pkl")]
    except (zipfile.BadZipFile, OSError):
        streams = []
    if not streams:  # the legacy format: several pickles in a row, then raw storage bytes
        streams = [path.read_bytes()]
    names: list[str] = []
    strings: list[str] = []
    for data in streams:
        stream = io.BytesIO(data)
        try:
            while stream.tell() < len(data):
                for op, arg, _ in pickletools.genops(stream):
                    if op.name == "GLOBAL":
                        names.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(".".join(strings[-2:]))
                    elif isinstance(arg, str):
                        strings.append(arg)
        except Exception:  # the raw bytes after the pickles, or a damaged file: stop reading
            pass
    module = any(n.startswith("torch.nn.modules.") for n in names)
    return names, module or {"_modules", "_parameters"} <= set(strings)


def _checkpoint_from(payload: Any, path: Path, expect: str | None) -> Checkpoint:
    if not isinstance(payload, dict) or "modeconn" not in payload:
        if _plain_state(payload) is not None:
            use = _PLAIN_HINT if expect in (None, "endpoint") else f"pass a {expect} checkpoint"
            raise ValueError(f"'{path}' is a plain state dict, not a modeconn checkpoint: {use}")
        raise ValueError(
            f"'{path}' is a torch file but not a modeconn checkpoint (no 'modeconn' key) and "
            f"holds no state dict; write endpoints with torch.save(model.state_dict(), path)"
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
        **(m.get("model_args") or {}),
    )


def endpoint_meta(
    model: str, data: Any, model_args: Mapping[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    """What describes an endpoint of the registered `model` trained on `data` (a Dataset):
    the `meta` that `load_endpoint` needs to read a plain state dict. `more`: extra keys."""
    return {
        "model": model,
        "model_args": dict(model_args or {}),
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "dataset": data.name,
        **more,
    }


# Metadata that names what an endpoint is; given keys must agree with a checkpoint's own.
_IDENTITY = ("model", "model_args", "num_classes", "input_shape", "dataset")


def load_endpoint(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, Checkpoint]:
    """Load a finished endpoint into `model` (built from the metadata if None).

    path: a modeconn endpoint checkpoint, or a plain `torch.save(model.state_dict())` file
    (also one under 'state_dict' or 'model_state_dict' of a training checkpoint, and the 2018
    reference code's {'model_state': ...}). A 'module.' (DataParallel / DDP) or '_orig_mod.'
    (torch.compile) prefix on every tensor name is removed, with a logged note.
    meta: for a plain state dict, what a modeconn checkpoint's meta would say ('model',
    'model_args', 'num_classes', 'input_shape', 'dataset'; see `endpoint_meta`); the model is
    built from it when `model` is None. A modeconn checkpoint carries its own meta: the keys
    given must agree with it, or a ValueError names the ones that differ.
    A state dict of another architecture fails naming the first mismatched tensor; an
    unfinished checkpoint fails with the epoch it reached.
    """
    path, given = Path(path), dict(meta or {})
    payload = read_torch_file(path)
    if isinstance(payload, dict) and "modeconn" in payload:
        ckpt = _checkpoint_from(payload, path, "endpoint")
        if not ckpt.finished:
            raise ValueError(
                f"'{path}' holds an unfinished training run (epoch {ckpt.meta.get('epoch')} "
                f"of {ckpt.meta.get('epochs')}). Rerun the same training command to resume "
                "and finish it."
            )
        _check_agrees(path, ckpt.meta, given)
        model = model_from_checkpoint(ckpt) if model is None else model
        load_state(model, ckpt.state, what=f"checkpoint '{path}'")
        return model, ckpt
    found = _plain_state(payload)
    if found is None:
        keys = sorted(map(str, payload))[:8] if isinstance(payload, dict) else []
        holds = f"a dict (keys: {', '.join(keys)})" if keys else f"a {type(payload).__name__}"
        raise ValueError(
            f"'{path}' holds {holds} but no state dict modeconn recognises; save the "
            f"network's state dict alone: torch.save(model.state_dict(), '{path.name}')"
        )
    state, source = found
    if model is None:
        if any(given.get(k) is None for k in ("model", "num_classes", "input_shape")):
            raise ValueError(f"'{path}' is a {source}; {_PLAIN_HINT}")
        model = build_model(
            given["model"],
            num_classes=given["num_classes"],
            input_shape=tuple(given["input_shape"]),
            **(given.get("model_args") or {}),
        )
    state = _unwrapped(state, path)
    if source == _SOURCE_2018:
        state = _convert_2018(state, model)
    named = f" (read as model {given['model']!r})" if "model" in given else ""
    load_state(model, state, what=f"{source} '{path}'{named}")
    info = {**given, "finished": True, "source": source}
    return model, Checkpoint("endpoint", info, state, {}, path)


def _check_agrees(path: Path, own: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    differing = [
        k
        for k in _IDENTITY
        if given.get(k) is not None and plain_meta({k: given[k]}) != plain_meta({k: own.get(k)})
    ]
    if differing:
        raise ValueError(
            f"'{path}' is a modeconn checkpoint of another kind than the one named ("
            + "; ".join(f"{k}: {own.get(k)!r} in the file, {given[k]!r} named" for k in differing)
            + "); leave model and dataset out for modeconn checkpoints (they carry their own), "
            "or name the matching ones"
        )


_SOURCE_2018 = "2018 reference-code checkpoint"


def _plain_state(payload: Any) -> tuple[dict[str, Tensor], str] | None:
    """The state dict in a non-modeconn torch file, with a word on where it was, or None."""

    def is_state(x: Any) -> bool:
        return (
            isinstance(x, dict)
            and len(x) > 0
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in x.items())
        )

    if is_state(payload):
        return dict(payload), "plain state dict"
    if not isinstance(payload, dict):
        return None
    if _is_2018(payload):
        return dict(payload["model_state"]), _SOURCE_2018
    for key in ("state_dict", "model_state_dict"):
        if is_state(payload.get(key)):
            return dict(payload[key]), f"state dict (under '{key}')"
    return None


def _is_2018(payload: Mapping[str, Any]) -> bool:
    from modeconn.models.legacy import is_2018_checkpoint  # lazily: it imports the curves

    return is_2018_checkpoint(payload)


def _convert_2018(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    from modeconn.models.legacy import convert_2018_endpoint

    return convert_2018_endpoint(state, model)


# Prefixes that wrappers put before every tensor name, and who adds them.
_WRAPPERS = {"module.": "DataParallel / DistributedDataParallel", "_orig_mod.": "torch.compile"}


def _unwrapped(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix, wrapper in _WRAPPERS.items():
            if all(k.startswith(prefix) for k in state):
                log.info("'%s': removed the '%s' prefix (saved from %s)", path, prefix, wrapper)
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


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
