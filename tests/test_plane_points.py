"""`modeconn plane points=[a.pt,b.pt,c.pt]`: the plane through three networks, no curve."""

import numpy as np
import pytest
import torch
from conftest import compose_app

import modeconn.engine.grid
from modeconn.apps import plane, train
from modeconn.apps.common import run_app
from modeconn.curves.family import Bezier
from modeconn.curves.weights import WeightSpace
from modeconn.data.catalogue import load_dataset
from modeconn.engine import EvalSettings, eval_subset
from modeconn.io.checkpoints import load_checkpoint, load_endpoint, save_checkpoint
from modeconn.io.interrupt import Interrupted
from modeconn.models import build_model
from modeconn.plane import Plane, PlaneResult

ARGS = {"widths": [4, 8, 8], "hidden": 16, "pool_padding": 1}  # a tiny ConvFC for 8x8 digits
ARCH = ["model.args.widths=[4,8,8]", "model.args.hidden=16", "model.args.pool_padding=1"]
TINY = [*ARCH, "optim.epochs=1", "optim.batch_size=256", "progress=false"]
GRID = (3, 3)  # margin 0: a at node (0, 0), b at (2, 0), c (built at mid-x) at (1, 2)
SUBSET = [300, 100]  # train, test samples the losses are computed on (the engine's subset)


@pytest.fixture(scope="module")
def points(tmp_path_factory):
    """Two endpoints trained by `modeconn train`, and a third network c = (a + b) / 2 plus
    an offset orthogonal to b - a (so the grid hits it), saved both as a modeconn endpoint
    checkpoint and as a plain state dict."""
    tmp = tmp_path_factory.mktemp("points")
    paths = [tmp / f"seed{s}.pt" for s in (1, 2)]
    for seed, path in zip((1, 2), paths, strict=True):
        train.run(compose_app("train", [*TINY, f"seed={seed}", f"checkpoint={path}"]))
    (a, ka), (b, _) = (load_endpoint(p) for p in paths)
    space = WeightSpace.from_module(a)
    va, vb = (space.flatten(m).double() for m in (a, b))
    gen = torch.Generator().manual_seed(3)
    offset = torch.randn(va.shape, generator=gen, dtype=torch.float64)
    u = (vb - va) / (vb - va).norm()
    offset -= (offset @ u) * u
    vc = 0.5 * (va + vb) + 0.5 * (vb - va).norm() * offset / offset.norm()
    state = {k: v.float() for k, v in space.unflatten(vc).items()}
    own = tmp / "third.pt"
    save_checkpoint(own, "endpoint", state, {**ka.meta, "seed": 3})
    torch.save(state, tmp / "third-plain.pt")
    return [*paths, own]


def _plane(points, out, *extra):
    files = ",".join(str(p) for p in points)
    overrides = [f"points=[{files}]", f"grid=[{GRID[0]},{GRID[1]}]", "margin=0", "save_every_s=0"]
    overrides += [f"engine.eval_samples=[{SUBSET[0]},{SUBSET[1]}]", "progress=false"]
    return plane.run(compose_app("plane", [*overrides, f"out={out}", *extra]))


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("single")


@pytest.fixture(scope="module")
def single(points, single_dir):
    return _plane(points, single_dir)


@pytest.fixture
def no_figure(monkeypatch):
    """Runs whose figure nobody looks at skip drawing it (most of a tiny run's time)."""
    monkeypatch.setattr(plane, "save_figure", lambda *args, **kwargs: [])


def test_anchors_are_those_of_plane_through_a_at_origin_b_on_x_c_above(points, single):
    nets = [load_endpoint(p)[0] for p in points]
    expected = Plane.through(*nets)
    assert np.allclose(single.anchors, expected.anchors, rtol=1e-12, atol=1e-12)
    (ax, ay), (bx, by), (_, cy) = single.anchors
    assert ax == ay == by == 0.0 and bx > 0 and cy > 0
    assert single.anchor_names == ["seed1", "seed2", "third"]
    assert single.curve_xy.shape == (0, 2)  # no curve


