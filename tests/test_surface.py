"""Surfaces and lines around any point (issue 13 part 2), and the engine's BatchNorm policy."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet
from test_resume import make_data

import modeconn.engine.grid
from modeconn.curves.weights import WeightSpace
from modeconn.engine import EvalSettings, merge_shards
from modeconn.engine.batched import evaluate_points
from modeconn.engine.execution import eval_plan
from modeconn.engine.point import evaluate, evaluate_point, recompute_bn
from modeconn.io.store import load_result
from modeconn.landscape.surface import (
    LineResult,
    SurfaceResult,
    evaluate_interpolation,
    evaluate_line,
    evaluate_surface,
)

GRID = (4, 3)


def make_net() -> TinyNet:
    """A TinyNet with trained-looking BatchNorm statistics (not those of any point)."""
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        net.bn.running_mean.copy_(torch.randn(4) * 0.3)
        net.bn.running_var.copy_(torch.rand(4) + 0.5)
        net.bn.num_batches_tracked.fill_(100)
    return net


def make_directions(net=None, scale: float = 0.3) -> torch.Tensor:
    """Two seeded Gaussian directions (2, D) in the network's (default: TinyNet's) space."""
    gen = torch.Generator().manual_seed(1)
    size = WeightSpace.from_module(net or TinyNet()).size
    return scale * torch.randn(2, size, generator=gen)


def flat(net) -> torch.Tensor:
    return WeightSpace.from_module(net).flatten(net)


def at(net, x: float, y: float, d) -> dict:
    """The weights origin + x d1 + y d2 as the surface computes them (float64, then cast)."""
    space = WeightSpace.from_module(net)
    point = flat(net).double() + float(x) * d[0].double() + float(y) * d[1].double()
    return space.unflatten(point.float())


def eval_forward_nll(net, weights, x, y) -> float:
    """A direct eval-mode forward with the network's own buffers: load weights, eval()."""
    net = copy.deepcopy(net)
    with torch.no_grad():
        for name, value in weights.items():
            net.get_parameter(name).copy_(value)
    net.eval()
    with torch.no_grad():
        return F.cross_entropy(net(x), y).item()


@pytest.fixture(scope="module")
def digits():
    return make_data()


# --- the grid --------------------------------------------------------------------------------


def test_the_centre_of_the_grid_is_evaluate_point_at_the_origin(digits):
    net = make_net()
    surface = evaluate_surface(net, net, make_directions(net), digits, grid=(5, 3), progress=False)
    ref = evaluate_point(make_net(), None, digits)
    assert surface.x[2] == 0 and surface.y[1] == 0
    assert surface.train_nll[2, 1] == ref["train"].nll
    assert surface.test_error[2, 1] == ref["test"].error


def test_a_non_square_grid_has_x_along_rows_and_y_along_columns(digits):
    net, d = make_net(), make_directions()
    span = ((-1.0, 0.5), (0.0, 2.0))
    surface = evaluate_surface(net, net, d, digits, grid=GRID, span=span, progress=False)
    assert surface.train_loss.shape == GRID
    np.testing.assert_array_equal(surface.x, np.linspace(-1.0, 0.5, 4))
    np.testing.assert_array_equal(surface.y, np.linspace(0.0, 2.0, 3))
    ref = evaluate_point(net, at(net, surface.x[3], surface.y[1], d), digits)
    assert surface.train_nll[3, 1] == pytest.approx(ref["train"].nll, rel=1e-6)


def test_a_span_touching_zero_holds_the_origin_at_its_corner(digits):
    net = make_net()
    span = ((0.0, 1.0), (-1.0, 0.0))
    surface = evaluate_surface(net, net, make_directions(net), digits, (3, 4), span, progress=False)
    ref = evaluate_point(make_net(), None, digits)
    assert surface.train_nll[0, -1] == ref["train"].nll
    assert np.all(np.isfinite(surface.train_nll))


def test_direction_scale_and_cosine_are_those_of_the_directions(digits):
    net, d = make_net(), make_directions()
    surface = evaluate_surface(net, net, d, digits, grid=2, progress=False)
    norms = torch.linalg.vector_norm(d.double(), dim=1) / flat(net).double().norm()
    np.testing.assert_allclose(surface.direction_scale, norms.numpy(), rtol=1e-12)
    cosine = torch.dot(d[0].double(), d[1].double()) / d.double().norm(dim=1).prod()
    assert surface.cosine == pytest.approx(cosine.item(), rel=1e-12)


def test_a_curve_origin_is_phi_t_and_its_network(digits, bezier):
    surface = evaluate_surface(
        None, (bezier, 0.3), make_directions(bezier.model), digits, grid=3, progress=False
    )
    ref = evaluate_point(bezier.model, bezier.weights(0.3), digits)
    assert surface.train_nll[1, 1] == ref["train"].nll
    assert surface.meta["origin"] == "curve" and surface.meta["t"] == 0.3


