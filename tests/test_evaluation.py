import pytest
import torch
from conftest import TinyNet
from torch import nn

from modeconn.curves.family import Bezier
from modeconn.engine.point import evaluate, recompute_bn


class TwoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 5, 3)
        self.bn2 = nn.BatchNorm2d(5)
        self.drop = nn.Dropout(0.9)
        self.bn3 = nn.BatchNorm1d(5)

    def forward(self, x):
        x = self.bn2(self.conv(self.bn1(x)))
        return self.bn3(self.drop(x.mean((2, 3))))


def test_recompute_bn_equals_direct_mean_and_variance():
    torch.manual_seed(0)
    net = TwoBN()
    x = torch.randn(203, 3, 6, 6) * torch.tensor([1.0, 5.0, 0.1])[:, None, None] + 2.0
    used = recompute_bn(net, x, batch_size=32)  # uneven last batch
    assert used == 203
    direct_mean = x.mean((0, 2, 3))
    direct_var = x.var((0, 2, 3), unbiased=True)
    assert torch.allclose(net.bn1.running_mean, direct_mean, atol=1e-5)
    assert torch.allclose(net.bn1.running_var, direct_var, rtol=1e-5)


def test_recompute_bn_matches_update_bn_on_one_batch():
    torch.manual_seed(0)
    net, ref = TwoBN(), TwoBN()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(64, 3, 6, 6)
    recompute_bn(net, x, batch_size=64)
    ref.drop.p = 0.0  # our pass keeps dropout off; make update_bn see the same network
    torch.optim.swa_utils.update_bn([x], ref)
    for name in ("bn1", "bn2", "bn3"):
        assert torch.allclose(
            getattr(net, name).running_mean, getattr(ref, name).running_mean, atol=1e-5
        )
        assert torch.allclose(
            getattr(net, name).running_var, getattr(ref, name).running_var, rtol=1e-4, atol=1e-6
        )


def test_recompute_bn_restores_training_flags_and_keeps_dropout_off():
    net = TwoBN()
    net.train()
    net.drop.eval()
    seen = []
    net.drop.register_forward_hook(lambda m, i, o: seen.append(m.training))
    recompute_bn(net, torch.randn(10, 3, 6, 6))
    assert seen == [False]
    assert net.training and net.bn1.training and not net.drop.training


def test_recompute_bn_respects_sample_budget_and_batch_iterables():
    net = TwoBN()
    x = torch.randn(100, 3, 6, 6)
    x[50:] += 100.0  # later samples would shift the mean a lot
    assert (
        recompute_bn(net, [(x[:30], None), (x[30:60], None), (x[60:], None)], num_samples=50) == 50
    )
    assert torch.allclose(net.bn1.running_mean, x[:50].mean((0, 2, 3)), atol=1e-5)


def test_recompute_bn_uses_given_weights_not_the_model_own():
    torch.manual_seed(0)
    a, b = TinyNet(), TinyNet()
    curve = Bezier(TinyNet(), a, b)
    x = torch.randn(50, 1, 8, 8)
    recompute_bn(curve.model, x, curve.weights(1.0))
    via_curve = curve.model.bn.running_mean.clone()
    recompute_bn(b, x)
    assert torch.allclose(via_curve, b.bn.running_mean, atol=1e-6)


def test_recompute_bn_without_data_raises():
    with pytest.raises(ValueError, match="no data"):
        recompute_bn(TwoBN(), torch.randn(0, 3, 6, 6))


def test_evaluate_counts_errors_and_nll():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    x, y = torch.randn(37, 4), torch.randint(0, 3, (37,))
    m = evaluate(lin, x, y, batch_size=8)
    with torch.no_grad():
        out = lin(x)
    assert m.samples == 37
    assert m.error == pytest.approx(100.0 * (out.argmax(1) != y).float().mean().item())
    assert m.nll == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)


def test_inexact_recompute_bn_reproduces_the_2018_running_average():
    """exact=False equals BN passes with momentum b / (n + b), batch by batch."""
    torch.manual_seed(0)
    net, ref = TwoBN(), TwoBN()
    ref.load_state_dict(net.state_dict())
    ref.drop.p = 0.0
    x = torch.randn(150, 3, 6, 6) * 3 + 1
    recompute_bn(net, x, batch_size=64, exact=False)
    ref.train()
    for m in (ref.bn1, ref.bn2, ref.bn3):
        m.reset_running_stats()
    seen = 0
    with torch.no_grad():
        for xb in torch.split(x, 64):
            for m in (ref.bn1, ref.bn2, ref.bn3):
                m.momentum = len(xb) / (seen + len(xb))
            ref(xb)
            seen += len(xb)
    for name in ("bn1", "bn2", "bn3"):
        ours, theirs = getattr(net, name), getattr(ref, name)
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-5)
        assert torch.allclose(ours.running_var, theirs.running_var, rtol=1e-4, atol=1e-6)


def test_evaluation_agrees_across_layouts_and_batch_sizes_up_to_rounding():
    """The layout changes a convolution's last bits, never more than rounding (bitwise
    equality across batch sizes: tests/test_reproducible.py)."""
    from modeconn.engine.execution import EvalPlan, channels_last, eval_plan

    torch.manual_seed(0)
    net = TinyNet().eval()
    x, y = torch.randn(70, 1, 8, 8), torch.randint(0, 10, (70,))
    reference = evaluate(net, x, y, batch_size=70)
    for plan in (EvalPlan(False, 16), EvalPlan(True, 32), eval_plan(x)):
        m = evaluate(net, plan.layout(x), y, batch_size=plan.batch_size)
        assert m.error == reference.error
        assert m.nll == pytest.approx(reference.nll, abs=1e-5)
    assert channels_last(x) is channels_last(x)  # converted once, then cached


def test_recompute_bn_recovers_after_statistics_left_nan_by_a_diverged_point(data):
    net = TinyNet()
    recompute_bn(net, data.train_x)
    clean = net.bn.running_var.clone()
    net.bn.running_mean.fill_(float("nan"))
    net.bn.running_var.fill_(float("inf"))
    recompute_bn(net, data.train_x)
    assert torch.equal(net.bn.running_var, clean)
    assert torch.isfinite(net.bn.running_mean).all()


def test_timed_choices_die_with_their_model(data):
    """A points-per-pass choice is cached per live model object: the cache keeps no model
    alive, and a new model (which may reuse a freed model's id()) starts without one."""
    import gc
    import weakref

    from modeconn.engine.batched import _CHOICES, choose_points_per_pass

    net = TinyNet()
    choose_points_per_pass(net, dict(net.named_parameters()), data, candidates=(1,))
    assert net in _CHOICES
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None
    fresh = TinyNet()
    assert fresh not in _CHOICES
