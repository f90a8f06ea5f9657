"""Curvature at a point: Hessian-vector products and the estimators, refereed by the full
Hessian of `torch.autograd.functional.hessian` and `numpy.linalg.eigvalsh` on small MLPs."""

import math

import numpy as np
import pytest
import torch
from conftest import TinyNet
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from modeconn import hessian_extremes, hessian_trace
from modeconn.curvature.density import SpectralDensity
from modeconn.curvature.hessian import (
    HessianExtremes,
    HessianTrace,
    directional_curvature,
    hessian_density,
)
from modeconn.curvature.hvp import hessian_operator
from modeconn.curvature.lanczos import hutchinson, lanczos, power_iteration, rademacher
from modeconn.curves.weights import WeightSpace
from modeconn.data.catalogue import load_dataset
from modeconn.engine.point import recompute_bn
from modeconn.models import build_model

REL = 1e-4


def _referee(model, x, y, wd=0.0, names=None):
    """The full Hessian of the mean cross-entropy (+ 0.5 wd ||w||^2) over `names`, float64."""
    model.eval()
    space = WeightSpace.from_module(model)
    point = {n: p.detach() for n, p in model.named_parameters()}
    names = names or space.names
    sizes = [point[n].numel() for n in names]
    flat = torch.cat([point[n].reshape(-1) for n in names])

    def loss(w):
        parts = dict(zip(names, torch.split(w, sizes), strict=True))
        weights = {**point, **{n: p.view(point[n].shape) for n, p in parts.items()}}
        out = functional_call(model, weights, (x,))
        return torch.nn.functional.cross_entropy(out, y) + 0.5 * wd * (w**2).sum()

    h = torch.autograd.functional.hessian(loss, flat, vectorize=True).double()
    return (0.5 * (h + h.T)).numpy()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(train=240, test=20)


@pytest.fixture(scope="module")
def mlp():
    """An untrained MLP with 460 weights: its Hessian is indefinite."""
    torch.manual_seed(0)
    return build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=[6])


@pytest.fixture(scope="module")
def logistic():
    """Logistic regression (650 weights): a convex loss; with wd > 0 its Hessian is PD."""
    torch.manual_seed(1)
    return build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=0)


@pytest.fixture(scope="module")
def exact(mlp, digits):
    h = _referee(mlp, digits.train_x, digits.train_y)
    return h, np.linalg.eigvalsh(h)


def _close(a, b, rel=REL):
    return abs(a - b) <= rel * abs(b)


def test_hessian_vector_products_equal_the_full_hessian_times_the_vector(mlp, digits, exact):
    h, _ = exact
    op = hessian_operator(mlp, None, digits, batch_size=100)
    v = torch.randn(op.size, dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(v).numpy(), h @ v.numpy(), rtol=0, atol=1e-5)


def test_lanczos_gives_both_ends_of_an_indefinite_spectrum(mlp, digits, exact):
    _, ev = exact
    assert ev[0] < 0 < ev[-1]
    result = hessian_extremes(mlp, None, digits, tol=1e-7, max_steps=200)
    assert _close(result.lambda_max, ev[-1]) and _close(result.lambda_min, ev[0])
    assert result.converged and result.top_residuals[0] <= 1e-7 * abs(ev[-1]) * 1.01


def test_lanczos_top_and_bottom_five_match_eigvalsh(mlp, digits, exact):
    _, ev = exact
    result = hessian_extremes(mlp, None, digits, k=5, tol=1e-7, max_steps=300)
    np.testing.assert_allclose(result.top, ev[::-1][:5], rtol=REL)
    np.testing.assert_allclose(result.bottom, ev[:5], rtol=REL)


def test_a_flat_vector_and_a_state_dict_give_the_same_extremes(mlp, digits):
    flat = WeightSpace.from_module(mlp).flatten(mlp)
    a = hessian_extremes(mlp, flat, digits, tol=1e-6)
    b = hessian_extremes(mlp, dict(mlp.named_parameters()), digits, tol=1e-6)
    assert a.lambda_max == pytest.approx(b.lambda_max, rel=1e-9)
    assert a.lambda_min == pytest.approx(b.lambda_min, rel=1e-9)


def test_a_positive_definite_hessian_has_a_positive_lambda_min_where_li_shift_fails(
    logistic, digits
):
    from scipy.sparse.linalg import eigsh

    wd = 0.5
    h = _referee(logistic, digits.train_x, digits.train_y, wd=wd)
    ev = np.linalg.eigvalsh(h)
    assert ev[0] > 0.02 * ev[-1]  # where Li et al.'s shift by 0.51 lambda_max breaks
    result = hessian_extremes(logistic, None, digits, wd=wd, tol=1e-7, max_steps=300)
    assert _close(result.lambda_min, ev[0]) and _close(result.lambda_max, ev[-1])
    shift = 0.51 * ev[-1]  # Li et al.: eigsh(H - shift I, which="LM") + shift
    li_min = eigsh(h - shift * np.eye(len(h)), k=1, which="LM")[0][0] + shift
    assert li_min == pytest.approx(ev[-1], rel=1e-6)  # it returns lambda_max again


