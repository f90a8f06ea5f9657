"""The engine through torch.compile gives the eager engine's results, compiles once per mode
and batch shape, and falls back to eager execution when compiling fails."""

import gc
import weakref

import pytest
import torch
from conftest import TinyNet
from torch._dynamo.utils import counters

import modeconn.engine.execution
from modeconn.engine.batched import resolve_points_per_pass
from modeconn.engine.point import evaluate_point
from modeconn.path import evaluate_path


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach() for k, v in TinyNet().named_parameters()}


def _assert_close(a, b) -> None:
    assert a.keys() == b.keys()
    for split in a:
        assert a[split].nll == pytest.approx(b[split].nll, rel=1e-5, abs=1e-6)
        assert abs(a[split].error - b[split].error) <= 100.0 / a[split].samples  # one tie
        assert a[split].samples == b[split].samples


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyNet()


def test_compiled_points_equal_eager_ones_and_reuse_the_graphs(net, data):
    kw = dict(batch_size=64, bn_batch_size=64)  # 300 / 100 samples: a short last batch each
    before = counters["stats"]["unique_graphs"]
    first = evaluate_point(net, _weights(1), data, compile=True, **kw)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs - before == 2  # the BatchNorm pass and the evaluation pass
    _assert_close(first, evaluate_point(net, _weights(1), data, **kw))
    second = evaluate_point(net, _weights(2), data, compile=True, **kw)
    assert counters["stats"]["unique_graphs"] == graphs  # a new point compiles nothing
    _assert_close(second, evaluate_point(net, _weights(2), data, **kw))


def _exploding_compile(fn, **kwargs):
    """Stands in for torch.compile whose compiler fails on the first call."""

    def explode(*args):
        raise RuntimeError("backend exploded\nwith details")

    return explode


@pytest.fixture
def exploding(monkeypatch):
    """torch.compile replaced by a failing one, with no compiled function cached yet."""
    monkeypatch.setattr(torch, "compile", _exploding_compile)
    monkeypatch.setattr(modeconn.engine.execution, "_COMPILED", {})


def test_a_compile_failure_warns_once_and_evaluates_eagerly(data, exploding):
    torch.manual_seed(0)
    net = TinyNet()
    kw = dict(batch_size=50, bn_batch_size=50)
    with pytest.warns(RuntimeWarning) as caught:
        got = evaluate_point(net, _weights(3), data, compile=True, **kw)
        again = evaluate_point(net, _weights(4), data, compile=True, **kw)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "torch.compile failed on TinyNet (backend exploded)" in messages[0]
    _assert_close(got, evaluate_point(net, _weights(3), data, **kw))
    _assert_close(again, evaluate_point(net, _weights(4), data, **kw))


def test_a_model_that_fails_eagerly_too_raises_its_own_error(data, exploding):
    class Broken(TinyNet):
        def forward(self, x):
            raise ValueError("the network itself is broken")

    with pytest.raises(ValueError, match="the network itself is broken"):
        evaluate_point(Broken(), None, data, compile=True, batch_size=50, bn_batch_size=50)


def test_compile_runs_one_point_per_pass(net, data):
    w = _weights(0)
    assert resolve_points_per_pass("auto", net, w, data, compile=True) == 1
    assert resolve_points_per_pass(1, net, w, data, compile=True) == 1
    with pytest.raises(ValueError, match="compile=True evaluates one point per pass"):
        resolve_points_per_pass(4, net, w, data, compile=True)


def test_a_compiled_path_equals_the_eager_path(bezier, data):
    eager = evaluate_path(bezier, data, ts=3, progress=False, batch_size=100)
    fast = evaluate_path(bezier, data, ts=3, progress=False, batch_size=100, compile=True)
    assert fast.meta["engine"]["compile"] is True and eager.meta["engine"]["compile"] is False
    torch.testing.assert_close(
        torch.tensor(fast.train_nll), torch.tensor(eager.train_nll), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        torch.tensor(fast.test_nll), torch.tensor(eager.test_nll), rtol=1e-5, atol=1e-6
    )


def test_compiling_keeps_no_network_alive(data):
    torch.manual_seed(0)
    net = TinyNet()
    evaluate_point(net, _weights(6), data, compile=True, batch_size=64, bn_batch_size=64)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_compiled_ensembles_equal_eager_ones(bezier, data, monkeypatch):
    from modeconn.ensembles.along_curve import ensembles_along_curve

    eager = ensembles_along_curve(bezier, data, ts=3, line=False, progress=False)
    asked = []
    real = modeconn.engine.execution.compiled
    monkeypatch.setattr(modeconn.engine.execution, "compiled", lambda m: asked.append(m) or real(m))
    fast = ensembles_along_curve(bezier, data, ts=3, line=False, progress=False, compile=True)
    assert asked and all(m is bezier.model for m in asked)  # the passes went through compile
    torch.testing.assert_close(
        torch.tensor(fast.ensemble_nll), torch.tensor(eager.ensemble_nll), rtol=1e-5, atol=1e-6
    )
