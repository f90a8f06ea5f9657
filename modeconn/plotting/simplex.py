"""The loss over a simplex: each face through a vertex triple as a triangle heat map in
barycentric coordinates (a 2-simplex is one triangle; a larger simplex or a complex is shown
as slices through vertex triples), from a `SimplexPointsResult`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure
from matplotlib.tri import Triangulation

from modeconn.plotting.common import _finite, _suptitle, metric_label, task_metrics
from modeconn.plotting.plane import log_levels

# The corners of the drawn triangle: vertex i of a face at CORNERS[i] (an equilateral one).
CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def triangle_xy(coefficients: Any) -> np.ndarray:
    """Where the points with these (P, 3) barycentric coefficients of a face are drawn: (P, 2),
    sum_i c_i CORNERS[i] (the corners are the face's vertices)."""
    return np.asarray(coefficients, dtype=float).reshape(-1, 3) @ CORNERS


def _panel(
    fig: Figure,
    ax: Any,
    xy: np.ndarray,
    z: np.ndarray,
    limits: tuple[float, float] | None,
    levels: int,
    floor: float,
    cmap: str,
    label: str,
) -> None:
    tri = Triangulation(xy[:, 0], xy[:, 1])
    bad = ~np.isfinite(z)
    if bad.any():  # a diverged point leaves its triangles blank
        tri.set_mask(bad[tri.triangles].any(1))
    if limits is None:
        ax.text(0.5, 0.4, "no finite values", ha="center")
        return
    lv = log_levels(*limits, levels, floor)
    finite = z[~bad]
    below, above = bool((finite < lv[0]).any()), bool((finite > lv[-1]).any())
    extend = ("neither", "min", "max", "both")[int(below) + 2 * int(above)]
    norm = colors.BoundaryNorm(lv, 256, extend=extend)
    z = np.where(bad, lv[0], z)
    filled = ax.tricontourf(tri, z, levels=lv, cmap=cmap, norm=norm, extend=extend, zorder=0)
    ax.tricontour(tri, z, levels=lv, colors="black", linewidths=0.5, alpha=0.5, zorder=1)
    cax = ax.inset_axes([1.02, 0.0, 0.05, 1.0], label="<colorbar>")
    fig.colorbar(filled, cax=cax, format="%.3g").set_label(label)


def plot_simplex(
    result: Any,
    *,
    metrics: Sequence[str] | None = None,
    levels: int = 8,
    floor: float = 0.1,
    cmap: str = "jet_r",
    points: Any = None,
    max_faces: int = 6,
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """Triangle heat maps of a simplex's faces: one row per face (vertex triple), one column
    per metric (default: the train loss and the test error, or MSE for regression).

    result: a `SimplexPointsResult` of `evaluate_faces` (coefficients (M, k), face (M,),
    triples (T, 3), names (k,), each metric (M,)). Each corner is a vertex, labelled with its
    name; a point is drawn at sum_i c_i corner_i. The colour levels (`log_levels`, geometric
    above the minimum, as the plane figures) are shared by the faces of one metric, so slices
    compare. points: optional (S, k) coefficients (e.g. an ensemble's samples), drawn on the
    faces that hold them. max_faces: the first faces drawn (a 5-vertex simplex has 10).
    """
    metrics = task_metrics(result) if metrics is None else list(metrics)
    triples = np.asarray(result.triples, dtype=int).reshape(-1, 3)[:max_faces]
    if not len(triples):
        raise ValueError("this result holds no faces: evaluate it with evaluate_faces")
    names = [str(n) for n in result.names]
    face = np.asarray(result.face)
    coefficients = np.asarray(result.coefficients, dtype=float)
    extra = np.zeros((0, coefficients.shape[1])) if points is None else np.asarray(points)
    fig = Figure(figsize=(4.4 * len(metrics), 3.7 * len(triples)), layout="constrained")
    axes = fig.subplots(len(triples), len(metrics), squeeze=False)
    for j, metric in enumerate(metrics):
        values = np.asarray(getattr(result, metric), dtype=float)
        finite = _finite(values[np.isin(face, np.arange(len(triples)))])
        limits = (float(finite.min()), float(finite.max())) if finite.size else None
        for f, triple in enumerate(triples):
            ax = axes[f, j]
            on = face == f
            xy = triangle_xy(coefficients[on][:, triple])
            label = metric_label(metric)
            _panel(fig, ax, xy, values[on], limits, levels, floor, cmap, label)
            ax.plot(*np.r_[CORNERS, CORNERS[:1]].T, color="black", linewidth=1.0, zorder=2)
            inside = np.isclose(extra[:, triple].sum(1), 1.0) if len(extra) else []
            if np.any(inside):
                sxy = triangle_xy(extra[inside][:, triple])
                ax.plot(*sxy.T, "o", ms=3, color="white", mec="black", mew=0.5, zorder=4)
            for corner, vertex, align in zip(
                CORNERS, triple, ("right", "left", "center"), strict=True
            ):
                ax.plot(*corner, "o", ms=6, color="white", mec="black", zorder=5)
                dy = 0.06 if align == "center" else -0.07
                ax.text(corner[0], corner[1] + dy, names[vertex], ha=align, va="center")
            ax.set_xlim(-0.12, 1.12)
            ax.set_ylim(-0.14, CORNERS[2, 1] + 0.12)
            ax.set_aspect("equal")
            ax.set_axis_off()
            face_name = ", ".join(names[v] for v in triple)
            ax.set_title(f"{label.replace(' (%)', '')}: face {face_name}", fontsize=10)
    _suptitle(fig, result, title, model)
    return fig
