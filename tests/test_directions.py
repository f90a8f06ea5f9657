"""Direction rules: Li et al.'s normalisations, the critique's families, exact planes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modeconn.curves.family import Bezier, Line, PolyChain
from modeconn.curves.weights import WeightSpace
from modeconn.landscape.directions import (
    orthonormal_pair,
    principal_directions,
    qr_directions,
    random_direction,
    tangent_directions,
    target_direction,
    zca_directions,
    zca_whitening,
)


class Net(nn.Module):
    """Conv (4 filters of 9 entries), BatchNorm, Linear (5 x 64): both block orientations."""

    def __init__(self, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(4) if bias else nn.Identity()
        self.fc = nn.Linear(64, 5, bias=bias)


def net(seed: int = 0, bias: bool = True, dtype=torch.float32) -> Net:
    torch.manual_seed(seed)
    model = Net(bias).to(dtype)
    with torch.no_grad():  # BatchNorm weights away from 1 so that "d = w" is visible
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def parts(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    return WeightSpace.from_module(model).unflatten(flat)


def filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


def test_filter_normalised_direction_has_the_weights_norm_per_filter():
    model = net()
    d = parts(model, random_direction(model, norm="filter", seed=3))
    for name, w in model.named_parameters():
        if w.ndim > 1:
            torch.testing.assert_close(filter_norms(d[name]), filter_norms(w), atol=1e-6, rtol=0)


def test_biasbn_tensors_are_zeroed_under_ignore():
    model = net()
    d = parts(model, random_direction(model, ignore="biasbn"))
    zeroed = [name for name, w in model.named_parameters() if w.ndim <= 1]
    assert zeroed and all(torch.count_nonzero(d[name]) == 0 for name in zeroed)


def test_without_ignore_one_dimensional_tensors_equal_the_weights():
    model = net()
    d = parts(model, random_direction(model, norm="filter", ignore=None))
    for name, w in model.named_parameters():
        if w.ndim <= 1:
            assert torch.equal(d[name], w.detach())


def test_layer_normalised_direction_has_the_weights_norm_per_tensor():
    model = net()
    d = parts(model, random_direction(model, norm="layer", seed=1))
    for name, w in model.named_parameters():
        if w.ndim > 1:
            torch.testing.assert_close(d[name].norm(), w.norm(), atol=1e-6, rtol=0)


def test_weight_normalised_direction_is_the_noise_times_the_weights_magnitude():
    model = net()
    raw = parts(model, random_direction(model, norm=None, seed=2))
    d = parts(model, random_direction(model, norm="weight", seed=2))
    for name, w in model.named_parameters():
        if w.ndim > 1:
            torch.testing.assert_close(d[name], raw[name] * w.detach().abs())


def test_seed_123_reproduces_the_reference_draws_and_filter_rule():
    model = net()
    with torch.random.fork_rng():  # the reference: global seed, one randn per tensor, axis 0
        torch.manual_seed(123)
        expected = []
        for w in model.parameters():
            d = torch.randn(w.size())
            if d.dim() <= 1:
                d.fill_(0)
            else:
                for di, wi in zip(d, w.detach(), strict=True):
                    di.mul_(wi.norm() / (di.norm() + 1e-10))
            expected.append(d.reshape(-1))
    ours = random_direction(model, norm="filter", ignore="biasbn", seed=123)
    torch.testing.assert_close(ours, torch.cat(expected), rtol=1e-5, atol=1e-7)


def test_same_seed_gives_the_same_direction():
    model = net()
    assert torch.equal(random_direction(model, seed=5), random_direction(model, seed=5))


def test_different_seeds_give_different_directions():
    model = net()
    a, b = random_direction(model, seed=5), random_direction(model, seed=6)
    assert abs(float(torch.dot(a, b) / (a.norm() * b.norm()))) < 0.5


def test_draws_do_not_touch_the_global_generator():
    model = net()
    state = torch.get_rng_state()
    random_direction(model, seed=5)
    assert torch.equal(state, torch.get_rng_state())


def test_float64_copy_gives_the_same_direction_cast_back():
    model = net()
    copy = net().double()
    d32, d64 = random_direction(model, seed=4), random_direction(copy, seed=4)
    assert d64.dtype == torch.float64 and torch.equal(d64.float(), d32)


def test_model_moved_with_to_gives_the_same_direction():
    model = net()
    before = qr_directions(model, seed=8)
    model.to("cpu").to(torch.float64)
    after = qr_directions(model, seed=8)
    assert all(torch.equal(a, b.float()) for a, b in zip(before, after, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_direction_on_cuda_equals_the_cpu_direction():
    model = net()
    cpu = random_direction(model, seed=9)
    gpu = random_direction(model.cuda(), seed=9)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


def test_conv_transpose_filters_are_the_output_channels():
    torch.manual_seed(0)
    model = nn.ConvTranspose2d(6, 4, 3, groups=2, bias=False)  # weight (6, 2, 3, 3)
    d = random_direction(model, norm="filter", seed=1).view_as(model.weight)
    w = model.weight.detach()
    # output channel (g, j) reads input block g through weight[g*3:(g+1)*3, j]
    for g in range(2):
        for j in range(2):
            block = slice(3 * g, 3 * g + 3)
            torch.testing.assert_close(d[block, j].norm(), w[block, j].norm(), atol=1e-6, rtol=0)


def test_mapping_of_weights_uses_axis_zero_filters():
    torch.manual_seed(0)
    model = nn.ConvTranspose2d(6, 4, 3, bias=False)
    d = random_direction({"weight": model.weight}, norm="filter", seed=1).view_as(model.weight)
    torch.testing.assert_close(
        filter_norms(d), filter_norms(model.weight.detach()), atol=1e-6, rtol=0
    )


def test_qr_directions_are_orthonormal_before_normalisation():
    model = net(bias=False, dtype=torch.float64)
    q = torch.stack(qr_directions(model, k=3, seed=0, norm=None), dim=1)
    torch.testing.assert_close(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)


def test_qr_directions_are_filter_normalised():
    model = net()
    for d in qr_directions(model, k=2, seed=0):
        d = parts(model, d)
        torch.testing.assert_close(filter_norms(d["fc.weight"]), filter_norms(model.fc.weight))


def numpy_zca(x: np.ndarray, eps: float) -> np.ndarray:
    """Textbook ZCA by numpy's SVD of the centred block, for full-rank covariances."""
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc.T @ xc / x.shape[0])
    return u @ np.diag(1.0 / (np.sqrt(s) + eps)) @ u.T


