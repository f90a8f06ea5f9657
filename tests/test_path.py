import copy
import json
import math

import numpy as np
import pytest
import torch
from conftest import TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st

from modeconn.curves.family import Line
from modeconn.curves.weights import WeightSpace
from modeconn.engine.point import evaluate_point
from modeconn.path import METRICS, PathResult, barrier, evaluate_path


@pytest.fixture(scope="module")
def bezier_path(bezier, data):
    return evaluate_path(bezier, data, ts=5, wd=1e-2, progress=False)


def _synthetic(ts, arc_length, value=1.0):
    ts = np.asarray(ts, dtype=np.float64)
    metrics = {name: np.full(len(ts), value) for name in METRICS}
    return PathResult(ts=ts, **metrics, arc_length=arc_length, meta={"note": "synthetic"})


def test_path_endpoints_equal_evaluate_point_at_start_and_end(bezier, bezier_path, data):
    for k, point in ((0, bezier.start), (-1, bezier.end)):
        ref = evaluate_point(bezier.model, bezier.space.unflatten(point), data)
        assert bezier_path.train_nll[k] == pytest.approx(ref["train"].nll, rel=1e-6)
        assert bezier_path.test_error[k] == pytest.approx(ref["test"].error)


def test_loss_is_nll_plus_half_wd_squared_norm(bezier, bezier_path):
    point = bezier.point(float(bezier_path.ts[2]))
    l2 = 0.5 * 1e-2 * WeightSpace.norm(point).item() ** 2
    assert bezier_path.train_loss[2] == pytest.approx(bezier_path.train_nll[2] + l2, rel=1e-9)
    assert bezier_path.test_loss[2] == pytest.approx(bezier_path.test_nll[2] + l2, rel=1e-9)


def test_int_ts_are_equally_spaced_and_include_the_endpoints(bezier_path):
    np.testing.assert_array_equal(bezier_path.ts, np.linspace(0, 1, 5))


def test_line_arc_length_sums_to_endpoint_distance_and_is_uniform(data):
    torch.manual_seed(0)
    line = Line(TinyNet(), TinyNet(), TinyNet())
    result = evaluate_path(line, data, ts=4, progress=False)
    distance = WeightSpace.norm(line.end - line.start).item()
    assert result.arc_length.sum() == pytest.approx(distance, rel=1e-6)
    np.testing.assert_allclose(result.arc_length, distance / 3, rtol=1e-5)


def test_diverged_points_are_recorded_not_raised(data):
    torch.manual_seed(0)
    line = Line(TinyNet(), TinyNet(), TinyNet())
    with torch.no_grad():
        line.endpoints[1].fill_(float("nan"))  # a diverged point (a curve refuses NaN inputs)
    result = evaluate_path(line, data, ts=3, progress=False)
    assert np.isfinite(result.train_loss[0]) and np.isnan(result.train_loss[1:]).all()


def test_progress_false_prints_nothing(bezier, data, capsys):
    evaluate_path(bezier, data, ts=[0.0, 1.0], progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("ts", [1, [], [0.5, 1.2], [[0.0, 1.0]]])
def test_invalid_ts_raise(bezier, data, ts):
    with pytest.raises(ValueError, match="ts|t must"):
        evaluate_path(bezier, data, ts=ts, progress=False)


def test_path_result_save_load_round_trip(bezier_path, tmp_path):
    bezier_path.save(tmp_path / "path")
    assert PathResult.load(tmp_path / "path") == bezier_path


def test_path_result_files_open_with_plain_numpy_and_json(bezier_path, tmp_path):
    bezier_path.save(tmp_path / "path")
    with np.load(tmp_path / "path.npz", allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["test_error"], bezier_path.test_error)
    meta = json.loads((tmp_path / "path.json").read_text())
    assert meta["curve"] == {"type": "bezier", "degree": 2} and meta["wd"] == 1e-2


def test_loading_another_result_kind_raises(bezier_path, tmp_path):
    bezier_path.save(tmp_path / "path")
    meta = json.loads((tmp_path / "path.json").read_text())
    (tmp_path / "path.json").write_text(json.dumps({**meta, "result": "PlaneResult"}))
    with pytest.raises(ValueError, match="PlaneResult"):
        PathResult.load(tmp_path / "path")


@settings(max_examples=50, deadline=None)
@given(
    lengths=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=20),
    value=st.floats(-1e6, 1e6),
)
def test_weighted_mean_of_a_constant_is_the_constant(lengths, value):
    ts = np.linspace(0, 1, len(lengths) + 1)
    summary = _synthetic(ts, lengths, value).summary()
    assert summary["train_loss"]["weighted_mean"] == pytest.approx(value, rel=1e-12, abs=1e-9)


def test_weighted_mean_weights_each_segment_by_its_length():
    result = _synthetic([0.0, 0.5, 1.0], [1.0, 3.0])
    result.test_error = np.array([0.0, 2.0, 4.0])
    # segments: 1 * (0 + 2) / 2 + 3 * (2 + 4) / 2 = 10, over a length of 4
    assert result.summary()["test_error"]["weighted_mean"] == pytest.approx(2.5)


_ts = st.lists(st.floats(0.001, 0.999), max_size=20, unique=True).map(
    lambda inner: np.array([0.0, *sorted(inner), 1.0])
)


