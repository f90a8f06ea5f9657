"""The plane through three points: filled contours per metric, anchors, curve and line
(Garipov et al. 2018, Fig. 1; levels spaced as in their `plane.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from modeconn.plotting.common import (
    Scale,
    _figure,
    _finite,
    _get,
    _suptitle,
    draw_evaluated,
    metric_label,
    task_metrics,
)

PLANE_METRICS = ("train_loss", "test_error")


def log_levels(vmin: float, vmax: float, n: int = 8, floor: float = 0.1) -> np.ndarray:
    """n + 1 contour levels, spaced geometrically above the minimum: vmin + geomspace(g, range, n).

    Garipov et al. space their plane levels the same way (level_k = min + exp(alpha + k gamma)).
    Offsetting by the minimum is robust where a plain logspace is not: values may be 0 or
    negative (an error of 0 %), and the valley is resolved however low it lies. The first gap g
    is `floor` * |vmin| (the valley's own scale: 0.1 resolves a 10 % rise over the minimum);
    if vmin is 0, 1e-3 of the range. Keeping g independent of vmax matters: far corners of a
    plane reach losses in the thousands, and a gap relative to the range would swallow the
    whole valley in the first band. g is kept within [1e-9, 0.1] of the range.
    """
    if n < 1:
        raise ValueError(f"need at least one contour band, got levels={n}")
    if not floor > 0:
        raise ValueError(f"floor is the first gap relative to |vmin|, must be > 0, got {floor}")
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ValueError(f"colour limits must be finite, got vmin={vmin}, vmax={vmax}")
    if vmax <= vmin:  # a flat surface: open a tiny range so contourf has increasing levels
        vmax = vmin + max(abs(vmin) * 1e-6, 1e-12)
    span = vmax - vmin
    gap = floor * abs(vmin) if vmin != 0 else 1e-3 * span
    gap = min(max(gap, 1e-9 * span), 0.1 * span)
    return np.concatenate([[vmin], vmin + np.geomspace(gap, span, n)])


def shared_scale(
    *results: Any,
    metrics: Sequence[str] | None = None,
    clip: Mapping[str, float] | None = None,
) -> dict[str, tuple[float, float]]:
    """Common colour limits {metric: (vmin, vmax)} over several results, for `plot_plane(scale=)`.

    metrics: default the train loss and the test error (test MSE for regression results).
    vmin / vmax are the min / max of the finite values of that metric over all results;
    `clip[metric]` caps vmax (e.g. {"train_loss": 5.0}), as the paper clips its colour scales.
    """
    if not results:
        raise ValueError("shared_scale needs at least one result")
    metrics = task_metrics(results[0]) if metrics is None else metrics
    scale = {}
    for metric in metrics:
        vals = np.concatenate([_finite(getattr(r, metric)) for r in results])
        if vals.size == 0:
            raise ValueError(f"no finite values of {metric!r} in any result")
        vmax = float(vals.max())
        if clip and metric in clip:
            vmax = min(vmax, float(clip[metric]))
        scale[metric] = (float(vals.min()), vmax)
    return scale


def _endpoint_indices(names: Sequence[str], count: int) -> tuple[int, int]:
    """Indices of the start and end anchors: by name, else the first and the second (the
    order of `PlaneResult.anchors` and `Plane.through`: origin, point on the x-axis, ...)."""
    lowered = [str(n).lower() for n in names]

    def find(options: tuple[str, ...], default: int) -> int:
        return next((lowered.index(o) for o in options if o in lowered), default)

    return find(("start", "w1", "w_1"), 0), find(("end", "w2", "w_2"), min(1, count - 1))


_ANCHOR_STYLE = {
    "markersize": 9,
    "color": "white",
    "markeredgecolor": "black",
    "markeredgewidth": 1.3,
    "zorder": 5,
}


_COMPASS = np.array([(np.cos(a), np.sin(a)) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])


def _label_directions(
    anchors: np.ndarray, names: Sequence[str], pt: tuple[float, float], limits: np.ndarray
) -> list[np.ndarray]:
    """Where each anchor's name goes (a unit vector): away from the anchors' centre, else the
    nearest free compass direction inside the panel, so that names of nearby anchors neither
    collide with each other, nor cover another marker, nor stick out of the panel into its
    title. pt: data units per typographic point along x and y (an estimate); limits: the
    panel's (x0, y0, x1, y1)."""
    px, py = pt

    def box(k: int, d: np.ndarray) -> np.ndarray:  # (x0, y0, x1, y1) of name k set off along d
        w, h = (5.5 * len(names[k]) + 6) * px, 14 * py  # 9 pt text in a padded box
        x, y = anchors[k] + 10 * np.array([px, py]) * d
        x0 = x if d[0] > 0.35 else x - w if d[0] < -0.35 else x - w / 2
        y0 = y if d[1] > 0.35 else y - h if d[1] < -0.35 else y - h / 2
        return np.array([x0, y0, x0 + w, y0 + h])

    def hits(b: np.ndarray, c: np.ndarray) -> bool:
        return bool(b[0] < c[2] and c[0] < b[2] and b[1] < c[3] and c[1] < b[3])

    def inside(b: np.ndarray) -> bool:
        return bool(
            b[0] >= limits[0] and b[1] >= limits[1] and b[2] <= limits[2] and b[3] <= limits[3]
        )

    size = 6 * np.array([px, py])
    markers = [np.r_[a - size, a + size] for a in anchors]
    centre, placed, chosen = anchors.mean(0), [], []
    for k in range(len(anchors)):
        away = (anchors[k] - centre) / np.array([px, py])
        away = away / np.hypot(*away) if np.hypot(*away) > 1e-6 else np.array([0.7, 0.7])
        options = [away, *sorted(_COMPASS, key=lambda d: -float(d @ away))]
        others = [m for j, m in enumerate(markers) if j != k]

        clear = [d for d in options if not any(hits(box(k, d), c) for c in placed + others)]
        pick = next((d for d in clear if inside(box(k, d))), None)
        chosen.append(pick if pick is not None else next(iter(clear), away))
        placed.append(box(k, chosen[-1]))
    return chosen


def _draw_anchors(
    ax: Any,
    anchors: np.ndarray,
    names: Sequence[str],
    ends: tuple[int, int],
    pt: tuple[float, float],
    limits: np.ndarray,
) -> None:
    """A marker per anchor and its name, placed by `_label_directions`."""
    bend_markers = iter(["^", "D", "v", "P", "X", "h", "*", "<", ">"] * 4)
    directions = _label_directions(anchors, names, pt, limits)
    for k, ((x, y), (ux, uy)) in enumerate(zip(anchors, directions, strict=True)):
        marker = "o" if k == ends[0] else "s" if k == ends[1] else next(bend_markers)
        ax.plot([x], [y], marker=marker, linestyle="none", **_ANCHOR_STYLE)
        ax.annotate(
            names[k],
            (x, y),
            xytext=(10 * ux, 10 * uy),
            textcoords="offset points",
            ha="left" if ux > 0.35 else "right" if ux < -0.35 else "center",
            va="bottom" if uy > 0.35 else "top" if uy < -0.35 else "center",
            fontsize=9,
            zorder=6,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.75, "lw": 0},
        )


