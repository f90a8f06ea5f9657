"""Paper-style figures for path, plane and ensemble results (matplotlib, Agg-safe, no LaTeX).

Every function takes a result object and only reads its attributes (numpy arrays and floats), so
`PathResult`, `PlaneResult`, `EnsembleResult` and `FGEResult` work, and so does anything with the
same fields. Every function returns a `matplotlib.figure.Figure`; `save_figure` writes it.
Errors are in percent, as `modeconn.evaluation` reports them.

Figures are built without pyplot (`matplotlib.figure.Figure`), so library code and Hydra jobs
never need a display, never pick a backend and never accumulate open figures. In a notebook a
returned figure shows as a cell's value (`%matplotlib inline`); elsewhere, `save_figure` it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors, ticker
from matplotlib.figure import Figure

Scale = Mapping[str, tuple[float | None, float | None]]

PLANE_METRICS = ("train_loss", "test_error")


def metric_label(metric: str) -> str:
    """Axis label of a metric name: "test_error" -> "test error (%)"."""
    split, _, kind = metric.partition("_")
    kind = {"nll": "NLL", "error": "error (%)", "loss": "loss"}.get(kind, kind.replace("_", " "))
    return f"{split} {kind}" if kind else split


def _figure(ncols: int, width: float = 4.6, height: float = 3.8) -> tuple[Figure, list[Any]]:
    # A bare Figure (no pyplot) renders with Agg anywhere and never leaks into pyplot's registry;
    # notebooks display it through the inline backend's formatter like any other figure.
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def figure_title(result: Any, title: str | None = None, model: str | None = None) -> str | None:
    """The suptitle of a figure: "<model> on <data set>", then ": <title>" if given.

    The data set comes from `result.meta["dataset"]`, the model from `model` (results do not
    record it; the apps pass the checkpoint's model name) or `meta["model"]`. A `title` that
    already names the data set is used as it is; with neither, the title alone (or None).
    """
    meta = getattr(result, "meta", None) or {}
    dataset, model = meta.get("dataset"), model or meta.get("model")
    heading = " on ".join(str(p) for p in (model, dataset) if p) or None
    if not title or not heading:
        return title or heading
    return title if dataset and str(dataset).lower() in title.lower() else f"{heading}: {title}"


def _suptitle(fig: Figure, result: Any, title: str | None, model: str | None) -> None:
    text = figure_title(result, title, model)
    if text:
        fig.suptitle(text)


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _get(result: Any, name: str) -> np.ndarray:
    """An optional array attribute; empty when missing or None."""
    value = getattr(result, name, None)
    return np.asarray([] if value is None else value, dtype=float)


def _log_axis_ok(*arrays: Any) -> bool:
    vals = np.concatenate([_finite(a) for a in arrays if a is not None] or [np.empty(0)])
    return vals.size > 0 and bool(np.all(vals > 0))


def _log_y(ax: Any) -> None:
    """A log y-axis labelled in plain numbers at 1, 2, 3, 5 x 10^k (not 2 x 10^0)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


# --------------------------------------------------------------------------------- plane


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
    metrics: Sequence[str] = PLANE_METRICS,
    clip: Mapping[str, float] | None = None,
) -> dict[str, tuple[float, float]]:
    """Common colour limits {metric: (vmin, vmax)} over several results, for `plot_plane(scale=)`.

    vmin / vmax are the min / max of the finite values of that metric over all results;
    `clip[metric]` caps vmax (e.g. {"train_loss": 5.0}), as the paper clips its colour scales.
    """
    if not results:
        raise ValueError("shared_scale needs at least one result")
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
    """Indices of the start and end anchors: by name, else the first and the last."""
    lowered = [str(n).lower() for n in names]

    def find(options: tuple[str, ...], default: int) -> int:
        return next((lowered.index(o) for o in options if o in lowered), default)

    return find(("start", "w1", "w_1"), 0), find(("end", "w2", "w_2"), count - 1)


_ANCHOR_STYLE = {
    "markersize": 9,
    "color": "white",
    "markeredgecolor": "black",
    "markeredgewidth": 1.3,
    "zorder": 5,
}


_COMPASS = np.array([(np.cos(a), np.sin(a)) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])


