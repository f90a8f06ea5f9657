"""The grid engine: one loop for every job over weight points, one settings object."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_app
from hypothesis import given, settings
from hypothesis import strategies as st
from test_resume import make_curve

from modeconn.apps import evaluate
from modeconn.engine import EvalSettings, eval_subset, merge_shards, stratified_indices
from modeconn.engine.point import evaluate_point
from modeconn.path import evaluate_path

PACKAGE = Path(__file__).resolve().parents[1] / "modeconn"


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"bn_samples": -5}, "bn_samples must be an int >= 1"),
        ({"bn_samples": 0}, "bn_samples must be an int >= 1"),
        ({"eval_samples": (10, 0)}, "eval_samples must be an int >= 1"),
        ({"eval_samples": (1, 2, 3)}, "pair"),
        ({"points_per_pass": 0}, "points_per_pass"),
        ({"autocast": "int8"}, "autocast must be one of"),
        ({"compile": True, "points_per_pass": 4}, "one point per pass"),
    ],
)
def test_bad_engine_settings_are_refused_with_the_rule(bad, match):
    with pytest.raises(ValueError, match=match):
        EvalSettings(**bad)


def test_an_unknown_engine_option_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown engine option 'bn_sample'; valid options: "):
        EvalSettings.from_config({"bn_sample": 3})


def test_keyword_options_and_a_settings_object_together_are_refused(data):
    with pytest.raises(ValueError, match="either as settings"):
        evaluate_path(make_curve(), data, ts=2, settings=EvalSettings(), bn_samples=10)


def test_the_engine_config_group_builds_the_settings_of_every_evaluating_app():
    for app in ("evaluate", "plane", "ensemble", "fge", "demo"):
        cfg = compose_app(app, ["engine.bn_samples=7", "engine.eval_samples=[5,null]"])
        built = EvalSettings.from_config(dict(cfg.engine))
        assert built.bn_samples == 7 and built.eval_sizes == (5, None), app


# --- the evaluation subset --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=6),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 1000),
)
def test_stratified_subset_keeps_every_class_share_to_within_one_sample(counts, fraction, seed):
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    n = max(1, int(fraction * len(y)))
    keep = stratified_indices(y, n, seed)
    assert len(keep) == n and len(set(keep.tolist())) == n
    for k, c in enumerate(counts):
        assert abs(int((y[keep] == k).sum()) - c * n / len(y)) < 1.0 + 1e-9


def test_stratified_subset_is_fixed_by_its_seed(data):
    a, b = (stratified_indices(data.train_y, 50, 3) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, stratified_indices(data.train_y, 50, 4))


def test_eval_subset_metrics_equal_the_subset_with_statistics_of_the_whole_train_set(data):
    curve, engine = make_curve(), EvalSettings(eval_samples=(120, 40))
    path = evaluate_path(curve, data, ts=[0.0, 0.5, 1.0], settings=engine, progress=False, wd=0)
    sub = eval_subset(data, engine)
    assert len(sub.train_x) == 120 and len(sub.test_x) == 40
    ref = evaluate_point(curve.model, curve.weights(0.5), data, eval_data=sub)
    assert path.train_nll[1] == pytest.approx(ref["train"].nll, rel=1e-6)
    assert path.test_error[1] == pytest.approx(ref["test"].error)
    assert path.meta["engine"]["eval_samples"] == [120, 40]
    whole = evaluate_point(curve.model, curve.weights(0.5), data)
    assert path.train_nll[1] != pytest.approx(whole["train"].nll, rel=1e-6)


def test_a_partial_file_of_another_eval_subset_is_refused(data, tmp_path, monkeypatch):
    import modeconn.engine.grid as grid

    partial, original, calls = tmp_path / "p", grid.evaluate_point, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(grid, "evaluate_point", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate_path(make_curve(), data, ts=3, partial=partial, progress=False, eval_samples=50)
    monkeypatch.setattr(grid, "evaluate_point", original)
    with pytest.raises(ValueError, match="differing keys: eval_samples"):
        evaluate_path(make_curve(), data, ts=3, partial=partial, progress=False, eval_samples=60)


def test_the_2018_batchnorm_estimator_reaches_the_path(data):
    curve = make_curve()
    path = evaluate_path(curve, data, ts=[0.5], progress=False, bn_exact=False)
    ref = evaluate_point(curve.model, curve.weights(0.5), data, bn_exact=False)
    exact = evaluate_point(curve.model, curve.weights(0.5), data)
    assert path.train_nll[0] == pytest.approx(ref["train"].nll, rel=1e-7)
    assert ref["train"].nll != exact["train"].nll


# --- shards of a path, for free ---------------------------------------------------------------


def test_path_shards_merge_to_the_single_process_path(data, tmp_path):
    curve = make_curve()
    files = [tmp_path / f"shard{k}" for k in range(3)]
    for k, f in enumerate(files):
        assert evaluate_path(curve, data, ts=7, partial=f, shard=(k, 3), progress=False) is None
    assert merge_shards(files, tmp_path / "merged") == 7
    merged = evaluate_path(curve, data, ts=7, partial=tmp_path / "merged", progress=False)
    single = evaluate_path(curve, data, ts=7, progress=False)
    np.testing.assert_allclose(merged.train_loss, single.train_loss, rtol=1e-6)
    np.testing.assert_array_equal(merged.test_error, single.test_error)


# --- the layer is one place -------------------------------------------------------------------


def _sources():
    return {p: p.read_text() for p in PACKAGE.rglob("*.py")}


def test_exactly_one_module_constructs_partial_grids():
    makers = [
        p.relative_to(PACKAGE).as_posix()
        for p, text in _sources().items()
        if any(
            isinstance(node, ast.Call) and getattr(node.func, "id", None) == "PartialGrid"
            for node in ast.walk(ast.parse(text))
        )
    ]
    assert makers == ["engine/grid.py"]


def test_plane_does_not_import_path():
    tree = ast.parse((PACKAGE / "plane.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "modeconn.path" not in imported


def test_the_evaluate_app_records_the_engine_block(tmp_path):
    from test_interrupt import write_curve_checkpoint

    write_curve_checkpoint(tmp_path / "c.pt")
    cfg = compose_app(
        "evaluate",
        [
            f"curve_ckpt={tmp_path / 'c.pt'}",
            "points=3",
            f"out={tmp_path / 'out'}",
            "progress=false",
            "engine.eval_samples=100",
            "engine.bn_exact=false",
        ],
    )
    results = evaluate.run(cfg)
    assert results["curve"].meta["engine"]["eval_samples"] == 100
    assert results["line"].meta["engine"]["bn_exact"] is False
