"""Estimators on a symmetric operator given only by products v -> A v: Lanczos, power
iteration with deflation, and Hutchinson's trace.

All take `matvec` ((P,) tensor -> (P,) float64 tensor) and the size P, and work in float64.

- `lanczos` (Lanczos 1950; Golub & Van Loan, Matrix Computations, 4th ed., sec. 10.1): the
  Krylov basis with full re-orthogonalisation (classical Gram-Schmidt, twice), so the Ritz
  values at both ends of the spectrum converge together: lambda_max and lambda_min (and the
  top / bottom k) from one run, whatever their signs. Stopping rule: the residual of a Ritz
  pair (theta, y), ||A y - theta y|| = beta_{j+1} |s_{j,i}| (the last component of the
  eigenvector of the tridiagonal T_j), is below tol * max|theta| for every wanted pair; then
  |lambda - theta| <= that residual. The residuals are returned.
- `power_iteration` (PyHessian's `eigenvalues`, with a residual stopping rule instead of a
  relative change of the Rayleigh quotient): the k eigenvalues of largest magnitude, each
  found on the complement of the ones before (deflation by orthogonalisation).
- `hutchinson` (Hutchinson 1990; Avron & Toledo 2011): tr(A) = E[v^T A v] for Rademacher v;
  samples are drawn until the standard error of the mean is below tol * |mean| (at least
  `min_samples`), and the standard error is returned with the mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Matvec = Callable[[Tensor], Tensor]


def rademacher(size: int, gen: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """A (size,) float64 vector of independent +-1 entries."""
    bits = torch.randint(0, 2, (size,), generator=gen, dtype=torch.int8)
    return (bits.to(torch.float64) * 2 - 1).to(device)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@dataclass
class LanczosRun:
    """What `lanczos` returns. ritz (m,): the Ritz values, ascending; residuals (m,): their
    residual norms ||A y - theta y||; alpha (m,), beta (m - 1,): the tridiagonal T;
    first (m,): the squared first components of T's eigenvectors (the quadrature weights of
    stochastic Lanczos quadrature); vectors (P, r) the requested Ritz vectors or None;
    steps: products used; converged: the stopping rule held (or the space was exhausted)."""

    ritz: np.ndarray
    residuals: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    first: np.ndarray
    steps: int
    converged: bool
    vectors: Tensor | None = None


def _tridiagonal(alpha: list[float], beta: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal T (numpy eigh)."""
    t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    return np.linalg.eigh(t)


def lanczos(
    matvec: Matvec,
    size: int,
    *,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-5,
    max_steps: int = 100,
    min_steps: int = 1,
    start: Tensor | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    vectors: bool = False,
    check_every: int = 1,
) -> LanczosRun:
    """Lanczos with full re-orthogonalisation on the symmetric (P, P) operator `matvec`.

    k / which: the pairs the stopping rule waits for: the k largest ("top"), the k smallest
    ("bottom") or both ends ("both"). tol: relative to the largest |Ritz value|; tol=0 runs
    `max_steps` steps (stochastic Lanczos quadrature). start: the first vector (default a
    seeded Gaussian one). vectors=True also returns the Ritz vectors of the wanted pairs.
    Memory: max_steps basis vectors of P float64 numbers.
    """
    if which not in ("top", "bottom", "both"):
        raise ValueError(f"which must be 'top', 'bottom' or 'both', got {which!r}")
    max_steps = int(min(max_steps, size))
    if k < 1 or k > max_steps:
        raise ValueError(f"k must be between 1 and max_steps={max_steps}, got {k}")
    gen = _generator(seed)
    q = start.to(device, torch.float64) if start is not None else None
    if q is None:
        q = torch.randn(size, generator=gen, dtype=torch.float64).to(device)
    q = q / torch.linalg.vector_norm(q)
    basis = [q]
    alpha: list[float] = []
    beta: list[float] = []
    converged = exhausted = False
    evals = evecs = residuals = None
    steps = 0
    for j in range(max_steps):
        w = matvec(basis[-1]).to(torch.float64)
        alpha.append(torch.dot(w, basis[-1]).item())
        Q = torch.stack(basis)  # (j+1, P)
        for _ in range(2):  # full re-orthogonalisation, twice (Kahan's "twice is enough")
            w = w - Q.T @ (Q @ w)
        b = torch.linalg.vector_norm(w).item()
        evals, evecs = _tridiagonal(alpha, beta)
        scale = max(float(np.max(np.abs(evals))), 1e-300)
        residuals = b * np.abs(evecs[-1])  # ||A y_i - theta_i y_i|| = beta_{j+1} |s_{j,i}|
        steps = j + 1
        if b <= 1e-12 * scale or steps == size:  # an invariant subspace: exact Ritz values
            converged = exhausted = True
            break
        enough = steps >= max(min_steps, 2 * k if which == "both" else k)
        wanted = _wanted(len(evals), k, which)
        checked = tol > 0 and enough and steps % check_every == 0
        if checked and np.all(residuals[wanted] <= tol * scale):
            converged = True
            break
        beta.append(b)
        basis.append(w / b)
    if exhausted:
        residuals = np.zeros_like(residuals)
    ritz_vectors = None
    if vectors:
        Q = torch.stack(basis[:steps])
        idx = _wanted(len(evals), k, which)
        s = torch.as_tensor(evecs[:, idx], dtype=torch.float64, device=Q.device)
        ritz_vectors = Q.T @ s
    return LanczosRun(
        ritz=evals,
        residuals=residuals,
        alpha=np.asarray(alpha),
        beta=np.asarray(beta[: steps - 1]),
        first=evecs[0] ** 2,
        steps=steps,
        converged=converged,
        vectors=ritz_vectors,
    )


