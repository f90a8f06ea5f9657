"""Simplexes and complexes of networks (issue 23, parts 1-2): the sampler, the network at a
point, the volume, frozen vertices, gradients, add_vertex and complexes."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn
from torch.func import functional_call

import modeconn
from modeconn.curves import Simplex, SimplicialComplex
from modeconn.curves.volume import (
    cayley_menger_volume,
    reference_lambda,
    volume_penalty,
)


def _mlp(seed: int, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


class Flat(nn.Module):
    """One float64 weight vector (D,): vertices are points of R^D."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w


def _points_simplex(points: torch.Tensor, **kwargs) -> Simplex:
    return Simplex(Flat(points.shape[1]), [{"w": p} for p in points], **kwargs)


def _orthogonal(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q


# -- the sampler ------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 50), k=st.integers(1, 7), seed=st.integers(0, 2**31))
def test_coefficients_are_nonnegative_and_sum_to_one(n, k, seed):
    simplex = Simplex(_mlp(0), [_mlp(i) for i in range(k)])
    c = simplex.sample_coefficients(n, torch.Generator().manual_seed(seed))
    assert c.shape == (n, k) and c.dtype == torch.float64
    assert bool((c >= 0).all())
    assert torch.allclose(c.sum(1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-12)


def test_each_coefficient_is_beta_1_k_minus_1():
    k = 4
    simplex = Simplex(_mlp(0), [_mlp(i) for i in range(k)])
    c = simplex.sample_coefficients(4000, torch.Generator().manual_seed(7))
    for i in range(k):
        assert stats.kstest(c[:, i].numpy(), stats.beta(1, k - 1).cdf).pvalue > 1e-3, i


def test_a_seeded_generator_gives_the_same_coefficients():
    simplex = Simplex(_mlp(0), [_mlp(i) for i in range(3)])
    draw = [simplex.sample_coefficients(5, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*draw)


# -- the network at a point -------------------------------------------------------------------


def test_a_one_hot_coefficient_reproduces_each_vertex_network_exactly():
    nets = [_mlp(i) for i in range(3)]
    simplex = Simplex(_mlp(9), nets, fixed=[True, False, True]).eval()
    x = torch.randn(16, 4)
    for i, net in enumerate(nets):
        assert torch.equal(simplex(x, torch.eye(3)[i]), net(x)), i


def test_equal_vertices_reproduce_the_base_network_at_every_sample():
    base = _mlp(0)
    simplex = Simplex(_mlp(1), [base, base, base, base]).eval()
    x = torch.randn(16, 4)
    for c in simplex.sample_coefficients(20, torch.Generator().manual_seed(0)):
        assert torch.equal(simplex(x, c), base(x))


def test_the_point_is_the_weights_flattened():
    simplex = Simplex(_mlp(0), [_mlp(i) for i in range(3)])
    c = torch.tensor([0.2, 0.3, 0.5])
    w = simplex.weights(c)
    assert torch.equal(simplex.point(c), torch.cat([t.reshape(-1) for t in w.values()]))
    expected = sum(ci * simplex.stacked()["0.weight"][i].double() for i, ci in enumerate(c))
    assert torch.allclose(w["0.weight"].double(), expected, atol=1e-6)


def test_coefficients_off_the_simplex_are_refused():
    simplex = Simplex(_mlp(0), [_mlp(i) for i in range(3)]).eval()
    for bad in ([0.5, 0.5], [0.6, 0.6, -0.2], [0.2, 0.2, 0.2]):
        with pytest.raises(ValueError, match="coefficients"):
            simplex(torch.randn(2, 4), bad)


def test_vertices_of_another_architecture_are_refused_naming_the_tensor():
    other = nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 3))
    with pytest.raises(ValueError, match=r"vertex 1 does not match.*'0\.weight'"):
        Simplex(_mlp(0), [_mlp(1), other])


def test_vertices_with_a_tensor_the_model_has_not_are_refused():
    bigger = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"vertex 0 does not match.*'3\.weight'"):
        Simplex(_mlp(0), [bigger, _mlp(1)])


def test_fixed_needs_one_bool_per_vertex():
    with pytest.raises(ValueError, match="one per vertex"):
        Simplex(_mlp(0), [_mlp(1), _mlp(2)], fixed=[True])


def test_non_finite_vertices_are_refused():
    bad = _mlp(1)
    with torch.no_grad():
        bad[2].bias[0] = float("nan")
    with pytest.raises(ValueError, match=r"vertex 1 is not finite: tensor '2\.bias'"):
        Simplex(_mlp(0), [_mlp(2), bad])


def test_eval_with_batchnorm_needs_statistics_recomputed_at_that_point():
    simplex = Simplex(TinyNet(), [TinyNet() for _ in range(3)]).eval()
    x = torch.randn(32, 1, 8, 8)
    c = [0.2, 0.5, 0.3]
    with pytest.raises(ValueError, match="recompute_bn"):
        simplex(x, c)
    simplex.recompute_bn(c, x)
    assert torch.allclose(simplex(x, c), simplex.network_at(c, x)(x), atol=1e-6)
    with pytest.raises(ValueError, match="recomputed at the point"):
        simplex(x, [0.5, 0.2, 0.3])


