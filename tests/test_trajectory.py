"""Trajectories: the on-disk recorder, PCA directions, projections, the loss under the path."""

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modeconn import build_model, load_dataset
from modeconn.curves.family import Bezier
from modeconn.training import TrainConfig, train_curve, train_endpoint
from modeconn.trajectory.pca import (
    TrajectoryResult,
    bilinear,
    evaluate_trajectory,
    fixed_directions,
    frame_indices,
    pca_directions,
    project,
)
from modeconn.trajectory.recorder import TrajectoryStore, record_trajectory


@pytest.fixture(scope="module")
def spiral():
    return load_dataset("spiral").subset(train=300, test=150)


def _mlp(seed: int = 0, hidden: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=3, input_shape=(2,), hidden=hidden, depth=1)


def _planar(t: int = 30, d: int = 500, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Points origin + a_t u + b_t v with orthonormal u, v: a trajectory in a plane."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))
    ab = torch.randn(t, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0])
    origin = torch.randn(d, generator=g, dtype=torch.float64)
    return origin + ab @ q.T, q.T, origin


# --------------------------------------------------------------------------- PCA


def test_pca_matches_an_svd_of_the_centred_matrix():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 300, generator=g, dtype=torch.float64).cumsum(0)  # a random walk
    dirs, ratios = pca_directions(x, block=64)  # several column blocks
    xc = x - x.mean(0)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    assert torch.allclose(ratios, s[:2] ** 2 / (s**2).sum(), atol=1e-6, rtol=0)
    for k in range(2):
        assert torch.allclose(dirs[k] * torch.sign(dirs[k] @ vh[k]), vh[k], atol=1e-6, rtol=0)


def test_pca_is_orthonormal_and_ignores_the_origin_shift():
    x = torch.randn(25, 80, dtype=torch.float64).cumsum(0)
    dirs, ratios = pca_directions(x)
    shifted, r2 = pca_directions(x - x[-1])  # Li et al.'s rows w_t - w_T
    assert torch.allclose(dirs @ dirs.T, torch.eye(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(dirs, shifted, atol=1e-10) and torch.allclose(ratios, r2)


def test_a_planar_trajectory_has_all_its_variance_in_two_pcs_and_no_residual():
    x, _, _ = _planar()
    dirs, ratios = pca_directions(x)
    coords, residual = project(x, x[-1], dirs)
    assert ratios.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert residual.max() < 1e-9 * x.norm(dim=1).max().item()


def test_pca_streams_from_a_disk_store_like_from_a_tensor(tmp_path):
    x = torch.randn(12, 200).cumsum(0)
    store = TrajectoryStore(tmp_path / "s", dim=200)
    for k, row in enumerate(x):
        store.append(row, k, 0.0)
    from_disk, r_disk = pca_directions(store, block=32)
    in_memory, r_mem = pca_directions(x)
    assert torch.allclose(from_disk, in_memory, atol=1e-10) and torch.allclose(r_disk, r_mem)


def test_pca_lowrank_route_for_many_rows_agrees_with_the_gram_route():
    x = torch.randn(60, 30, dtype=torch.float64).cumsum(0)
    exact, r_exact = pca_directions(x)
    approx, r_approx = pca_directions(x, gram_limit=10)
    assert torch.allclose(r_exact, r_approx, atol=1e-6)
    assert torch.allclose((exact * approx).sum(1).abs(), torch.ones(2, dtype=x.dtype), atol=1e-6)


# --------------------------------------------------------------------------- projection


@settings(max_examples=25, deadline=None)
@given(a=st.floats(-5, 5), b=st.floats(-5, 5), skew=st.floats(-0.9, 0.9), seed=st.integers(0, 99))
def test_projection_of_a_point_in_the_plane_returns_its_coordinates(a, b, skew, seed):
    g = torch.Generator().manual_seed(seed)
    d1, d2 = torch.randn(2, 50, generator=g, dtype=torch.float64)
    d2 = skew * d1 + d2  # far from orthogonal: <w, d>/|d| would be wrong here
    origin = torch.randn(50, generator=g, dtype=torch.float64)
    coords, residual = project(origin + a * d1 + b * d2, origin, torch.stack([d1, d2]))
    assert np.allclose(coords[0], [a, b], atol=1e-9) and residual[0] < 1e-9


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), off=st.floats(0.0, 10.0))
def test_residual_is_the_distance_to_the_plane(seed, off):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(40, 3, generator=g, dtype=torch.float64))[0].T
    point = 2 * dirs[0] - dirs[1] + off * dirs[2]  # dirs[2] is normal to the plane
    coords, residual = project(point, torch.zeros(40, dtype=torch.float64), dirs[:2])
    assert residual[0] == pytest.approx(off, abs=1e-9)
    assert np.allclose(coords[0], [2, -1], atol=1e-9)


