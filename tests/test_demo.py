"""The main job end to end on digits, and the issue's acceptance numbers."""

import json

import numpy as np
import pytest
from conftest import compose_app

from modeconn.apps import demo, fge
from modeconn.path import PathResult


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    overrides = [
        f"checkpoints={tmp / 'ckpt'}",
        f"out={tmp / 'results'}",
        "path_points=31",
        "plane_grid=[6,5]",
        "ensemble_points=11",
        "progress=false",
    ]
    cfg = compose_app("demo", overrides)
    return demo.run(cfg), tmp


def test_line_max_train_loss_is_at_least_ten_times_the_curve_max(demo_run):
    paths = demo_run[0]["paths"]
    assert paths["line"].train_loss.max() >= 10 * paths["curve"].train_loss.max()


def test_curve_worst_test_error_is_within_two_points_of_the_worse_endpoint(demo_run):
    curve = demo_run[0]["paths"]["curve"]
    worse_endpoint = max(curve.test_error[0], curve.test_error[-1])
    assert curve.test_error.max() <= worse_endpoint + 2.0


def test_ensemble_with_the_curve_midpoint_beats_w1_alone(demo_run):
    ens = demo_run[0]["ensembles"]
    assert ens.ensemble_gain(0.5) > 0


def test_demo_writes_results_readable_without_modeconn(demo_run):
    out = demo_run[1] / "results"
    with np.load(out / "path_curve.npz") as z:
        assert z["ts"].shape == (31,) and np.isfinite(z["train_loss"]).all()
    meta = json.loads((out / "path_curve.json").read_text())
    assert meta["result"] == "PathResult" and "torch" in meta["versions"]
    assert PathResult.load(out / "path_curve") == demo_run[0]["paths"]["curve"]
    with np.load(out / "plane.npz") as z:
        assert z["train_loss"].shape == (6, 5)
    for name in ("path", "plane", "ensembles"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").exists()


def test_demo_summary_table_compares_line_and_curve(demo_run):
    table = demo_run[0]["table"]
    assert "straight line" in table and "Bezier curve" in table and "ensemble" in table


def test_demo_table_shows_nll_and_error_barriers_of_both_definitions(demo_run):
    table, paths = demo_run[0]["table"], demo_run[0]["paths"]
    assert "train nll barrier" in table and "test error barrier" in table
    assert "Entezari" in table and "Frankle" in table
    for name, key in (("straight line", "line"), ("Bezier curve", "curve")):
        row = next(r for r in table.splitlines() if r.startswith(name))
        numbers = [float(v.rstrip("%")) for v in row[len(name) :].split()]
        b = paths[key].barriers()
        expected = [
            paths[key].train_nll.max(),
            b["train_nll"]["entezari"],
            b["train_nll"]["frankle"],
            b["test_error"]["entezari"],
            b["test_error"]["frankle"],
        ]
        np.testing.assert_allclose(numbers[:5], expected, atol=1e-2)


def test_fge_app_runs_from_a_demo_endpoint(demo_run):
    tmp = demo_run[1]
    cfg = compose_app(
        "fge",
        [
            f"start={tmp / 'ckpt' / 'digits-seed1.pt'}",
            "cycles=2",
            "cycle=2",
            f"out={tmp / 'fge'}",
            "progress=false",
        ],
    )
    result = fge.run(cfg)
    assert len(result.snapshot_epochs) == 2 and (tmp / "fge" / "fge.png").exists()
