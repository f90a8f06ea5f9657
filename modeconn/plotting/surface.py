"""Loss surfaces around a point: a 1-D line on twin axes, 2-D contours, heat maps, 3-D surfaces
and panel grids on one shared colour scale (Li et al. 2018, "Visualizing the Loss Landscape of
Neural Nets", Figs. 1-5, and the critique's grid of surfaces under several direction families).

A 2-D result holds x (Gx,), y (Gy,) and each metric (Gx, Gy) with [i, j] at (x[i], y[j]); a 1-D
result x (T,) and each metric (T,). Both hold `metrics` (the names present), `direction_scale`
(||d_k|| / ||origin||, so a coordinate times it is a distance relative to the origin's norm) and
`meta` (optional "dataset", "bn" = "recompute" | "origin", "directions"). Coordinates are in
direction units. Deliberate differences from Li et al.'s `plot_2D.py`: the 3-D axes are added to
the figure (theirs, `Axes3D(fig)`, is blank on matplotlib >= 3.4), NaN points are left blank
instead of breaking the levels, and a panel grid shares one colour scale (the critique's
notebooks scale every panel on its own, so their colours cannot be compared).
The 1-D figure is `modeconn.plotting.line`; files for other tools (an HTML page, a ParaView
.vts) are `modeconn.plotting.surface_export`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colors, ticker
from matplotlib.figure import Figure

from modeconn.plotting.common import (
    _figure,
    _finite,
    _get,
    _log_axis_ok,
    _suptitle,
    draw_evaluated,
    metric_label,
)
from modeconn.plotting.plane import log_levels, shared_scale

Limits = tuple[float | None, float | None]
_BN = {"recompute": "BN recomputed", "origin": "BN of the origin"}


def surface_values(result: Any, metric: str) -> np.ndarray:
    """The (Gx, Gy) array of `metric`, checked against x and y; the error lists the metrics."""
    present = list(getattr(result, "metrics", None) or [])
    if not hasattr(result, metric) or (present and metric not in present):
        raise ValueError(f"no metric {metric!r} in this result; it has {present}")
    values = np.asarray(getattr(result, metric), dtype=float)
    shape = (len(np.atleast_1d(result.x)), len(np.atleast_1d(getattr(result, "y", []))))
    if values.shape != shape:
        raise ValueError(f"{metric} has shape {values.shape}, expected (len(x), len(y)) = {shape}")
    return values


def surface_note(result: Any) -> str:
    """ "filter directions, BN recomputed" from meta, or "" when it records neither."""
    meta = getattr(result, "meta", None) or {}
    parts = [f"{meta['directions']} directions" if meta.get("directions") else None]
    parts.append(_BN.get(meta.get("bn"), f"BN: {meta['bn']}" if meta.get("bn") else None))
    return ", ".join(p for p in parts if p)


def direction_scales(result: Any, n: int) -> list[float | None]:
    """The n entries of `direction_scale`, None where missing, not finite or not > 0."""
    scale = list(_get(result, "direction_scale").ravel()) + [np.nan] * n
    return [float(s) if np.isfinite(s) and s > 0 else None for s in scale[:n]]


def direction_labels(result: Any) -> list[str]:
    """Axis labels "α along d1  (|d1| = 0.52 |origin|)" and the same for β, d2."""
    labels = []
    for k, (name, s) in enumerate(zip(("α", "β"), direction_scales(result, 2), strict=True)):
        size = rf"  ($\|d_{k + 1}\|$ = {s:.3g} $\|$origin$\|$)" if s else ""
        labels.append(f"{name} along $d_{k + 1}$" + size)
    return labels


def _limits(values: np.ndarray, scale: Limits | None) -> tuple[float, float]:
    finite = _finite(values)
    if finite.size == 0:
        raise ValueError("no finite values to draw")
    lo, hi = scale or (None, None)
    return (
        float(finite.min()) if lo is None else float(lo),
        float(finite.max()) if hi is None else float(hi),
    )


def contour_levels(
    lo: float, hi: float, levels: int | Sequence[float], log: bool, floor: float = 0.1
) -> np.ndarray:
    """Increasing levels: `levels` + 1 of them, evenly (linear) or by `log_levels` (log: the
    gaps above `lo` grow geometrically, so the valley floor gets most of them); or the explicit
    levels given."""
    if not isinstance(levels, int):
        lv = np.asarray(levels, dtype=float)
        if lv.ndim != 1 or lv.size < 2 or np.any(np.diff(lv) <= 0):
            raise ValueError(f"explicit levels must be 2 or more increasing values, got {levels}")
        return lv
    if log:
        return log_levels(lo, hi, levels, floor)
    if levels < 1:
        raise ValueError(f"need at least one contour band, got levels={levels}")
    return np.linspace(lo, hi if hi > lo else lo + max(abs(lo) * 1e-6, 1e-12), levels + 1)


def _extend(values: np.ndarray, lv: np.ndarray) -> str:
    finite = _finite(values)
    below, above = bool(finite.min() < lv[0]), bool(finite.max() > lv[-1])
    return ("neither", "min", "max", "both")[int(below) + 2 * int(above)]


def _ratio(x: np.ndarray, y: np.ndarray) -> float:
    """Drawn height / width of a panel: to scale, but no side over 4x the other."""
    return float(np.clip(np.ptp(y) / np.ptp(x), 0.25, 4.0)) if np.ptp(x) > 0 else 1.0


def _frame(ax: Any, x: np.ndarray, y: np.ndarray, labels: Sequence[str] | None) -> None:
    """Limits of the grid, drawn at `_ratio` (1:1 unless too thin), the origin marked."""
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_box_aspect(_ratio(x, y))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(ticker.MaxNLocator(5))
    if x[0] <= 0 <= x[-1] and y[0] <= 0 <= y[-1]:
        ax.plot([0], [0], marker="+", color="white", markersize=9, mew=2, zorder=4)
        ax.plot([0], [0], marker="+", color="black", markersize=7, mew=1, zorder=5)
    if labels:
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])


def _panel(result: Any) -> tuple[Figure, Any]:
    """One 2-D panel in a figure sized to its drawn aspect (room for titles and the bar)."""
    width = 3.8
    height = float(np.clip(width * _ratio(np.asarray(result.x), np.asarray(result.y)), 1.8, 5.5))
    fig, (ax,) = _figure(1, width=width + 1.9, height=height + 1.5)
    return fig, ax


def _bar(fig: Figure, ax: Any, mappable: Any, label: str, **kw: Any) -> Any:
    """A colour bar exactly as tall as the panel: an inset in its axes coordinates."""
    cax = ax.inset_axes([1.04, 0.0, 0.05, 1.0], label="<colorbar>")
    bar = fig.colorbar(mappable, cax=cax, **kw)
    bar.set_label(label)
    return bar


def _draw_contour(
    ax: Any,
    result: Any,
    values: np.ndarray,
    norm: colors.BoundaryNorm,
    *,
    filled: bool,
    cmap: str,
    clabels: bool,
) -> Any:
    """Filled bands (each its own colour: the levels and extend of `norm`) with thin lines, or
    coloured lines with their values written on them. Returns the ContourSet for the bar."""
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    z = np.ma.masked_invalid(values.T)  # contour wants [row=y, col=x]
    lv, extend = norm.boundaries, norm.extend
    if filled:
        cs = ax.contourf(x, y, z, levels=lv, cmap=cmap, norm=norm, extend=extend, zorder=0)
        ax.contour(x, y, z, levels=lv, colors="black", linewidths=0.4, alpha=0.5, zorder=1)
    else:
        cs = ax.contour(x, y, z, levels=lv, cmap=cmap, norm=norm, linewidths=1.1, zorder=1)
        if clabels:  # every other level, or the labels cover the lines near the minimum
            ax.clabel(cs, cs.levels[::2], inline=True, fontsize=7, fmt="%.3g")
    return cs


def plot_contour(
    result: Any,
    metric: str = "train_loss",
    *,
    levels: int | Sequence[float] = 20,
    log: bool = False,
    filled: bool = False,
    scale: Limits | None = None,
    floor: float = 0.1,
    clabels: bool = True,
    cmap: str = "viridis",
    title: str | None = None,
    model: str | None = None,
    mark_evaluated: bool = False,
) -> Figure:
    """Contour lines of one metric of a 2-D surface, labelled with their values, or (filled)
    filled bands with thin lines; a colour bar either way (Li et al. 2018, Fig. 4).

    result: x (Gx,), y (Gy,), metric (Gx, Gy) with [i, j] at (x[i], y[j]).
    levels: number of bands, evenly spaced (log=False) or spaced by `log_levels` (log=True:
    gaps above the minimum grow geometrically, from `floor` * |min|), or explicit levels.
    scale: (vmin, vmax) of the levels, a None end from the data; clip vmax to keep far, huge
    corners from taking every level (Li et al. clip at 10). NaN / inf points are left blank.
    mark_evaluated: dots at the evaluated nodes of an adaptive result (its share in the
    panel's title); an adaptive result is drawn on its whole grid either way.
    """
    values = surface_values(result, metric)
    lo, hi = _limits(values, scale)
    lv = contour_levels(lo, hi, levels, log, floor)
    fig, ax = _panel(result)
    norm = colors.BoundaryNorm(lv, 256, extend=_extend(values, lv))
    cs = _draw_contour(ax, result, values, norm, filled=filled, cmap=cmap, clabels=clabels)
    _bar(fig, ax, cs, metric_label(metric), format="%.3g")
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    _frame(ax, x, y, direction_labels(result))
    spacing = "log-spaced" if log and isinstance(levels, int) else ""
    dots = draw_evaluated(ax, result) if mark_evaluated else None
    share = dots.get_label() if dots is not None else ""
    ax.set_title(", ".join(p for p in (surface_note(result), spacing, share) if p), fontsize=9)
    _suptitle(fig, result, title or metric_label(metric), model)
    return fig


def plot_heatmap(
    result: Any,
    metric: str = "train_loss",
    *,
    log: bool = False,
    scale: Limits | None = None,
    cmap: str = "viridis",
    title: str | None = None,
    model: str | None = None,
    mark_evaluated: bool = False,
) -> Figure:
    """One cell per grid point, coloured by `metric` (a log colour scale if log), the cell of
    [i, j] centred on (x[i], y[j]); NaN cells blank. scale: (vmin, vmax), None ends from the data.
    mark_evaluated: as `plot_contour`'s.
    """
    values = surface_values(result, metric)
    lo, hi = _limits(values, scale)
    if log and not (lo > 0 and _log_axis_ok(values)):
        raise ValueError(f"log=True needs {metric} > 0 everywhere; use log=False")
    norm = colors.LogNorm(lo, hi) if log else colors.Normalize(lo, hi)
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    fig, ax = _panel(result)
    mesh = ax.pcolormesh(
        x, y, np.ma.masked_invalid(values.T), shading="nearest", cmap=cmap, norm=norm
    )
    bar = _bar(fig, ax, mesh, metric_label(metric), extend=_extend(values, np.array([lo, hi])))
    if log:  # plain numbers at 1, 2, 3, 5 x 10^k, as the log axes of the path figures
        bar.ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        bar.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    half = [np.diff(v[:2]) / 2 if len(v) > 1 else [0.5] for v in (x, y)]
    _frame(ax, x, y, direction_labels(result))
    ax.set_xlim(x[0] - half[0][0], x[-1] + half[0][0])
    ax.set_ylim(y[0] - half[1][0], y[-1] + half[1][0])
    dots = draw_evaluated(ax, result) if mark_evaluated else None
    share = dots.get_label() if dots is not None else ""
    ax.set_title(", ".join(p for p in (surface_note(result), share) if p), fontsize=9)
    _suptitle(fig, result, title or metric_label(metric), model)
    return fig


def plot_surface_3d(
    result: Any,
    metric: str = "train_loss",
    *,
    log: bool = False,
    scale: Limits | None = None,
    cmap: str = "viridis",
    elev: float = 30.0,
    azim: float = -60.0,
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """A 3-D surface of `metric` over the (x, y) grid, as Li et al.'s `plot_2D.py` draws it but
    with the 3-D axes added to the figure (their `Axes3D(fig)` draws nothing on matplotlib >= 3.4).

    Heights are clipped to scale = (vmin, vmax) (None ends from the data), so a far corner in the
    thousands does not flatten the valley; faces at NaN / inf points are left out (a hole).
    log: height log10(metric).
    """
    values = surface_values(result, metric)
    lo, hi = _limits(values, scale)
    z = np.clip(np.where(np.isfinite(values), values, np.nan), lo, hi)
    zlabel = metric_label(metric)
    if log:
        if not lo > 0:
            raise ValueError(
                f"log=True needs {metric} > 0; use log=False or scale=(vmin > 0, None)"
            )
        z, lo, hi, zlabel = np.log10(z), np.log10(lo), np.log10(hi), f"log10 {zlabel}"
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    xx, yy = np.meshgrid(x, y, indexing="ij")  # [i, j] at (x[i], y[j]), as the values
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot(projection="3d")  # Axes3D(fig) alone is no longer added to fig
    surf = ax.plot_surface(
        xx,
        yy,
        z,
        cmap=cmap,
        vmin=lo,
        vmax=hi,
        rstride=1,
        cstride=1,
        linewidth=0.15,
        edgecolor=(0, 0, 0, 0.25),
        antialiased=True,
    )
    ax.set_zlim(lo, hi)
    ax.view_init(elev=elev, azim=azim)
    for axis, name in ((ax.xaxis, "α"), (ax.yaxis, "β")):
        axis.set_major_locator(ticker.MaxNLocator(5))
        axis.set_label_text(name)
    ax.set_zlabel(zlabel)
    bar = fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.08)
    bar.set_label(zlabel)
    note = surface_note(result)
    scales = [
        f"|d{k + 1}| = {s:.3g} |origin|" for k, s in enumerate(direction_scales(result, 2)) if s
    ]
    ax.set_title(", ".join([note, *scales] if note else scales), fontsize=8)
    _suptitle(fig, result, title or metric_label(metric), model)
    return fig


def plot_panels(
    results: Sequence[Any],
    metric: str = "train_loss",
    *,
    titles: Sequence[str] | None = None,
    nrows: int | None = None,
    ncols: int | None = None,
    log: bool = True,
    levels: int | Sequence[float] = 12,
    clip: float | None = None,
    floor: float = 0.1,
    cmap: str = "viridis",
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """A grid of filled-contour panels of one metric, all on ONE colour scale with one colour bar
    (the critique's figure: networks by rows, direction families by columns, e.g. 3 x 4).

    results: 2-D surface results, drawn row by row; titles: one per panel. nrows / ncols:
    default one row. The scale is `shared_scale(*results, metrics=[metric])`, vmax capped at
    `clip`; the levels are the same for every panel (log-spaced by `log_levels` if log), so a
    colour means one value everywhere (one BoundaryNorm for all panels). Values beyond the
    levels (above `clip`) take the end colours, shown as arrows on the bar.
    """
    if not results:
        raise ValueError("plot_panels needs at least one result")
    n = len(results)
    nrows = nrows or (1 if ncols is None else -(-n // ncols))
    ncols = ncols or -(-n // nrows)
    if nrows * ncols < n:
        raise ValueError(f"{n} results do not fit in nrows={nrows} x ncols={ncols}")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} results")
    values = [surface_values(r, metric) for r in results]
    lo, hi = shared_scale(*results, metrics=[metric], clip={metric: clip} if clip else None)[metric]
    lv = contour_levels(lo, hi, levels, log, floor)
    # ONE norm for every panel (levels and out-of-range ends alike): a colour is one value.
    norm = colors.BoundaryNorm(lv, 256, extend=_extend(np.concatenate(values, axis=None), lv))
    ratio = max(_ratio(np.asarray(r.x), np.asarray(r.y)) for r in results)
    height = float(np.clip(2.3 * ratio, 1.0, 4.0)) + 0.7  # a panel, its title and ticks
    fig = Figure(figsize=(3.0 * ncols + 1.2, height * nrows + 0.5), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    sets = []
    for k, ax in enumerate(grid.ravel()):
        if k >= n:
            ax.set_visible(False)
            continue
        r = results[k]
        sets.append(_draw_contour(ax, r, values[k], norm, filled=True, cmap=cmap, clabels=False))
        row, col = divmod(k, ncols)
        _frame(ax, np.asarray(r.x, float), np.asarray(r.y, float), None)
        ax.set_xlabel("α" if row == nrows - 1 or k + ncols >= n else "")
        ax.set_ylabel("β" if col == 0 else "")
        ax.set_title(titles[k] if titles is not None else "", fontsize=9)
    bar = fig.colorbar(sets[0], ax=grid.ravel().tolist(), format="%.3g", shrink=0.85)
    bar.set_label(metric_label(metric) + (" (log-spaced levels)" if log else ""))
    note = surface_note(results[0])
    _suptitle(
        fig, results[0], title or (metric_label(metric) + (f", {note}" if note else "")), model
    )
    return fig
