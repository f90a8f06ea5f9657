import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from modeconn.curves.family import Bezier, Line, PolyChain, build_curve
from modeconn.curves.weights import WeightSpace
from modeconn.engine.point import recompute_bn
from modeconn.training import curve_step_loss

CURVE_KINDS = [
    (Line, {}),
    (Bezier, {"degree": 1}),
    (Bezier, {"degree": 2}),
    (Bezier, {"degree": 5}),
    (PolyChain, {"bends": 0}),
    (PolyChain, {"bends": 1}),
    (PolyChain, {"bends": 3}),
]


def _ids(p):
    return f"{p[0].__name__}{p[1]}"


def _shift_bends(curve):
    """Move bends off the straight line so curves are really curved."""
    with torch.no_grad():
        curve.bends.add_(torch.randn_like(curve.bends))


@pytest.mark.parametrize("kind", CURVE_KINDS, ids=_ids)
def test_curve_hits_endpoints_exactly(tiny_pair, kind):
    a, b = tiny_pair
    curve = kind[0](TinyNet(), a, b, **kind[1])
    _shift_bends(curve)
    for t, ref in ((0.0, a), (1.0, b)):
        w = curve.weights(t)
        for name, p in ref.named_parameters():
            assert torch.equal(w[name], p), name


@pytest.mark.parametrize("kind", CURVE_KINDS, ids=_ids)
def test_curve_hits_endpoints_exactly_on_torchvision_resnet18(kind):
    a = torchvision.models.resnet18(num_classes=10)
    b = torchvision.models.resnet18(num_classes=10)
    curve = kind[0](torchvision.models.resnet18(num_classes=10), a, b, **kind[1])
    _shift_bends(curve)
    for t, ref in ((0.0, a), (1.0, b)):
        w = curve.weights(t)
        assert all(torch.equal(w[n], p) for n, p in ref.named_parameters())
    net = curve.network_at(0.3, torch.randn(4, 3, 32, 32))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def _coefficient_curves():
    a, b = TinyNet(), TinyNet()
    return [k[0](TinyNet(), a, b, **k[1]) for k in CURVE_KINDS]


COEF_CURVES = _coefficient_curves()


@settings(max_examples=200, deadline=None)
@given(t=st.floats(0.0, 1.0), index=st.integers(0, len(COEF_CURVES) - 1))
def test_coefficients_are_nonnegative_and_sum_to_one(t, index):
    c = COEF_CURVES[index].coefficients(t)
    assert (c >= 0).all()
    assert abs(c.sum().item() - 1.0) < 1e-12


@settings(max_examples=50, deadline=None)
@given(
    t=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9), st.just(float("nan")))
)
def test_t_outside_unit_interval_raises(t):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        COEF_CURVES[2].coefficients(t)


@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.0, 1.0), index=st.integers(0, len(COEF_CURVES) - 1))
def test_untrained_curve_lies_on_the_straight_line(t, index):
    curve = COEF_CURVES[index]
    line = (1 - t) * curve.start.double() + t * curve.end.double()
    assert torch.allclose(curve.point(t).double(), line, atol=1e-5)


@pytest.mark.parametrize("kind", [(Bezier, {"degree": 3}), (PolyChain, {"bends": 2})], ids=_ids)
@pytest.mark.parametrize("t", [0.13, 0.5, 0.9])
def test_bend_gradient_is_coefficient_times_point_gradient(tiny_pair, kind, t):
    a, b = tiny_pair
    curve = kind[0](TinyNet(), a, b, **kind[1]).double()
    _shift_bends(curve)
    curve.eval()
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    F.cross_entropy(curve.run(x, curve.point(t)), y).backward()
    # Gradient with respect to the weights at phi(t), computed on a plain copy of the network.
    point = curve.point(t).detach().requires_grad_(True)
    F.cross_entropy(functional_call(curve.model, curve.space.unflatten(point), (x,)), y).backward()
    c = curve.coefficients(t)
    for k in range(curve.num_bends):
        assert torch.allclose(curve.bends.grad[k], c[k + 1] * point.grad, rtol=1e-9, atol=1e-12)


def test_bend_gradient_matches_finite_differences(tiny_pair):
    a, b = tiny_pair
    curve = Bezier(TinyNet(), a, b, degree=2).double()
    _shift_bends(curve)
    curve.eval()
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    t = 0.37
    F.cross_entropy(curve.run(x, curve.point(t)), y).backward()
    direction = torch.randn_like(curve.bends)
    eps = 1e-6
    with torch.no_grad():
        curve.bends.add_(eps * direction)
        up = F.cross_entropy(curve.run(x, curve.point(t)), y)
        curve.bends.sub_(2 * eps * direction)
        down = F.cross_entropy(curve.run(x, curve.point(t)), y)
    numeric = (up - down) / (2 * eps)
    assert abs(numeric.item() - (curve.bends.grad * direction).sum().item()) < 1e-6