def test_zca_whitening_matches_numpy_and_whitens_to_the_identity():
    x = np.random.default_rng(0).normal(size=(200, 6)) @ np.random.default_rng(1).normal(
        size=(6, 6)
    )
    z = zca_whitening(torch.from_numpy(x), eps=0.0).numpy()
    np.testing.assert_allclose(z, numpy_zca(x, 0.0), atol=1e-10)
    white = (x - x.mean(axis=0)) @ z
    np.testing.assert_allclose(white.T @ white / len(x), np.eye(6), atol=1e-10)


def test_zca_whitening_with_eps_is_the_identity_to_tolerance():
    x = np.random.default_rng(2).normal(size=(100, 5))
    white = (x - x.mean(axis=0)) @ zca_whitening(torch.from_numpy(x), eps=1e-5).numpy()
    np.testing.assert_allclose(white.T @ white / len(x), np.eye(5), atol=1e-4)


def test_zca_whitening_of_a_rank_deficient_block_is_a_projector_not_one_over_eps():
    x = np.random.default_rng(3).normal(size=(4, 9))  # centred rank 3 in 9 features
    z = zca_whitening(torch.from_numpy(x)).numpy()
    white = (x - x.mean(axis=0)) @ z
    cov = white.T @ white / len(x)
    np.testing.assert_allclose(cov @ cov, cov, atol=1e-4)
    assert np.abs(z).max() < 1e3 and round(np.trace(cov)) == 3


def test_zca_directions_are_noise_times_the_weights_whitener():
    model = net(bias=False, dtype=torch.float64)
    ours = parts(model, zca_directions(model, k=1, seed=7, norm=None)[0])
    generator = torch.Generator().manual_seed(7)
    noise = {n: torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}
    w = model.fc.weight.detach().numpy()  # 5 filters of 64 entries: per-position block (64, 5)
    expected = (noise["fc.weight"].double().numpy().T @ numpy_zca(w.T, 1e-5)).T
    np.testing.assert_allclose(ours["fc.weight"].numpy(), expected, atol=1e-8)


def test_zca_directions_differ_per_seed_and_are_filter_normalised():
    model = net()
    a, b = zca_directions(model, k=2, seed=0)
    assert not torch.allclose(a, b)
    conv = parts(model, a)["conv.weight"]
    torch.testing.assert_close(filter_norms(conv), filter_norms(model.conv.weight))


def test_principal_direction_is_the_top_singular_component_from_numpy_svd():
    model = net(dtype=torch.float64)
    first, second = principal_directions(model, k=2, norm=None)
    for j, d in enumerate((first, second)):
        w = model.fc.weight.detach().numpy().T  # per-position block (64, 5)
        u, s, vh = np.linalg.svd(w - w.mean(axis=0), full_matrices=False)
        expected = (s[j] * np.outer(u[:, j], vh[j])).T
        np.testing.assert_allclose(parts(model, d)["fc.weight"].numpy(), expected, atol=1e-10)


