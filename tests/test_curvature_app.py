"""The curvature app: at a point, along a curve and the line, over a surface."""

import json

import pytest
from conftest import compose_app
from test_interrupt import write_curve_checkpoint

from modeconn.apps import curvature, train
from modeconn.curvature.hessian import HessianExtremes
from modeconn.curvature.maps import CurvaturePath

FAST = [
    "hessian.samples=120",
    "hessian.tol=1e-3",
    "hessian.max_steps=40",
    "progress=false",
    "hessian.trace_min=4",
    "hessian.trace_max=4",
]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ep") / "ep.pt"
    overrides = [
        "model=mlp",
        "model.args.hidden=[8]",
        "optim.epochs=1",
        "optim.batch_size=256",
        "progress=false",
        f"checkpoint={path}",
    ]
    train.run(compose_app("train", overrides))
    return path


def test_curvature_at_a_point_writes_extremes_trace_density_and_the_figure(endpoint, tmp_path):
    cfg = compose_app(
        "curvature", [f"ckpt={endpoint}", f"out={tmp_path}", "density_steps=20", *FAST]
    )
    out = curvature.run(cfg)
    ext = out["extremes"]
    assert ext.lambda_max >= ext.top[-1] and len(ext.top) == 5
    assert HessianExtremes.load(tmp_path / "curvature-point-extremes").lambda_max == ext.lambda_max
    assert out["trace"].stderr > 0
    assert (tmp_path / "curvature-point-density.png").exists()
    meta = json.loads((tmp_path / "curvature-point-extremes.json").read_text())
    assert len(meta["directional"]) == 2 and meta["hessian"]["samples"] == 120


def test_curvature_along_a_curve_and_the_line_has_the_same_endpoints(tmp_path):
    write_curve_checkpoint(tmp_path / "c.pt")
    cfg = compose_app(
        "curvature",
        [
            f"ckpt={tmp_path / 'c.pt'}",
            "where=path",
            "points=3",
            "hessian.trace=false",
            f"out={tmp_path / 'o'}",
            *FAST,
        ],
    )
    results = curvature.run(cfg)
    curve, line = results["curve"], results["line"]
    assert curve.lambda_max[0] == pytest.approx(line.lambda_max[0], rel=1e-9)
    assert curve.lambda_max[-1] == pytest.approx(line.lambda_max[-1], rel=1e-9)
    assert CurvaturePath.load(tmp_path / "o" / "curvature-path_line").ts.tolist() == [0, 0.5, 1]
    assert (tmp_path / "o" / "curvature-path.png").exists()


def test_curvature_over_a_surface_maps_the_ratio(endpoint, tmp_path):
    cfg = compose_app(
        "curvature",
        [
            f"ckpt={endpoint}",
            "where=surface",
            "grid=3",
            "span=0.5",
            f"out={tmp_path}",
            "hessian.trace=false",
            *FAST,
        ],
    )
    result = curvature.run(cfg)
    assert result.ratio.shape == (3, 3) and (result.ratio >= 0).all()
    assert (tmp_path / "curvature-surface.png").exists()


def test_where_path_needs_a_curve_checkpoint(endpoint, tmp_path):
    cfg = compose_app("curvature", [f"ckpt={endpoint}", "where=path", f"out={tmp_path}", *FAST])
    with pytest.raises(ValueError, match="curve checkpoint"):
        curvature.run(cfg)