def test_endpoints_get_no_gradient(tiny_pair):
    a, b = tiny_pair
    curve = Bezier(TinyNet(), a, b)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    curve.train()
    F.cross_entropy(curve(x), y).backward()
    assert not curve.start.requires_grad and not curve.end.requires_grad
    assert all(p.grad is None for p in curve.model.parameters())
    assert [p for p in curve.parameters() if p.requires_grad] == [curve.bends]


def test_bends_start_equally_spaced_on_the_segment(tiny_pair):
    a, b = tiny_pair
    curve = PolyChain(TinyNet(), a, b, bends=3)
    for k in range(3):
        alpha = (k + 1) / 4
        assert torch.allclose(curve.bends[k], (1 - alpha) * curve.start + alpha * curve.end)


def test_training_mode_samples_t_and_eval_mode_requires_it(tiny_pair):
    a, b = tiny_pair
    curve = Bezier(TinyNet(), a, b)
    curve.train()
    seen = set()
    for _ in range(5):
        curve(torch.randn(4, 1, 8, 8))
        seen.add(curve.last_t)
    assert len(seen) == 5 and all(0 <= t <= 1 for t in seen)
    curve.eval()
    with pytest.raises(ValueError, match="pass t"):
        curve(torch.randn(4, 1, 8, 8))


def test_curve_regulariser_is_weight_decay_on_the_point(tiny_pair):
    a, b = tiny_pair
    curve = Bezier(TinyNet(), a, b)
    curve.eval()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    wd, t = 0.01, 0.4
    loss, logits = curve_step_loss(curve, x, y, t, wd)
    expected = F.cross_entropy(logits, y) + 0.5 * wd * curve.point(t).pow(2).sum()
    assert torch.allclose(loss, expected)


def test_endpoints_of_another_architecture_are_rejected(tiny_pair):
    a, _ = tiny_pair
    other = TinyNet(width=6)
    with pytest.raises(ValueError, match=r"'conv\.weight' has shape \(6, 1, 3, 3\)"):
        Bezier(TinyNet(), a, other)


def test_endpoint_missing_a_tensor_is_rejected(tiny_pair):
    a, b = tiny_pair
    sd = dict(b.state_dict())
    del sd["fc.bias"]
    with pytest.raises(ValueError, match="'fc.bias'.*missing"):
        Line(TinyNet(), a, sd)


def test_unknown_curve_name_lists_valid_ones(tiny_pair):
    a, b = tiny_pair
    with pytest.raises(ValueError, match="bezier"):
        build_curve("spline", TinyNet(), a, b)


def test_invalid_degree_and_bends_are_rejected(tiny_pair):
    a, b = tiny_pair
    with pytest.raises(ValueError, match="degree"):
        Bezier(TinyNet(), a, b, degree=0)
    with pytest.raises(ValueError, match="num_bends"):
        PolyChain(TinyNet(), a, b, bends=-1)


def test_curve_does_not_touch_the_template_model(tiny_pair):
    a, b = tiny_pair
    before = {k: v.clone() for k, v in a.state_dict().items()}
    curve = Line(a, a, b)
    curve.model.bn.running_mean.fill_(3.0)
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_weightspace_flatten_unflatten_roundtrip(seed):
    torch.manual_seed(seed)
    net = TinyNet()
    space = WeightSpace.from_module(net)
    vec = space.flatten(net)
    assert vec.shape == (space.size,)
    back = space.unflatten(vec)
    assert all(torch.equal(back[n], p) for n, p in net.named_parameters())
    assert torch.allclose(space.norm(vec) ** 2, space.dot(vec, vec))


@pytest.mark.parametrize("kind", [(Bezier, {"degree": 2}), (PolyChain, {"bends": 3})], ids=_ids)
def test_folded_regulariser_gradient_equals_autograd_of_the_penalty(tiny_pair, kind):
    a, b = tiny_pair
    curve = kind[0](TinyNet(), a, b, **kind[1]).double()
    _shift_bends(curve)
    curve.eval()
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    wd, t = 0.05, 0.3
    loss, _ = curve_step_loss(curve, x, y, t, wd)
    loss.backward()
    folded = curve.bends.grad.clone()
    curve.bends.grad = None
    c = curve.coefficients(t).double()
    phi = c[0] * curve.start + c[-1] * curve.end + c[1:-1] @ curve.bends  # plain autograd
    explicit = F.cross_entropy(curve.run(x, phi), y) + 0.5 * wd * phi.pow(2).sum()
    explicit.backward()
    assert torch.allclose(loss, explicit)
    assert torch.allclose(folded, curve.bends.grad, rtol=1e-10, atol=1e-12)