# A plane flatter than this (height / width of its grid) is drawn this flat, its y axis
# stretched and labelled so: a 1:1 drawing of a long thin plane is a strip nobody can read.
FLATTEST = 0.4


def _stretch(x: np.ndarray, y: np.ndarray) -> float:
    """How much taller than 1:1 the y axis is drawn (1: to scale)."""
    if np.ptp(x) <= 0 or np.ptp(y) <= 0:
        return 1.0
    return max(1.0, FLATTEST * np.ptp(x) / np.ptp(y))


def _axis_labels(anchors: np.ndarray, names: Sequence[str], ends: tuple[int, int]) -> list[str]:
    """Axis labels read off the anchors ("x: along end − start", "y: ⊥ x, bend at y > 0"), so
    they hold whichever anchor the plane's x-axis points to (the paper's w2, or a bend)."""
    s, e = ends
    extent = float(np.ptp(anchors, axis=0).max()) if len(anchors) > 1 else 0.0
    for k in [e, *range(len(anchors))]:
        d = anchors[k] - anchors[s]
        if k == s or not np.hypot(*d) > 1e-9 * extent or abs(d[1]) > 1e-6 * np.hypot(*d):
            continue
        pair = (names[k], names[s]) if d[0] > 0 else (names[s], names[k])
        others = [j for j in range(len(anchors)) if j not in (s, k)]
        side = f"{names[others[0]]} at y {'>' if anchors[others[0], 1] > 0 else '<'} 0"
        return [
            f"x: along {pair[0]} − {pair[1]}",
            f"y: ⊥ x, {side if len(others) == 1 else 'in the plane'}",
        ]
    return ["plane x", "plane y"]


