"""The Hessian's spectral density by stochastic Lanczos quadrature (SLQ).

Golub & Meurant ("Matrices, Moments and Quadrature", 1994/2010), Ubaru, Chen & Saad 2017,
and for neural networks Ghorbani, Krishnan & Xiao 2019 and PyHessian (Yao et al. 2020): for a
start vector v with ||v|| = 1, m Lanczos steps give T_m = S diag(theta) S^T, and

    v^T f(H) v  ~=  sum_i tau_i^2 f(theta_i),   tau_i = S[0, i],

exact for polynomials f of degree <= 2m - 1. Averaged over random v (Rademacher, normalised),
E[v^T f(H) v] = tr(f(H)) / P, so the nodes theta and weights tau^2 of each run are a discrete
measure whose moments estimate the spectrum's: `moment(j)` ~ (1/P) sum_k lambda_k^j. A
density for plotting is that measure smoothed by a Gaussian kernel.

Differences from PyHessian's `density`: the tridiagonal T is diagonalised by a symmetric
eigensolver (numpy `eigh`; theirs called the removed general `torch.eig`), the Lanczos basis is
re-orthogonalised in float64, and the kernel width is an explicit fraction of the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from modeconn.curvature.lanczos import Matvec, lanczos, rademacher
from modeconn.io.store import SavedResult, plain_meta


@dataclass(eq=False)
class SpectralDensity(SavedResult):
    """SLQ nodes (runs, m) and weights (runs, m) (each run's weights sum to 1) of a (P, P)
    Hessian, `dim` = P. `moment(j)` estimates (1/P) tr(H^j); `density(grid)` is the smoothed
    density on a grid of eigenvalues (it integrates to 1)."""

    nodes: np.ndarray
    weights: np.ndarray
    dim: int
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "SpectralDensity"

    def __post_init__(self) -> None:
        self.nodes = np.atleast_2d(np.asarray(self.nodes, dtype=np.float64))
        self.weights = np.atleast_2d(np.asarray(self.weights, dtype=np.float64))
        if self.nodes.shape != self.weights.shape:
            raise ValueError(f"nodes {self.nodes.shape} and weights {self.weights.shape} differ")
        self.dim = int(self.dim)
        self.meta = plain_meta(self.meta)

    def moment(self, j: int) -> float:
        """The SLQ estimate of (1/P) sum_k lambda_k^j (mean over the runs)."""
        return float(np.mean(np.sum(self.weights * self.nodes**j, axis=1)))

    def trace(self) -> float:
        """P * moment(1): the estimate of tr(H)."""
        return self.dim * self.moment(1)

    def support(self) -> tuple[float, float]:
        """The smallest and largest node (Ritz value) over the runs."""
        return float(self.nodes.min()), float(self.nodes.max())

    def density(self, grid: np.ndarray, sigma: float = 0.01) -> np.ndarray:
        """The measure smoothed by a Gaussian of width sigma * (max node - min node), on the
        eigenvalue grid (G,): sum_i tau_i^2 N(t; theta_i, s^2), averaged over runs."""
        grid = np.asarray(grid, dtype=np.float64)
        lo, hi = self.support()
        s = max(sigma * (hi - lo), 1e-12 * max(abs(lo), abs(hi), 1.0))
        z = (grid[:, None, None] - self.nodes[None]) / s
        kernel = np.exp(-0.5 * z**2) / (s * np.sqrt(2 * np.pi))
        return np.mean(np.sum(kernel * self.weights[None], axis=2), axis=1)


def slq(
    matvec: Matvec,
    size: int,
    *,
    steps: int = 80,
    runs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    meta: dict[str, Any] | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature: `runs` Lanczos runs of `steps` products (fewer if the
    Krylov space is exhausted) from normalised Rademacher vectors; returns the nodes and
    weights (runs padded with zero-weight nodes to the same length)."""
    gen = torch.Generator().manual_seed(int(seed))
    nodes, weights = [], []
    for r in range(runs):
        v = rademacher(size, gen, device)
        run = lanczos(matvec, size, tol=0.0, max_steps=steps, start=v, seed=seed + r, device=device)
        nodes.append(run.ritz)
        weights.append(run.first)
    m = max(len(n) for n in nodes)
    pad = lambda a, fill: np.concatenate([a, np.full(m - len(a), fill)])  # noqa: E731
    nodes = [pad(n, n[-1]) for n in nodes]
    weights = [pad(w, 0.0) for w in weights]
    return SpectralDensity(np.stack(nodes), np.stack(weights), size, meta or {})