# -- the volume -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_the_unit_simplex_has_volume_one_over_n_factorial(n):
    points = torch.cat([torch.zeros(1, n + 2), torch.eye(n, n + 2)]).double()  # {0, e1..en}
    log_v = _points_simplex(points).log_volume()
    assert math.isclose(log_v.item(), -math.log(math.factorial(n)), abs_tol=1e-12)


@settings(max_examples=20, deadline=None)
@given(a=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_an_equilateral_triangle_of_side_a_has_area_sqrt3_over_4_a_squared(a, seed):
    triangle = torch.tensor([[0, 0], [a, 0], [a / 2, a * math.sqrt(3) / 2]], dtype=torch.float64)
    points = torch.cat([triangle, torch.zeros(3, 3, dtype=torch.float64)], 1) @ _orthogonal(5, seed)
    volume = _points_simplex(points).log_volume().exp().item()
    assert math.isclose(volume, math.sqrt(3) / 4 * a**2, rel_tol=1e-10)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(2, 5), extra=st.integers(0, 4), seed=st.integers(0, 1000))
def test_the_volume_is_invariant_to_translation_and_rotation(k, extra, seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(k, k + extra, generator=g, dtype=torch.float64)
    moved = points @ _orthogonal(k + extra, seed) + torch.randn(k + extra, generator=g) * 10
    before = _points_simplex(points).log_volume().item()
    after = _points_simplex(moved).log_volume().item()
    assert math.isclose(before, after, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 5), extra=st.integers(0, 4), seed=st.integers(0, 1000))