@settings(max_examples=50, deadline=None)
@given(ts=_ts, intercept=st.floats(-1e3, 1e3), slope=st.floats(-1e3, 1e3))
def test_barrier_of_a_linear_profile_is_zero(ts, intercept, slope):
    assert barrier(ts, intercept + slope * ts) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(ts=_ts, data=st.data(), slope=st.floats(-1e3, 1e3), height=st.floats(0.0, 1e3))
def test_barrier_of_a_bump_is_its_height(ts, data, slope, height):
    peak = data.draw(st.integers(0, len(ts) - 1))
    values = slope * ts
    if 0 < peak < len(ts) - 1:
        values[peak] += height
    else:
        height = 0.0  # a bump on an endpoint moves the line with it: no barrier
    assert barrier(ts, values) == pytest.approx(height, abs=1e-9)


def test_barrier_needs_both_endpoints():
    with pytest.raises(ValueError, match="ts\\[0\\] must be 0"):
        barrier([0.1, 0.5, 1.0], [1.0, 2.0, 1.0])


def test_path_result_barrier_reads_the_named_metric():
    result = _synthetic([0.0, 0.5, 1.0], [1.0, 1.0])
    result.test_nll = np.array([1.0, 3.0, 1.0])
    assert result.barrier("test_nll") == 2.0 and result.barrier() == 0.0


def test_path_barrier_defaults_to_the_nll_not_the_loss_with_weight_decay():
    """The l2 term, larger at the endpoints, can flatten a barrier of the data term to 0."""
    ts = np.array([0.0, 0.5, 1.0])
    result = _synthetic(ts, [1.0, 1.0])
    result.train_nll = np.array([0.245, 0.694, 0.25])
    result.train_loss = result.train_nll + 0.5 * np.array([1.2, 0.3, 1.2])
    assert result.barrier("train_loss") == 0.0
    assert result.barrier() == pytest.approx(0.694 - (0.245 + 0.25) / 2)


@settings(max_examples=50, deadline=None)
@given(ts=_ts, data=st.data())
def test_frankle_barrier_is_the_peak_minus_the_mean_of_the_endpoints(ts, data):
    values = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=len(ts), max_size=len(ts))))
    expected = max(values) - (values[0] + values[-1]) / 2
    assert barrier(ts, values, "frankle") == pytest.approx(expected, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(ts=_ts, data=st.data())
def test_frankle_and_entezari_barriers_agree_when_the_endpoints_are_equal(ts, data):
    values = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=len(ts), max_size=len(ts))))
    values[-1] = values[0]
    assert barrier(ts, values, "frankle") == pytest.approx(barrier(ts, values), abs=1e-9)


def test_barriers_report_both_definitions_of_nll_and_error_on_both_splits():
    result = _synthetic([0.0, 0.5, 1.0], [1.0, 1.0])
    result.test_error = np.array([2.0, 10.0, 4.0])
    barriers = result.barriers()
    assert set(barriers) == {"train_nll", "train_error", "test_nll", "test_error"}
    assert barriers["test_error"] == {"entezari": 7.0, "frankle": 7.0}
    result.test_error = np.array([2.0, 4.0, 8.0])
    assert result.barriers()["test_error"] == {"entezari": 0.0, "frankle": 3.0}


def test_unknown_barrier_definition_raises_with_the_valid_ones():
    with pytest.raises(ValueError, match="entezari, frankle"):
        barrier([0.0, 1.0], [1.0, 1.0], "max")


def test_barrier_of_unknown_metric_raises():
    with pytest.raises(ValueError, match="valid metrics"):
        _synthetic([0.0, 1.0], [1.0]).barrier("loss")


def test_summary_reports_min_max_mean_of_every_metric():
    summary = _synthetic([0.0, 1.0], [2.0], value=3.0).summary()
    assert set(summary) == set(METRICS)
    assert summary["train_error"] == {
        "min": 3.0,
        "max": 3.0,
        "mean": 3.0,
        "non_finite": 0,
        "weighted_mean": 3.0,
    }
    assert all(math.isfinite(v) for v in summary["test_loss"].values())


@pytest.mark.parametrize("points_per_pass", [1, 2])
def test_diverged_points_are_recorded_and_counted_not_crashed_on(bezier, data, points_per_pass):
    """NaN statistics left by a diverged point must not leak into the next (t=1) point."""
    from modeconn.engine import diverged_note

    broken = copy.deepcopy(bezier)
    with torch.no_grad():
        broken.bends.fill_(float("inf"))  # every point strictly inside the curve diverges
    result = evaluate_path(broken, data, ts=5, progress=False, points_per_pass=points_per_pass)
    assert np.isfinite(result.train_loss[[0, -1]]).all()
    assert not np.isfinite(result.train_loss[1:-1]).any()
    summary = result.summary()["train_loss"]
    assert summary["non_finite"] == 3
    assert summary["max"] == max(result.train_loss[0], result.train_loss[-1])  # finite ones
    note = diverged_note("curve", result.train_loss, [f"t={t:.3g}" for t in result.ts])
    assert note == (
        "curve: 3 of 5 points have a NaN or inf train loss (diverged; recorded as such): "
        "t=0.25, t=0.5, t=0.75"
    )
    assert diverged_note("curve", result.train_loss[[0, -1]], ["a", "b"]) is None
