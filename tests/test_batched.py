"""Several weight points in one vmap'd pass give the results of one point at a time."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import modeconn.engine.batched
import modeconn.engine.grid
from modeconn.curves.weights import WeightSpace
from modeconn.engine.batched import (
    choose_points_per_pass,
    evaluate_points,
    resolve_points_per_pass,
)
from modeconn.engine.point import evaluate_point
from modeconn.path import evaluate_path
from modeconn.plane import Plane, evaluate_plane


def _points(make, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return [{k: v.detach() for k, v in make().named_parameters()} for _ in range(n)]


def _assert_same(batched, sequential) -> None:
    assert len(batched) == len(sequential)
    for b, s in zip(batched, sequential, strict=True):
        assert b.keys() == s.keys()
        for split in s:
            assert b[split].nll == pytest.approx(s[split].nll, rel=1e-5), split
            assert b[split].error == s[split].error, split
            assert b[split].samples == s[split].samples


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


class SharedBN(nn.Module):
    """One BatchNorm layer applied twice per forward pass: both calls enter its statistics."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.bn(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class Branchy(nn.Module):
    """Data-dependent control flow: fine one point at a time, impossible under vmap."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y if y.sum() > 0 else -y


class Broken(nn.Module):
    """A network that fails without vmap too (its layers do not fit the input)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("bn_exact", [True, False])
@pytest.mark.parametrize("bn_samples", [None, 70])
def test_batched_batchnorm_points_equal_sequential_evaluation(data, bn_exact, bn_samples):
    weights = _points(TinyNet, 5)
    model = TinyNet()
    kw = dict(bn_samples=bn_samples, bn_exact=bn_exact)
    sequential = [evaluate_point(model, w, data, **kw) for w in weights]
    _assert_same(evaluate_points(model, weights, data, **kw), sequential)


def test_batched_points_without_batchnorm_equal_sequential_evaluation(data):
    weights = _points(_mlp, 4)
    model = _mlp()
    sequential = [evaluate_point(model, w, data) for w in weights]
    _assert_same(evaluate_points(model, weights, data, batch_size=64), sequential)


def test_a_batchnorm_layer_called_twice_merges_both_calls(data):
    weights = _points(SharedBN, 3)
    model = SharedBN()
    sequential = [evaluate_point(model, w, data, bn_batch_size=64) for w in weights]
    _assert_same(evaluate_points(model, weights, data, bn_batch_size=64), sequential)


@settings(max_examples=6, deadline=None)
@given(
    bn_batch_size=st.integers(16, 300),
    bn_samples=st.one_of(st.none(), st.integers(1, 300)),
    order=st.permutations(range(3)),
)
def test_batched_equals_sequential_for_any_bn_batching_and_point_order(
    data, bn_batch_size, bn_samples, order
):
    weights = _points(TinyNet, 3)
    model = TinyNet()
    kw = dict(bn_samples=bn_samples, bn_batch_size=bn_batch_size)
    sequential = [evaluate_point(model, weights[k], data, **kw) for k in order]
    _assert_same(evaluate_points(model, [weights[k] for k in order], data, **kw), sequential)


def test_batched_evaluation_leaves_the_model_buffers_and_flags_as_they_were(data):
    model = TinyNet()
    model.train()
    before = {k: v.clone() for k, v in model.named_buffers()}
    evaluate_points(model, _points(TinyNet, 2), data, splits=("test",))
    assert model.training and model.bn.training and model.drop.training
    assert model.bn.momentum == 0.1
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), k


def test_points_that_hold_other_parameters_are_refused(data):
    weights = _points(TinyNet, 2)
    del weights[1]["fc.bias"]
    with pytest.raises(ValueError, match="fc.bias"):
        evaluate_points(TinyNet(), weights, data)


def test_a_model_vmap_cannot_run_names_points_per_pass_1(data):
    with pytest.raises(ValueError, match="points_per_pass=1"):
        evaluate_points(Branchy(), _points(Branchy, 2), data)


def test_a_model_that_fails_without_vmap_too_raises_its_own_error(data):
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        evaluate_points(Broken(), _points(Broken, 2), data, batch_size=32)


@pytest.fixture(scope="module")
def tiny_plane():
    torch.manual_seed(3)
    nets = [TinyNet() for _ in range(3)]
    space = WeightSpace.from_module(nets[0])
    return nets[0], Plane.through(*(space.flatten(m) for m in nets), space=space)


def test_plane_with_three_points_per_pass_equals_one_point_at_a_time(tiny_plane, data):
    model, plane = tiny_plane
    kw = dict(grid=(2, 5), progress=False)  # 10 nodes: the last pass holds one
    one = evaluate_plane(model, plane, data, **kw)
    three = evaluate_plane(model, plane, data, points_per_pass=3, **kw)
    for name in modeconn.engine.grid.METRICS:
        np.testing.assert_allclose(getattr(three, name), getattr(one, name), rtol=1e-5)


def test_path_with_three_points_per_pass_equals_one_point_at_a_time(bezier, data):
    one = evaluate_path(bezier, data, ts=7, progress=False)
    three = evaluate_path(bezier, data, ts=7, progress=False, points_per_pass=3)
    for name in modeconn.engine.grid.METRICS:
        np.testing.assert_allclose(getattr(three, name), getattr(one, name), rtol=1e-5)
    np.testing.assert_array_equal(three.arc_length, one.arc_length)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "fast", None])
