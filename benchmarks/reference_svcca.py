"""google/svcca's CCA, SVCCA and PWCCA formulas, re-implemented from its description (numpy,
float64, activations as (neurons, samples) as there), for benchmarks/bench_similarity.py.

What it computes, step by step (cca_core.get_cca_similarity, the tutorial's SVCCA and
pwcca.compute_pwcca of google/svcca, 2018-2021):
- covariances of the stacked activations (numpy.cov: centred, divided by m - 1); the xx block
  divided by its largest absolute entry, yy by its, xy by the square root of both;
- neurons whose rescaled variance is below epsilon dropped, epsilon added to the diagonals;
- Sigma^{-1/2} as the eigen-decomposition square root of the pseudo-inverse;
- the singular values of Sxx^{-1/2} Sxy Syy^{-1/2} are the coefficients; its "mean" averages
  only the first i of them, i the first index where their cumulative sum reaches `threshold`
  (0.98) of the total (so it is not the mean of the coefficients);
- SVCCA (the tutorial): each side centred per neuron, SVD, the top `dims` singular
  directions s_k v_kᵀ kept (a fixed count there), then the CCA above;
- PWCCA: the side with fewer kept neurons is weighted (x on a tie); its canonical directions
  are u-coefficients times the *unwhitened* centred activations plus the neuron means; their
  QR basis P, and weights sum_j |Pᵀ a_j| over the raw neurons a_j; when y has fewer neurons
  the reference indexes x's activations with y's mask (an IndexError or a wrong result).
"""

from __future__ import annotations

import numpy as np


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return v @ np.diag(np.sqrt(w)) @ v.conj().T  # NaN for negative eigenvalues, as there


def cca_similarity(
    acts1: np.ndarray, acts2: np.ndarray, epsilon: float = 0.0, threshold: float = 0.98
) -> dict:
    """acts1 (p, m), acts2 (q, m): the reference's result fields that the benchmark reads."""
    p = len(acts1)
    cov = np.cov(acts1, acts2)
    sxx, sxy, syy = cov[:p, :p], cov[:p, p:], cov[p:, p:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    x_idx = np.abs(np.diagonal(sxx)) >= epsilon
    y_idx = np.abs(np.diagonal(syy)) >= epsilon
    sxx, syy, sxy = sxx[x_idx][:, x_idx], syy[y_idx][:, y_idx], sxy[x_idx][:, y_idx]
    sxx = sxx + epsilon * np.eye(len(sxx))
    syy = syy + epsilon * np.eye(len(syy))
    inv_xx, inv_yy = _sqrt_psd(np.linalg.pinv(sxx)), _sqrt_psd(np.linalg.pinv(syy))
    u, s, _ = np.linalg.svd(inv_xx @ sxy @ inv_yy)
    s = np.abs(s)
    cut = next(i for i in range(len(s) + 1) if np.sum(s[:i]) / np.sum(s) >= threshold)
    return {
        "coefs": s,
        "mean": float(np.mean(s[:cut])),
        "coef_x": u.T,
        "x_idxs": x_idx,
        "y_idxs": y_idx,
        "means1": acts1.mean(1, keepdims=True),
    }


def svcca_tutorial(acts1: np.ndarray, acts2: np.ndarray, dims1: int, dims2: int) -> dict:
    """The tutorial's SVCCA: top `dims` SVD directions of each centred side, then CCA."""

    def reduce(acts: np.ndarray, dims: int) -> np.ndarray:
        centred = acts - acts.mean(1, keepdims=True)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        return s[:dims, None] * vt[:dims]

    return cca_similarity(reduce(acts1, dims1), reduce(acts2, dims2), epsilon=1e-10)


def pwcca_reference(acts1: np.ndarray, acts2: np.ndarray, epsilon: float = 0.0) -> float:
    """compute_pwcca's weighted mean (the x branch: x has no more kept neurons than y)."""
    r = cca_similarity(acts1, acts2, epsilon=epsilon)
    if r["x_idxs"].sum() > r["y_idxs"].sum():
        raise IndexError("the reference indexes acts1 with acts2's mask here")
    acts = acts1[r["x_idxs"]]
    directions = r["coef_x"] @ (acts - r["means1"]) + r["means1"]
    basis, _ = np.linalg.qr(directions.T)
    weights = np.abs(basis.T @ acts.T).sum(1)
    weights = weights / weights.sum()
    return float(np.sum(weights * r["coefs"]))