def off_plane_note(result: Any, tol: float = 1e-3) -> str | None:
    """A note such as "curve leaves the plane by up to 3.2 (12 % of |end − start|)", or None.

    The distance is the largest of `result.curve_distance` (each projected phi(t)) and, if the
    result has it, `anchor_distance` (control points off the plane: the bends a plane through
    three anchors cannot hold when a curve has several). It is compared with the distance
    between the start and end anchors; within `tol` of it there is no note. Above, the drawn
    curve is a projection and the colours under it are not the curve's values.
    """
    anchors = np.asarray(result.anchors, dtype=float).reshape(-1, 2)
    names = list(getattr(result, "anchor_names", None) or [])
    names += [f"anchor {k}" for k in range(len(names), len(anchors))]
    dists = [_finite(_get(result, a)) for a in ("curve_distance", "anchor_distance")]
    far = max((float(d.max()) for d in dists if d.size), default=0.0)
    if len(anchors) < 2 or far == 0.0:
        return None
    s, e = _endpoint_indices(names, len(anchors))
    span = float(np.hypot(*(anchors[e] - anchors[s]))) or float(np.ptp(anchors, axis=0).max())
    if span > 0 and far <= tol * span:
        return None
    share = f" ({100 * far / span:.2g} % of |{names[e]} − {names[s]}|)" if span > 0 else ""
    return f"curve leaves the plane by up to {far:.3g}{share}: drawn is its projection"


def anchor_panel(
    ax: Any,
    x: np.ndarray,
    y: np.ndarray,
    anchors: np.ndarray,
    names: Sequence[str],
    ends: tuple[int, int],
) -> None:
    """The plane's frame on `ax`: limits of the grid, to scale unless it is flatter than
    `FLATTEST` (then stretched, and the y label says by how much), the anchors with their
    names, and axis labels read off the anchors."""
    stretch = _stretch(x, y)
    # Data units per point of the drawn panel (about 260 pt wide, 360 pt at most tall).
    scale_pt = max(np.ptp(x) / 260, np.ptp(y) * stretch / 360) or 1.0
    limits = np.array([x[0], y[0], x[-1], y[-1]])
    _draw_anchors(ax, anchors, names, ends, (scale_pt, scale_pt / stretch), limits)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_aspect(stretch)  # 1: distances to scale
    xlabel, ylabel = _axis_labels(anchors, names, ends)
    if stretch > 1:
        ylabel += f"\n(drawn {stretch:.2g}x taller)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _plane_figure(ncols: int, x: np.ndarray, y: np.ndarray, note: bool) -> tuple[Figure, list[Any]]:
    # Size the panels to the plane's aspect (drawn 1:1), so equal-aspect panels fill their cells;
    # the rest is titles, labels, the colour bar, the legend and the note's line.
    width = 3.6
    ratio = np.ptp(y) / np.ptp(x) * _stretch(x, y) if np.ptp(x) > 0 else 1.0
    height = float(np.clip(width * ratio, 1.8, 5.0))
    return _figure(ncols, width=width + 1.7, height=height + 1.5 + 0.25 * note)