def test_filter_normalised_principal_filters_keep_the_weights_norms():
    model = net()
    d = parts(model, principal_directions(model, k=1)[0])
    torch.testing.assert_close(filter_norms(d["conv.weight"]), filter_norms(model.conv.weight))


def test_target_direction_is_b_minus_a():
    a, b = net(0), net(1)
    space = WeightSpace.from_module(a)
    expected = space.flatten(b) - space.flatten(a)
    assert torch.equal(target_direction(a, b), expected)
    assert torch.equal(target_direction(a.state_dict(), b.state_dict(), space), expected)
    assert torch.equal(target_direction(space.flatten(a), space.flatten(b)), expected)


def test_target_direction_of_state_dicts_asks_for_the_space():
    with pytest.raises(ValueError, match="space=WeightSpace.from_module"):
        target_direction(net(0).state_dict(), net(1).state_dict())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.floats(0.01, 1.0))
def test_orthonormal_pair_is_orthonormal_to_1e12(seed, scale):
    g = torch.Generator().manual_seed(seed)
    d1 = torch.randn(300, generator=g, dtype=torch.float64)
    d2 = scale * d1 + torch.randn(300, generator=g, dtype=torch.float64)  # far from orthogonal
    u, v, _ = orthonormal_pair(d1, d2)
    gram = torch.stack([u, v]) @ torch.stack([u, v]).T
    torch.testing.assert_close(gram, torch.eye(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_orthonormal_pair_spans_the_plane_of_the_raw_pair():
    g = torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(2, 200, generator=g, dtype=torch.float64)
    u, v, _ = orthonormal_pair(d1, d2)
    basis = torch.stack([u, v], dim=1)
    for d in (d1, d2):  # projection onto span(u, v) gives back d
        torch.testing.assert_close(basis @ (basis.T @ d), d, atol=1e-12, rtol=0)


def test_orthonormal_pair_reports_the_raw_cosine():
    d1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    d2 = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    assert orthonormal_pair(d1, d2)[2] == pytest.approx(2**-0.5, abs=1e-15)


def test_orthonormal_pair_rejects_parallel_directions():
    d = torch.randn(10)
    with pytest.raises(ValueError, match="parallel"):
        orthonormal_pair(d, -3 * d)


@settings(max_examples=25, deadline=None)
@given(c=st.floats(1e-3, 1e3), norm=st.sampled_from(["filter", "layer", "weight"]))
def test_normalisation_is_equivariant_to_rescaling_the_weights(c, norm):
    model = net(dtype=torch.float64)
    weights = {n: p.detach() for n, p in model.named_parameters() if p.ndim > 1}
    scaled = {n: c * w for n, w in weights.items()}
    d = random_direction(weights, norm=norm, seed=0)
    torch.testing.assert_close(random_direction(scaled, norm=norm, seed=0), c * d)


def test_unknown_norm_lists_the_choices():
    with pytest.raises(ValueError, match="filter"):
        random_direction(net(), norm="filters")


@pytest.mark.parametrize("kind", ["bezier3", "polychain"])
def test_curve_tangent_is_the_derivative_of_phi(kind):
    torch.manual_seed(0)
    nets = [nn.Linear(3, 2) for _ in range(4)]
    if kind == "bezier3":
        curve = Bezier(nets[0], nets[1], nets[2], degree=3)
    else:
        curve = PolyChain(nets[0], nets[1], nets[2], bends=2)
    with torch.no_grad():
        curve.bends.normal_()
    for t in (0.1, 0.45, 0.8):
        h = 1e-4
        numeric = (curve.point(t + h).double() - curve.point(t - h).double()) / (2 * h)
        torch.testing.assert_close(curve.tangent(t).double(), numeric, rtol=1e-3, atol=1e-3)


def test_tangent_directions_are_orthogonal_and_keep_the_filter_scale():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)) for _ in range(3)]
    curve = Bezier(nets[0], nets[1], nets[2])
    d1, d2 = tangent_directions(curve, 0.3, seed=5)
    assert torch.equal(d1, curve.tangent(0.3))
    assert abs(float(torch.dot(d1.double(), d2.double()))) < 1e-6 * float(d1.norm() * d2.norm())
    at = {k: v.detach() for k, v in curve.weights(0.3).items()}
    raw = random_direction(at, seed=5)
    assert float(d2.norm()) == pytest.approx(float(raw.norm()), rel=1e-6)


def test_line_tangent_is_end_minus_start():
    nets = [nn.Linear(3, 2) for _ in range(2)]
    line = Line(nets[0], nets[0], nets[1])
    torch.testing.assert_close(line.tangent(0.7), line.end - line.start)