def test_a_line_is_the_surface_along_one_direction(digits):
    net, d = make_net(), make_directions()
    line = evaluate_line(net, net, d[0], digits, points=5, span=(-1.0, 1.0), progress=False)
    surface = evaluate_surface(net, net, d, digits, grid=(5, 3), progress=False)
    np.testing.assert_array_equal(line.train_nll, surface.train_nll[:, 1])
    assert line.direction_scale.shape == (1,)


def test_interpolation_hits_a_at_alpha_0_and_b_at_alpha_1(digits):
    a = make_net()
    torch.manual_seed(5)
    b = TinyNet()
    line = evaluate_interpolation(None, a, b, digits, progress=False)
    assert line.x[10] == 0 and line.x[30] == 1 and len(line.x) == 41
    assert line.train_nll[10] == evaluate_point(a, None, digits)["train"].nll
    assert line.train_nll[30] == evaluate_point(b, None, digits)["train"].nll


# --- the BatchNorm policy --------------------------------------------------------------------


def test_bn_origin_equals_an_eval_mode_forward_with_the_centre_buffers(digits):
    net, d = make_net(), make_directions()
    surface = evaluate_surface(net, net, d, digits, grid=3, bn="origin", wd=0, progress=False)
    for i, x in enumerate(surface.x):
        for j, y in enumerate(surface.y):
            ref = eval_forward_nll(net, at(net, x, y, d), digits.train_x, digits.train_y)
            assert surface.train_nll[i, j] == pytest.approx(ref, rel=1e-5), (i, j)


def test_bn_origin_of_a_state_dict_takes_its_buffers(digits):
    net, d = make_net(), make_directions()
    other = TinyNet()  # default statistics, replaced by the state dict's
    surface = evaluate_surface(other, net.state_dict(), d, digits, 3, bn="origin", progress=False)
    mine = evaluate_surface(net, net, d, digits, 3, bn="origin", progress=False)
    np.testing.assert_array_equal(surface.train_nll, mine.train_nll)
    assert surface.meta["bn_statistics"] == "origin buffers"


def test_bn_origin_of_a_curve_keeps_the_statistics_of_phi_t(digits, bezier):
    d = make_directions(bezier.model)
    surface = evaluate_surface(None, (bezier, 0.5), d, digits, 3, bn="origin", progress=False)
    centre = bezier.network_at(0.5, digits)  # statistics recomputed at phi(0.5)
    space = bezier.space
    point = bezier.point(0.5).detach().double() + d[0].double() + d[1].double()
    weights = space.unflatten(point.float())
    ref = eval_forward_nll(centre, weights, digits.train_x, digits.train_y)
    assert surface.train_nll[2, 2] == pytest.approx(ref, rel=1e-5)
    assert surface.meta["bn_statistics"] == "recomputed once at phi(t)"


def test_the_policies_differ_off_the_centre_and_are_recorded(digits):
    net, d = make_net(), make_directions()
    recomputed = evaluate_surface(net, net, d, digits, 3, progress=False)
    kept = evaluate_surface(net, net, d, digits, 3, bn="origin", progress=False)
    assert not np.allclose(recomputed.train_nll, kept.train_nll)
    assert kept.meta["bn"] == "origin" and kept.meta["engine"]["bn"] == "fixed"
    assert recomputed.meta["bn"] == "recompute"


def test_the_model_buffers_are_left_as_they_were_under_both_policies(digits, bezier):
    net, d = make_net(), make_directions()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for bn in ("recompute", "origin"):
        evaluate_surface(net, net, d, digits, grid=2, bn=bn, progress=False)
        for k, v in net.state_dict().items():
            assert torch.equal(v, before[k]), (bn, k)


