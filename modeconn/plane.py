"""Loss surfaces on a grid over the 2-D plane through three points in weight space.

Garipov et al. (2018, Fig. 1 and Sec. 6) look at the plane through the two endpoints w1, w2 and
the bend theta of a quadratic Bezier curve. Their `plane.py` (and the blog's figures) put w1 at
the origin and w2 on the positive x-axis, with theta above it. With a = w1, b = w2, c = theta:

    origin = a,   u = (b - a) / |b - a|,   v = GS(c - a against u) / |...|

so a = (0, 0), b = (|b - a|, 0) and c = (<c - a, u>, |GS(c - a)|) with y > 0,
and a point (x, y) of the plane is origin + x * u + y * v. The geometry runs in float64 (two
Gram-Schmidt passes), so u and v are orthonormal to rounding even for millions of weights;
points handed back to a network are cast to the dtype of the original weights. The geometry
(`Plane`) is `modeconn.curves.geometry`.

`evaluate_plane` evaluates every node of a grid over the plane with the one evaluation engine
(`evaluate_point`: BatchNorm statistics recomputed at each node) and projects a curve onto it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from modeconn.curves.family import Curve, curve_args
from modeconn.curves.geometry import Plane
from modeconn.curves.weights import WeightSpace
from modeconn.data.tasks import CLASSIFICATION, task_of
from modeconn.engine import Adaptive, EvalSettings, GridResult, evaluate_grid, resolve_settings
from modeconn.io.store import PartialGrid


@dataclass(eq=False, init=False)
class PlaneResult(GridResult):
    """Metrics on a Gx x Gy grid over a plane: metric[i, j] is at (x[i], y[j]).

    The metrics are the data set's task's (`modeconn.data.tasks.metric_names`), read as
    attributes (`result.train_loss`, `result.test_error` or `result.test_mse`). Losses
    include 0.5 * wd * ||w||^2; errors are in percent. anchors (K, 2): coordinates of
    start, end and the bend(s), named by anchor_names. curve_xy (T, 2): projection of points
    phi(t) of a curve onto the plane, curve_distance (T,): their distance from it (both empty
    when no curve was given). anchor_distance (K,): each anchor's distance from the plane (a
    curve with several bends has control points off it; None in results saved before).
    evaluated (Gx, Gy) bool, interp_error (Gx, Gy): for an adaptive grid, the nodes that were
    evaluated (the others are interpolated) and the error estimate of each node in the
    refinement quantity (`modeconn.engine.adaptive`); None for a regular grid.
    """

    x: np.ndarray
    y: np.ndarray
    values: dict[str, np.ndarray]
    anchors: np.ndarray
    anchor_names: list[str]
    curve_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    curve_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    anchor_distance: np.ndarray | None = None
    evaluated: np.ndarray | None = None
    interp_error: np.ndarray | None = None
    task: str = CLASSIFICATION
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "PlaneResult"
    axes: ClassVar[tuple[str, ...]] = ("x", "y")

    def _set_fields(
        self,
        anchors: Any,
        anchor_names: Any,
        curve_xy: Any = None,
        curve_distance: Any = None,
        anchor_distance: Any = None,
    ) -> None:
        def floats(value: Any, empty: tuple[int, ...]) -> np.ndarray:
            return np.asarray(np.zeros(empty) if value is None else value, dtype=np.float64)

        self.anchors = floats(anchors, (0, 2)).reshape(-1, 2)
        self.anchor_names = [str(n) for n in np.asarray(anchor_names).tolist()]
        self.curve_xy = floats(curve_xy, (0, 2)).reshape(-1, 2)
        self.curve_distance = floats(curve_distance, (0,))
        self.anchor_distance = None  # results saved before the field existed
        if anchor_distance is not None:
            self.anchor_distance = floats(anchor_distance, (0,))
        if len(self.anchor_names) != len(self.anchors):
            raise ValueError(f"{len(self.anchor_names)} anchor_names for {len(self.anchors)}")
        if self.curve_distance.shape != (len(self.curve_xy),):
            raise ValueError("curve_distance must have one entry per row of curve_xy")
        if self.anchor_distance is not None and self.anchor_distance.shape != (len(self.anchors),):
            raise ValueError("anchor_distance must have one entry per anchor")


def _grid_sizes(grid: int | tuple[int, int]) -> tuple[int, int]:
    sizes = (grid, grid) if np.ndim(grid) == 0 else tuple(grid)
    if len(sizes) != 2 or not all(
        isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 2 for g in sizes
    ):
        raise ValueError(f"grid must be an int >= 2 or a pair (Gx, Gy) of ints >= 2, got {grid!r}")
    return int(sizes[0]), int(sizes[1])


def _margins(margin: float | tuple[float, float, float, float]) -> tuple[float, ...]:
    m = (margin,) * 4 if np.ndim(margin) == 0 else tuple(margin)
    if len(m) != 4 or not all(
        isinstance(x, (int, float, np.number)) and math.isfinite(x) and x >= 0 for x in m
    ):
        raise ValueError(
            f"margin must be a number >= 0 or four numbers >= 0 (left, right, bottom, top), "
            f"got {margin!r}"
        )
    return tuple(float(x) for x in m)


def _axis(lo: float, hi: float, span: float, before: float, after: float, n: int) -> np.ndarray:
    return np.linspace(lo - before * span, hi + after * span, n)


def _curve_anchors(plane: Plane, curve: Curve) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Plane coordinates of the curve's control points, ordered start, end, bends; their
    names; their distances from the plane."""
    bends = [curve.bends[k].detach() for k in range(curve.num_bends)]
    points = [curve.start, curve.end, *bends]
    names = ["start", "end"] + (
        ["bend"] if len(bends) == 1 else [f"bend {k + 1}" for k in range(len(bends))]
    )
    distances = np.array([plane.distance(p) for p in points])
    return np.array([plane.coords(p) for p in points]), names, distances


