"""Ctrl-C and SIGTERM: long jobs save what is finished, print one line, exit 130 / 143."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_app

import modeconn.engine.grid
from modeconn.apps import plane
from modeconn.curves.family import Bezier
from modeconn.data.catalogue import load_dataset
from modeconn.io.checkpoints import load_checkpoint, save_checkpoint
from modeconn.io.interrupt import Interrupted, save_on_interrupt
from modeconn.io.store import load_result
from modeconn.models import build_model
from modeconn.training import TrainConfig, train_endpoint

ROOT = Path(__file__).resolve().parents[1]

JOB = """
import sys, time
import modeconn.engine.grid
slow = modeconn.engine.grid.evaluate_point
def delayed(*args, **kwargs):
    with open({marker!r}, "a") as f:
        f.write("x")
    time.sleep(0.3)
    return slow(*args, **kwargs)
modeconn.engine.grid.evaluate_point = delayed
sys.argv = ["plane", *{overrides!r}]
from modeconn.apps import plane
plane.main()
"""


def write_curve_checkpoint(path: Path) -> None:
    """A curve between three random MLPs on digits, in the format the connect app writes."""
    torch.manual_seed(0)
    nets = [build_model("mlp", num_classes=10, input_shape=(1, 8, 8)) for _ in range(3)]
    curve = Bezier(*nets)
    meta = {
        "model": "mlp",
        "model_args": {},
        "num_classes": 10,
        "input_shape": [1, 8, 8],
        "dataset": "digits",
        "dataset_root": None,
        "curve": {"type": "bezier", "degree": 2},
        "epoch": 1,
        "epochs": 1,
        "finished": True,
        "wd": 0.0,
    }
    state = {"start": curve.start, "end": curve.end, "bends": curve.bends + 0.1}
    save_checkpoint(path, "curve", state, meta)


def _overrides(tmp_path: Path) -> list[str]:
    return [
        f"curve_ckpt={tmp_path / 'curve.pt'}",
        "grid=5",
        f"out={tmp_path / 'out'}",
        "progress=false",
        "save_every_s=1000",  # nothing is saved before the end, unless the job is stopped
        "engine.bn_samples=100",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopped_plane_job_saves_its_points_and_says_so_in_one_line(
    tmp_path, signum, status, monkeypatch, caplog
):
    write_curve_checkpoint(tmp_path / "curve.pt")
    marker = tmp_path / "calls"
    script = JOB.format(marker=str(marker), overrides=_overrides(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if marker.exists() and len(marker.read_text()) >= 5:
            break
        time.sleep(0.05)
    job.send_signal(signum)
    _, err = job.communicate(timeout=60)
    assert job.returncode == status, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("modeconn: interrupted: ") and "rerun the same command" in line
    arrays, _ = load_result(tmp_path / "out" / "plane-partial")
    done = int(arrays["done"].sum())
    assert 4 <= done < 25 and f"{done} of 25 points saved" in line

    calls = []
    original = modeconn.engine.grid.evaluate_point
    monkeypatch.setattr(
        modeconn.engine.grid,
        "evaluate_point",
        lambda *a, **k: (calls.append(1), original(*a, **k))[1],
    )
    cfg = compose_app("plane", [o for o in _overrides(tmp_path) if not o.startswith("hydra")])
    with caplog.at_level(logging.INFO, logger="modeconn"):
        result = plane.run(cfg)
    assert f"{done} of 25 points already done" in caplog.text
    assert len(calls) == 25 - done and result.train_loss.shape == (5, 5)


def _run(data, path, callbacks=(), epochs=4):
    torch.manual_seed(3)
    net = build_model("mlp", num_classes=10, input_shape=data.input_shape)
    config = TrainConfig(epochs=epochs, batch_size=32, progress=False)
    train_endpoint(net, data, config, checkpoint=path, callbacks=callbacks)
    return net


def test_interrupted_training_saves_the_last_finished_epoch_and_resumes_to_the_same_weights(
    tmp_path,
):
    data = load_dataset("digits").subset(train=160, test=32)

    def stop(epoch, record):
        if epoch == 3:
            raise KeyboardInterrupt  # Ctrl-C during epoch 3's last moments

    path = tmp_path / "run.pt"
    with pytest.raises(Interrupted, match=r"in epoch 3 of 4: epoch 2 saved in .*run\.pt"):
        _run(data, path, [stop])
    assert load_checkpoint(path).meta["epoch"] == 2  # save_every=0 had written nothing
    resumed = _run(data, path)
    straight = _run(data, tmp_path / "straight.pt")
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_interrupted_before_an_epoch_finished_saves_nothing(tmp_path):
    data = load_dataset("digits").subset(train=64, test=16)

    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="before any epoch finished: nothing to save"):
        _run(data, tmp_path / "run.pt", [stop])
    assert not (tmp_path / "run.pt").exists()


def test_a_second_signal_while_saving_does_not_cut_the_save_short():
    saved = []

    def save():
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the save runs
        saved.append(1)
        return "all saved"

    with (
        pytest.raises(Interrupted, match="interrupted: all saved") as info,
        save_on_interrupt(save),
    ):
        raise KeyboardInterrupt
    assert saved == [1] and info.value.exit_code == 130
