"""The trajectory app, its gallery, and the animations (GIF frames opened with pillow)."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_app
from PIL import Image

from modeconn import build_model, load_dataset
from modeconn.apps import trajectory as app
from modeconn.curves.family import Bezier
from modeconn.plotting.animation import animate_curve_training
from modeconn.training import TrainConfig, train_curve, train_endpoint
from modeconn.trajectory.curve_frames import curve_training_planes
from modeconn.trajectory.recorder import TrajectoryStore, record_trajectory

QUICK = ["optim.epochs=3", "optim.batch_size=500", "grid=5", "frames=4", "progress=false"]


def test_app_writes_results_figure_and_an_animation_of_the_expected_frames(tmp_path):
    out = tmp_path / "run"
    compare = "compare=[{optimizer: adam, lr: 0.01}]"
    cfg = compose_app("trajectory", ["net=5x1", *QUICK, f"out={out}", compare])
    summary = app.run(cfg)
    for name in ("trajectory.npz", "surface.npz", "trajectory.png", "trajectories-fixed.png"):
        assert (out / name).is_file(), name
    with Image.open(out / "trajectory.gif") as gif:
        assert gif.n_frames == 4  # 3 epochs: 4 recorded points, 4 frames
        assert gif.size[0] > gif.size[1]  # the path and the decision regions side by side
    assert summary["points"] == 4 and 0 < summary["variance_2pc"] <= 1 + 1e-12
    assert json.loads((out / "summary.json").read_text())["net"] == "5x1"


def test_rerunning_the_app_resumes_and_keeps_the_trajectory(tmp_path):
    cfg = compose_app("trajectory", ["net=logistic", *QUICK, "animate=false", f"out={tmp_path}"])
    app.run(cfg)
    before = TrajectoryStore(tmp_path / "trajectory").steps.tolist()
    app.run(cfg)  # the checkpoint is finished: nothing is trained or recorded again
    assert TrajectoryStore(tmp_path / "trajectory").steps.tolist() == before == [0, 3, 6, 9]


def test_gallery_collects_the_runs_into_one_figure_and_a_table(tmp_path):
    for net in ("logistic", "5x1"):
        cfg = compose_app(
            "trajectory", [f"net={net}", *QUICK, "animate=false", f"out={tmp_path / net}"]
        )
        app.run(cfg)
    out = app.run(compose_app("trajectory", [f"gallery={tmp_path}"]))
    assert (tmp_path / "gallery.png").is_file()
    assert [r["net"] for r in out["runs"]] == ["5x1", "logistic"]  # depths first
    assert (tmp_path / "gallery.md").read_text().count("\n") == 4  # header, rule, 2 rows


def test_bad_net_names_the_form(tmp_path):
    with pytest.raises(ValueError, match="WxL"):
        app.model_args(compose_app("trajectory", ["net=wide"]))


def test_curve_training_video_has_one_frame_per_plane(tmp_path):
    data = load_dataset("spiral").subset(train=300, test=100)
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = build_model("mlp", num_classes=3, input_shape=(2,), hidden=8, depth=1)
        train_endpoint(net, data, TrainConfig(epochs=3, batch_size=100, progress=False))
        nets.append(net)
    curve = Bezier(nets[0], nets[0], nets[1])
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=100, progress=False)
    rec = record_trajectory(tmp_path / "curve", curve, data, cfg, every=1)
    train_curve(curve, data, cfg, **rec.hooks())
    bends = curve.bends.detach().clone()
    steps, planes = curve_training_planes(
        curve, TrajectoryStore(tmp_path / "curve"), data, frames=4, grid=4
    )
    assert torch.equal(curve.bends.detach(), bends)  # restored
    assert steps[0] > 0  # step 0: the bend is on the segment, no plane; skipped
    for p in planes:  # the curve of that moment on its plane: phi(0.5) = w1/4 + theta/2 + w2/4
        assert np.allclose(p.curve_xy[30], 0.25 * p.anchors[1] + 0.5 * p.anchors[2], atol=1e-4)
    files = animate_curve_training(planes, tmp_path / "video", steps=steps)
    with Image.open(files[0]) as gif:
        assert gif.n_frames == len(planes) == 3


def test_train_and_connect_record_with_trajectory_every_and_the_app_draws_them(tmp_path):
    from modeconn.apps import connect, train

    quick = ["dataset=spiral", "model=mlp", "model.args.hidden=[8]", "optim.epochs=2"]
    quick += ["optim.batch_size=500", "progress=false"]
    eps = [tmp_path / f"ep{s}.pt" for s in (1, 2)]
    for seed, ep in zip((1, 2), eps, strict=True):
        overrides = [*quick, f"seed={seed}", f"checkpoint={ep}", "trajectory.every=1"]
        train.run(compose_app("train", overrides))
    store = TrajectoryStore(tmp_path / "ep1.trajectory")
    assert store.steps.tolist() == list(range(7)) and store.meta["finished"]  # 2 x 3 steps
    view = ["grid=4", "frames=3", "progress=false"]
    out = app.run(compose_app("trajectory", [f"ckpt={eps[0]}", *view, f"out={tmp_path / 'ep'}"]))
    assert out["points"] == 7 and (tmp_path / "ep" / "trajectory.gif").is_file()
    c = tmp_path / "c.pt"
    overrides = [f"start={eps[0]}", f"end={eps[1]}", "optim.epochs=2", "optim.batch_size=500"]
    overrides += ["progress=false", f"checkpoint={c}", "trajectory.every=1"]
    connect.run(compose_app("connect", overrides))
    assert TrajectoryStore(tmp_path / "c.trajectory").points().shape[:2] == (7, 1)
    video = app.run(compose_app("trajectory", [f"ckpt={c}", *view, f"out={tmp_path / 'cv'}"]))
    with Image.open(video["files"][0]) as gif:
        assert gif.n_frames == video["frames"] >= 2
