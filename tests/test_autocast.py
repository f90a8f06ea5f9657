"""autocast: the engine's forward passes in lower precision, with statistics kept in float32,
results close to full precision, and a clear error for a precision it does not know."""

import numpy as np
import pytest
import torch
from conftest import TinyNet
from test_resume import interrupt_path, make_curve, make_data

from modeconn.engine.batched import evaluate_points
from modeconn.engine.point import evaluate_point, recompute_bn
from modeconn.path import evaluate_path


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach() for k, v in TinyNet().named_parameters()}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyNet()


def test_autocast_runs_the_convolution_in_bfloat16(net, data):
    seen = []
    hook = net.conv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        evaluate_point(net, _weights(1), data, autocast="bf16")
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}


def test_bfloat16_points_are_close_to_full_precision(net, data):
    full = evaluate_point(net, _weights(1), data)
    low = evaluate_point(net, _weights(1), data, autocast="bfloat16")
    for split in full:
        assert low[split].nll == pytest.approx(full[split].nll, rel=2e-2)
        assert abs(low[split].error - full[split].error) <= 3 * 100.0 / full[split].samples


def test_autocast_keeps_batchnorm_statistics_in_float32(net, data):
    recompute_bn(net, data.train_x, _weights(2))
    full = net.bn.running_var.clone()
    recompute_bn(net, data.train_x, _weights(2), autocast="bfloat16")
    assert net.bn.running_var.dtype == torch.float32
    assert torch.allclose(net.bn.running_var, full, rtol=2e-2)


def test_batched_autocast_points_equal_sequential_ones(net, data):
    weights = [_weights(3), _weights(4)]
    batched = evaluate_points(net, weights, data, batch_size=64, autocast="bfloat16")
    for w, got in zip(weights, batched, strict=True):
        one = evaluate_point(net, w, data, batch_size=64, autocast="bfloat16")
        for split in one:
            assert got[split].nll == pytest.approx(one[split].nll, rel=1e-3)


@pytest.mark.parametrize("bad", ["int8", "half-ish", 16])
def test_unknown_autocast_is_one_clear_error(net, data, bad):
    with pytest.raises(ValueError, match="autocast must be one of bfloat16, bf16, float16"):
        evaluate_point(net, _weights(1), data, autocast=bad)


def test_path_resumed_in_another_precision_is_refused(tmp_path, monkeypatch):
    partial = tmp_path / "path-partial"
    interrupt_path(partial, 5, 2, monkeypatch)
    with pytest.raises(ValueError, match="differing keys: autocast"):
        evaluate_path(
            make_curve(), make_data(), ts=5, partial=partial, autocast="bf16", progress=False
        )


def test_path_records_its_precision(data):
    result = evaluate_path(make_curve(), data, ts=3, autocast="bf16", progress=False)
    assert result.meta["engine"]["autocast"] == "bfloat16"
    assert np.all(np.isfinite(result.train_loss))


def test_compiled_bfloat16_points_equal_eager_bfloat16_ones(net, data):
    eager = evaluate_point(net, _weights(5), data, autocast="bf16")
    compiled = evaluate_point(net, _weights(5), data, autocast="bf16", compile=True)
    for split in eager:
        assert compiled[split].nll == pytest.approx(eager[split].nll, rel=1e-3)


def test_ensembles_in_bfloat16_stay_close_and_record_their_precision(bezier, data):
    from modeconn.ensembles.along_curve import ensembles_along_curve

    full = ensembles_along_curve(bezier, data, ts=3, line=False, progress=False)
    low = ensembles_along_curve(bezier, data, ts=3, line=False, progress=False, autocast="bf16")
    assert low.meta["autocast"] == "bfloat16" and full.meta["autocast"] is None
    assert np.allclose(low.ensemble_error, full.ensemble_error, atol=3 * 100.0 / len(data.test_y))
