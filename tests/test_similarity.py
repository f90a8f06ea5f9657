"""The similarity measures: invariances, identities, the papers' formulas, degenerate input."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modeconn.similarity.cca import principal
from modeconn.similarity.measures import (
    MEASURES,
    MinibatchCKA,
    Moments,
    SimilarityWarning,
    cca,
    debiased_cka,
    linear_cka,
    minibatch_cka,
    permutation_baseline,
    pwcca,
    rbf_cka,
    svcca,
)

FAST = settings(max_examples=15, deadline=None)


def _pair(seed: int, n: int = 200, p: int = 12, q: int = 9, noise: float = 0.5):
    """Y is a linear map of X plus noise, X anisotropic: a related but imperfect pair."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, p)) * np.linspace(0.3, 3.0, p)
    y = x @ g.normal(size=(p, q)) + noise * g.normal(size=(n, q))
    return x, y


def _orthogonal(seed: int, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


@FAST
@given(st.integers(0, 10_000), st.floats(0.01, 100.0))
def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling(seed, scale):
    x, y = _pair(seed)
    moved = scale * y @ _orthogonal(seed + 1, y.shape[1])
    for measure in (linear_cka, debiased_cka, rbf_cka):
        assert measure(x, moved) == pytest.approx(measure(x, y), abs=1e-9)


def test_cka_is_not_invariant_to_a_general_invertible_map():
    x, y = _pair(0)
    stretch = np.diag(np.linspace(0.1, 10.0, y.shape[1])) @ _orthogonal(1, y.shape[1])
    assert abs(linear_cka(x, y @ stretch) - linear_cka(x, y)) > 0.05


@FAST
@given(st.integers(0, 10_000))
def test_cca_is_invariant_to_invertible_linear_maps(seed):
    x, y = _pair(seed)
    g = np.random.default_rng(seed + 7)
    a = g.normal(size=(x.shape[1],) * 2) + 3 * np.eye(x.shape[1])
    b = g.normal(size=(y.shape[1],) * 2) + 3 * np.eye(y.shape[1])
    np.testing.assert_allclose(cca(x @ a + 5.0, y @ b - 2.0), cca(x, y), atol=1e-8)
    # PWCCA weights by X's neurons, so only maps of the other side leave it unchanged
    assert pwcca(x, y @ b) == pytest.approx(pwcca(x, y), abs=1e-8)


def test_svcca_keeping_all_variance_is_the_mean_cca():
    x, y = _pair(3)
    assert svcca(x, y, keep=1.0) == pytest.approx(np.mean(cca(x, y)), abs=1e-12)
    assert svcca(x, y, keep=0.9) != pytest.approx(np.mean(cca(x, y)), abs=1e-3)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_identical_inputs_give_one(name):
    x, _ = _pair(4, n=300)
    assert MEASURES[name](x, x) == pytest.approx(1.0, abs=1e-9)


def test_cca_of_identical_inputs_is_all_ones():
    x, _ = _pair(5)
    np.testing.assert_allclose(cca(x, x), np.ones(x.shape[1]), atol=1e-9)


def _paper_pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """Morcos et al. 2018 from the covariances: canonical variates h_i = Xc Sxx^{-1/2} u_i,
    alpha_i = sum_j |<h_i / ||h_i||, x_j>|, the weighted mean of the correlations."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    n = len(x)
    sxx, syy, sxy = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1), xc.T @ yc / (n - 1)

    def inv_sqrt(s):
        w, v = np.linalg.eigh(s)
        return v @ np.diag(w**-0.5) @ v.T

    u, rho, _ = np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), full_matrices=False)
    h = xc @ inv_sqrt(sxx) @ u
    h /= np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ xc).sum(1)
    return float(alpha @ rho / alpha.sum())


def test_pwcca_agrees_with_the_papers_formula_from_covariances():
    x, y = _pair(6, p=9, q=12)  # fewer neurons on the weighted side
    assert pwcca(x, y) == pytest.approx(_paper_pwcca(x, y), abs=1e-10)
    x, y = _pair(7, p=12, q=9)  # more neurons on the weighted side (google/svcca fails here)
    assert pwcca(x, y) == pytest.approx(_paper_pwcca(x, y), abs=1e-10)


def test_pwcca_side_y_weights_by_the_second_inputs_neurons():
    x, y = _pair(8)
    assert pwcca(x, y, side="y") == pytest.approx(pwcca(y, x), abs=1e-12)
    assert pwcca(x, y) != pytest.approx(pwcca(y, x), abs=1e-4)


def test_svcca_keeps_directions_by_squared_singular_values():
    # singular values 10, 3, 1, 0.5: squared, 99 % is reached with 3 directions (110 of
    # 110.25); unsquared (the tutorial's rule) it would take all 4
    base = np.random.default_rng(0).normal(size=(500, 4))
    u, _ = np.linalg.qr(base - base.mean(0))  # centred orthonormal columns
    x = u * np.array([10.0, 3.0, 1.0, 0.5])
    vectors, s = principal(Moments.of(x, x).cxx, keep=0.99)
    assert vectors.shape[1] == 3
    np.testing.assert_allclose(s.numpy(), [10.0, 3.0, 1.0], rtol=1e-6)


def test_minibatch_cka_converges_to_full_cka():
    x, y = _pair(9, n=12_000, p=10, q=8, noise=2.0)
    full = linear_cka(x, y)
    errors = [abs(minibatch_cka(x, y, batch_size=b) - full) for b in (50, 400, 3000)]
    assert errors[-1] < 0.01
    assert errors[0] > errors[-1]
    # one batch holding everything is the debiased CKA
    assert minibatch_cka(x, y, batch_size=len(x)) == pytest.approx(debiased_cka(x, y), abs=1e-12)


def test_minibatch_cka_keeps_each_batchs_normalisation_so_batch_sizes_can_mix():
    x, y = _pair(10, n=700)
    acc = MinibatchCKA()
    for lo, hi in ((0, 100), (100, 500), (500, 700)):
        acc.update(x[lo:hi], y[lo:hi])
    hsic = [_raw_hsic(x[lo:hi], y[lo:hi]) for lo, hi in ((0, 100), (100, 500), (500, 700))]
    xx = [_raw_hsic(x[lo:hi], x[lo:hi]) for lo, hi in ((0, 100), (100, 500), (500, 700))]
    yy = [_raw_hsic(y[lo:hi], y[lo:hi]) for lo, hi in ((0, 100), (100, 500), (500, 700))]
    assert acc.value() == pytest.approx(sum(hsic) / math.sqrt(sum(xx) * sum(yy)), rel=1e-9)


def _raw_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC written out on uncentred Grams (the textbook form)."""
    k, ll = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(ll, 0.0)
    n, one = len(k), np.ones(len(k))
    value = np.trace(k @ ll) + (one @ k @ one) * (one @ ll @ one) / ((n - 1) * (n - 2))
    return (value - 2.0 / (n - 2) * one @ k @ ll @ one) / (n * (n - 3))


def test_debiased_cka_equals_the_textbook_estimator_on_shifted_features():
    x, y = _pair(11, n=150)
    x, y = x + 3.0, y - 1.5  # centring inside debiased_cka must not change the estimator
    want = _raw_hsic(x, y) / math.sqrt(_raw_hsic(x, x) * _raw_hsic(y, y))
    assert debiased_cka(x, y) == pytest.approx(want, rel=1e-8)


def test_no_nan_on_a_relu_layer_with_a_mean_fifty_times_its_spread():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(512, 64, generator=g)
    x = torch.relu(50.0 + base).float()  # float32, as a layer gives it
    y = torch.relu(50.0 + base @ torch.randn(64, 32, generator=g) / 8).float()
    reference = {name: fn(x - 50.0, y - 50.0) for name, fn in MEASURES.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", SimilarityWarning)
        for name, fn in MEASURES.items():
            value = fn(x, y)
            assert math.isfinite(value), name
            assert value == pytest.approx(reference[name], abs=1e-5), name


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_a_dead_layer_gives_nan_with_a_warning_naming_it(name):
    x, y = np.zeros((100, 6)), _pair(12, n=100)[1]
    with pytest.warns(SimilarityWarning, match="layer 'fc1'.*constant"):
        assert math.isnan(MEASURES[name](x, y, layer="fc1"))


def test_cca_with_fewer_samples_than_directions_is_nan_not_ones():
    x, y = _pair(13, n=15, p=10, q=10)
    with pytest.warns(SimilarityWarning, match="samples"):
        assert math.isnan(svcca(x, y, keep=1.0, layer="conv2"))


def test_streamed_moments_equal_the_whole_pair():
    x, y = _pair(14, n=500)
    x = x + 100.0  # large means: the merge must not lose the covariance
    streamed = Moments()
    for start in range(0, 500, 64):
        streamed.update(x[start : start + 64], y[start : start + 64])
    whole = Moments.of(x, y)
    np.testing.assert_allclose(streamed.cca(), whole.cca(), atol=1e-10)
    assert streamed.svcca(0.99) == pytest.approx(whole.svcca(0.99), abs=1e-10)
    assert streamed.linear_cka() == pytest.approx(linear_cka(x, y), abs=1e-12)


def test_rbf_cka_with_a_wide_kernel_approaches_linear_cka():
    x, y = _pair(15, n=250)
    assert rbf_cka(x, y, threshold=100.0) == pytest.approx(linear_cka(x, y), abs=1e-3)
    assert abs(rbf_cka(x, y, threshold=0.3) - linear_cka(x, y)) > 1e-2


def test_permutation_baseline_sits_below_the_paired_similarity():
    x, y = _pair(16, n=300)
    base = permutation_baseline("linear_cka", x, y, permutations=5)
    assert base.shape == (5,)
    assert base.max() < 0.2 < linear_cka(x, y)


def test_measures_refuse_pairs_with_different_samples():
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(np.zeros((10, 3)), np.zeros((11, 3)))
    with pytest.raises(ValueError, match="flatten"):
        svcca(np.zeros((10, 3, 2)), np.zeros((10, 3)))