def test_losses_at_the_anchor_nodes_equal_an_independent_evaluation(points, single):
    data = eval_subset(load_dataset("digits"), EvalSettings(eval_samples=SUBSET))
    nodes = [(0, 0), (GRID[0] - 1, 0), (GRID[0] // 2, GRID[1] - 1)]
    for path, (i, j), anchor in zip(points, nodes, single.anchors, strict=True):
        assert np.allclose([single.x[i], single.y[j]], anchor, rtol=1e-9, atol=1e-9)  # a node
        net, ckpt = load_endpoint(path)
        net.eval()
        with torch.no_grad():
            train_logits, test_logits = net(data.train_x), net(data.test_x)
            nll = torch.nn.functional.cross_entropy(train_logits, data.train_y).item()
            l2 = sum(float((p.double() ** 2).sum()) for p in net.parameters())
            error = 100 * (test_logits.argmax(1) != data.test_y).double().mean().item()
        assert np.isclose(single.train_loss[i, j], nll + 0.5 * ckpt.meta["wd"] * l2, rtol=1e-5)
        assert np.isclose(single.test_error[i, j], error, atol=1e-9)


def test_plain_state_dicts_named_on_the_command_line_give_the_same_plane(
    points, single, tmp_path, no_figure
):
    plain = [*points[:2], points[2].with_name("third-plain.pt")]
    named = ["model=convfc", *ARCH, "dataset=digits", "wd=5e-4"]
    result = _plane(plain, tmp_path, *named)
    assert np.allclose(result.anchors, single.anchors, rtol=1e-12)
    assert np.allclose(result.train_loss, single.train_loss, rtol=1e-6)


def test_resume_after_a_partial_run_equals_an_uninterrupted_run(
    points, single, tmp_path, monkeypatch, no_figure
):
    real, calls, stop = modeconn.engine.grid.points_metrics, [], {"after": 4}

    def counted(model, space, nodes, *args, **kwargs):  # Ctrl-C before the 5th node
        if stop["after"] is not None and len(calls) == stop["after"]:
            raise KeyboardInterrupt
        calls.append(len(nodes))
        return real(model, space, nodes, *args, **kwargs)

    monkeypatch.setattr(modeconn.engine.grid, "points_metrics", counted)
    with pytest.raises(Interrupted, match="4 of 9 points saved"):
        _plane(points, tmp_path)
    stop["after"], calls[:] = None, []
    resumed = _plane(points, tmp_path)
    assert sum(calls) == 9 - 4  # only the missing nodes
    assert np.array_equal(resumed.train_loss, single.train_loss)
    assert np.array_equal(resumed.test_error, single.test_error)


def test_two_shards_merged_equal_one_process(points, single, tmp_path, no_figure):
    for k in (0, 1):
        assert _plane(points, tmp_path, f"shard={k}", "num_shards=2") is None
    merged = _plane(points, tmp_path, "merge=true", "num_shards=2")
    assert np.allclose(merged.train_loss, single.train_loss, rtol=1e-6)
    assert np.array_equal(merged.test_error, single.test_error)
    assert not list(tmp_path.glob("plane-shard*"))


def test_the_figure_marks_and_names_the_three_anchors_and_draws_no_curve(single, single_dir):
    from modeconn.plotting import plot_plane

    assert (single_dir / "plane.png").stat().st_size > 0
    fig = plot_plane(single, line=False)
    panel = fig.axes[0]
    assert {"seed1", "seed2", "third"} <= {t.get_text() for t in panel.texts}
    assert [len(line.get_xdata()) for line in panel.lines] == [1, 1, 1]  # three markers
    assert not fig.legends  # no curve, no line: nothing to name
    assert panel.get_xlabel() == "x: along seed2 − seed1"
    assert panel.get_ylabel().startswith("y: ⊥ x, third at y > 0")


def test_a_curve_plane_and_a_three_point_plane_never_replace_each_other(
    points, tmp_path, no_figure
):
    """The curve through the same three networks spans the same plane: only the job tells."""
    nets = [load_endpoint(p) for p in points]
    (a, meta), (b, _), (c, _) = ((n, ck.meta) for n, ck in nets)
    curve = Bezier(build_model("convfc", num_classes=10, input_shape=(1, 8, 8), **ARGS), a, b)
    with torch.no_grad():
        curve.bends.copy_(curve.space.flatten(c)[None])
    curve_meta = {**meta, "curve": {"type": "bezier", "degree": 2}}
    state = {"start": curve.start, "end": curve.end, "bends": curve.bends.detach()}
    save_checkpoint(tmp_path / "curve.pt", "curve", state, curve_meta)
    out = tmp_path / "out"
    curve_plane = [f"curve_ckpt={tmp_path / 'curve.pt'}", "grid=[3,3]", "margin=0", f"out={out}"]
    curve_plane += [f"engine.eval_samples=[{SUBSET[0]},{SUBSET[1]}]", "progress=false"]
    plane.run(compose_app("plane", [*curve_plane, "curve_points=5"]))
    with pytest.raises(ValueError, match=r"differing: curve, curve_points, points"):
        _plane(points, out)
    assert len(PlaneResult.load(out / "plane").curve_xy) == 5  # still the curve's plane
    _plane(points, out, "overwrite=true")
    with pytest.raises(ValueError, match=r"differing: curve, curve_points, points"):
        plane.run(compose_app("plane", [*curve_plane, "curve_points=5"]))
    assert len(PlaneResult.load(out / "plane").curve_xy) == 0  # still the 3-point plane


def _error(overrides: list[str]) -> str:
    """The one line a user sees (run through `run_app`, as the command line does)."""
    with pytest.raises(SystemExit) as err:
        run_app(plane.run, compose_app("plane", ["progress=false", *overrides]))
    message = str(err.value)
    assert message.startswith("modeconn: error: ") and "\n" not in message
    return message


def test_curve_ckpt_and_points_together_or_neither_are_one_error_line(points):
    files = ",".join(map(str, points))
    assert "exactly one of curve_ckpt" in _error([f"points=[{files}]", "curve_ckpt=c.pt"])
    assert "got neither" in _error([])


def test_points_must_be_exactly_three_files(points):
    assert "exactly 3 checkpoint files" in _error([f"points=[{points[0]},{points[1]}]"])
    assert "a list of three" in _error([f"points={points[0]}"])


def test_one_network_given_twice_spans_no_plane(points):
    line = _error([f"points=[{points[0]},{points[0]},{points[2]}]"])
    assert f"no plane through {points[0]}, {points[0]}" in line and "collinear" in line


def test_points_of_two_architectures_name_the_files_and_what_differs(points, tmp_path):
    narrow_args = {**ARGS, "hidden": 8}
    narrow = build_model("convfc", num_classes=10, input_shape=(1, 8, 8), **narrow_args)
    other = tmp_path / "narrow.pt"
    meta = {**load_checkpoint(points[0]).meta, "model_args": narrow_args}
    save_checkpoint(other, "endpoint", narrow.state_dict(), meta)
    line = _error([f"points=[{points[0]},{points[1]},{other}]"])
    assert "one architecture" in line and "model_args" in line
    assert str(points[0]) in line and str(other) in line and str(points[1]) not in line
