"""Long jobs survive a crash: a plane job killed with SIGKILL resumes without recomputing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyNet

import modeconn.engine.grid
from modeconn.curves.family import Bezier
from modeconn.data.catalogue import load_dataset
from modeconn.io.store import PartialGrid, load_result
from modeconn.plane import evaluate_plane_through_curve

GRID = (5, 4)

JOB = """
import sys, time, torch
sys.path.insert(0, {tests!r})
import modeconn.engine.grid
import modeconn.plane
from test_resume import make_curve, make_data
slow = modeconn.engine.grid.evaluate_point
def delayed(*args, **kwargs):
    time.sleep(0.25)
    return slow(*args, **kwargs)
modeconn.engine.grid.evaluate_point = delayed  # every plane node goes through it
modeconn.plane.evaluate_plane_through_curve(
    make_curve(), make_data(), grid={grid}, partial={partial!r}, save_every_s=0, progress=False)
"""


def make_data():
    return load_dataset("digits").subset(train=200, test=50)


def make_curve():
    torch.manual_seed(0)
    curve = Bezier(TinyNet(), TinyNet(), TinyNet())
    with torch.no_grad():
        curve.bends.add_(torch.randn_like(curve.bends))
    return curve


def _done(partial: Path) -> int:
    try:
        arrays, _ = load_result(partial)
    except (FileNotFoundError, ValueError, OSError, EOFError):
        return 0
    return int(arrays["done"].sum())


def test_killed_plane_job_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    partial = tmp_path / "plane-partial"
    script = JOB.format(tests=str(Path(__file__).parent), grid=GRID, partial=str(partial))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    job = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 120
    while _done(partial) < 4 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    finished = _done(partial)
    assert 4 <= finished < GRID[0] * GRID[1], "the job must be killed part-way"

    calls = []
    original = modeconn.engine.grid.evaluate_point

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(modeconn.engine.grid, "evaluate_point", counting)
    data = make_data()
    resumed = evaluate_plane_through_curve(
        make_curve(), data, grid=GRID, partial=partial, save_every_s=0, progress=False
    )
    assert len(calls) == GRID[0] * GRID[1] - finished  # no finished point recomputed
    assert not partial.with_suffix(".npz").exists()  # removed once complete
    straight = evaluate_plane_through_curve(make_curve(), data, grid=GRID, progress=False)
    for name in ("train_loss", "test_error", "test_nll"):
        assert np.allclose(getattr(resumed, name), getattr(straight, name), rtol=1e-6, atol=1e-9), (
            name
        )


def test_resuming_with_another_grid_names_the_differing_keys(tmp_path):
    partial = tmp_path / "p"
    grid = PartialGrid(partial, {"grid": [3, 3], "wd": 0.0}, (3, 3), ("a",), save_every_s=0)
    grid.record((0, 0), {"a": 1.0})
    with pytest.raises(ValueError, match="differing keys: grid"):
        PartialGrid(partial, {"grid": [4, 3], "wd": 0.0}, (4, 3), ("a",))


def test_nan_and_zero_results_count_as_done(tmp_path):
    partial = tmp_path / "p"
    grid = PartialGrid(partial, {"k": 1}, (2, 2), ("loss",), save_every_s=0)
    grid.record((0, 1), {"loss": float("nan")})
    grid.record((1, 0), {"loss": 0.0})
    again = PartialGrid(partial, {"k": 1}, (2, 2), ("loss",))
    assert again.done.tolist() == [[False, True], [True, False]]
    assert np.isnan(again.values["loss"][0, 1]) and again.values["loss"][1, 0] == 0.0


def interrupt_path(partial: Path, ts: int, after: int, monkeypatch) -> list:
    """Run a path job that is interrupted (KeyboardInterrupt) at its point `after` + 1,
    saving every finished point to `partial`; returns the list of evaluate_point calls."""
    import modeconn.engine.grid
    from modeconn.path import evaluate_path

    original = modeconn.engine.grid.evaluate_point
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == after + 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(modeconn.engine.grid, "evaluate_point", crash)
    with pytest.raises(KeyboardInterrupt):
        evaluate_path(
            make_curve(), make_data(), ts=ts, partial=partial, save_every_s=0, progress=False
        )
    monkeypatch.setattr(modeconn.engine.grid, "evaluate_point", original)
    return calls


def test_interrupted_path_resumes_without_recomputing(tmp_path, monkeypatch):
    import modeconn.engine.grid
    from modeconn.path import evaluate_path

    data, partial = make_data(), tmp_path / "path-partial"
    original = modeconn.engine.grid.evaluate_point
    calls = interrupt_path(partial, 7, 3, monkeypatch)
    calls.clear()
    monkeypatch.setattr(
        modeconn.engine.grid,
        "evaluate_point",
        lambda *a, **k: (calls.append(1), original(*a, **k))[1],
    )
    resumed = evaluate_path(make_curve(), data, ts=7, partial=partial, progress=False)
    assert len(calls) == 7 - 3
    straight = evaluate_path(make_curve(), data, ts=7, progress=False)
    assert np.allclose(resumed.train_loss, straight.train_loss, rtol=1e-6)
    assert np.allclose(resumed.arc_length, straight.arc_length)
    assert not partial.with_suffix(".npz").exists()  # removed once complete


def test_path_partial_of_other_points_is_refused(tmp_path):
    from modeconn.io.store import PartialGrid
    from modeconn.path import evaluate_path

    data, partial = make_data(), tmp_path / "path-partial"
    config = {
        "ts": [0.0, 1.0],
        "curve": "x",
        "dataset": "digits",
        "train_samples": 200,
        "test_samples": 50,
        "wd": 5e-4,
        "bn_samples": None,
    }
    PartialGrid(partial, config, (2,), ("train_loss",), save_every_s=0).save()
    with pytest.raises(ValueError, match="differing keys: curve, ts"):
        evaluate_path(make_curve(), data, ts=3, partial=partial, progress=False)
