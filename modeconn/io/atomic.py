"""Writes that survive crashes: a temporary file beside the target, renamed only once complete.

A crash leaves either the old file or the new one, never a half-written one; files that belong
together (a result's .npz and .json) are renamed only when all of them are complete. The files
get the permission bits a normal write would give them (the umask's), not the 0600 of a
temporary file. Results, partial grids and checkpoints are written through here
(`modeconn.io.store`, `modeconn.io.checkpoints`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


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
                raise os_error(
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
                raise os_error(
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


def os_error(cause: OSError, message: str) -> OSError:
    """An OSError with our one-line `message` and the errno of `cause`."""
    error = OSError(message)
    error.errno = cause.errno
    return error


def _kept(path: Path) -> str:
    if path.exists():
        return f"; the existing '{path.name}' is intact (a resumable job continues from it)."
    return "."
