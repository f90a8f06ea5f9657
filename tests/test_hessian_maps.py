"""Curvature over surfaces and along curves, through the grid engine (resume, shards)."""

import numpy as np
import pytest
import torch

from modeconn.curvature.hessian import HessianSettings, directional_curvature, hessian_extremes
from modeconn.curvature.maps import (
    CurvaturePath,
    CurvatureSurface,
    curvature_path,
    curvature_surface,
)
from modeconn.curves.family import Bezier, Line
from modeconn.curves.weights import WeightSpace
from modeconn.data.catalogue import load_dataset
from modeconn.engine import EvalSettings, evaluate_grid, merge_shards
from modeconn.landscape.directions import random_direction
from modeconn.models import build_model
from modeconn.plotting import plot_curvature_map, plot_curvature_path, save_figure

HESSIAN = HessianSettings(tol=1e-6, trace=True, trace_min=4, trace_max=4)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(train=150, test=30)


def _mlp(seed):
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=[5])


@pytest.fixture(scope="module")
def net():
    return _mlp(0)


@pytest.fixture(scope="module")
def dirs(net):
    return random_direction(net, seed=1), random_direction(net, seed=2)


@pytest.fixture(scope="module")
def surface(net, dirs, digits):
    return curvature_surface(
        net, net, dirs, digits, grid=(3, 2), span=0.5, hessian=HESSIAN, progress=False
    )


def test_the_centre_of_a_curvature_surface_is_the_point_estimate(net, dirs, digits):
    s = curvature_surface(net, net, dirs, digits, grid=3, span=0.5, hessian=HESSIAN, progress=False)
    point = hessian_extremes(net, None, digits, tol=1e-6)
    assert s.lambda_max[1, 1] == pytest.approx(point.lambda_max, rel=1e-6)
    assert s.lambda_min[1, 1] == pytest.approx(point.lambda_min, rel=1e-6)
    assert s.ratio[1, 1] == pytest.approx(abs(point.lambda_min / point.lambda_max), rel=1e-6)
    expected = directional_curvature(net, None, digits, list(dirs))
    np.testing.assert_allclose([s.curvature_x[1, 1], s.curvature_y[1, 1]], expected, rtol=1e-6)


def test_a_curvature_node_is_the_point_estimate_at_its_weights(net, dirs, digits, surface):
    w = WeightSpace.from_module(net).flatten(net) + 0.5 * dirs[0] - 0.5 * dirs[1]
    point = hessian_extremes(net, w, digits, tol=1e-6)
    assert surface.lambda_max[2, 0] == pytest.approx(point.lambda_max, rel=1e-6)
    assert surface.train_loss.shape == (3, 2) and np.all(np.isfinite(surface.trace))


def test_a_curvature_surface_resumes_from_its_shards(net, dirs, digits, surface, tmp_path):
    kw = dict(grid=(3, 2), span=0.5, hessian=HESSIAN, progress=False)
    parts = [tmp_path / f"s{k}" for k in range(2)]
    for k, part in enumerate(parts):
        assert curvature_surface(net, net, dirs, digits, partial=part, shard=(k, 2), **kw) is None
    merge_shards(parts, tmp_path / "merged")
    resumed = curvature_surface(net, net, dirs, digits, partial=tmp_path / "merged", **kw)
    np.testing.assert_array_equal(resumed.lambda_max, surface.lambda_max)
    np.testing.assert_array_equal(resumed.trace, surface.trace)
    assert not (tmp_path / "merged.npz").exists()  # removed once the result is complete


def test_a_partial_file_of_other_hessian_settings_is_refused(net, dirs, digits, tmp_path):
    kw = dict(grid=(3, 2), span=0.5, progress=False, partial=tmp_path / "p")
    curvature_surface(net, net, dirs, digits, hessian=HESSIAN, shard=(0, 2), **kw)
    other = HessianSettings(tol=1e-6, trace=True, trace_min=4, trace_max=4, samples=50)
    with pytest.raises(ValueError, match="hessian"):
        curvature_surface(net, net, dirs, digits, hessian=other, shard=(1, 2), **kw)


def test_curvature_along_a_curve_and_the_line_meets_the_endpoints(digits):
    a, b, c = _mlp(0), _mlp(1), _mlp(2)
    curve = Bezier(a, c, b)
    line = Line(a, a, b)
    hessian = HessianSettings(tol=1e-6)
    along = curvature_path(curve, digits, 3, hessian=hessian, progress=False)
    straight = curvature_path(line, digits, 3, hessian=hessian, progress=False)
    end = hessian_extremes(b, None, digits, tol=1e-6)
    for path in (along, straight):
        assert path.lambda_max[-1] == pytest.approx(end.lambda_max, rel=1e-6)
        assert path.lambda_min[-1] == pytest.approx(end.lambda_min, rel=1e-6)
    assert along.lambda_max[1] != pytest.approx(straight.lambda_max[1], rel=1e-3)
    assert "trace" not in along.values and along.train_loss.shape == (3,)


def test_curvature_results_save_load_and_plot(surface, digits, tmp_path):
    surface.save(tmp_path / "s")
    assert CurvatureSurface.load(tmp_path / "s") == surface
    path = CurvaturePath(
        [0.0, 1.0],
        train_loss=[1, 2],
        train_nll=[1, 2],
        train_error=[1, 2],
        test_loss=[1, 2],
        test_nll=[1, 2],
        test_error=[1, 2],
        lambda_min=[-1, -0.5],
        lambda_max=[3, 2],
        ratio=[1 / 3, 1 / 4],
    )
    path.save(tmp_path / "p")
    assert CurvaturePath.load(tmp_path / "p") == path
    assert save_figure(plot_curvature_map(surface), tmp_path / "map")[0].stat().st_size > 0
    assert save_figure(plot_curvature_path({"curve": path}), tmp_path / "path")[0].exists()


def test_the_engine_records_a_measure_beside_the_metrics_and_checks_its_names(net, digits):
    space = WeightSpace.from_module(net)
    flat = space.flatten(net)
    values = evaluate_grid(
        net,
        space,
        (2,),
        lambda ix: flat * (1 + ix[0]),
        digits,
        EvalSettings(),
        wd=0.0,
        config={},
        progress=False,
        measure=lambda m, p, d: {"norm": float(p.norm())},
        measure_names=("norm",),
    )
    np.testing.assert_allclose(values.values["norm"], [flat.norm(), 2 * flat.norm()], rtol=1e-6)
    assert "train_loss" in values.values
    with pytest.raises(ValueError, match="declared"):
        evaluate_grid(
            net,
            space,
            (1,),
            lambda ix: flat,
            digits,
            EvalSettings(),
            wd=0.0,
            config={},
            progress=False,
            measure=lambda m, p, d: {"other": 1.0},
            measure_names=("norm",),
        )
