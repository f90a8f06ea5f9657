"""Curvature at a point: the Hessian's extreme eigenvalues, its trace and its spectrum.

Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets", code tomgoldstein/loss-
landscape, `hess_vec_prod.py`) measure non-convexity by |lambda_min / lambda_max|; PyHessian
(Yao et al. 2020, amirgholami/PyHessian) gives the top eigenvalues, the trace and the spectral
density. Here, for the mean training loss at any weight point (`modeconn.curvature.hvp`):

- `hessian_extremes`: lambda_max and lambda_min together (and the top / bottom k) from one
  Lanczos run with full re-orthogonalisation, with residual bounds; or (method="power") power
  iteration on H, then on H - mu I with mu the first result, which gives the other end of the
  spectrum for any signs.
- `hessian_trace`: Hutchinson's estimate with its standard error (method="exact": P products
  with unit vectors, for small networks).
- `hessian_density`: stochastic Lanczos quadrature (`modeconn.curvature.density`).
- `directional_curvature`: d^T H d / ||d||^2 along given directions (one product each).

Where we differ from the references, deliberately:
- Li et al. sum per-batch products without dividing (eigenvalues scale with the number of
  batches; only their ratio means anything): here H is the Hessian of the mean loss.
- Li et al. find lambda_min by `eigsh(H - 0.51 lambda_max I, which="LM")`, right only when
  lambda_min < -0.02 lambda_max (for a positive-definite H it returns lambda_max again, and
  tol=1e-2 bounds the error by 1 % of |lambda|): here both ends come from one Krylov space.
- PyHessian forces `model.eval()` with whatever BatchNorm statistics the model holds; here
  they are recomputed at the point (or the batch's own, bn="batch"). Its power iteration
  returns the largest |lambda| (negative, possibly) and no lambda_min, its trace stops when two
  consecutive running means agree to tol (after 2 samples, possibly) and returns the samples.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from modeconn.curvature.density import SpectralDensity, slq
from modeconn.curvature.hvp import HessianOperator, WeightsLike, hessian_operator, products_shown
from modeconn.curvature.lanczos import hutchinson, lanczos, power_iteration
from modeconn.curves.weights import WeightSpace
from modeconn.io.store import SavedResult, plain_meta

_OPERATOR_OPTIONS = ("samples", "batch_size", "wd", "bn", "bn_samples", "params", "hvp", "seed")


@dataclass(frozen=True)
class HessianSettings:
    """The options of a curvature job that travel together (the maps and the app).

    Operator (`hessian_operator`): samples (None: all), batch_size, wd (Hessian of
    0.5 wd ||w||^2 added), bn ("recompute" | "batch" | "fixed"), bn_samples, params ("all" |
    "ndim>1" | names), hvp ("auto" | "jvp" | "double"), seed (the subset and the start
    vectors). Extremes: k, tol (Lanczos residual / max|theta|), max_steps. Trace: trace (also
    estimate it), trace_tol (stderr / |mean|), trace_min, trace_max (samples).
    """

    samples: int | None = None
    batch_size: int = 128
    wd: float = 0.0
    bn: str = "recompute"
    bn_samples: int | None = None
    params: str | tuple[str, ...] = "all"
    hvp: str = "auto"
    seed: int = 0
    k: int = 1
    tol: float = 1e-4
    max_steps: int = 100
    trace: bool = False
    trace_tol: float = 0.05
    trace_min: int = 10
    trace_max: int = 100

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> HessianSettings:
        """From a plain mapping (the app's `hessian` block); unknown keys are refused."""
        cfg = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(
                f"unknown hessian option {unknown[0]!r}; valid options: {', '.join(sorted(known))}"
            )
        if isinstance(cfg.get("params"), list):
            cfg["params"] = tuple(cfg["params"])
        return cls(**cfg)

    def operator_options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _OPERATOR_OPTIONS}

    def meta(self) -> dict[str, Any]:
        return plain_meta(dataclasses.asdict(self))


@dataclass(eq=False)
class HessianExtremes(SavedResult):
    """lambda_min and lambda_max of the Hessian of the mean loss; top (k,) descending and
    bottom (k,) ascending eigenvalue estimates with their residual bounds (|lambda - theta| <=
    residual); hvps: products used; ratio: |lambda_min / lambda_max| (Li et al.'s map)."""

    lambda_min: float
    lambda_max: float
    top: np.ndarray
    bottom: np.ndarray
    top_residuals: np.ndarray
    bottom_residuals: np.ndarray
    hvps: int
    converged: bool
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "HessianExtremes"

    @property
    def ratio(self) -> float:
        return abs(self.lambda_min / self.lambda_max) if self.lambda_max else math.inf