def test_power_iteration_finds_both_ends_of_an_indefinite_spectrum(mlp, digits, exact):
    _, ev = exact
    result = hessian_extremes(mlp, None, digits, method="power", tol=1e-6, max_steps=3000)
    assert _close(result.lambda_max, ev[-1]) and _close(result.lambda_min, ev[0], 1e-3)


def test_power_iteration_with_deflation_finds_the_top_three(logistic, digits):
    h = _referee(logistic, digits.train_x, digits.train_y, wd=0.5)
    ev = np.linalg.eigvalsh(h)[::-1]
    op = hessian_operator(logistic, None, digits, wd=0.5)
    run = power_iteration(op.matvec, op.size, k=3, tol=1e-7, max_iter=3000)
    np.testing.assert_allclose(run.eigenvalues, ev[:3], rtol=1e-3)


def test_the_exact_trace_equals_the_full_hessians(mlp, digits, exact):
    h, _ = exact
    result = hessian_trace(mlp, None, digits, method="exact")
    assert _close(result.mean, np.trace(h))


def test_hutchinson_is_within_its_standard_error_which_has_the_theory_size(mlp, digits, exact):
    h, _ = exact
    result = hessian_trace(mlp, None, digits, tol=0.0, min_samples=200, max_samples=200)
    assert abs(result.mean - np.trace(h)) <= 4 * result.stderr
    off = (h**2).sum() - (np.diag(h) ** 2).sum()  # Var(v^T H v) = 2 sum_{i != j} H_ij^2
    assert result.stderr == pytest.approx(math.sqrt(2 * off / 200), rel=0.25)


def test_hutchinson_stops_once_the_standard_error_is_below_tol(mlp, digits):
    result = hessian_trace(mlp, None, digits, tol=0.1, min_samples=5, max_samples=400)
    assert 5 <= len(result.values) < 400
    assert result.stderr <= 0.1 * abs(result.mean)
    assert result.hvps == len(result.values)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=40), st.integers(0, 2**16))
def test_hutchinson_is_exact_on_diagonal_matrices(diagonal, seed):
    d = torch.tensor(diagonal, dtype=torch.float64)
    run = hutchinson(lambda v: d * v, len(d), min_samples=3, max_samples=3, seed=seed)
    assert run.mean == pytest.approx(float(d.sum()), abs=1e-9)
    assert run.stderr == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 40),
    st.integers(0, 2**16),
    st.sampled_from(["indefinite", "definite", "repeated"]),
)
def test_lanczos_finds_the_extremes_of_any_symmetric_matrix(n, seed, kind):
    gen = np.random.default_rng(seed)
    q, _ = np.linalg.qr(gen.normal(size=(n, n)))
    ev = gen.normal(size=n)
    if kind == "definite":
        ev = np.abs(ev) + 0.1
    if kind == "repeated":
        ev = np.round(ev)
    a = torch.tensor((q * ev) @ q.T)
    run = lanczos(lambda v: a @ v, n, tol=1e-10, max_steps=n, seed=seed)
    scale = np.abs(ev).max()
    assert abs(run.ritz[-1] - ev.max()) <= 1e-7 * scale
    assert abs(run.ritz[0] - ev.min()) <= 1e-7 * scale


def test_the_scale_does_not_depend_on_the_batch_size(mlp, digits):
    small = hessian_extremes(mlp, None, digits, batch_size=32, tol=1e-7)
    large = hessian_extremes(mlp, None, digits, batch_size=512, tol=1e-7)
    assert small.lambda_max == pytest.approx(large.lambda_max, rel=1e-5)
    assert small.lambda_min == pytest.approx(large.lambda_min, rel=1e-5)


def test_forward_over_reverse_and_double_backward_agree(mlp, digits):
    jvp = hessian_operator(mlp, None, digits, method="jvp")
    double = hessian_operator(mlp, None, digits, method="double")
    v = torch.randn(jvp.size)
    np.testing.assert_allclose(jvp.matvec(v).numpy(), double.matvec(v).numpy(), atol=1e-5)


def test_weight_decay_shifts_every_eigenvalue_by_wd(mlp, digits):
    plain = hessian_extremes(mlp, None, digits, tol=1e-7)
    decayed = hessian_extremes(mlp, None, digits, wd=0.3, tol=1e-7)
    assert decayed.lambda_max == pytest.approx(plain.lambda_max + 0.3, rel=1e-6)
    assert decayed.lambda_min == pytest.approx(plain.lambda_min + 0.3, rel=1e-5)


def test_params_ndim_gt_1_is_the_block_of_the_weight_matrices(mlp, digits):
    names = [n for n, p in mlp.named_parameters() if p.ndim > 1]
    h = _referee(mlp, digits.train_x, digits.train_y, names=names)
    op = hessian_operator(mlp, None, digits, params="ndim>1")
    assert op.size == len(h) < WeightSpace.from_module(mlp).size
    v = torch.randn(op.size, dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(v).numpy(), h @ v.numpy(), atol=1e-5)