def test_gram_and_cayley_menger_volumes_agree_in_float64(k, extra, seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(k, k + extra, generator=g, dtype=torch.float64)
    gram = _points_simplex(points).log_volume().exp().item()
    assert math.isclose(gram, cayley_menger_volume(points).item(), rel_tol=1e-8)


def test_the_volume_summed_over_parameters_is_that_of_the_flat_vertices():
    nets = [_mlp(i, torch.float64) for i in range(4)]
    simplex = Simplex(_mlp(0, torch.float64), nets)
    flat = torch.stack([torch.cat([p.reshape(-1) for p in n.parameters()]) for n in nets])
    cm = cayley_menger_volume(flat).item()
    assert math.isclose(simplex.log_volume().exp().item(), cm, rel_tol=1e-8)


def test_a_duplicated_vertex_gives_minus_inf_and_finite_gradients():
    a, b = _mlp(1), _mlp(2)
    simplex = Simplex(_mlp(0), [a, b, a])
    log_v = simplex.log_volume()
    assert log_v.item() == -math.inf
    for penalty in (simplex.volume_penalty(1.0), simplex.volume_penalty(1.0, reference=True)):
        assert math.isfinite(penalty.item())
        grads = torch.autograd.grad(penalty, list(simplex.free_vertices.parameters()))
        assert all(bool(torch.isfinite(g).all()) for g in grads)
    grads = torch.autograd.grad(log_v, list(simplex.free_vertices.parameters()))
    assert all(bool((g == 0).all()) for g in grads)


def test_the_penalty_is_minus_lambda_log_volume_and_the_reference_form_uses_v_squared():
    points = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    simplex = _points_simplex(points)
    v = cayley_menger_volume(points).item()
    assert math.isclose(simplex.volume_penalty(0.3).item(), -0.3 * math.log(v), rel_tol=1e-9)
    reference = simplex.volume_penalty(0.3, reference=True).item()
    assert math.isclose(reference, -0.3 * math.log(v**2 + 1e-4), rel_tol=1e-9)


def test_the_reference_lambda_is_seeded_and_leaves_the_random_state_alone():
    model = _mlp(0)
    state = torch.get_rng_state()
    lam = [reference_lambda(model, 3, lmbd=1e-6, seed=5) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    assert lam[0] == lam[1] and lam[0] >= 1e-8


# -- training ---------------------------------------------------------------------------------


def test_frozen_vertices_are_bitwise_unchanged_after_sgd_steps():
    simplex = Simplex(_mlp(0), [_mlp(i) for i in range(3)], fixed=[True, False, True]).train()
    frozen = {k: v.clone() for k, v in simplex.fixed_vertices.state_dict().items()}
    free = {k: v.clone() for k, v in simplex.free_vertices.state_dict().items()}
    # every parameter of the module: the fixed vertices are buffers, out of the optimiser's reach
    opt = torch.optim.SGD(simplex.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        loss, _ = simplex.sample_loss(x, y, samples=3, generator=g)
        opt.zero_grad()
        (loss + simplex.volume_penalty(1e-3)).backward()
        opt.step()
    after = simplex.fixed_vertices.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert all(not torch.equal(simplex.free_vertices.state_dict()[k], v) for k, v in free.items())


def test_a_vertex_gradient_is_its_coefficient_times_the_gradient_at_phi():
    nets = [_mlp(i, torch.float64) for i in range(3)]
    simplex = Simplex(_mlp(0, torch.float64), nets, fixed=[False, True, False]).train()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    c = simplex.sample_coefficients(1, torch.Generator().manual_seed(1))[0]
    F.cross_entropy(simplex(x, c), y).backward()
    # the gradient at phi(c) of the plain functional network
    phi = {n: w.detach().requires_grad_(True) for n, w in simplex.weights(c).items()}
    F.cross_entropy(functional_call(simplex.model, phi, (x,)), y).backward()
    for name, at_phi in phi.items():
        grad = simplex.free_vertices[name].grad  # rows: vertices 0 and 2
        for row, i in enumerate((0, 2)):
            torch.testing.assert_close(grad[row], c[i].item() * at_phi.grad)


def test_the_sample_loss_is_the_mean_over_the_samples():
    simplex = Simplex(_mlp(0), [_mlp(i) for i in range(3)]).train()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss, outputs = simplex.sample_loss(x, y, samples=4, generator=torch.Generator().manual_seed(2))
    points = simplex.sample_coefficients(4, torch.Generator().manual_seed(2))
    each = [F.cross_entropy(simplex(x, c), y) for c in points]
    assert outputs.shape == (4, 16, 3)
    torch.testing.assert_close(loss, torch.stack(each).mean())


def test_add_vertex_starts_at_the_centroid_and_freezes_the_older_vertices():
    simplex = Simplex(_mlp(0), [_mlp(1), _mlp(2)], fixed=[True, False])
    before = simplex.stacked()
    old = list(simplex.free_vertices.parameters())
    assert simplex.add_vertex() == 2
    assert not {id(p) for p in old} & {id(p) for p in simplex.free_vertices.parameters()}
    assert simplex.fixed == (True, True, False)
    now = simplex.stacked()
    for name, stack in before.items():
        assert torch.equal(now[name][:2], stack)
        torch.testing.assert_close(now[name][2], stack.double().mean(0).float())
        assert simplex.free_vertices[name].shape == (1, *stack.shape[1:])
    assert simplex.log_volume().item() == -math.inf  # on the older edge: degenerate
    with torch.no_grad():
        for p in simplex.free_vertices.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert math.isfinite(simplex.log_volume().item())


# -- complexes --------------------------------------------------------------------------------


def _triangles() -> SimplicialComplex:
    # three triangles sharing vertices 0 and 2, of areas 1, 2 and 3 (base 2 on the x-axis)
    points = torch.tensor([[0, 0], [1, 1], [2, 0], [1, -2], [1, 3]], dtype=torch.float64)
    return SimplicialComplex(Flat(2), [{"w": p} for p in points], [(0, 1, 2), (0, 2, 3), (0, 4, 2)])


def test_a_complex_chooses_simplexes_in_proportion_to_their_volume():
    complex_ = _triangles()
    assert torch.allclose(complex_.log_volume().exp(), torch.tensor([1.0, 2.0, 3.0]).double())
    choice = complex_.choose_simplexes(30000, torch.Generator().manual_seed(0))
    counts = np.bincount(choice.numpy(), minlength=3)
    assert stats.chisquare(counts, 30000 * np.array([1, 2, 3]) / 6).pvalue > 1e-3


def test_a_complex_point_lies_in_one_of_its_simplexes():
    complex_ = _triangles()
    c = complex_.sample_coefficients(200, torch.Generator().manual_seed(1))
    assert torch.allclose(c.sum(1), torch.ones(200, dtype=torch.float64))
    supports = {tuple(torch.nonzero(row).flatten().tolist()) for row in c}
    assert supports == {(0, 1, 2), (0, 2, 3), (0, 2, 4)}


def test_a_complex_regularises_every_simplex():
    complex_ = _triangles()
    expected = -0.5 * sum(math.log(v) for v in (1.0, 2.0, 3.0))
    assert math.isclose(complex_.volume_penalty(0.5).item(), expected, rel_tol=1e-12)
    complex_.volume_penalty(0.5).backward()
    grad = complex_.free_vertices["w"].grad
    assert all(bool(grad[i].abs().sum() > 0) for i in (1, 3, 4))  # each triangle's apex


def test_a_complex_refuses_simplexes_that_do_not_fit():
    points = [{"w": torch.randn(2, dtype=torch.float64)} for _ in range(4)]
    for simplexes, match in (
        ([(0, 1, 5)], "vertices are 0..3"),
        ([(0, 1, 1)], "twice"),
        ([(0, 1, 2), (2, 1, 0)], "listed twice"),
        ([(0, 1, 2), (2, 3)], "same number"),
    ):
        with pytest.raises(ValueError, match=match):
            SimplicialComplex(Flat(2), points, simplexes)


def test_simplexes_are_exported_from_modeconn():
    assert modeconn.Simplex is Simplex and modeconn.SimplicialComplex is SimplicialComplex
    assert {"Simplex", "SimplicialComplex"} <= set(modeconn.__all__)
    assert volume_penalty is modeconn.curves.volume_penalty