def _label_directions(anchors: np.ndarray, names: Sequence[str], pt: float) -> list[np.ndarray]:
    """Where each anchor's name goes (a unit vector): away from the anchors' centre, else the
    nearest free compass direction, so that names of nearby anchors neither collide with each
    other nor cover another marker. pt: data units per typographic point (an estimate)."""

    def box(k: int, d: np.ndarray) -> np.ndarray:  # (x0, y0, x1, y1) of name k set off along d
        w, h = (5.5 * len(names[k]) + 6) * pt, 14 * pt  # 9 pt text in a padded box
        x, y = anchors[k] + 10 * pt * d
        x0 = x if d[0] > 0.35 else x - w if d[0] < -0.35 else x - w / 2
        y0 = y if d[1] > 0.35 else y - h if d[1] < -0.35 else y - h / 2
        return np.array([x0, y0, x0 + w, y0 + h])

    def hits(b: np.ndarray, c: np.ndarray) -> bool:
        return bool(b[0] < c[2] and c[0] < b[2] and b[1] < c[3] and c[1] < b[3])

    markers = [np.r_[a - 6 * pt, a + 6 * pt] for a in anchors]
    centre, placed, chosen = anchors.mean(0), [], []
    for k in range(len(anchors)):
        away = anchors[k] - centre
        away = away / np.hypot(*away) if np.hypot(*away) > 1e-6 * pt else np.array([0.7, 0.7])
        options = [away, *sorted(_COMPASS, key=lambda d: -float(d @ away))]
        others = [m for j, m in enumerate(markers) if j != k]
        free = (d for d in options if not any(hits(box(k, d), c) for c in placed + others))
        chosen.append(next(free, away))
        placed.append(box(k, chosen[-1]))
    return chosen


def _draw_anchors(
    ax: Any, anchors: np.ndarray, names: Sequence[str], ends: tuple[int, int], pt: float
) -> None:
    """A marker per anchor and its name, placed by `_label_directions`."""
    bend_markers = iter(["^", "D", "v", "P", "X", "h", "*", "<", ">"] * 4)
    directions = _label_directions(anchors, names, pt)
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


def _plane_figure(ncols: int, x: np.ndarray, y: np.ndarray, note: bool) -> tuple[Figure, list[Any]]:
    # Size the panels to the plane's aspect (drawn 1:1), so equal-aspect panels fill their cells;
    # the rest is titles, labels, the colour bar, the legend and the note's line.
    width = 3.6
    height = float(np.clip(width * np.ptp(y) / np.ptp(x), 1.8, 5.0)) if np.ptp(x) > 0 else width
    return _figure(ncols, width=width + 1.7, height=height + 1.5 + 0.25 * note)


def plot_plane(
    result: Any,
    *,
    metrics: Sequence[str] = PLANE_METRICS,
    levels: int | Sequence[float] = 8,
    scale: Scale | None = None,
    floor: float = 0.1,
    line: bool = True,
    cmap: str = "jet_r",
    title: str | None = None,
    model: str | None = None,
    off_plane_tol: float = 1e-3,
) -> Figure:
    """Filled-contour panels of a plane, one per metric, as in Garipov et al. 2018 (Fig. 1).

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
    """
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    anchors = np.asarray(result.anchors, dtype=float).reshape(-1, 2)
    names = [str(n) for n in getattr(result, "anchor_names", None) or []]
    names += [f"anchor {k}" for k in range(len(names), len(anchors))]
    ends = _endpoint_indices(names, len(anchors))
    curve_xy = getattr(result, "curve_xy", None)
    curve_xy = np.asarray(curve_xy if curve_xy is not None else [], dtype=float).reshape(-1, 2)
    note = off_plane_note(result, off_plane_tol)
    fig, axes = _plane_figure(len(metrics), x, y, note is not None)
    # Data units per point of the drawn panels (about 260 pt wide, 360 pt at most tall).
    pt = max(np.ptp(x) / 260, np.ptp(y) / 360) or 1.0
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
        _draw_anchors(ax, anchors, names, ends, pt)
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(y[0], y[-1])
        ax.set_aspect("equal")
        ax.set_title(metric_label(metric).replace(" (%)", ""))
        xlabel, ylabel = _axis_labels(anchors, names, ends)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if handles:
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        if note:  # the note is about the curve the legend names: its title, above the entries
            legend.set_title(note, prop={"size": 9, "style": "italic"})
    elif note:
        fig.supxlabel(note, fontsize=9, style="italic")
    _suptitle(fig, result, title, model)
    return fig


# ---------------------------------------------------------------------------------- path


ZOOM_BELOW = 0.15  # zoom on the curve when its range is under this share of the panel's

# Candidate places of the zoom inset, in axes fractions (x0, y0, width, height), best first.
_INSET_BOXES = (
    (0.33, 0.3, 0.4, 0.38),
    (0.33, 0.18, 0.38, 0.34),
    (0.33, 0.52, 0.4, 0.38),
    (0.14, 0.52, 0.36, 0.38),
    (0.6, 0.52, 0.36, 0.38),
    (0.36, 0.14, 0.3, 0.28),
)