def test_the_data_budget_is_a_stratified_subset_of_that_size(mlp, digits):
    op = hessian_operator(mlp, None, digits, samples=100)
    assert op.samples == 100
    share = torch.bincount(digits.train_y, minlength=10) * 100 / len(digits.train_y)
    assert torch.all((torch.bincount(op.y, minlength=10) - share).abs() <= 1)


def test_batchnorm_statistics_are_recomputed_at_the_point_and_buffers_kept(digits):
    torch.manual_seed(3)
    net = TinyNet(width=2)
    before = {n: b.clone() for n, b in net.named_buffers()}
    op = hessian_operator(net, None, digits)
    for n, b in net.named_buffers():  # the model's own buffers are left as they were
        assert torch.equal(b, before[n])
    ref = TinyNet(width=2)
    ref.load_state_dict(net.state_dict())
    recompute_bn(ref, digits.train_x)
    h = _referee(ref, digits.train_x, digits.train_y)
    v = torch.randn(op.size, dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(v).numpy(), h @ v.numpy(), atol=1e-4)


def test_batch_mode_batchnorm_differs_from_eval_mode_and_writes_no_buffers(digits):
    torch.manual_seed(3)
    net = TinyNet(width=2)
    before = {n: b.clone() for n, b in net.named_buffers()}
    batch = hessian_operator(net, None, digits, bn="batch", batch_size=60)
    evalm = hessian_operator(net, None, digits)
    v = torch.randn(batch.size)
    hb, he = batch.matvec(v), evalm.matvec(v)
    assert not torch.allclose(hb, he, rtol=1e-3)
    for n, b in net.named_buffers():
        assert torch.equal(b, before[n])
    assert all(m.training for m in net.modules())  # modes restored


def test_slq_quadrature_is_exact_for_the_moments_of_its_start_vectors(mlp, digits, exact):
    h, ev = exact
    density = hessian_density(mlp, None, digits, steps=30, runs=4, seed=7)
    gen = torch.Generator().manual_seed(7)
    vs = [rademacher(len(h), gen).numpy() for _ in range(4)]
    for j in range(5):  # degree <= 2 * steps - 1: Gauss quadrature is exact
        hj = np.linalg.matrix_power(h, j)
        expected = np.mean([v @ hj @ v / (v @ v) for v in vs])
        assert density.moment(j) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    lo, hi = density.support()
    assert ev[0] - 1e-6 <= lo and hi <= ev[-1] + 1e-6


def test_slq_moments_estimate_the_exact_spectrums_within_their_sampling_error(mlp, digits, exact):
    h, ev = exact
    runs, p = 12, len(h)
    density = hessian_density(mlp, None, digits, steps=30, runs=runs, seed=1)
    assert density.moment(0) == pytest.approx(1.0, abs=1e-12)
    for j in (1, 2, 3):  # (1/P) sum lambda^j; one run's v^T H^j v / P has variance
        hj = np.linalg.matrix_power(h, j)  # 2 sum_{a != b} (H^j)_ab^2 / P^2 (Rademacher v)
        stderr = math.sqrt(2 * ((hj**2).sum() - (np.diag(hj) ** 2).sum()) / runs) / p
        assert abs(density.moment(j) - np.mean(ev**j)) <= 4 * stderr
    grid = np.linspace(ev[0] - 1, ev[-1] + 1, 4000)
    assert np.trapezoid(density.density(grid, sigma=0.02), grid) == pytest.approx(1.0, rel=1e-3)


def test_directional_curvature_is_the_rayleigh_quotient(mlp, digits, exact):
    h, _ = exact
    d = torch.randn(len(h))
    c = directional_curvature(mlp, None, digits, [d, 2 * d])
    dn = d.double().numpy()
    assert c[0] == pytest.approx(dn @ h @ dn / (dn @ dn), rel=1e-4)
    assert c[1] == pytest.approx(c[0], rel=1e-9)


def test_curvature_results_save_and_load_exactly(mlp, digits, tmp_path):
    ext = hessian_extremes(mlp, None, digits, k=2, tol=1e-4)
    ext.save(tmp_path / "e")
    assert HessianExtremes.load(tmp_path / "e") == ext
    tr = hessian_trace(mlp, None, digits, min_samples=3, max_samples=3)
    tr.save(tmp_path / "t")
    assert HessianTrace.load(tmp_path / "t") == tr
    dens = hessian_density(mlp, None, digits, steps=5)
    dens.save(tmp_path / "d")
    assert SpectralDensity.load(tmp_path / "d") == dens


def test_bad_options_are_refused_with_the_valid_ones(mlp, digits):
    with pytest.raises(ValueError, match="recompute"):
        hessian_operator(mlp, None, digits, bn="origin")
    with pytest.raises(ValueError, match="ndim>1"):
        hessian_operator(mlp, None, digits, params="weights")
    with pytest.raises(TypeError, match="samples"):
        hessian_extremes(mlp, None, digits, sample=10)
