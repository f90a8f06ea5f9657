"""A full disk or a read-only output directory: a clear error, and saved results stay intact."""

import errno
import tempfile

import numpy as np
import pytest
from test_resume import _done, make_curve, make_data

from modeconn.apps.common import run_app
from modeconn.io.store import load_result, save_result
from modeconn.plane import evaluate_plane_through_curve

GRID = (3, 3)


def _disk_full_after(monkeypatch, writes: int) -> None:
    """numpy.savez writes `writes` files, then fails half-way like a full disk."""
    original, calls = np.savez, []

    def savez(file, *args, **kwargs):
        calls.append(1)
        if len(calls) > writes:
            file.write(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", savez)


def test_full_disk_stops_a_plane_job_with_its_saved_points_intact(tmp_path, monkeypatch):
    partial = tmp_path / "plane-partial"
    data = make_data()
    _disk_full_after(monkeypatch, 3)  # one save per finished node (save_every_s=0)
    with pytest.raises(OSError, match=r"No space left on device\. Free some space.*is intact"):
        evaluate_plane_through_curve(
            make_curve(), data, grid=GRID, partial=partial, save_every_s=0, progress=False
        )
    monkeypatch.undo()
    assert _done(partial) == 3  # the last good save, not the half-written one
    assert not list(tmp_path.glob(".*.tmp"))  # the failed temporary file is gone
    resumed = evaluate_plane_through_curve(
        make_curve(), data, grid=GRID, partial=partial, save_every_s=0, progress=False
    )
    straight = evaluate_plane_through_curve(make_curve(), data, grid=GRID, progress=False)
    assert np.allclose(resumed.train_loss, straight.train_loss, rtol=1e-6)


def test_read_only_output_directory_is_one_clear_message(tmp_path, monkeypatch):
    target = tmp_path / "out" / "plane"
    save_result(target, {"a": np.arange(3)}, {"k": 1})

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(SystemExit) as stop:
        run_app(lambda cfg: save_result(target, {"a": np.zeros(3)}, {"k": 2}), None)
    message = str(stop.value)
    assert message.startswith("modeconn: error: cannot write to")
    assert "Read-only file system. Choose a writable output directory" in message
    assert "intact" in message
    monkeypatch.undo()
    arrays, meta = load_result(target)
    assert arrays["a"].tolist() == [0, 1, 2] and meta["k"] == 1


def test_full_disk_keeps_the_previous_result_file(tmp_path, monkeypatch):
    target = tmp_path / "path"
    save_result(target, {"a": np.arange(3)}, {"k": 1})
    _disk_full_after(monkeypatch, 0)
    with pytest.raises(OSError, match="could not write .*path.npz': No space left on device"):
        save_result(target, {"a": np.zeros(3)}, {"k": 2})
    monkeypatch.undo()
    arrays, meta = load_result(target)
    assert arrays["a"].tolist() == [0, 1, 2] and meta["k"] == 1  # old arrays and old sidecar
    assert not list(tmp_path.glob(".*.tmp"))