def _zoom_on_curve(ax: Any, drawn: list[tuple[np.ndarray, np.ndarray]]) -> Any | None:
    """An inset with the curve alone on its own scale, when the line squashes it: the curve
    spans under `ZOOM_BELOW` of the panel's range (a line at 90 % error, a curve near 3 %).
    drawn: (ts, values) of the curve, then the line. The inset goes where the fewest points
    of either series lie. Returns it, or None."""
    ts, curve = drawn[0]
    values = _finite(curve)
    every = np.concatenate([_finite(v) for _, v in drawn])
    spread, total = np.ptp(values) if values.size else 0.0, np.ptp(every) if every.size else 0.0
    if len(drawn) < 2 or not spread > 0 or spread >= ZOOM_BELOW * total:
        return None
    lo, hi = ax.get_ylim()
    dense = np.linspace(0, 1, 200)
    points = [
        (dense, (np.interp(dense, t, np.nan_to_num(v, nan=lo)) - lo) / (hi - lo)) for t, v in drawn
    ]

    def crowd(box: tuple[float, ...]) -> int:  # points under the box, its ticks and title
        x0, y0, w, h = box
        x0, y0, x1, y1 = x0 - 0.1, y0 - 0.09, x0 + w + 0.02, y0 + h + 0.09
        return sum(int(np.sum((px > x0) & (px < x1) & (py > y0) & (py < y1))) for px, py in points)

    inset = ax.inset_axes(min(_INSET_BOXES, key=crowd))
    inset.plot(ts, curve, "-", color="C0", marker=".", ms=3)
    pad = 0.15 * spread
    inset.set_ylim(values.min() - pad, values.max() + pad)
    inset.set_xlim(0, 1)
    inset.set_title("curve, zoomed", fontsize=8, pad=2)
    inset.tick_params(labelsize=7)
    inset.grid(alpha=0.3)
    return inset