@dataclass(eq=False)
class HessianTrace(SavedResult):
    """Hutchinson's estimate of tr(H): mean, its standard error, and the samples v^T H v."""

    mean: float
    stderr: float
    values: np.ndarray
    hvps: int
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "HessianTrace"


def _operator(model, weights, data, options: Mapping[str, Any]) -> HessianOperator:
    unknown = sorted(set(options) - set(_OPERATOR_OPTIONS) - {"buffers"})
    if unknown:
        raise TypeError(
            f"unknown option {unknown[0]!r}; the Hessian's options: {', '.join(_OPERATOR_OPTIONS)}"
        )
    options = dict(options)
    method = options.pop("hvp", "auto")
    return hessian_operator(model, weights, data, method=method, **options)


def extremes_of(
    op: HessianOperator,
    *,
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-5,
    max_steps: int = 100,
    seed: int = 0,
) -> HessianExtremes:
    """`hessian_extremes` on an existing operator."""
    began, hvps = time.perf_counter(), op.hvps
    device = op.vector.device
    if method == "lanczos":
        run = lanczos(
            op.matvec, op.size, k=k, tol=tol, max_steps=max_steps, seed=seed, device=device
        )
        k = min(k, len(run.ritz))
        top, bottom = run.ritz[::-1][:k], run.ritz[:k]
        top_res, bottom_res = run.residuals[::-1][:k], run.residuals[:k]
        converged, steps = run.converged, run.steps
    elif method == "power":
        opts = dict(tol=tol, max_iter=max_steps, seed=seed, device=device)
        first = power_iteration(op.matvec, op.size, k=k, **opts)
        mu = float(first.eigenvalues[0])
        other = power_iteration(op.matvec, op.size, k=k, shift=mu, **opts)
        runs = sorted([first, other], key=lambda r: -float(r.eigenvalues[0]))
        top, bottom = runs[0].eigenvalues, runs[1].eigenvalues
        top_res, bottom_res = runs[0].residuals, runs[1].residuals
        converged = bool(
            np.all(first.iterations < max_steps) and np.all(other.iterations < max_steps)
        )
        steps = int(first.iterations.sum() + other.iterations.sum())
    else:
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    meta = {
        "estimator": method,
        "tol": tol,
        "max_steps": max_steps,
        "steps": int(steps),
        "seconds": time.perf_counter() - began,
        "dim": op.size,
        "bn": op.bn,
        "wd": op.wd,
        "hvp": op.method,
        **op.info,
    }
    return HessianExtremes(
        lambda_min=float(bottom[0]),
        lambda_max=float(top[0]),
        top=np.asarray(top),
        bottom=np.asarray(bottom),
        top_residuals=np.asarray(top_res),
        bottom_residuals=np.asarray(bottom_res),
        hvps=op.hvps - hvps,
        converged=bool(converged),
        meta=meta,
    )


def hessian_extremes(
    model: nn.Module,
    weights: WeightsLike,
    data: Any,
    *,
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-5,
    max_steps: int = 100,
    **options: Any,
) -> HessianExtremes:
    """lambda_min and lambda_max (and the top / bottom k) of the Hessian of the mean
    training loss of `model` at `weights` (a name->tensor dict, a flat (D,) vector in
    `WeightSpace.from_module(model)` order, or None: the model's own), on `data` (a `Dataset`:
    its train split and task, or a pair (x, y)). Returns `HessianExtremes`.

    method: "lanczos" (one run; stops when every wanted Ritz pair's residual is below
        tol * max|theta|) or "power" (power iteration with deflation, then on H - mu I).
    options: the operator's (`hessian_operator`): samples, batch_size, wd, bn, bn_samples,
        params, seed, and hvp (its `method`: "auto" | "jvp" | "double"); progress (default
        True): a bar of the products (at most 2 * max_steps for "power", max_steps else).
    """
    show = options.pop("progress", True)
    op = _operator(model, weights, data, options)
    most = max_steps * (2 * k if method == "power" else 1)
    with products_shown(op, f"Hessian extremes ({method})", most, show):
        return extremes_of(
            op, k=k, method=method, tol=tol, max_steps=max_steps, seed=int(options.get("seed", 0))
        )