def test_bilinear_is_exact_for_a_bilinear_function():
    x, y = np.linspace(-1, 2, 7), np.linspace(0, 1, 5)
    f = lambda u, v: 1 + 2 * u - 3 * v + 0.5 * u * v  # noqa: E731
    values = f(*np.meshgrid(x, y, indexing="ij"))
    pts = np.array([[0.3, 0.7], [-1, 0], [2, 1], [1.234, 0.5]])
    assert np.allclose(bilinear(x, y, values, pts), f(pts[:, 0], pts[:, 1]))
    assert np.isnan(bilinear(x, y, values, np.array([[3.0, 0.5]]))[0])


# --------------------------------------------------------------------------- recording


def test_recorder_keeps_every_epoch_start_and_the_final_weights(tmp_path, spiral):
    net = _mlp()
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=100, progress=False)
    rec = record_trajectory(tmp_path / "t", net, spiral, cfg, every="epoch")
    train_endpoint(net, spiral, cfg, **rec.hooks())
    store = TrajectoryStore(tmp_path / "t")
    assert store.steps.tolist() == [0, 3, 6, 9]
    assert np.isfinite(store.losses[:3]).all() and np.isnan(store.losses[3])
    final = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert torch.equal(torch.from_numpy(np.array(store.points()[-1])), final)
    assert store.meta["finished"] is True


def test_the_recorded_batch_loss_is_the_loss_of_the_recorded_weights(tmp_path, spiral):
    net = _mlp()
    cfg = TrainConfig(epochs=1, lr=0.05, batch_size=300, augment=False, progress=False)
    rec = record_trajectory(tmp_path / "t", net, spiral, cfg, every=1)
    first = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(cfg.seed)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(cfg.seed))
    expected = nn.functional.cross_entropy(net(spiral.train_x[order]), spiral.train_y[order])
    train_endpoint(net, spiral, cfg, **rec.hooks())
    store = TrajectoryStore(tmp_path / "t")
    assert torch.equal(torch.from_numpy(np.array(store.points()[0])),
                       torch.cat([p.reshape(-1) for p in first]))  # fmt: skip
    assert store.losses[0] == pytest.approx(expected.item(), rel=1e-5)


def test_a_resumed_run_continues_the_same_file_without_duplicates(tmp_path, spiral):
    cfg = TrainConfig(epochs=4, lr=0.05, batch_size=100, save_every=2, progress=False)
    whole = _mlp()
    rec = record_trajectory(tmp_path / "whole", whole, spiral, cfg, every=2)
    train_endpoint(whole, spiral, cfg, checkpoint=tmp_path / "w.pt", **rec.hooks())

    class Crash(Exception):
        pass

    def crash_in_epoch_4(epoch, record):
        if epoch == 3:
            raise Crash

    first = _mlp()
    rec = record_trajectory(tmp_path / "part", first, spiral, cfg, every=2)
    hooks = rec.hooks()
    with pytest.raises(Crash):
        train_endpoint(first, spiral, cfg, checkpoint=tmp_path / "p.pt",
                       step_callbacks=hooks["step_callbacks"],
                       callbacks=[*hooks["callbacks"], crash_in_epoch_4])  # fmt: skip
    again = _mlp()
    rec = record_trajectory(tmp_path / "part", again, spiral, cfg, every=2)
    train_endpoint(again, spiral, cfg, checkpoint=tmp_path / "p.pt", **rec.hooks())
    a, b = TrajectoryStore(tmp_path / "whole"), TrajectoryStore(tmp_path / "part")
    assert b.steps.tolist() == a.steps.tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert np.array_equal(np.array(a.points()), np.array(b.points()))