def plot_path(
    curve_result: Any,
    line_result: Any = None,
    *,
    metrics: Sequence[str] = PLANE_METRICS,
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """Metrics vs t along the curve (solid) and, if given, along the straight line (dashed).

    curve_result / line_result: ts (T,) and each metric (T,). One panel per metric; losses and
    NLLs on a log axis (when all positive), errors linear, with an inset zoomed on the curve
    when the line squashes it (its range under ZOOM_BELOW of the panel's: `ax.child_axes`).
    title / model: see `figure_title`; the data set is read from curve_result.meta.
    """
    fig, axes = _figure(len(metrics))
    handles: list = []
    for ax, metric in zip(axes, metrics, strict=True):
        series = [(curve_result, "curve", "-", "C0"), (line_result, "line", "--", "C3")]
        drawn, handles = [], []
        for res, label, style, colour in series:
            if res is None:
                continue
            values = np.asarray(getattr(res, metric), dtype=float)
            ts = np.asarray(res.ts, dtype=float)
            handles += ax.plot(ts, values, style, color=colour, marker=".", ms=4, label=label)
            drawn.append((ts, values))
        ax.set_xlabel("t")
        ax.set_ylabel(metric_label(metric))
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        if ("loss" in metric or "nll" in metric) and _log_axis_ok(*(v for _, v in drawn)):
            _log_y(ax)
        else:
            _zoom_on_curve(ax, drawn)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    _suptitle(fig, curve_result, title, model)
    return fig


# ----------------------------------------------------------------------------- ensembles


# (attribute, label, line style, colour) of each series; `line_` ones are optional.
_ERROR_SERIES = (
    ("member_error", "φ(t) alone", "-", "C0"),
    ("ensemble_error", "ensemble {w1, φ(t)}", "-", "C1"),
    ("line_member_error", "line point alone", "--", "C0"),
    ("line_ensemble_error", "ensemble {w1, line(t)}", "--", "C1"),
)
_DISAGREEMENT_SERIES = (
    ("disagreement", "disagreement (curve)", "-", "C2"),
    ("line_disagreement", "disagreement (line)", "--", "C2"),
)
_KL_SERIES = (("kl", "KL (curve)", "-", "C4"), ("line_kl", "KL (line)", "--", "C4"))


def _series(ax: Any, result: Any, ts: np.ndarray, specs: Sequence[tuple[str, ...]]) -> list:
    """Plot each (attribute, label, style, colour) the result has (not None); their values."""
    drawn = []
    for attr, label, style, colour in specs:
        values = getattr(result, attr, None)
        if values is not None:
            drawn.append(np.asarray(values, dtype=float))
            ax.plot(ts, drawn[-1], style, color=colour, label=label)
    return drawn


def plot_ensembles(
    result: Any, *, error_scale: str = "auto", title: str | None = None, model: str | None = None
) -> Figure:
    """Ensembles along the curve: test error vs t (left), diversity vs t (right).

    result: ts (T,); member_error, ensemble_error, disagreement, kl (T,) and their `line_`
    versions (dashed; optional); scalars start_error (w1 alone) and reference_error (the
    {w1, w2} ensemble), drawn as horizontal lines. Disagreement is on the left axis of the
    second panel, KL(w1 || phi(t)) on a twin right axis, so the figure has three axes.
    error_scale: "linear", "log", or "auto": log when all errors are > 0 and span more than a
    factor 5 (the line's middle points near chance would squash the few-% ensembles).
    title / model: see `figure_title`.
    """
    if error_scale not in ("auto", "linear", "log"):
        raise ValueError(f"error_scale must be 'auto', 'linear' or 'log', got {error_scale!r}")
    ts = np.asarray(result.ts, dtype=float)
    fig, (err_ax, div_ax) = _figure(2)
    errors = _series(err_ax, result, ts, _ERROR_SERIES)
    references = [float(result.start_error), float(result.reference_error)]
    err_ax.axhline(references[0], color="grey", linestyle=":", label="w1 alone")
    err_ax.axhline(references[1], color="black", linestyle="-.", label="ensemble {w1, w2}")
    values = np.concatenate([_finite(v) for v in [*errors, references]])
    positive = _log_axis_ok(values)
    if error_scale == "log" or (
        error_scale == "auto" and positive and values.max() > 5 * values.min()
    ):
        _log_y(err_ax)
    err_ax.set(xlabel="t", ylabel="test error (%)", title="test error")
    err_ax.legend(fontsize=8)

    kl_ax = div_ax.twinx()
    _series(div_ax, result, ts, _DISAGREEMENT_SERIES)
    _series(kl_ax, result, ts, _KL_SERIES)
    div_ax.set(xlabel="t", title="diversity")
    div_ax.set_ylabel("disagreement with w1 (%)", color="C2")
    kl_ax.set_ylabel("KL(w1 ‖ φ(t)) (nats)", color="C4")
    handles = div_ax.get_legend_handles_labels()[0] + kl_ax.get_legend_handles_labels()[0]
    div_ax.legend(handles=handles, fontsize=8)
    for ax in (err_ax, div_ax):
        ax.set_xlim(ts.min(), ts.max())
        ax.grid(alpha=0.3)
    _suptitle(fig, result, title, model)
    return fig


def plot_fge(result: Any, *, title: str | None = None, model: str | None = None) -> Figure:
    """Fast geometric ensembling: test error (left) and NLL (right) vs snapshot k.

    result: snapshot_epochs (S,); member_error, member_nll, ensemble_error, ensemble_nll (S,),
    entry k for snapshot k alone and for the ensemble of snapshots 1..k; start_error and
    start_nll (the network FGE started from) as horizontal lines. The x-axis is k, which is
    the snapshot for one series and the ensemble size for the other: the legend says which;
    the top axis gives the FGE epoch snapshot k was taken at. title / model: see `figure_title`.
    """
    count = np.arange(1, len(np.asarray(result.snapshot_epochs)) + 1)
    fig, axes = _figure(2)
    for ax, kind in zip(axes, ("error", "nll"), strict=True):
        ax.plot(
            count,
            np.asarray(getattr(result, f"member_{kind}"), dtype=float),
            "o--",
            color="C0",
            label="snapshot k alone",
        )
        ax.plot(
            count,
            np.asarray(getattr(result, f"ensemble_{kind}"), dtype=float),
            "o-",
            color="C1",
            label="ensemble of snapshots 1..k",
        )
        ax.axhline(
            float(getattr(result, f"start_{kind}")),
            color="grey",
            linestyle=":",
            label="start network",
        )
        ax.set_xlabel("snapshot k")
        ax.set_ylabel(metric_label(f"test_{kind}"))
        ax.set_xticks(count)
        epochs = ax.secondary_xaxis("top")
        epochs.set_xticks(count, labels=[f"{e:g}" for e in np.asarray(result.snapshot_epochs)])
        epochs.set_xlabel("FGE epoch of snapshot k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _suptitle(fig, result, title, model)
    return fig


# ---------------------------------------------------------------------------------- save


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> list[Path]:
    """Write `fig` to path.png or path.pdf by suffix; a path without suffix writes both.

    Parent folders are created. Returns the written paths.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".png", ".pdf"):
        targets = [path]
    elif suffix == "":
        targets = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    else:
        raise ValueError(f"cannot save a figure as '{path.suffix}': use .png, .pdf or no suffix")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
    return targets
