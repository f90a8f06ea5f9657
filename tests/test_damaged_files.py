"""Damaged files on disk (cut short by a crash or a full disk, or garbage): a resume file or a
finished result is set aside as <name>.corrupt with one line and computed afresh; a training
checkpoint is never silently replaced; messages name the file and fit the caller."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_app
from test_interrupt import write_curve_checkpoint

import modeconn.engine.grid
from modeconn._messages import article
from modeconn.apps import connect, fge, landscape, plane, train
from modeconn.apps.common import load_point_checkpoint, run_app
from modeconn.apps.outputs import guard_result
from modeconn.engine import merge_shards
from modeconn.io.checkpoints import load_curve, load_endpoint, save_checkpoint
from modeconn.io.interrupt import Interrupted
from modeconn.io.store import PartialGrid, UnreadableResult, load_result, save_result
from modeconn.models import build_model
from modeconn.plane import PlaneResult
from modeconn.trajectory.recorder import TrajectoryStore

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["progress=false", "device=cpu", "engine.points_per_pass=1", "engine.bn_samples=100"]
APPS = {
    "landscape": (landscape, "ckpt", ["grid=3", "span=0.5"], "landscape2d-filter-t0p5"),
    "plane": (plane, "curve_ckpt", ["grid=3", "curve_points=5"], "plane"),
}


@pytest.fixture(scope="module")
def curve_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "curve.pt"
    write_curve_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def straight(curve_file, tmp_path_factory) -> dict:
    """Each app's result from one uninterrupted run in a clean directory, and that directory."""
    runs = {}
    for app in APPS:  # a few seconds each on digits
        out = tmp_path_factory.mktemp(app)
        runs[app] = (_run(app, curve_file, out), out)
    return runs


def _cfg(app: str, curve_file: Path, out: Path):
    _, key, extra, _ = APPS[app]
    return compose_app(app, [f"{key}={curve_file}", *extra, *QUICK, f"out={out}"])


def _run(app: str, curve_file: Path, out: Path):
    return APPS[app][0].run(_cfg(app, curve_file, out))


def _same(a, b) -> bool:
    """The same arrays (numbers to 1e-6, the rest exactly): timings in the metadata differ."""
    mine, theirs = a._arrays(), b._arrays()

    def equal(x, y) -> bool:
        if x.dtype.kind in "fc":
            return x.shape == y.shape and np.allclose(x, y, rtol=1e-6, equal_nan=True)
        return np.array_equal(x, y)

    return set(mine) == set(theirs) and all(equal(mine[k], theirs[k]) for k in mine)