def test_a_curve_run_records_its_bends(tmp_path, spiral):
    curve = Bezier(_mlp(0), _mlp(1), _mlp(2))
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=150, progress=False)
    rec = record_trajectory(tmp_path / "c", curve, spiral, cfg, every=1)
    train_curve(curve, spiral, cfg, **rec.hooks())
    store = TrajectoryStore(tmp_path / "c")
    assert store.points().shape == (5, 1, curve.space.size)
    assert torch.equal(torch.from_numpy(np.array(store.points()[-1])), curve.bends.detach())
    assert store.meta["kind"] == "curve"


def test_two_hundred_snapshots_of_a_million_weights_stay_on_disk(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(1000, 1000)  # 1,001,000 weights: 4 MB a snapshot, 800 MB for 200
    rec_cfg = TrainConfig(epochs=1, batch_size=1, progress=False)
    data = type("D", (), {"train_y": torch.zeros(200)})()
    rec = record_trajectory(tmp_path / "big", net, data, rec_cfg, every=1)
    tracemalloc.start()
    try:
        for step in range(200):
            with torch.no_grad():
                net.bias[0] = step  # every snapshot differs
            rec.step(step, 0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    store = TrajectoryStore(tmp_path / "big")
    assert (tmp_path / "big" / "points.f32").stat().st_size == 200 * 1_001_000 * 4
    assert peak < 40e6  # Python-side memory: far below the 800 MB of all the rows
    assert float(store.points()[137, 1_000_000]) == 137.0


def test_a_half_written_row_is_dropped_on_open(tmp_path):
    store = TrajectoryStore(tmp_path / "s", dim=4)
    store.append(torch.ones(4), 0, 1.0)
    with open(tmp_path / "s" / "points.f32", "ab") as f:
        f.write(b"\0" * 6)  # a crash in the middle of the next row
    assert len(TrajectoryStore(tmp_path / "s")) == 1
    assert (tmp_path / "s" / "points.f32").stat().st_size == 16


# --------------------------------------------------------------------------- loss under the path


# Two of its bounds are outcomes of training. Measured: coordinates up to 1.98 against the
# span's 30 (15x room); the plane's loss off the truth by up to 0.15 against 1e-4
@pytest.mark.outcome
def test_evaluate_trajectory_reports_true_and_contour_loss_at_every_point(tmp_path, spiral):
    net = _mlp(hidden=16)
    cfg = TrainConfig(epochs=6, lr=0.05, batch_size=50, progress=False)
    rec = record_trajectory(tmp_path / "t", net, spiral, cfg, every="epoch")
    train_endpoint(net, spiral, cfg, **rec.hooks())
    store = TrajectoryStore(tmp_path / "t")
    span = ((-30.0, 30.0), (-30.0, 30.0))  # odd grid, symmetric span: 0 is a node
    result, surface = evaluate_trajectory(net, store, spiral, grid=9, span=span, progress=False)
    assert result.coords.shape == (7, 2) and np.allclose(result.coords[-1], 0, atol=1e-6)
    assert surface.train_loss.shape == (9, 9) and np.abs(result.coords).max() < 30
    # the final point is the plane's origin, a node: the contour value there is its true loss
    assert result.plane_loss[-1] == pytest.approx(result.true_loss[-1], rel=1e-3)
    # off the plane the picture and the truth differ
    assert np.nanmax(np.abs(result.plane_loss - result.true_loss)) > 1e-4
    result.save(tmp_path / "r")
    assert TrajectoryResult.load(tmp_path / "r") == result


def test_fixed_directions_put_two_runs_on_one_plane(spiral):
    a, b = _mlp(0), _mlp(0)
    dirs = fixed_directions(a)
    assert dirs.shape == (2, sum(p.numel() for p in a.parameters()))
    assert torch.equal(dirs, fixed_directions(b))  # same seeds, same weights: same plane


def test_frame_indices_spread_over_the_path_with_both_ends():
    idx = frame_indices(101, 50)
    assert len(idx) == 50 and idx[0] == 0 and idx[-1] == 100
    assert len(frame_indices(10, 50)) == 10
