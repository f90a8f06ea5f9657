"""Adaptive resolution (`modeconn.engine.adaptive`): a fine grid from a fraction of its nodes.

Analytic functions of the grid's indices go through `refine` (the refinement alone); planes of
tiny linear networks on digits go through the grid engine (files, resume, shards, apps).
"""

import json

import numpy as np
import pytest
import torch
from conftest import compose_app
from torch import nn

import modeconn.engine.grid
from modeconn.curves.geometry import Plane
from modeconn.data.catalogue import load_dataset
from modeconn.engine import Adaptive, merge_shards
from modeconn.engine.adaptive import refine
from modeconn.io.interrupt import Interrupted
from modeconn.io.store import load_result
from modeconn.plane import PlaneResult, evaluate_plane
from modeconn.plotting import plot_contour, plot_plane

N = 129  # target nodes per side of the analytic grids
AXIS = np.linspace(-1.0, 1.0, N)


def _at(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return AXIS[nodes[:, 0]], AXIS[nodes[:, 1]]


def smooth(nodes: np.ndarray) -> dict[str, np.ndarray]:
    x, y = _at(nodes)
    return {"train_loss": 10.0 ** (0.6 * x + 0.4 * y**2)}


RING = (0.1, -0.2, 0.5)  # centre x, centre y, radius of a step 0.02 wide


def sharp(nodes: np.ndarray) -> dict[str, np.ndarray]:
    x, y = _at(nodes)
    r = np.hypot(x - RING[0], y - RING[1])
    return {"train_loss": 10.0 ** np.tanh((r - RING[2]) / 0.02)}


def _everywhere(fn) -> np.ndarray:
    nodes = np.stack(np.meshgrid(np.arange(N), np.arange(N), indexing="ij"), -1).reshape(-1, 2)
    return fn(nodes)["train_loss"].reshape(N, N)


# --- the refinement on analytic functions ----------------------------------------------------


def test_a_smooth_function_is_refined_little_and_interpolated_within_tol():
    values, evaluated, error, meta = refine(smooth, (N, N), Adaptive(coarse=17, tol=0.05))
    assert evaluated.mean() <= (33 / N) ** 2 + 1e-9  # the coarse grid and one round
    exact = np.log10(_everywhere(smooth))
    assert np.abs(np.log10(values["train_loss"]) - exact).max() <= 0.05
    assert meta["rounds"] == 2 and np.all(error[evaluated] == 0)


def test_a_sharp_feature_is_refined_to_the_target_spacing_near_it():
    _, evaluated, _, _ = refine(sharp, (N, N), Adaptive(coarse=17, tol=0.05))
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    x, y = RING[0] + RING[2] * np.cos(angles), RING[1] + RING[2] * np.sin(angles)
    step = AXIS[1] - AXIS[0]
    i, j = ((x + 1) // step).astype(int), ((y + 1) // step).astype(int)
    corners = evaluated[i, j] & evaluated[i + 1, j] & evaluated[i, j + 1] & evaluated[i + 1, j + 1]
    assert corners.all()  # every target cell the ring crosses was evaluated at its 4 corners
    assert evaluated.mean() < 0.25  # and most of the rest was not


def test_cells_above_the_ceiling_are_not_refined():
    tall = Adaptive(coarse=17, tol=0.05, ceiling=2.0)  # the ring's outside is at 10 > 2
    _, evaluated, _, _ = refine(sharp, (N, N), tall)
    _, everything, _, _ = refine(sharp, (N, N), Adaptive(coarse=17, tol=0.05))
    outside = np.log10(_everywhere(sharp)) > 0.99
    assert evaluated.sum() < everything.sum()
    assert evaluated[outside].mean() < everything[outside].mean()


def test_the_tiles_of_the_shards_together_ask_for_the_single_process_nodes():
    adaptive = Adaptive(coarse=17, tol=0.05)
    _, single, _, _ = refine(sharp, (N, N), adaptive)
    shards = [refine(sharp, (N, N), adaptive, shard=(k, 3))[1] for k in range(3)]
    np.testing.assert_array_equal(np.logical_or.reduce(shards), single)


@pytest.mark.parametrize(
    "shape, options, match",
    [
        ((100, 100), {"coarse": 17}, r"2\^m \(coarse - 1\) \+ 1"),
        ((129, 65), {"coarse": 17}, r"with one m"),
        ((129, 129), {"tol": 0.0}, r"tol must be a number > 0"),
        ((129, 129), {"tol": -0.1}, r"tol must be a number > 0"),
        ((129, 129), {"tol": float("nan")}, r"tol must be a number > 0"),
        ((129, 129), {"coarse": 1}, r"coarse must be an int >= 2"),
        ((129, 129), {"ceiling": -1.0}, r"ceiling is a value of train_loss"),
        ((129, 129), {"metric": "test_error", "coarse": 17}, r"cannot refine on test_error"),
    ],
)
def test_bad_adaptive_input_is_refused_with_one_clear_message(shape, options, match):
    with pytest.raises(ValueError, match=match) as err:
        refine(smooth, shape, Adaptive(**options))
    assert "\n" not in str(err.value)


def test_an_unknown_resolution_is_refused(tiny):
    with pytest.raises(ValueError, match="resolution must be 'regular', 'adaptive' or an Adaptive"):
        _plane(tiny, resolution="fine")


def test_an_incompatible_target_names_the_targets_that_fit():
    with pytest.raises(ValueError, match=r"513, 1025, 2049 for coarse 33"):
        Adaptive(coarse=33).levels((1000, 1000))


# --- through the engine: planes of tiny linear networks on digits ----------------------------

GRID, ADAPTIVE = 17, Adaptive(coarse=5, tol=0.05)


@pytest.fixture(scope="module")
def tiny():
    """A plane through three linear classifiers of digits (scaled up, so the loss varies)."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(64, 10)) for _ in range(3)]
    with torch.no_grad():
        for net in nets:
            net[1].weight.mul_(8.0)
    return nets[0], Plane.through(*nets), load_dataset("digits").subset(train=300, test=100)


def _plane(tiny, **kw) -> PlaneResult | None:
    model, plane, data = tiny
    kw = {"grid": GRID, "margin": 0.5, "resolution": ADAPTIVE, "progress": False, **kw}
    return evaluate_plane(model, plane, data, points_per_pass=1, **kw)


@pytest.fixture(scope="module")
def single(tiny):
    return _plane(tiny)


def _same(a: PlaneResult, b: PlaneResult) -> None:
    np.testing.assert_array_equal(a.evaluated, b.evaluated)
    for name in a.metrics:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.interp_error, b.interp_error)


def test_an_adaptive_plane_is_the_whole_target_grid_with_its_evaluated_nodes(tiny, single):
    assert single.grid_shape == (GRID, GRID) and single.adaptive
    assert np.isfinite(single.train_loss).all() and np.isfinite(single.interp_error).all()
    assert 0 < single.evaluated.mean() < 0.6
    assert single.meta["resolution"]["rounds"] >= 3
    regular = _plane(tiny, resolution="regular")
    mask = single.evaluated
    np.testing.assert_array_equal(single.train_loss[mask], regular.train_loss[mask])
    error = np.abs(np.log10(single.train_loss) - np.log10(regular.train_loss))
    assert error.max() <= ADAPTIVE.tol[0]


def test_the_same_inputs_evaluate_the_same_nodes(tiny, single):
    _same(_plane(tiny), single)


def test_a_resumed_run_equals_an_uninterrupted_one(tiny, single, tmp_path, monkeypatch):
    original, calls, stop = modeconn.engine.grid.points_metrics, [], [25 + 56 + 5]

    def stopping(*args, **kwargs):  # once: a Ctrl-C a few nodes into the second round
        calls.append(1)
        if len(calls) in stop:
            stop.clear()
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(modeconn.engine.grid, "points_metrics", stopping)
    partial = tmp_path / "plane-partial"
    with pytest.raises(Interrupted):
        _plane(tiny, partial=partial, save_every_s=1000)
    saved = int(load_result(partial)[0]["done"].sum())
    assert saved == 25 + 56 + 4
    calls.clear()
    _same(_plane(tiny, partial=partial), single)
    assert len(calls) == single.evaluated.sum() - saved  # nothing evaluated twice


def test_shards_merge_to_the_single_process_result(tiny, single, tmp_path):
    files = [tmp_path / f"shard{k}" for k in range(3)]
    for k, f in enumerate(files):
        assert _plane(tiny, partial=f, shard=(k, 3)) is None
        assert load_result(f)[1]["finished"]
    merge_shards(files, tmp_path / "merged")
    assert load_result(tmp_path / "merged")[1]["finished"]
    _same(_plane(tiny, partial=tmp_path / "merged"), single)


def test_the_regular_default_is_unchanged(tiny, tmp_path):
    model, plane, data = tiny
    default = evaluate_plane(model, plane, data, grid=5, margin=0.5, progress=False)
    regular = _plane(tiny, grid=5, resolution="regular")
    assert default.evaluated is None and default.interp_error is None
    assert "resolution" not in default.meta and not default.adaptive
    np.testing.assert_array_equal(default.train_loss, regular.train_loss)
    with np.load(default.save(tmp_path / "plane")) as saved:
        assert not {"evaluated", "interp_error"} & set(saved.files)


def test_an_adaptive_result_saves_and_loads_with_its_mask(single, tmp_path):
    single.save(tmp_path / "plane")
    again = PlaneResult.load(tmp_path / "plane")
    assert again == single and again.evaluated.dtype == bool


def test_the_figures_draw_an_adaptive_result_and_mark_its_evaluated_nodes(single):
    figure = plot_plane(single, mark_evaluated=True)
    dots = [c for ax in figure.axes for c in ax.collections if "evaluated" in str(c.get_label())]
    assert len(dots) == 2 and len(dots[0].get_offsets()) == single.evaluated.sum()
    assert "evaluated" in plot_contour(single, mark_evaluated=True).axes[0].get_title()
    plain = plot_plane(single)
    assert not any("evaluated" in str(c.get_label()) for ax in plain.axes for c in ax.collections)


# --- the apps --------------------------------------------------------------------------------


def test_a_target_without_adaptive_resolution_is_refused(tmp_path):
    from modeconn.apps import plane

    cfg = compose_app("plane", [f"curve_ckpt={tmp_path / 'c.pt'}", "target=1025"])
    with pytest.raises(ValueError, match="target=1025 is the final grid of resolution=adaptive"):
        plane.run(cfg)


def test_the_plane_app_refines_and_its_shards_merge_to_one_process(tmp_path):
    from test_interrupt import write_curve_checkpoint

    from modeconn.apps import plane

    write_curve_checkpoint(tmp_path / "curve.pt")

    def run(out: str, *more: str):
        options = [f"curve_ckpt={tmp_path / 'curve.pt'}", f"out={tmp_path / out}"]
        options += ["progress=false", "resolution=adaptive", "target=17", "coarse=9"]
        options += ["engine.eval_samples=100", *more]  # composes with the evaluation subset
        return plane.run(compose_app("plane", options + [f"hydra.run.dir={tmp_path / 'h'}"]))

    single = run("single", "mark_evaluated=true")  # the figure dots the evaluated nodes
    assert single.grid_shape == (17, 17) and single.adaptive
    assert (tmp_path / "single" / "plane.png").exists()
    assert load_result(tmp_path / "single" / "plane")[1]["job"]["resolution"] == "adaptive"
    for k in range(2):
        assert run("sharded", f"shard={k}", "num_shards=2") is None
    sidecar = tmp_path / "sharded" / "plane-shard1of2.json"
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "finished": False}))  # as if stopped part-way
    with pytest.raises(ValueError, match="plane-shard1of2.npz' did not run to the end"):
        run("sharded", "merge=true", "num_shards=2")
    sidecar.write_text(json.dumps(record))
    merged = run("sharded", "merge=true", "num_shards=2")
    np.testing.assert_array_equal(merged.evaluated, single.evaluated)
    np.testing.assert_array_equal(merged.train_loss, single.train_loss)


def test_the_landscape_app_refines_a_surface(tmp_path):
    from test_interrupt import write_curve_checkpoint

    from modeconn.apps import landscape

    write_curve_checkpoint(tmp_path / "curve.pt")
    options = [f"ckpt={tmp_path / 'curve.pt'}", f"out={tmp_path / 'out'}", "progress=false"]
    options += ["resolution=adaptive", "grid=9", "coarse=3", "tol=0.05", "span=0.5"]
    options += ["engine.eval_samples=100", "mark_evaluated=true"]
    result = landscape.run(compose_app("landscape", options + [f"hydra.run.dir={tmp_path}/h"]))
    assert result.grid_shape == (9, 9) and result.adaptive
    assert result.meta["resolution"]["coarse"] == [3]
    assert list((tmp_path / "out").glob("*.png"))


def test_a_curvature_map_refines_on_its_ratio_and_the_loss(tiny):
    from modeconn.curvature import curvature_surface

    model, plane, data = tiny
    hessian = {"samples": 50, "max_steps": 10, "tol": 1e-2, "trace": False}
    adaptive = Adaptive(coarse=3, tol=(0.05, 0.05), metric=("ratio", "train_loss"))
    result = curvature_surface(
        model, model, [plane.u, plane.v], data, grid=5, span=0.5, hessian=hessian,
        resolution=adaptive, progress=False,
    )  # fmt: skip
    assert result.grid_shape == (5, 5) and result.adaptive
    assert np.isfinite(result.ratio).all() and result.evaluated[::2, ::2].all()
