"""Loss surfaces around any point: a 2-D grid or a 1-D line along given directions.

Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets", code tomgoldstein/
loss-landscape) plot f(x, y) = L(origin + x * d1 + y * d2) around a trained network, and
Goodfellow et al. 2015 ("Qualitatively characterizing neural network optimization problems")
plot L((1 - alpha) * a + alpha * b) along the line through two networks. Here the node
(i, j) of a surface is

    origin + x[i] * d1 + y[j] * d2,   x = linspace(x0, x1, Gx),  y = linspace(y0, y1, Gy),

with coordinates in direction units, computed in float64 and cast to the origin's dtype (so a
node at (0, 0) is the origin exactly). The origin is any point: flat weights, a state dict, a
module, or phi(t) of a trained curve, given as the pair (curve, t). Every node goes through the
grid engine (`modeconn.engine.evaluate_grid`: batching, resume, shards, subsets, precision).
Results record ||d|| / ||origin|| (`direction_scale`) so plots can show both scales, and the
cosine between d1 and d2 (directions need not be orthogonal; coordinates stay those of d1, d2).

BatchNorm policy, explicit and recorded (`bn`):
- "recompute" (default): statistics recomputed at every node, as our path and plane do.
- "origin": Li et al.'s: every node evaluated in eval mode with the centre's running
  statistics: the buffers of a module origin, those in a state-dict origin, the model's own
  for a flat origin; for a (curve, t) origin they are recomputed once at phi(t) and then kept.
  The model's buffers are restored when the job ends, under either policy.

Deliberate differences from loss-landscape: BatchNorm is recomputed unless asked otherwise;
any grid shape and any span (theirs breaks on non-square grids and ranges touching 0); every
metric on the whole train and test splits (or the engine's `eval_samples` subset); resume by
an explicit done mask, never by a value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from modeconn.curves.weights import WeightSpace, fingerprint
from modeconn.data.tasks import CLASSIFICATION, task_of
from modeconn.engine import Adaptive, EvalSettings, GridResult, evaluate_grid, resolve_settings
from modeconn.io.store import PartialGrid
from modeconn.landscape.origin import (
    Centre,
    OriginLike,
    buffers_restored,
    load_centre_statistics,
    resolve_origin,
    statistics_fingerprint,
)

log = logging.getLogger("modeconn")

BN_POLICIES = ("recompute", "origin")
DirectionLike = Tensor | Mapping[str, Tensor]


class _AroundResult(GridResult):
    """What `SurfaceResult` and `LineResult` share: direction_scale, one entry per axis."""

    def _set_fields(self, direction_scale: Any, **rest: Any) -> None:
        self.direction_scale = np.asarray(direction_scale, dtype=np.float64).reshape(-1)
        if self.direction_scale.shape != (len(self.axes),):
            raise ValueError(
                f"direction_scale needs {len(self.axes)} entries, got {direction_scale}"
            )
        super()._set_fields(**rest)


@dataclass(eq=False, init=False)
class SurfaceResult(_AroundResult):
    """Metrics on a Gx x Gy grid around an origin: metric[i, j] is at origin + x[i] d1 + y[j] d2.

    The metrics are the data set's task's (`modeconn.data.tasks.metric_names`), read as
    attributes (`result.train_loss`, `result.test_error`); losses include 0.5 * wd * ||w||^2
    (the nll columns are Li et al.'s loss), errors are in percent. x (Gx,), y (Gy,):
    coordinates in direction units. direction_scale (2,): ||d1|| / ||origin||, ||d2|| /
    ||origin||. cosine: the cosine between d1 and d2. meta: the BatchNorm policy, spans,
    origin, engine. evaluated, interp_error (Gx, Gy): an adaptive grid's evaluated nodes and
    error estimate (as `PlaneResult`'s; None for a regular grid).
    """

    x: np.ndarray
    y: np.ndarray
    values: dict[str, np.ndarray]
    direction_scale: np.ndarray
    cosine: float
    evaluated: np.ndarray | None = None
    interp_error: np.ndarray | None = None
    task: str = CLASSIFICATION
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "SurfaceResult"
    axes: ClassVar[tuple[str, ...]] = ("x", "y")

    def _set_fields(self, direction_scale: Any, cosine: float, **rest: Any) -> None:
        self.cosine = float(cosine)
        super()._set_fields(direction_scale, **rest)


@dataclass(eq=False, init=False)
class LineResult(_AroundResult):
    """Metrics at T points origin + x[k] * d along one direction: each metric is (T,).

    As `SurfaceResult` in one dimension; direction_scale (1,) is ||d|| / ||origin||. For
    `evaluate_interpolation`, x holds the alphas and d = b - a (meta "kind": "interpolation").
    """

    x: np.ndarray
    values: dict[str, np.ndarray]
    direction_scale: np.ndarray
    task: str = CLASSIFICATION
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "LineResult"
    axes: ClassVar[tuple[str, ...]] = ("x",)


# --------------------------------------------------------------------------- checks


def check_directions(directions: Any, space: WeightSpace, count: int, like: Tensor) -> list[Tensor]:
    """`count` float64 (D,) directions on the origin's device from a (count, D) tensor, one
    (D,) tensor (count 1) or a sequence of tensors / state dicts."""
    if isinstance(directions, Tensor):
        directions = [directions] if directions.ndim == 1 else list(directions)
    elif isinstance(directions, Mapping):
        directions = [directions]
    directions = list(directions)
    if len(directions) != count:
        raise ValueError(f"need {count} direction(s), got {len(directions)}")
    out = []
    for k, d in enumerate(directions):
        d = space.flatten(d, f"direction {k}") if isinstance(d, Mapping) else d
        if not isinstance(d, Tensor) or d.shape != (space.size,):
            got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(f"direction {k} must be a flat ({space.size},) tensor, got {got}")
        d = d.detach().to(like.device, torch.float64)
        norm = WeightSpace.norm(d).item()
        if not (math.isfinite(norm) and norm > 0):
            raise ValueError(f"direction {k} has norm {norm}: it must be finite and non-zero")
        out.append(d)
    return out


def grid_axes(sizes: Any, span: Any, dims: int, what: str) -> list[np.ndarray]:
    """linspace(lo, hi, n) per axis: sizes an int >= 2 or one per axis; span a number s
    (-s, s), one pair (lo, hi) or one pair per axis."""
    sizes = (sizes,) * dims if np.ndim(sizes) == 0 else tuple(sizes)
    if len(sizes) != dims or not all(
        isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 2 for g in sizes
    ):
        raise ValueError(f"{what} must be an int >= 2 or {dims} ints >= 2, got {sizes!r}")
    if np.ndim(span) == 0:
        span = [(-float(span), float(span))] * dims
    elif np.ndim(span) == 1:
        span = [tuple(span)] * dims
    pairs = [tuple(float(v) for v in p) for p in span]
    if len(pairs) != dims or not all(
        len(p) == 2 and all(math.isfinite(v) for v in p) and p[0] < p[1] for p in pairs
    ):
        raise ValueError(f"span must give {dims} pair(s) (lo, hi) with lo < hi, got {span!r}")
    return [np.linspace(lo, hi, int(n)) for (lo, hi), n in zip(pairs, sizes, strict=True)]


def _policy(bn: str, settings: EvalSettings) -> EvalSettings:
    if bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {', '.join(map(repr, BN_POLICIES))}, got {bn!r}")
    if settings.bn != "recompute":
        raise ValueError("choose the surface's BatchNorm policy with bn='origin', not settings.bn")
    return settings.replace(bn="fixed") if bn == "origin" else settings


# --------------------------------------------------------------------------- evaluation


def grid_around(
    centre: Centre,
    dirs: list[Tensor],
    axes: list[np.ndarray],
    data,
    kind: str,
    bn: str,
    wd: float,
    settings: EvalSettings | None,
    engine: Mapping[str, Any],
    job: Mapping[str, Any],
    *,
    measure: Any = None,
    measure_names: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    resolution: str | Adaptive = "regular",
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray] | None:
    """Every node origin + sum_k axes[k][i_k] * dirs[k] through the grid engine: the arrays
    (the metrics and more, below), the metadata and the direction scales (||d_k|| /
    ||origin||); None for an unfinished shard. `job`: progress, partial, save_every_s, shard
    of `evaluate_grid`; measure / measure_names: more values per node (`evaluate_grid`'s,
    e.g. curvature); extra: what else defines the job, added to the partial file's config
    and the meta; resolution: `evaluate_grid`'s. The arrays are the result's keywords:
    "values", and for an adaptive grid "evaluated" and "interp_error"."""
    settings = _policy(bn, resolve_settings(settings, engine))
    origin64 = centre.vector.to(torch.float64)
    dtype = centre.vector.dtype if centre.vector.is_floating_point() else torch.float32
    model = centre.model

    def point_at(index: tuple[int, ...]) -> Tensor:
        point = origin64.clone()  # + 0.0 * d: a node at 0 is the origin exactly
        for k, d, axis in zip(index, dirs, axes, strict=True):
            point.add_(d, alpha=float(axis[k]))  # in place: one pass, no temporaries
        return point.to(dtype)

    grid = [len(a) for a in axes]
    config = {"kind": kind, "origin": fingerprint(origin64, *dirs), "grid": grid, "bn": bn}
    config.update({name: a.tolist() for name, a in zip("xy", axes, strict=False)})
    config.update(extra or {})
    with buffers_restored(model):
        statistics = "recomputed at every point"
        if bn == "origin":
            statistics = load_centre_statistics(centre, data, settings)
            config["bn_statistics"] = statistics_fingerprint(model)
        values = evaluate_grid(
            model, centre.space, tuple(grid), point_at, data, settings,
            wd=wd, config=config, desc=kind, measure=measure, measure_names=measure_names,
            resolution=resolution, **job,
        )  # fmt: skip
    if values is None:
        return None  # a shard: the other nodes belong to other processes
    origin_norm = WeightSpace.norm(origin64).item()
    norms = np.array([WeightSpace.norm(d).item() for d in dirs])
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = norms / origin_norm
    meta = {
        "kind": kind,
        "origin": centre.kind,
        **centre.info,
        "bn": bn,
        "bn_statistics": statistics,
        "grid": grid,
        "span": [[float(a[0]), float(a[-1])] for a in axes],
        "dim": centre.space.size,
        "origin_norm": origin_norm,
        "direction_norms": norms.tolist(),
        **(extra or {}),
        **values.meta,
    }
    if job["partial"] is not None:
        PartialGrid.remove_files(job["partial"])
    arrays = {"values": values.values}
    if values.evaluated is not None:
        arrays.update(evaluated=values.evaluated, interp_error=values.error)
    return arrays, meta, scale


def evaluate_surface(
    model: nn.Module | None,
    origin: OriginLike,
    directions: Tensor | Sequence[DirectionLike],
    data,
    grid: int | tuple[int, int] = 21,
    span: float | tuple[tuple[float, float], tuple[float, float]] = ((-1.0, 1.0), (-1.0, 1.0)),
    *,
    bn: str = "recompute",
    wd: float = 5e-4,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    resolution: str | Adaptive = "regular",
    **engine: Any,
) -> SurfaceResult | None:
    """Train/test metrics at origin + x[i] * d1 + y[j] * d2 on a Gx x Gy grid (Li et al. 2018).

    model: the network (None: the origin's, for a module or a (curve, t) origin).
    origin: a flat (D,) tensor in `WeightSpace.from_module(model)` order, a name->tensor
        state dict, a module, or a pair (curve, t) meaning phi(t) of a `Curve`.
    directions: d1, d2 as a (2, D) tensor or two (D,) tensors (or state dicts); any norms,
        not necessarily orthogonal (the result records their scale and cosine).
    grid: (Gx, Gy) nodes, or one int for both; span: ((x0, x1), (y0, y1)) in direction
        units, both ends included (x = linspace(x0, x1, Gx)); one number s means (-s, s).
    bn: "recompute" (statistics at every node) or "origin" (the centre's, see the module).
    wd: weight decay in the reported loss, nll + 0.5 * wd * ||w||^2.
    settings / **engine, partial, save_every_s, shard: as in `modeconn.engine.evaluate_grid`
        (the partial file is removed once the result is complete; a shard returns None).
    resolution: "regular", or "adaptive" / `Adaptive(...)` with grid the target (as
        `modeconn.plane.evaluate_plane`'s).
    """
    centre = resolve_origin(model, origin)
    dirs = check_directions(directions, centre.space, 2, centre.vector)
    axes = grid_axes(grid, span, 2, "grid")
    job = dict(progress=progress, partial=partial, save_every_s=save_every_s, shard=shard)
    out = grid_around(
        centre, dirs, axes, data, "surface", bn, wd, settings, engine, job, resolution=resolution
    )
    if out is None:
        return None
    arrays, meta, scale = out
    cosine = WeightSpace.dot(*dirs) / (WeightSpace.norm(dirs[0]) * WeightSpace.norm(dirs[1]))
    return SurfaceResult(
        *axes, **arrays, direction_scale=scale, cosine=cosine.item(), task=task_of(data),
        meta=meta,
    )  # fmt: skip


def evaluate_line(
    model: nn.Module | None,
    origin: OriginLike,
    direction: DirectionLike,
    data,
    points: int = 51,
    span: tuple[float, float] | float = (-1.0, 1.0),
    *,
    bn: str = "recompute",
    wd: float = 5e-4,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    **engine: Any,
) -> LineResult | None:
    """Train/test metrics at origin + x[k] * d, x = linspace(x0, x1, points): the 1-D
    version of `evaluate_surface` (same origins, BatchNorm policies and engine options);
    direction: one flat (D,) tensor or state dict."""
    centre = resolve_origin(model, origin)
    dirs = check_directions(direction, centre.space, 1, centre.vector)
    axes = grid_axes(points, span, 1, "points")
    job = dict(progress=progress, partial=partial, save_every_s=save_every_s, shard=shard)
    return _line(
        grid_around(centre, dirs, axes, data, "line", bn, wd, settings, engine, job), axes, data
    )


def _line(out, axes: list[np.ndarray], data) -> LineResult | None:
    if out is None:
        return None
    arrays, meta, scale = out
    return LineResult(axes[0], **arrays, direction_scale=scale, task=task_of(data), meta=meta)


ALPHAS = tuple(np.linspace(-0.5, 1.5, 41).tolist())  # 0 and 1 exactly among them


def evaluate_interpolation(
    model: nn.Module | None,
    a: OriginLike,
    b: OriginLike,
    data,
    alphas: Sequence[float] | np.ndarray = ALPHAS,
    *,
    bn: str = "recompute",
    wd: float = 5e-4,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    **engine: Any,
) -> LineResult | None:
    """Goodfellow et al. 2015's interpolation: metrics at a + alpha * (b - a) for each alpha,
    a at alpha = 0, b at alpha = 1 (the default alphas run over [-0.5, 1.5], 41 points).

    a, b: any origins of `evaluate_surface` (flat tensors, state dicts, modules, (curve, t));
    the line is `evaluate_line`'s from a along b - a (in float64), x holds the alphas.
    Goodfellow et al. go from an initialisation to a solution; any two points work here.
    bn="origin" evaluates every point with a's statistics.
    """
    centre = resolve_origin(model, a)
    end = resolve_origin(centre.model, b).vector.to(centre.vector.device, torch.float64)
    dirs = check_directions(end - centre.vector.double(), centre.space, 1, centre.vector)
    xs = np.asarray(alphas, dtype=np.float64)
    if xs.ndim != 1 or len(xs) == 0 or not np.all(np.isfinite(xs)):
        raise ValueError(f"alphas must be a non-empty 1-D sequence of finite numbers, got {alphas}")
    job = dict(progress=progress, partial=partial, save_every_s=save_every_s, shard=shard)
    out = grid_around(centre, dirs, [xs], data, "interpolation", bn, wd, settings, engine, job)
    return _line(out, [xs], data)
