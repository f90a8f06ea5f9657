import copy
import json

import numpy as np
import pytest
import torch
from conftest import TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st

from modeconn.curves.family import Line, PolyChain
from modeconn.curves.weights import WeightSpace
from modeconn.engine.point import evaluate_point
from modeconn.plane import Plane, PlaneResult, evaluate_plane, evaluate_plane_through_curve


def _points(dim, dtype=torch.float64, scales=(1.0, 1.0, 1.0), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [s * torch.randn(dim, generator=gen, dtype=torch.float64).to(dtype) for s in scales]


@pytest.fixture
def plane():
    return Plane.through(*_points(50))


@pytest.fixture(scope="module")
def bezier_plane(bezier, data):
    """A non-square 3 x 4 grid through start, end and bend, with the curve projected."""
    return evaluate_plane_through_curve(
        bezier, data, grid=(3, 4), margin=(0.1, 0.3, 0.0, 0.5), curve_points=7, progress=False
    )


# --- Plane geometry ---------------------------------------------------------------------------


def test_origin_has_coordinates_zero(plane):
    assert plane.coords(plane.origin) == (0.0, 0.0)


def test_b_lies_on_the_positive_x_axis_at_its_distance_from_a():
    a, b, c = _points(50)
    x, y = Plane.through(a, b, c).coords(b)
    assert x == pytest.approx(WeightSpace.norm(b - a).item(), rel=1e-12)
    assert y == pytest.approx(0.0, abs=1e-12)


def test_c_lies_above_the_x_axis_at_the_coordinates_of_the_paper():
    """Garipov et al.'s plane.py: u = (w2 - w1)/|w2 - w1|, v from theta - w1 by Gram-Schmidt."""
    a, b, c = (p.numpy() for p in _points(50))
    u = (b - a) / np.linalg.norm(b - a)
    v = (c - a) - np.dot(c - a, u) * u
    expected = (np.dot(c - a, u), np.linalg.norm(v))
    x, y = Plane.through(*(torch.from_numpy(p) for p in (a, b, c))).coords(torch.from_numpy(c))
    assert y > 0
    np.testing.assert_allclose((x, y), expected, rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(x=st.floats(-1e3, 1e3), y=st.floats(-1e3, 1e3))
def test_point_of_coords_returns_a_point_of_the_plane(x, y):
    plane = Plane.through(*_points(50))
    w = plane.point(x, y)
    torch.testing.assert_close(plane.point(*plane.coords(w)), w, rtol=0, atol=1e-9)


@st.composite
def _triples(draw):
    """Three random points, float32 or float64, up to 1e5 weights, at very different scales."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    span = 2 if dtype == torch.float32 else 6  # exponents float32 can still tell apart
    scales = [10.0 ** draw(st.integers(-span, span)) for _ in range(3)]
    dim = draw(st.sampled_from([2, 3, 17, 1000, 100_000]))
    return _points(dim, dtype, scales, seed=draw(st.integers(0, 2**16)))


@settings(max_examples=25, deadline=None)
@given(points=_triples())
def test_basis_is_orthonormal_for_any_scale_and_dimension(points):
    plane = Plane.through(*points)
    gram = torch.tensor(
        [[plane.u @ plane.u, plane.u @ plane.v], [plane.v @ plane.u, plane.v @ plane.v]]
    )
    torch.testing.assert_close(gram, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-6)


def test_distance_of_an_offset_point_equals_the_offset(plane):
    normal = torch.randn(plane.dim, dtype=torch.float64)
    for _ in range(2):
        normal -= (normal @ plane.u) * plane.u + (normal @ plane.v) * plane.v
    normal /= normal.norm()
    w = plane.point(1.5, -2.0) + 0.75 * normal
    assert plane.distance(w) == pytest.approx(0.75, rel=1e-9)


def test_batch_coords_and_distances_match_single_points(plane):
    batch = torch.stack(_points(plane.dim, seed=1))
    expected = [plane.coords(w) for w in batch]
    torch.testing.assert_close(plane.coords(batch), torch.tensor(expected, dtype=torch.float64))
    dists = torch.tensor([plane.distance(w) for w in batch], dtype=torch.float64)
    torch.testing.assert_close(plane.distance(batch), dists)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["c equals a", "b on the line", "b beyond c"])
def test_collinear_points_raise(dtype, case):
    a, b, c = _points(100, dtype)
    b = {"c equals a": b, "b on the line": a + 0.5 * (c - a), "b beyond c": a + 3 * (c - a)}[case]
    c = a.clone() if case == "c equals a" else c
    with pytest.raises(ValueError, match="collinear"):
        Plane.through(a, b, c)


def test_state_dict_points_need_a_space():
    a, b, c = (TinyNet().state_dict() for _ in range(3))
    with pytest.raises(ValueError, match="space="):
        Plane.through(a, b, c)


def test_weights_at_the_origin_are_the_start_network_exactly():
    a, b, c = TinyNet(), TinyNet(), TinyNet()
    plane = Plane.through(a, b, c)
    weights = plane.weights(0.0, 0.0)
    assert all(torch.equal(weights[n], p) for n, p in a.named_parameters())


def test_non_orthonormal_basis_raises():
    e = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="orthonormal"):
        Plane(e[0], e[1], 2 * e[2])


# --- evaluate_plane ---------------------------------------------------------------------------


def test_grid_has_the_requested_non_square_shape(bezier_plane):
    assert bezier_plane.x.shape == (3,) and bezier_plane.y.shape == (4,)
    assert all(getattr(bezier_plane, m).shape == (3, 4) for m in ("train_loss", "test_error"))


def test_anchors_are_start_end_bend_inside_the_grid(bezier_plane):
    r = bezier_plane
    assert r.anchor_names == ["start", "end", "bend"]
    assert (r.anchors[:, 0] >= r.x[0]).all() and (r.anchors[:, 0] <= r.x[-1]).all()
    assert (r.anchors[:, 1] >= r.y[0]).all() and (r.anchors[:, 1] <= r.y[-1]).all()


def test_plane_through_curve_has_w2_on_the_positive_x_axis_and_theta_above(bezier, bezier_plane):
    (sx, sy), (ex, ey), (bx, by) = bezier_plane.anchors
    distance = WeightSpace.norm(bezier.end.double() - bezier.start.double()).item()
    assert (sx, sy) == (0.0, 0.0)
    assert ex == pytest.approx(distance, rel=1e-9) and ey == pytest.approx(0.0, abs=1e-9)
    assert by > 0


def test_margins_widen_each_side_by_a_fraction_of_the_anchor_range(bezier_plane):
    r = bezier_plane
    (x0, y0), (x1, y1) = r.anchors.min(0), r.anchors.max(0)
    expected = [x0 - 0.1 * (x1 - x0), x1 + 0.3 * (x1 - x0), y0, y1 + 0.5 * (y1 - y0)]
    np.testing.assert_allclose([r.x[0], r.x[-1], r.y[0], r.y[-1]], expected, rtol=1e-12)


def test_quadratic_bezier_lies_in_its_plane_from_start_to_end(bezier_plane):
    r = bezier_plane
    assert r.curve_xy.shape == (7, 2) and r.curve_distance.shape == (7,)
    np.testing.assert_allclose(r.curve_xy[[0, -1]], r.anchors[:2], atol=1e-5)
    assert r.curve_distance.max() < 1e-5 * r.anchors[:, 0].max()


def test_grid_node_at_the_origin_equals_evaluate_point_at_start(bezier, data):
    plane = Plane.through(bezier.start, bezier.end, bezier.bends[0].detach(), bezier.space)
    result = evaluate_plane(bezier.model, plane, data, grid=(2, 2), margin=0.0, progress=False)
    j = int(np.argmin(np.abs(result.y)))
    assert result.x[0] == 0.0 and result.y[j] == 0.0
    ref = evaluate_point(bezier.model, bezier.space.unflatten(bezier.start), data)
    assert result.train_nll[0, j] == pytest.approx(ref["train"].nll, rel=1e-6)
    assert result.test_error[0, j] == pytest.approx(ref["test"].error)


def test_curve_with_more_bends_than_the_plane_holds_leaves_it(data):
    torch.manual_seed(0)
    chain = PolyChain(TinyNet(), TinyNet(), TinyNet(), bends=3)
    with torch.no_grad():
        chain.bends.add_(torch.randn_like(chain.bends))
    result = evaluate_plane_through_curve(chain, data, grid=2, curve_points=9, progress=False)
    assert result.anchor_names == ["start", "end", "bend 1", "bend 2", "bend 3"]
    assert result.curve_distance[[0, 4, 8]].max() < 1e-4  # start, middle bend, end
    assert result.curve_distance.max() > 1.0
    # the control points' own distances: bends 1 and 3 lie off the plane, bend 2 defines it
    dist = result.anchor_distance
    assert dist[[0, 1, 3]].max() < 1e-4 and dist[[2, 4]].min() > 1.0
    plane = Plane.through(chain.start, chain.end, chain.bends[1].detach())
    assert dist[2] == pytest.approx(plane.distance(chain.bends[0].detach()), rel=1e-9)


@pytest.mark.parametrize("grid", [1, -3, (2, 1), (3,), (2, 2, 2), 2.5, True])
def test_invalid_grid_raises(bezier, data, grid):
    with pytest.raises(ValueError, match="grid"):
        evaluate_plane_through_curve(bezier, data, grid=grid, progress=False)


@pytest.mark.parametrize("margin", [-0.1, (0.0, 0.0, 0.0, -1.0), float("nan"), (0.1, 0.1)])
def test_invalid_margin_raises(bezier, data, margin):
    with pytest.raises(ValueError, match="margin"):
        evaluate_plane_through_curve(bezier, data, margin=margin, progress=False)


def test_line_has_no_plane_through_its_bends(data):
    line = Line(TinyNet(), TinyNet(), TinyNet())
    with pytest.raises(ValueError, match="no bends"):
        evaluate_plane_through_curve(line, data, progress=False)


# --- PlaneResult files ------------------------------------------------------------------------


def test_plane_result_save_load_round_trip(bezier_plane, tmp_path):
    bezier_plane.save(tmp_path / "plane")
    assert PlaneResult.load(tmp_path / "plane") == bezier_plane


def test_plane_result_files_open_with_plain_numpy_and_json(bezier_plane, tmp_path):
    bezier_plane.save(tmp_path / "plane")
    with np.load(tmp_path / "plane.npz", allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["train_loss"], bezier_plane.train_loss)
        assert arrays["anchor_names"].tolist() == ["start", "end", "bend"]
    meta = json.loads((tmp_path / "plane.json").read_text())
    assert meta["grid"] == [3, 4] and meta["result"] == "PlaneResult"


def test_plane_summary_counts_diverged_nodes_and_ranges_over_the_finite_ones(bezier_plane):
    result = copy.deepcopy(bezier_plane)
    result.train_loss[0, 0] = float("nan")
    result.train_loss[1, 0] = float("inf")
    summary = result.summary()
    finite = np.delete(result.train_loss.ravel(), [0, len(result.y)])
    assert summary["train_loss"]["non_finite"] == 2
    assert summary["train_loss"]["max"] == finite.max()
    assert summary["test_error"]["non_finite"] == 0