def test_a_partial_file_of_the_other_bn_policy_is_refused(digits, tmp_path, monkeypatch):
    net, d, partial, calls = make_net(), make_directions(), tmp_path / "p", []
    original = modeconn.engine.grid.evaluate_point

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(modeconn.engine.grid, "evaluate_point", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate_surface(net, net, d, digits, 3, partial=partial, progress=False)
    monkeypatch.setattr(modeconn.engine.grid, "evaluate_point", original)
    with pytest.raises(ValueError, match="differing keys: bn"):
        evaluate_surface(net, net, d, digits, 3, bn="origin", partial=partial, progress=False)


# --- the engine option -----------------------------------------------------------------------


def test_the_default_engine_is_bit_identical_to_recompute_then_evaluate(digits):
    net = make_net()
    weights = at(net, 0.4, -0.2, make_directions(net))
    got = evaluate_point(net, weights, digits, batch_size=64)
    recompute_bn(net, digits.train_x, weights, batch_size=128)
    plan = eval_plan(digits.train_x)
    ref = evaluate(net, plan.layout(digits.test_x), digits.test_y, weights, batch_size=64)
    assert got["test"].nll == ref.nll and got["test"].error == ref.error


def test_default_settings_keep_the_resume_keys_of_older_partial_files():
    assert EvalSettings().resume_config() == {"bn_samples": None}
    assert EvalSettings(bn="fixed").resume_config() == {"bn_samples": None, "bn": "fixed"}
    with pytest.raises(ValueError, match="bn must be one of 'recompute', 'fixed'"):
        EvalSettings(bn="origin")


def test_fixed_bn_equals_an_eval_mode_forward_with_the_given_buffers(digits):
    net, d = make_net(), make_directions()
    points = [at(net, x, 0.5, d) for x in (-1.0, 0.0, 1.0)]
    before = net.bn.running_mean.clone()
    one = [evaluate_point(net, w, digits, bn="fixed")["train"].nll for w in points]
    batched = [r["train"].nll for r in evaluate_points(net, points, digits, bn="fixed")]
    refs = [eval_forward_nll(net, w, digits.train_x, digits.train_y) for w in points]
    np.testing.assert_allclose(one, refs, rtol=1e-5)
    np.testing.assert_allclose(batched, refs, rtol=1e-5)
    assert torch.equal(net.bn.running_mean, before)


# --- files, resume, shards -------------------------------------------------------------------


def test_surface_and_line_results_survive_save_and_load_exactly(digits, tmp_path):
    net, d = make_net(), make_directions()
    surface = evaluate_surface(net, net, d, digits, grid=GRID, bn="origin", progress=False)
    line = evaluate_line(net, net, d[1], digits, points=4, progress=False)
    assert SurfaceResult.load(surface.save(tmp_path / "s")) == surface
    assert LineResult.load(line.save(tmp_path / "l")) == line
    arrays, meta = load_result(tmp_path / "s")  # plain numpy and json, no modeconn needed
    assert arrays["train_loss"].shape == GRID and arrays["direction_scale"].shape == (2,)
    assert meta["bn"] == "origin" and meta["span"] == [[-1.0, 1.0], [-1.0, 1.0]]


def test_surface_shards_merge_to_the_single_process_surface(digits, tmp_path):
    net, d = make_net(), make_directions()
    files = [tmp_path / f"shard{k}" for k in range(3)]
    for k, f in enumerate(files):
        part = evaluate_surface(net, net, d, digits, GRID, partial=f, shard=(k, 3), progress=False)
        assert part is None
    assert merge_shards(files, tmp_path / "merged") == GRID[0] * GRID[1]
    merged = evaluate_surface(net, net, d, digits, GRID, partial=tmp_path / "merged")
    single = evaluate_surface(net, net, d, digits, GRID, progress=False)
    np.testing.assert_array_equal(merged.train_loss, single.train_loss)


JOB = """
import sys, time
sys.path.insert(0, {tests!r})
import modeconn.engine.grid
from modeconn.landscape.surface import evaluate_surface
from test_surface import make_data, make_directions, make_net
slow = modeconn.engine.grid.evaluate_point
def delayed(*args, **kwargs):
    time.sleep(0.25)
    return slow(*args, **kwargs)
modeconn.engine.grid.evaluate_point = delayed  # every node goes through it
net = make_net()
evaluate_surface(net, net, make_directions(net), make_data(), grid={grid}, partial={partial!r},
                 save_every_s=0, progress=False)
"""


def _done(partial: Path) -> int:
    try:
        return int(load_result(partial)[0]["done"].sum())
    except (FileNotFoundError, ValueError, OSError, EOFError, KeyError):
        return 0


def test_a_killed_surface_job_resumes_to_the_uninterrupted_result(digits, tmp_path, monkeypatch):
    partial, grid = tmp_path / "surface-partial", (5, 4)
    script = JOB.format(tests=str(Path(__file__).parent), grid=grid, partial=str(partial))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    job = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 120
    while _done(partial) < 4 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    finished = _done(partial)
    assert 4 <= finished < grid[0] * grid[1], "the job must be killed part-way"
    calls, original = [], modeconn.engine.grid.evaluate_point
    monkeypatch.setattr(
        modeconn.engine.grid,
        "evaluate_point",
        lambda *a, **k: (calls.append(1), original(*a, **k))[1],
    )
    net = make_net()
    resumed = evaluate_surface(net, net, make_directions(net), digits, grid, partial=partial)
    assert len(calls) == grid[0] * grid[1] - finished  # no finished node recomputed
    assert not partial.with_suffix(".npz").exists()
    straight = evaluate_surface(net, net, make_directions(net), digits, grid, progress=False)
    np.testing.assert_allclose(resumed.train_loss, straight.train_loss, rtol=1e-6)