def trace_of(
    op: HessianOperator,
    *,
    method: str = "hutchinson",
    tol: float = 1e-2,
    min_samples: int = 10,
    max_samples: int = 500,
    seed: int = 0,
) -> HessianTrace:
    """`hessian_trace` on an existing operator."""
    began, hvps = time.perf_counter(), op.hvps
    if method == "hutchinson":
        run = hutchinson(
            op.matvec,
            op.size,
            tol=tol,
            min_samples=min_samples,
            max_samples=max_samples,
            seed=seed,
            device=op.vector.device,
        )
        mean, stderr, values = run.mean, run.stderr, run.values
    elif method == "exact":
        eye = torch.eye(op.size, dtype=torch.float64, device=op.vector.device)
        values = np.array([op.matvec(e)[i].item() for i, e in enumerate(eye)])
        mean, stderr = float(math.fsum(values)), 0.0
    else:
        raise ValueError(f"method must be 'hutchinson' or 'exact', got {method!r}")
    meta = {
        "estimator": method,
        "tol": tol,
        "seconds": time.perf_counter() - began,
        "dim": op.size,
        "bn": op.bn,
        "wd": op.wd,
        **op.info,
    }
    return HessianTrace(mean, stderr, np.asarray(values), op.hvps - hvps, meta)


def hessian_trace(
    model: nn.Module,
    weights: WeightsLike,
    data: Any,
    *,
    method: str = "hutchinson",
    tol: float = 1e-2,
    min_samples: int = 10,
    max_samples: int = 500,
    **options: Any,
) -> HessianTrace:
    """tr(H) of the mean training loss at `weights`, with its standard error.

    method "hutchinson": Rademacher samples v^T H v until stderr <= tol * |mean| (at least
    min_samples, at most max_samples); "exact": P products with unit vectors (stderr 0).
    options: as `hessian_extremes` (the operator's; `hvp` its product method; progress).
    Cost: one product per sample; tol=0.01 on a network whose v^T H v spread is 10x its mean
    takes the whole max_samples (a tenth of the digits ConvFC's trace: ~1 minute on 2 cores).
    """
    show = options.pop("progress", True)
    op = _operator(model, weights, data, options)
    most = op.size if method == "exact" else max_samples
    with products_shown(op, f"Hessian trace ({method})", most, show):
        return trace_of(
            op,
            method=method,
            tol=tol,
            min_samples=min_samples,
            max_samples=max_samples,
            seed=int(options.get("seed", 0)),
        )


def hessian_density(
    model: nn.Module,
    weights: WeightsLike,
    data: Any,
    *,
    steps: int = 80,
    runs: int = 1,
    **options: Any,
) -> SpectralDensity:
    """The spectral density of the Hessian by stochastic Lanczos quadrature: `runs` runs of
    `steps` products each (`modeconn.curvature.density`). options: as `hessian_extremes`."""
    show = options.pop("progress", True)
    op = _operator(model, weights, data, options)
    began = time.perf_counter()
    with products_shown(op, "Hessian density (SLQ)", steps * runs, show):
        density = slq(
            op.matvec,
            op.size,
            steps=steps,
            runs=runs,
            seed=int(options.get("seed", 0)),
            device=op.vector.device,
        )
    density.meta = plain_meta(
        {
            "steps": steps,
            "runs": runs,
            "hvps": op.hvps,
            "bn": op.bn,
            "seconds": time.perf_counter() - began,
            **op.info,
        }
    )
    return density


def restrict(op: HessianOperator, model: nn.Module, direction: Tensor | Mapping[str, Tensor]):
    """A direction over every parameter (flat (D,) or a dict) cut to the operator's (P,)."""
    space = WeightSpace.from_module(model)
    parts = space.check(direction, "direction") if isinstance(direction, Mapping) else None
    if parts is None:
        parts = space.unflatten(direction.detach())
    return torch.cat([parts[n].reshape(-1).double() for n in op.names])


def curvature_along(op: HessianOperator, model: nn.Module, directions: Sequence[Any]) -> np.ndarray:
    """d^T H d / ||d||^2 for each direction (over the operator's parameters)."""
    out = []
    for d in directions:
        d = restrict(op, model, d).to(op.vector.device)
        norm2 = torch.dot(d, d).item()
        out.append(torch.dot(d, op.matvec(d)).item() / norm2 if norm2 > 0 else math.nan)
    return np.asarray(out)


def directional_curvature(
    model: nn.Module,
    weights: WeightsLike,
    data: Any,
    directions: Tensor | Sequence[Tensor | Mapping[str, Tensor]],
    **options: Any,
) -> np.ndarray:
    """d^T H d / ||d||^2 (r,) for r directions (a (r, D) tensor, or flat (D,) tensors /
    state dicts): the second derivative of the loss along each unit direction, e.g. the
    plotted axes of a surface. options: as `hessian_extremes`."""
    if isinstance(directions, Tensor):
        directions = [directions] if directions.ndim == 1 else list(directions)
    op = _operator(model, weights, data, options)
    return curvature_along(op, model, directions)