def test_training_step_at_an_endpoint_gives_zero_bend_gradient(tiny_pair):
    a, b = tiny_pair
    curve = Bezier(TinyNet(), a, b)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss, _ = curve_step_loss(curve, x, y, 0.0, 5e-4)
    loss.backward()
    assert torch.count_nonzero(curve.bends.grad) == 0


@pytest.mark.parametrize("kind", [(Bezier, {"degree": 3}), (PolyChain, {"bends": 2})], ids=_ids)
def test_point_folds_the_regulariser_gradient_into_its_backward(tiny_pair, kind):
    a, b = tiny_pair
    curve = kind[0](TinyNet(), a, b, **kind[1]).double()
    _shift_bends(curve)
    t, wd = 0.4, 0.1
    g = torch.randn(curve.space.size, dtype=torch.float64)
    phi = curve.point(t, wd=wd)
    (phi * g).sum().backward()
    c = curve.coefficients(t).double()[1:-1]
    expected = torch.outer(c, g + wd * phi.detach())
    assert torch.allclose(curve.bends.grad, expected, rtol=1e-12, atol=1e-14)


# --- The network at t: BatchNorm statistics of phi(t), never stale ones ------------------------


def _bn_curve(tiny_pair):
    a, b = tiny_pair
    curve = Bezier(TinyNet(), a, b)
    _shift_bends(curve)
    return curve.eval()


def test_eval_forward_without_recomputed_statistics_raises(tiny_pair):
    curve = _bn_curve(tiny_pair)
    with pytest.raises(ValueError, match=r"network_at\(0.5, data\)"):
        curve(torch.randn(4, 1, 8, 8), t=0.5)


def test_eval_forward_at_another_t_than_the_recomputed_one_raises(tiny_pair):
    curve = _bn_curve(tiny_pair)
    curve.recompute_bn(0.2, torch.randn(64, 1, 8, 8))
    with pytest.raises(ValueError, match="recomputed at t=0.2"):
        curve(torch.randn(4, 1, 8, 8), t=0.5)


def test_eval_forward_after_the_engine_evaluated_another_point_raises(tiny_pair):
    curve = _bn_curve(tiny_pair)
    x = torch.randn(64, 1, 8, 8)
    curve.recompute_bn(0.5, x)
    curve(x[:4], t=0.5)  # fresh: runs
    recompute_bn(curve.model, x, curve.weights(0.9))  # what evaluating another point does
    with pytest.raises(ValueError, match="changed since"):
        curve(x[:4], t=0.5)


def test_eval_forward_after_recompute_equals_a_fresh_network_at_t(tiny_pair):
    curve = _bn_curve(tiny_pair)
    x = torch.randn(64, 1, 8, 8)
    curve.recompute_bn(0.5, x)
    net = curve.network_at(0.5, x)
    torch.testing.assert_close(curve(x[:8], t=0.5), net(x[:8]), rtol=0, atol=0)


def test_network_at_has_the_weights_of_phi_t_and_statistics_of_its_own(tiny_pair):
    curve = _bn_curve(tiny_pair)
    x = torch.randn(64, 1, 8, 8)
    net = curve.network_at(0.3, x)
    assert all(torch.equal(p, curve.weights(0.3)[n]) for n, p in net.named_parameters())
    # the statistics are the direct mean and variance of the BatchNorm input at phi(0.3)
    with torch.no_grad():
        pre = net.conv(x)
    torch.testing.assert_close(net.bn.running_mean, pre.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        net.bn.running_var, pre.var((0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6
    )
    assert not net.training and all(p.requires_grad for p in net.parameters())
    assert net is not curve.model


def test_network_at_of_a_batchnorm_network_needs_data(tiny_pair):
    with pytest.raises(ValueError, match="pass data"):
        _bn_curve(tiny_pair).network_at(0.5)


def test_network_at_without_batchnorm_needs_no_data():
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))]
    nets += [copy.deepcopy(nets[0]) for _ in range(2)]
    curve = Bezier(*nets).eval()
    x = torch.randn(5, 3)
    torch.testing.assert_close(curve.network_at(0.7)(x), curve(x, t=0.7))