def evaluate_plane(
    model: nn.Module,
    plane: Plane,
    data,
    grid: int | tuple[int, int] = 21,
    margin: float | tuple[float, float, float, float] = 0.2,
    *,
    curve: Curve | None = None,
    curve_points: int = 61,
    wd: float = 5e-4,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    resolution: str | Adaptive = "regular",
    **engine: Any,
) -> PlaneResult | None:
    """Train/test loss, nll and error (%) at every node of a grid over `plane` (loss, mse
    and Gaussian nll for a regression data set: `modeconn.data.tasks`).

    The grid spans the bounding box of the anchors (the curve's control points if `curve` is
    given, else `plane.anchors`), widened by margin * range on each side; margin is one number
    or (left, right, bottom, top). grid: nodes per axis, an int or (Gx, Gy), each >= 2.
    Each node w is evaluated by the grid engine (`modeconn.engine.evaluate_grid`: BatchNorm
    recomputed at each node) and its loss is nll + 0.5 * wd * ||w||^2. With `curve`,
    `curve_points` equally spaced phi(t) are projected onto the plane.

    settings: how nodes are evaluated (`EvalSettings`), or keyword options that build one,
        as in `evaluate_path`.
    partial: a file (without suffix) where finished nodes are saved atomically at most every
    `save_every_s` seconds and at the end; a rerun with the same file resumes, skipping them.
    It refuses a file written for another grid, plane, data set or setting, and is removed
    once the result is complete.
    shard: (k, n) evaluates only the nodes whose flat index i * Gy + j is k modulo n, into
    `partial` (required); it returns None while other shards are missing. `merge_shards`
    joins the shard files, and a final call with the merged file assembles the result.
    resolution: "regular" (every node), or "adaptive" / `Adaptive(coarse, tol, metric,
    ceiling)`: grid is then the target (2^m (coarse - 1) + 1 per side, e.g. 1025 from 33),
    refined where the train loss (log10) disagrees with its interpolation by more than tol;
    the result holds every node (interpolated where not evaluated), `evaluated` and
    `interp_error` (`modeconn.engine.adaptive`). A shard then takes whole tiles of coarse
    cells and runs to its end alone.
    """
    settings = resolve_settings(settings, engine)
    gx, gy = _grid_sizes(grid)
    left, right, bottom, top = _margins(margin)
    space = plane.space or WeightSpace.from_module(model)
    if space.size != plane.dim:
        raise ValueError(f"the model has {space.size} weights but the plane lives in {plane.dim}")
    if curve is not None:
        if curve.space.size != plane.dim:
            raise ValueError(f"the curve has {curve.space.size} weights, the plane {plane.dim}")
        anchors, names, anchor_distance = _curve_anchors(plane, curve)
    elif plane.anchors is not None:
        anchors, names = plane.anchors, list(plane.anchor_names)
        anchor_distance = np.zeros(len(anchors))  # the points that define the plane
    else:
        raise ValueError(
            "the plane has no anchors to span the grid over: build it with Plane.through(a, b, c)"
            " or pass curve=..."
        )
    (x0, y0), (x1, y1) = anchors.min(0), anchors.max(0)
    fallback = max(x1 - x0, y1 - y0)
    if fallback <= 0:
        raise ValueError("all anchors project onto one point of the plane: no range to span")
    xs = _axis(x0, x1, (x1 - x0) or fallback, left, right, gx)
    ys = _axis(y0, y1, (y1 - y0) or fallback, bottom, top, gy)
    config = {
        "grid": [gx, gy],
        "x": xs.tolist(),
        "y": ys.tolist(),
        "plane": plane.fingerprint(),
    }
    values = evaluate_grid(
        model,
        space,
        (gx, gy),
        lambda index: plane.point(xs[index[0]], ys[index[1]]),
        data,
        settings,
        wd=wd,
        config=config,
        partial=partial,
        save_every_s=save_every_s,
        shard=shard,
        progress=progress,
        desc="plane",
        resolution=resolution,
    )
    if values is None:
        return None  # a shard: the other nodes belong to other processes
    curve_xy, curve_distance = np.zeros((0, 2)), np.zeros(0)
    if curve is not None:
        with torch.no_grad():
            points = [curve.point(float(t)).detach() for t in np.linspace(0, 1, curve_points)]
        curve_xy = np.array([plane.coords(p) for p in points])
        curve_distance = np.array([plane.distance(p) for p in points])
    meta = {
        "grid": [gx, gy],
        "margin": [left, right, bottom, top],
        "range": {"x": [xs[0], xs[-1]], "y": [ys[0], ys[-1]]},
        "dim": plane.dim,
        "curve": None if curve is None else {"type": curve.kind, **curve_args(curve)},
        "curve_points": 0 if curve is None else curve_points,
        **values.meta,
    }
    result = PlaneResult(
        xs,
        ys,
        values=values.values,
        task=task_of(data),
        anchors=anchors,
        anchor_names=names,
        curve_xy=curve_xy,
        curve_distance=curve_distance,
        anchor_distance=anchor_distance,
        evaluated=values.evaluated,
        interp_error=values.error,
        meta=meta,
    )
    if partial is not None:
        PartialGrid.remove_files(partial)
    return result


def evaluate_plane_through_curve(curve: Curve, data, **kwargs: Any) -> PlaneResult:
    """`evaluate_plane` on the plane through start, end and the curve's middle bend.

    For a quadratic Bezier this is the paper's plane through w1, w2 and theta; with more bends
    the middle one (index (bends - 1) // 2) is used and the other control points lie off the
    plane (see `PlaneResult.curve_distance`). kwargs go to `evaluate_plane` (grid, margin, ...).
    """
    if curve.num_bends < 1:
        raise ValueError(
            f"a {curve.kind} with no bends spans no plane; use Plane.through(start, end, c) with "
            "a third point c and evaluate_plane"
        )
    bend = curve.bends[(curve.num_bends - 1) // 2].detach()
    plane = Plane.through(curve.start, curve.end, bend, space=curve.space)
    return evaluate_plane(curve.model, plane, data, curve=curve, **kwargs)
