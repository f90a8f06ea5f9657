"""Reading torch files safely: `torch.load(weights_only=True)` on the CPU, and a one-line
diagnosis of whatever cannot be read that way (a whole pickled model, other pickled objects,
corrupt or truncated bytes), without ever unpickling or advising to.
"""

from __future__ import annotations

import errno
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch


class UnreadableCheckpoint(ValueError):
    """A torch file that `torch.load(weights_only=True)` cannot read; str() is the one line.

    `damage` says what is wrong with the bytes themselves ("corrupt, truncated or not a torch
    file: ..."), or is None for a readable pickle that modeconn refuses (a whole model, objects).
    """

    def __init__(self, message: str, path: Path, damage: str | None):
        super().__init__(message)
        self.path, self.damage = path, damage


_NO_FILE_HINT = (
    "train one with `python -m modeconn.apps.train` (endpoints) or "
    "`python -m modeconn.apps.connect` (curves), or fix the path"
)


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
        message, damage = _why_unreadable(path, err)
        raise UnreadableCheckpoint(message, path, damage) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: str) -> str:
    """Another library's message as one plain line: ANSI colour codes removed, first line."""
    lines = _ANSI.sub("", text).strip().splitlines()
    return lines[0].strip() if lines else ""


def _why_unreadable(path: Path, err: Exception) -> tuple[str, str | None]:
    """The one-line diagnosis of a file torch cannot read, and what is wrong with its bytes
    (None when they are a pickle modeconn refuses to run)."""
    globals_, module = _pickled_globals(path)
    if module:
        return (
            f"'{path}' holds a whole pickled model (torch.save(model)); save its state_dict() "
            f"instead: torch.save(model.state_dict(), '{path.name}')"
        ), None
    foreign = list(
        dict.fromkeys(g for g in globals_ if not g.startswith(("torch.", "collections.")))
    )
    if foreign:
        return (
            f"'{path}' holds pickled Python objects ({', '.join(foreign[:3])}), "
            f"which modeconn does not unpickle; save tensors only, e.g. "
            f"torch.save(model.state_dict(), '{path.name}')"
        ), None
    reason = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", one_line(str(err))).split(". ")[0]
    if isinstance(err, pickle.UnpicklingError) or "weights" in reason.lower():
        reason = ""  # torch's text here is advice on unpickling code, never shown
    if isinstance(err, OSError) and err.errno == errno.EINVAL:
        reason = ""  # a seek past the end of a cut-short file: "[Errno 22] Invalid argument"
    if path.stat().st_size == 0:
        reason = "the file is empty"
    what = "corrupt, truncated or not a torch file"
    reason = f": {reason}" if reason else ""
    return (
        f"'{path}' is not a readable checkpoint ({what}){reason}; check the path, or write "
        "the checkpoint again (`modeconn train` for an endpoint, `modeconn connect` for a curve)"
    ), what + reason


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
