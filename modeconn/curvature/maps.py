"""Curvature over a surface, along a curve and along the straight line, beside the loss.

Li et al. 2018 (Fig. 7; `plot_hessian_eigen.py` of tomgoldstein/loss-landscape) map
|lambda_min / lambda_max| over the plotted plane around a minimum: near 0 the surface is
locally convex, large values mark strong negative curvature. Here every node of a surface
(origin + x[i] d1 + y[j] d2, the geometry of `modeconn.landscape.surface`) or of a path (phi(t) of
any
`Curve`, the t grid of `modeconn.path`; a `Line` is the straight segment) gets, next to its
loss metrics, lambda_min and lambda_max of the Hessian of the mean training loss at that point
(`modeconn.curvature.hessian.extremes_of`), their ratio, the largest Lanczos residual, the products
used,
optionally Hutchinson's trace with its standard error, and on a surface the directional
curvatures d^T H d / ||d||^2 along its two axes. The nodes go through the grid engine
(`modeconn.engine.evaluate_grid` with a `measure`), so partial files, resume, shards and
Ctrl-C saving work as for the loss maps.

Deliberate differences from Li et al.: the Hessian of the mean loss (not the batch sum), both
ends from one Lanczos run with a residual bound (not the 0.51 lambda_max shift), BatchNorm
statistics recomputed at every node, all parameters unless params="ndim>1".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from modeconn.curvature.hessian import HessianSettings, curvature_along, extremes_of, trace_of
from modeconn.curvature.hvp import hessian_operator
from modeconn.curves.family import Curve, curve_args
from modeconn.curves.weights import WeightSpace
from modeconn.data.tasks import CLASSIFICATION, metric_names, task_of
from modeconn.engine import Adaptive, EvalSettings, GridResult, resolve_settings
from modeconn.engine.grid import Measure
from modeconn.io.store import PartialGrid
from modeconn.landscape.origin import OriginLike, buffers_restored, resolve_origin
from modeconn.landscape.surface import SurfaceResult, check_directions, grid_around, grid_axes
from modeconn.path import path_grid, t_values

CURVATURE = ("lambda_min", "lambda_max", "ratio", "residual", "hvps")
TRACE = ("trace", "trace_stderr")
DIRECTIONAL = ("curvature_x", "curvature_y")


def curvature_names(hessian: HessianSettings, directional: bool = False) -> tuple[str, ...]:
    """The values a curvature node records (see the module)."""
    return CURVATURE + (TRACE if hessian.trace else ()) + (DIRECTIONAL if directional else ())


def curvature_measure(
    hessian: HessianSettings,
    directions: Sequence[Tensor] | None = None,
    model: nn.Module | None = None,
) -> tuple[Measure, tuple[str, ...]]:
    """The grid engine's per-point measure for curvature, and its value names. With
    hessian.bn == "fixed", every node uses `model`'s BatchNorm statistics as they are now
    (copied here, before the engine recomputes statistics for the loss metrics)."""
    names = curvature_names(hessian, directions is not None)
    options = hessian.operator_options()
    method = options.pop("hvp")
    fixed = None
    if hessian.bn == "fixed" and model is not None:
        fixed = {n: b.detach().clone() for n, b in model.named_buffers()}

    def measure(model: nn.Module, point: Tensor, data: Any) -> dict[str, float]:
        op = hessian_operator(model, point, data, method=method, buffers=fixed, **options)
        ext = extremes_of(
            op, k=hessian.k, tol=hessian.tol, max_steps=hessian.max_steps, seed=hessian.seed
        )
        out = {
            "lambda_min": ext.lambda_min,
            "lambda_max": ext.lambda_max,
            "ratio": ext.ratio,
            "residual": float(max(ext.top_residuals[0], ext.bottom_residuals[0])),
        }
        if hessian.trace:
            tr = trace_of(
                op,
                tol=hessian.trace_tol,
                min_samples=hessian.trace_min,
                max_samples=hessian.trace_max,
                seed=hessian.seed,
            )
            out.update(trace=tr.mean, trace_stderr=tr.stderr)
        if directions is not None:
            out.update(zip(DIRECTIONAL, curvature_along(op, model, directions), strict=True))
        out["hvps"] = float(op.hvps)
        return out

    return measure, names


class _CurvatureValues:
    """The task's loss metrics plus the curvature values of each node (lambda_min and
    lambda_max required, the others as measured), as one `values` dict."""

    def _names(self, task: str, given: Mapping[str, Any]) -> tuple[str, ...]:
        base = metric_names(str(task))
        missing = [n for n in ("lambda_min", "lambda_max") if n not in given]
        if missing:
            raise ValueError(f"a curvature result needs {', '.join(missing)}")
        return base + tuple(k for k in given if k not in base)


@dataclass(eq=False, init=False)
class CurvatureSurface(_CurvatureValues, SurfaceResult):
    """Loss and curvature on a Gx x Gy grid: value[i, j] at origin + x[i] d1 + y[j] d2 (a
    `SurfaceResult`, so the surface plots draw it too).

    values: the task's metrics (`train_loss`, ...) and lambda_min, lambda_max, ratio
    (|lambda_min / lambda_max|), residual, hvps, curvature_x / curvature_y (d^T H d / ||d||^2
    along d1, d2), trace / trace_stderr when asked; each (Gx, Gy), read as attributes.
    x (Gx,), y (Gy,) in direction units; direction_scale (2,) ||d|| / ||origin||.
    """

    result_kind: ClassVar[str] = "CurvatureSurface"


@dataclass(eq=False, init=False)
class CurvaturePath(_CurvatureValues, GridResult):
    """Loss and curvature at T points phi(t) of a curve (or the straight line): each value
    (T,), as in `CurvatureSurface` without the directional curvatures."""

    ts: np.ndarray
    values: dict[str, np.ndarray]
    task: str = CLASSIFICATION
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "CurvaturePath"
    axes: ClassVar[tuple[str, ...]] = ("ts",)


def _hessian(hessian: HessianSettings | Mapping[str, Any] | None) -> HessianSettings:
    if isinstance(hessian, HessianSettings):
        return hessian
    return HessianSettings.from_config(hessian)


def curvature_surface(
    model: nn.Module | None,
    origin: OriginLike,
    directions: Tensor | Sequence[Tensor | Mapping[str, Tensor]],
    data: Any,
    grid: int | tuple[int, int] = 11,
    span: float | tuple[tuple[float, float], tuple[float, float]] = 1.0,
    *,
    hessian: HessianSettings | Mapping[str, Any] | None = None,
    wd: float = 0.0,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    resolution: str | Adaptive = "regular",
    **engine: Any,
) -> CurvatureSurface | None:
    """Li et al.'s curvature map: loss metrics and Hessian extremes at every node of the
    surface origin + x[i] d1 + y[j] d2 (origins, directions, grid and span as
    `modeconn.landscape.surface.evaluate_surface`; BatchNorm statistics recomputed at every node).

    hessian: `HessianSettings` (or a mapping of its options): the Hessian's data budget,
        BatchNorm mode, parameter set, tolerance, and whether to estimate the trace.
    wd: weight decay of the reported loss metrics (the Hessian's own is `hessian.wd`).
    settings / **engine, partial, save_every_s, shard: as in `evaluate_grid` (the partial
        file is removed once the result is complete; a shard returns None).
    resolution: "regular", or "adaptive" / `Adaptive(...)` with grid the target (as
        `evaluate_plane`'s); refine on metric="ratio" (linear) for the map itself, or on
        ("ratio", "train_loss") with one tol each for the loss contours too.
    """
    hessian = _hessian(hessian)
    centre = resolve_origin(model, origin)
    dirs = check_directions(directions, centre.space, 2, centre.vector)
    axes = grid_axes(grid, span, 2, "grid")
    dtype = centre.vector.dtype if centre.vector.is_floating_point() else torch.float32
    measure, names = curvature_measure(hessian, [d.to(dtype) for d in dirs], centre.model)
    job = dict(progress=progress, partial=partial, save_every_s=save_every_s, shard=shard)
    out = grid_around(
        centre, dirs, axes, data, "curvature-surface", "recompute", wd, settings, engine, job,
        measure=measure, measure_names=names, extra={"hessian": hessian.meta()},
        resolution=resolution,
    )  # fmt: skip
    if out is None:
        return None
    arrays, meta, scale = out
    cosine = WeightSpace.dot(*dirs) / (WeightSpace.norm(dirs[0]) * WeightSpace.norm(dirs[1]))
    return CurvatureSurface(
        *axes,
        **arrays,
        direction_scale=scale,
        cosine=cosine.item(),
        task=task_of(data),
        meta=meta,
    )


def curvature_path(
    curve: Curve,
    data: Any,
    ts: int | Sequence[float] = 11,
    *,
    hessian: HessianSettings | Mapping[str, Any] | None = None,
    wd: float = 0.0,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    **engine: Any,
) -> CurvaturePath | None:
    """lambda_max(t), lambda_min(t) (and trace(t)) of the mean training loss at phi(t) beside
    the loss, for any `Curve` (a `Line` for the straight segment); ts as
    `modeconn.path.evaluate_path` (a count of equally spaced t in [0, 1], or the values).
    Other arguments as `curvature_surface`."""
    hessian = _hessian(hessian)
    settings = resolve_settings(settings, engine)
    ts = t_values(ts)
    measure, names = curvature_measure(hessian, model=curve.model)
    with buffers_restored(curve.model):
        values = path_grid(
            curve, ts, data, settings, wd=wd, desc=f"curvature ({curve.kind})",
            measure=measure, measure_names=names,
            extra={"kind": "curvature-path", "hessian": hessian.meta()},
            partial=partial, save_every_s=save_every_s, shard=shard, progress=progress,
        )  # fmt: skip
    if values is None:
        return None
    meta = {
        "kind": "curvature-path",
        "curve": {"type": curve.kind, **curve_args(curve)},
        "dim": curve.space.size,
        "hessian": hessian.meta(),
        **values.meta,
    }
    if partial is not None:
        PartialGrid.remove_files(partial)
    return CurvaturePath(ts, values=values.values, task=task_of(data), meta=meta)