def test_points_per_pass_must_be_a_positive_int_or_auto(bezier, data, bad):
    with pytest.raises(ValueError, match="points_per_pass must be an int >= 1 .* or 'auto'"):
        evaluate_path(bezier, data, ts=3, progress=False, points_per_pass=bad)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def test_auto_is_one_point_at_a_time_on_a_cpu_without_timing_anything(data, monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("auto must not time anything on a CPU")

    monkeypatch.setattr(modeconn.engine.batched, "choose_points_per_pass", no_timing)
    net = TinyNet()
    assert resolve_points_per_pass("auto", net, _weights(net), data) == 1
    assert resolve_points_per_pass(6, net, _weights(net), data) == 6


def test_auto_times_the_network_on_other_devices(monkeypatch):
    chosen = []

    def fake_choice(model, weights, data, **kwargs):
        chosen.append(model)
        return 8

    monkeypatch.setattr(modeconn.engine.batched, "choose_points_per_pass", fake_choice)
    on_gpu = SimpleNamespace(train_x=SimpleNamespace(device=torch.device("cuda", 0)))
    net = TinyNet()
    assert resolve_points_per_pass("auto", net, _weights(net), on_gpu) == 8
    assert chosen == [net]


def _timed_choice(data, monkeypatch, seconds: dict[int, float]) -> tuple[int, list[int]]:
    """choose_points_per_pass on a fresh TinyNet with these seconds per point per count."""
    tried = []

    def fake_seconds(model, weights, data, plan, points, bn_batch_size):
        tried.append(points)
        if seconds[points] is None:
            raise torch.OutOfMemoryError("out of memory")
        return seconds[points]

    monkeypatch.setattr(modeconn.engine.batched, "_seconds_per_point", fake_seconds)
    net = TinyNet()
    return choose_points_per_pass(net, _weights(net), data), tried


@pytest.mark.parametrize(
    "seconds, best, tried",
    [
        ({1: 1.0, 2: 0.6, 4: 0.4, 8: 0.5, 16: 0.1}, 4, [1, 2, 4, 8]),  # stops once it loses
        ({1: 1.0, 2: 1.2, 4: 0.1}, 1, [1, 2]),  # slower on a CPU-like device: one at a time
        ({1: 1.0, 2: 0.99, 4: 0.5}, 1, [1, 2]),  # a 1 % gain is noise, not a win
        ({1: 1.0, 2: 0.5, 4: None}, 2, [1, 2, 4]),  # out of memory at 4
        ({1: 1.0, 2: 0.5, 4: 0.3, 8: 0.2, 16: 0.1}, 16, [1, 2, 4, 8, 16]),
    ],
)
def test_the_fastest_count_is_chosen(data, monkeypatch, seconds, best, tried):
    assert _timed_choice(data, monkeypatch, seconds) == (best, tried)


def test_the_choice_is_timed_once_per_model(data, monkeypatch):
    net = TinyNet()
    first = choose_points_per_pass(net, _weights(net), data, candidates=(1, 2))
    assert first in (1, 2)
    monkeypatch.setattr(modeconn.engine.batched, "_seconds_per_point", None)  # would fail if called
    assert choose_points_per_pass(net, _weights(net), data, candidates=(1, 2)) == first


def test_a_model_vmap_cannot_run_is_evaluated_one_point_at_a_time(data):
    net = Branchy()
    assert choose_points_per_pass(net, _weights(net), data) == 1


def test_interrupted_plane_with_points_per_pass_resumes_without_recomputing(
    tiny_plane, data, tmp_path, monkeypatch
):
    model, plane = tiny_plane
    partial, grid = tmp_path / "plane-partial", (3, 3)
    original = modeconn.engine.grid.evaluate_points
    evaluated = []

    def crash_on_second_pass(model, weights_list, *args, **kwargs):
        if evaluated:
            raise KeyboardInterrupt
        evaluated.extend(weights_list)
        return original(model, weights_list, *args, **kwargs)

    kw = dict(grid=grid, partial=partial, save_every_s=0, progress=False, points_per_pass=4)
    monkeypatch.setattr(modeconn.engine.grid, "evaluate_points", crash_on_second_pass)
    with pytest.raises(KeyboardInterrupt):
        evaluate_plane(model, plane, data, **kw)
    assert len(evaluated) == 4

    def counting(model, weights_list, *args, **kwargs):
        evaluated.extend(weights_list)
        return original(model, weights_list, *args, **kwargs)

    evaluated.clear()
    monkeypatch.setattr(modeconn.engine.grid, "evaluate_points", counting)
    resumed = evaluate_plane(model, plane, data, **kw)
    assert len(evaluated) == 9 - 4  # no finished node evaluated again
    assert not partial.with_suffix(".npz").exists()  # removed once complete
    straight = evaluate_plane(model, plane, data, grid=grid, progress=False)
    np.testing.assert_allclose(resumed.train_loss, straight.train_loss, rtol=1e-5)
