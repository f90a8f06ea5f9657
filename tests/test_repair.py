"""REPAIR (Jordan et al. 2023): the interpolated network's channels renormalised to the
endpoints' interpolated mean and std, measured, rescaled or in closed form, fused or not."""

import pytest
import torch
from test_align import trained
from torch import nn

import modeconn as mc
from modeconn.align import RepairedLine, permutation_spec, weight_matching
from modeconn.align.repair import ChannelAffine, _hidden_layers, channel_stats, end_stats


@pytest.mark.parametrize(
    "name, kw",
    [
        ("mlp", dict(hidden=[64, 64])),
        ("convfc", dict(widths=[8, 16, 16], hidden=32, pool_padding=1)),
    ],
)
@pytest.mark.parametrize("method", ["repair", "rescale"])
def test_repair_sets_each_channel_to_the_interpolated_mean_and_std(digits, name, kw, method):
    a, b = trained(name, digits, **kw), None
    torch.manual_seed(2)
    b = mc.build_model(name, num_classes=10, input_shape=digits.input_shape, **kw)
    mc.train_endpoint(b, digits, mc.TrainConfig(epochs=2, seed=2, progress=False))
    spec = permutation_spec(a, digits.train_x[:4])
    aligned, _ = weight_matching(a, a, b, spec=spec)
    b.load_state_dict(aligned)
    mid = mc.repair(a, a, b, 0.5, digits, spec=spec, method=method)
    layers = _hidden_layers(a, spec)
    x = digits.train_x
    got, sa, sb = (channel_stats(n, layers, x) for n in (mid, a, b))
    plain = mc.build_model(name, num_classes=10, input_shape=digits.input_shape, **kw)
    plain.load_state_dict({k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in aligned})
    before = channel_stats(plain, layers[:1], x)
    for layer in layers:
        goal_std = (sa[layer][1] + sb[layer][1]) / 2
        live = goal_std > 1e-6
        rel = (got[layer][1] - goal_std).abs()[live] / goal_std[live]
        assert rel.max() < 1e-3, (layer, rel.max())
    if method == "repair":
        goal_mean = (sa[layers[0]][0] + sb[layers[0]][0]) / 2
        assert torch.allclose(got[layers[0]][0], goal_mean, atol=1e-4)
    else:  # the first layer's mean is the plain midpoint's
        assert torch.allclose(got[layers[0]][0], before[layers[0]][0], atol=1e-6)


def test_repair_at_the_ends_is_the_endpoints_exactly(digits):
    a = trained("mlp", digits, hidden=[16])
    b = mc.build_model("mlp", num_classes=10, input_shape=digits.input_shape, hidden=[16])
    for alpha, end in ((0.0, a), (1.0, b)):
        net = mc.repair(a, a, b, alpha, digits)
        assert all(torch.equal(v, end.state_dict()[k]) for k, v in net.state_dict().items())


def test_repair_refuses_an_unknown_method_and_an_alpha_outside_the_segment(digits):
    a = trained("mlp", digits, hidden=[16])
    with pytest.raises(ValueError, match="method must be one of"):
        mc.repair(a, a, a, 0.5, digits, method="shift")
    with pytest.raises(ValueError, match="alpha must lie in"):
        mc.repair(a, a, a, 1.5, digits)


def test_the_repaired_line_has_the_endpoints_exactly_and_repairs_between(digits):
    a = trained("mlp", digits, hidden=[32, 32])
    torch.manual_seed(2)
    b = mc.build_model("mlp", num_classes=10, input_shape=digits.input_shape, hidden=[32, 32])
    plain = mc.evaluate_path(mc.Line(a, a, b), digits, ts=3, progress=False)
    fixed = mc.evaluate_path(RepairedLine(a, a, b, digits), digits, ts=3, progress=False)
    for name in ("train_nll", "test_error"):
        assert getattr(fixed, name)[0] == getattr(plain, name)[0]
        assert getattr(fixed, name)[-1] == getattr(plain, name)[-1]
    assert fixed.train_nll[1] != plain.train_nll[1]


def test_a_repaired_line_needs_biases():
    net = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="needs a bias"):
        RepairedLine(net, net, net, torch.randn(16, 4))


@pytest.mark.parametrize("method", ["repair", "rescale", "repair_closed"])
def test_fused_and_unfused_repair_give_the_same_outputs(digits, method):
    a = trained("convfc", digits, widths=[8, 16, 16], hidden=32, pool_padding=1)
    torch.manual_seed(2)
    kw = dict(widths=[8, 16, 16], hidden=32, pool_padding=1)
    b = mc.build_model("convfc", num_classes=10, input_shape=digits.input_shape, **kw)
    fused = mc.repair(a, a, b, 0.3, digits, method=method)
    loose = mc.repair(a, a, b, 0.3, digits, method=method, fuse=False)
    assert any(isinstance(m, ChannelAffine) for m in loose.modules())
    assert not any(isinstance(m, ChannelAffine) for m in fused.modules())
    x = digits.test_x[:64]
    with torch.no_grad():
        assert torch.allclose(fused(x), loose(x), rtol=1e-4, atol=1e-5)


def test_closed_form_repair_hits_the_goal_exactly_at_the_first_layer(digits):
    """The first layer's input is the data for both ends, so its interpolated pre-activation is
    the interpolation of theirs: the closed form (no pass through the interpolated network)
    sets its mean and std exactly; deeper layers are an estimate, still far from collapsed."""
    kw = dict(hidden=[64, 64])
    a = trained("mlp", digits, **kw)
    torch.manual_seed(2)
    b = mc.build_model("mlp", num_classes=10, input_shape=digits.input_shape, **kw)
    mc.train_endpoint(b, digits, mc.TrainConfig(epochs=2, seed=2, progress=False))
    spec = permutation_spec(a, digits.train_x[:4])
    aligned, _ = weight_matching(a, a, b, spec=spec)
    b.load_state_dict(aligned)
    layers = _hidden_layers(a, spec)
    x = digits.train_x
    stats = end_stats(a, a, b, x, layers)
    closed = mc.repair(a, a, b, 0.5, digits, spec=spec, method="repair_closed", stats=stats)
    got = channel_stats(closed, layers, x)
    mu_goal, s_goal = stats.goal(layers[0], 0.5)
    live = s_goal > 1e-6
    rel = (got[layers[0]][1] - s_goal).abs()[live] / s_goal[live]
    assert rel.max() < 1e-3
    assert torch.allclose(got[layers[0]][0], mu_goal, atol=1e-4)
    plain = mc.build_model("mlp", num_classes=10, input_shape=digits.input_shape, **kw)
    plain.load_state_dict({k: (a.state_dict()[k] + v) / 2 for k, v in aligned.items()})
    collapsed = channel_stats(plain, layers[-1:], x)[layers[-1]][1]
    _, goal_last = stats.goal(layers[-1], 0.5)
    ratio = got[layers[-1]][1].sum() / goal_last.sum()
    assert abs(ratio - 1) < abs(collapsed.sum() / goal_last.sum() - 1)