def _cut(path: Path) -> bytes:
    """Truncate `path` to half its size, like a write cut short; returns what is left."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def _naming(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if name in r.getMessage()]


def _stopped_after(monkeypatch, count: int) -> None:
    """Ctrl-C after `count` evaluated points: the job saves its partial file and stops."""
    original, calls = modeconn.engine.grid.evaluate_point, []

    def evaluate(*args, **kwargs):
        if len(calls) == count:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(modeconn.engine.grid, "evaluate_point", evaluate)


@pytest.mark.parametrize("app", APPS)
def test_truncated_partial_file_is_set_aside_and_the_job_starts_afresh(
    app, curve_file, straight, tmp_path, monkeypatch, caplog
):
    out, name = tmp_path / "out", APPS[app][3]
    _stopped_after(monkeypatch, 4)
    with pytest.raises(Interrupted):
        _run(app, curve_file, out)
    monkeypatch.undo()
    partial = out / f"{name}-partial.npz"
    left = _cut(partial)
    with caplog.at_level(logging.INFO, logger="modeconn"):
        result = _run(app, curve_file, out)
    assert _same(result, straight[app][0])
    assert (out / f"{name}-partial.npz.corrupt").read_bytes() == left
    (message,) = _naming(caplog, f"{name}-partial.npz")
    assert "cannot resume" in message and "is unreadable" in message
    assert message.endswith("starting afresh")
    assert not partial.exists()  # the finished job removed its fresh partial file


@pytest.mark.parametrize("damaged", ["npz", "json"])
@pytest.mark.parametrize("app", APPS)
def test_damaged_finished_result_is_set_aside_and_computed_again(
    app, damaged, curve_file, straight, tmp_path, caplog
):
    out, name = tmp_path / "out", APPS[app][3]
    shutil.copytree(straight[app][1], out)  # the finished result of the same command
    target = out / f"{name}.{damaged}"
    if damaged == "npz":
        left = _cut(target)
    else:
        left = b"\x00garbage{"
        target.write_bytes(left)
    with caplog.at_level(logging.INFO, logger="modeconn"):
        result = _run(app, curve_file, out)
    assert _same(result, straight[app][0])
    assert (out / f"{name}.{damaged}.corrupt").read_bytes() == left
    (message,) = _naming(caplog, f"{name}.{damaged}'")
    assert message.startswith("replacing a damaged finished result:")
    assert _same(type(result).load(out / name), straight[app][0])


def test_an_earlier_corrupt_file_is_never_overwritten(tmp_path, caplog):
    target, job = tmp_path / "plane", {"grid": 3}
    for garbage in ("{", "["):
        save_result(target, {"a": np.arange(3)}, {"job": job})
        (tmp_path / "plane.json").write_text(garbage)
        guard_result(target, job, overwrite=False)
    assert (tmp_path / "plane.json.corrupt").read_text() == "{"
    assert (tmp_path / "plane.json.corrupt2").read_text() == "["
    assert (tmp_path / "plane.npz.corrupt2").is_file() and not (tmp_path / "plane.npz").exists()
    assert f"'{tmp_path / 'plane.json.corrupt2'}'" in caplog.text


def test_truncated_partial_file_under_python_m_is_one_line_without_traceback(curve_file, tmp_path):
    out, name = tmp_path / "out", APPS["landscape"][3]
    save_result(out / f"{name}-partial", {"done": np.zeros((3, 3), bool)}, {"config": {}})
    _cut(out / f"{name}-partial.npz")
    overrides = [f"ckpt={curve_file}", "grid=3", "span=0.5", *QUICK, f"out={out}"]
    cmd = [sys.executable, "-m", "modeconn.apps.landscape", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    said = (done.stdout + done.stderr).splitlines()
    naming = [line for line in said if f"{name}-partial.npz" in line]
    assert len(naming) == 1 and "is unreadable" in naming[0], said
    assert (out / f"{name}-partial.npz.corrupt").exists() and (out / f"{name}.npz").exists()


def test_truncated_training_checkpoint_is_one_line_and_left_as_it_is(tmp_path):
    path = tmp_path / "run.pt"
    torch.save({"modeconn": 1, "state": {"w": torch.zeros(1000)}}, path)
    left = _cut(path)
    small = ["dataset=moons", "model=mlp", "model.args.hidden=[8]", "optim.epochs=1"]
    cfg = compose_app("train", [*small, "progress=false", f"checkpoint={path}"])
    with pytest.raises(SystemExit) as stop:
        run_app(train.run, cfg)
    message = str(stop.value)
    assert message.startswith(f"modeconn: error: cannot resume training from '{path}'")
    assert "restore it from a backup, or move it aside" in message and "\n" not in message
    assert path.read_bytes() == left


def test_damaged_shard_is_refused_by_name_at_merge(tmp_path):
    shards = [tmp_path / f"plane-shard{k}of2" for k in range(2)]
    for shard in shards:
        save_result(shard, {"a": np.zeros(4), "done": np.ones(4, bool)}, {"config": {"g": 4}})
    _cut(shards[1].with_suffix(".npz"))
    with pytest.raises(ValueError, match=r"cannot merge: '.*plane-shard1of2\.npz' is unreadable"):
        merge_shards(shards, tmp_path / "plane-partial")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut", b"\x93NUMPY garbage"], ids=str)
def test_loading_a_damaged_result_names_the_file(tmp_path, content):
    save_result(tmp_path / "r", {"a": np.arange(3)}, {"result": "PlaneResult"})
    (tmp_path / "r.npz").write_bytes(content)
    with pytest.raises(UnreadableResult, match=r"'.*r\.npz' is unreadable \(") as err:
        load_result(tmp_path / "r")
    assert "\n" not in str(err.value)


def test_partial_file_without_its_arrays_is_set_aside(tmp_path, caplog):
    path = tmp_path / "job-partial"
    save_result(path, {"x": np.zeros(2)}, {"config": {"grid": 2}, "partial": True})  # no done
    job = PartialGrid(path, {"grid": 2}, (2,), ("x",))
    assert not job.done.any() and (tmp_path / "job-partial.npz.corrupt").is_file()
    assert "no (2,) array 'done'" in caplog.text


def test_damaged_trajectory_store_names_its_meta_file(tmp_path):
    TrajectoryStore(tmp_path / "t", dim=3)
    (tmp_path / "t" / "meta.json").write_text('{"dim": 3, "ro')
    with pytest.raises(ValueError, match=r"'.*meta\.json' is unreadable .*Delete the folder"):
        TrajectoryStore(tmp_path / "t", dim=3)


# Messages: the article follows the word printed, the hint fits the caller.


@pytest.mark.parametrize(
    "word,expected",
    [
        ("endpoint", "an"),
        ("curve", "a"),
        ("fge", "an"),
        ("EnsembleResult", "an"),
        ("FGEResult", "an"),
        ("PlaneResult", "a"),
        ("int", "an"),
        ("list", "a"),
        ("OrderedDict", "an"),
        ("unit", "a"),
        ("unfinished", "an"),
        ("8x8", "an"),
        ("11", "an"),
        ("2018 checkpoint", "a"),
        ("SVCCA", "an"),
        ("CKA", "a"),
    ],
)
def test_the_article_follows_how_the_word_sounds(word, expected):
    assert article(word) == expected


def _endpoint_file(path: Path, kind: str = "endpoint") -> Path:
    net = build_model("mlp", num_classes=10, input_shape=(1, 8, 8))
    meta = {"model": "mlp", "num_classes": 10, "input_shape": [1, 8, 8], "dataset": "digits"}
    save_checkpoint(path, kind, net.state_dict(), {**meta, "finished": True})
    return path


def test_endpoint_passed_as_a_curve_says_an_endpoint(tmp_path):
    with pytest.raises(ValueError, match="is an endpoint checkpoint, but a curve checkpoint"):
        load_curve(_endpoint_file(tmp_path / "e.pt"))


def test_fge_given_a_curve_asks_for_one_endpoint(curve_file):
    cfg = compose_app("fge", [f"start={curve_file}", "progress=false"])
    with pytest.raises(ValueError, match="is a curve checkpoint, but an endpoint") as err:
        fge.run(cfg)
    assert str(err.value).endswith(
        "Pass the checkpoint of one trained endpoint network (start=...)."
    )


def test_connect_given_a_curve_asks_for_the_two_endpoints(curve_file, tmp_path):
    overrides = [f"start={curve_file}", f"end={curve_file}", "progress=false"]
    cfg = compose_app("connect", [*overrides, f"checkpoint={tmp_path / 'c.pt'}"])
    with pytest.raises(ValueError, match="the two trained endpoint networks \\(start=... end="):
        connect.run(cfg)


def test_landscape_given_an_fge_run_says_an_fge_checkpoint(tmp_path):
    run = _endpoint_file(tmp_path / "fge-run.pt", kind="fge")
    cfg = compose_app("landscape", [f"ckpt={run}", "progress=false"])
    with pytest.raises(ValueError, match="is an fge checkpoint, but an endpoint") as err:
        load_point_checkpoint(cfg)
    assert str(err.value).endswith("Pass an endpoint or a curve checkpoint (ckpt=...).")


def test_training_onto_a_curve_checkpoint_says_to_choose_another_path(curve_file):
    small = ["dataset=moons", "model=mlp", "model.args.hidden=[8]", "optim.epochs=1"]
    cfg = compose_app("train", [*small, "progress=false", f"checkpoint={curve_file}"])
    with pytest.raises(ValueError, match="is a curve checkpoint, but an endpoint") as err:
        train.run(cfg)
    assert "choose another one for this run (checkpoint=...)" in str(err.value)
    assert "two trained endpoint" not in str(err.value)


def test_result_of_another_class_is_named_with_its_article(tmp_path):
    save_result(tmp_path / "r", {"a": np.arange(3)}, {"result": "EnsembleResult"})
    with pytest.raises(ValueError, match="holds an EnsembleResult, not a PlaneResult;"):
        PlaneResult.load(tmp_path / "r")


def test_torch_file_of_a_number_says_an_int(tmp_path):
    torch.save(3, tmp_path / "n.pt")
    with pytest.raises(ValueError, match="holds an int but no state dict"):
        load_endpoint(tmp_path / "n.pt")