def _wanted(m: int, k: int, which: str) -> np.ndarray:
    k = min(k, m)
    top, bottom = np.arange(m - k, m), np.arange(k)
    if which == "top":
        return top
    if which == "bottom":
        return bottom
    return np.unique(np.concatenate([bottom, top]))


@dataclass
class PowerRun:
    """What `power_iteration` returns: eigenvalues (k,) of largest magnitude in the order
    found, their residuals ||A u - lambda u|| (k,), iterations (k,), vectors (P, k)."""

    eigenvalues: np.ndarray
    residuals: np.ndarray
    iterations: np.ndarray
    vectors: Tensor


def power_iteration(
    matvec: Matvec,
    size: int,
    *,
    k: int = 1,
    tol: float = 1e-5,
    max_iter: int = 200,
    shift: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> PowerRun:
    """The k eigenvalues of A - shift * I of largest magnitude (plus shift), by power
    iteration with deflation: each vector is kept orthogonal to the ones found before. Stops
    when ||A u - lambda u|| <= tol * |lambda| (or after max_iter products per eigenvalue)."""
    gen = _generator(seed)
    found: list[Tensor] = []
    values, residuals, iterations = [], [], []
    for _ in range(k):
        u = torch.randn(size, generator=gen, dtype=torch.float64).to(device)
        lam, res, used = 0.0, math.inf, 0
        for used in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
            for f in found:
                u = u - torch.dot(f, u) * f
            u = u / torch.linalg.vector_norm(u)
            au = matvec(u).to(torch.float64) - shift * u
            for f in found:  # deflation: A restricted to the complement of the found vectors
                au = au - torch.dot(f, au) * f
            lam = torch.dot(u, au).item()
            res = torch.linalg.vector_norm(au - lam * u).item()
            if res <= tol * abs(lam):
                break
            u = au
        found.append(u)
        values.append(lam + shift)
        residuals.append(res)
        iterations.append(used)
    return PowerRun(
        np.asarray(values), np.asarray(residuals), np.asarray(iterations), torch.stack(found, 1)
    )


@dataclass
class TraceRun:
    """What `hutchinson` returns: the mean of v^T A v, its standard error, and the samples."""

    mean: float
    stderr: float
    values: np.ndarray


def hutchinson(
    matvec: Matvec,
    size: int,
    *,
    tol: float = 1e-2,
    min_samples: int = 10,
    max_samples: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TraceRun:
    """Hutchinson's estimate of tr(A) with Rademacher vectors: samples until the standard
    error of the mean is at most tol * |mean| (and at least min_samples, >= 2), or
    max_samples. The variance of one sample is 2 * sum_{i != j} A_ij^2."""
    if min_samples < 2 or max_samples < min_samples:
        raise ValueError(f"need 2 <= min_samples <= max_samples, got {min_samples}, {max_samples}")
    gen = _generator(seed)
    values: list[float] = []
    mean = stderr = math.nan
    while len(values) < max_samples:
        v = rademacher(size, gen, device)
        values.append(torch.dot(v, matvec(v).to(torch.float64)).item())
        if len(values) >= min_samples:
            arr = np.asarray(values)
            mean, stderr = float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(len(arr)))
            if stderr <= tol * abs(mean):
                break
    arr = np.asarray(values)
    mean, stderr = float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(len(arr)))
    return TraceRun(mean, stderr, arr)