def plot_plane(
    result: Any,
    *,
    metrics: Sequence[str] | None = None,
    levels: int | Sequence[float] = 8,
    scale: Scale | None = None,
    floor: float = 0.1,
    line: bool = True,
    cmap: str = "jet_r",
    title: str | None = None,
    model: str | None = None,
    off_plane_tol: float = 1e-3,
    mark_evaluated: bool = False,
) -> Figure:
    """Filled-contour panels of a plane, one per metric, as in Garipov et al. 2018 (Fig. 1).

    metrics: default the train loss and the test error (test MSE for a regression result).
    result: x (Gx,), y (Gy,), and each metric (Gx, Gy) with [i, j] at (x[i], y[j]); anchors
    (K, 2) with anchor_names; optional curve_xy (T, 2), drawn as a solid line, and
    curve_distance (T,). The axes are labelled from the anchors (no orientation is assumed).
    levels: number of bands, spaced by `log_levels(vmin, vmax, levels, floor)`, or explicit
    increasing levels (then `scale` and `floor` are not used). Each band gets its own colour
    whatever its width (BoundaryNorm); values beyond the levels take the end colours, shown as
    arrows on the colour bar. Each panel has its own bar, as tall as the panel (an inset of it:
    `ax.child_axes`), labelled with its metric.
    scale: {metric: (vmin, vmax)}; a None limit (or a missing metric) uses the data's finite
    min / max. Pass `shared_scale(r1, r2, ...)` so several figures share one colour scale.
    line: draw the straight segment between the start and the end anchors, dashed.
    title / model: see `figure_title`. off_plane_tol: see `off_plane_note`; the note is the
    title of the legend (curve solid, line dashed). NaN / inf values are masked (left blank).
    An adaptive result (`modeconn.engine.adaptive`) is drawn as a regular one on its whole
    grid; mark_evaluated: dots at its evaluated nodes, with their share in the legend.
    """
    metrics = task_metrics(result) if metrics is None else metrics
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    anchors = np.asarray(result.anchors, dtype=float).reshape(-1, 2)
    names = [str(n) for n in getattr(result, "anchor_names", None) or []]
    names += [f"anchor {k}" for k in range(len(names), len(anchors))]
    ends = _endpoint_indices(names, len(anchors))
    curve_xy = getattr(result, "curve_xy", None)
    curve_xy = np.asarray(curve_xy if curve_xy is not None else [], dtype=float).reshape(-1, 2)
    note = off_plane_note(result, off_plane_tol)
    fig, axes = _plane_figure(len(metrics), x, y, note is not None)
    handles = []
    for ax, metric in zip(axes, metrics, strict=True):
        values = np.asarray(getattr(result, metric), dtype=float)
        if values.shape != (len(x), len(y)):
            raise ValueError(
                f"{metric} has shape {values.shape}, expected (len(x), len(y)) = {(len(x), len(y))}"
            )
        z = np.ma.masked_invalid(values.T)  # contourf wants [row=y, col=x]
        finite = _finite(values)
        lo, hi = (scale or {}).get(metric, (None, None))
        if finite.size:
            lo = float(finite.min()) if lo is None else float(lo)
            hi = float(finite.max()) if hi is None else float(hi)
            lv = (
                log_levels(lo, hi, levels, floor)
                if isinstance(levels, int)
                else np.asarray(levels, dtype=float)
            )
            below, above = finite.min() < lv[0], finite.max() > lv[-1]
            extend = ("neither", "min", "max", "both")[int(below) + 2 * int(above)]
            norm = colors.BoundaryNorm(lv, 256, extend=extend)
            filled = ax.contourf(x, y, z, levels=lv, cmap=cmap, norm=norm, extend=extend, zorder=0)
            ax.contour(x, y, z, levels=lv, colors="black", linewidths=0.5, alpha=0.5, zorder=1)
            # The bar is an inset in the panel's own axes coordinates: exactly as tall as the
            # equal-aspect panel, and constrained layout keeps it and its label clear of the next.
            cax = ax.inset_axes([1.04, 0.0, 0.05, 1.0], label="<colorbar>")
            cbar = fig.colorbar(filled, cax=cax, format="%.3g")
            cbar.set_label(metric_label(metric))
        else:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center")
        handles = []
        if len(curve_xy):
            handles += ax.plot(*curve_xy.T, color="black", linewidth=2.0, zorder=3, label="curve")
        if line and len(anchors) >= 2:
            segment = anchors[list(ends)]
            handles += ax.plot(
                *segment.T, color="black", linestyle="--", linewidth=1.3, zorder=2, label="line"
            )
        dots = draw_evaluated(ax, result) if mark_evaluated else None
        if dots is not None:  # a legend entry larger than the dots themselves
            handles += ax.plot([], [], "o", color="black", ms=3, label=dots.get_label())
        anchor_panel(ax, x, y, anchors, names, ends)
        ax.set_title(metric_label(metric).replace(" (%)", ""))
    if handles:
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        if note:  # the note is about the curve the legend names: its title, above the entries
            legend.set_title(note, prop={"size": 9, "style": "italic"})
    elif note:
        fig.supxlabel(note, fontsize=9, style="italic")
    _suptitle(fig, result, title, model)
    return fig
