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


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _log_axis_ok(*arrays: Any) -> bool:
    vals = np.concatenate([_finite(a) for a in arrays if a is not None] or [np.empty(0)])
    return vals.size > 0 and bool(np.all(vals > 0))


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


def _draw_anchors(ax: Any, anchors: np.ndarray, names: Sequence[str]) -> None:
    start, end = _endpoint_indices(names, len(anchors))
    bend_markers = iter(["^", "D", "v", "P", "X", "h", "*", "<", ">"] * 4)
    for k, (x, y) in enumerate(anchors):
        marker = "o" if k == start else "s" if k == end else next(bend_markers)
        name = names[k] if k < len(names) else f"anchor {k}"
        ax.plot([x], [y], marker=marker, linestyle="none", label=name, **_ANCHOR_STYLE)
        ax.annotate(
            name,
            (x, y),
            xytext=(7, 7),
            textcoords="offset points",
            fontsize=9,
            zorder=6,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0},
        )


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
) -> Figure:
    """Filled-contour panels of a plane, one per metric, as in Garipov et al. 2018 (Fig. 1).

    result: x (Gx,), y (Gy,), and each metric (Gx, Gy) with [i, j] at (x[i], y[j]); anchors
    (K, 2) with anchor_names; optional curve_xy (T, 2), drawn as a solid line.
    levels: number of bands, spaced by `log_levels(vmin, vmax, levels, floor)`, or explicit
    increasing levels (then `scale` and `floor` are not used). Each band gets its own colour
    whatever its width (BoundaryNorm); values beyond the levels take the end colours, shown as
    arrows on the colorbar.
    scale: {metric: (vmin, vmax)}; a None limit (or a missing metric) uses the data's finite
    min / max. Pass `shared_scale(r1, r2, ...)` so several figures share one colour scale.
    line: draw the straight segment between the start and the end anchors, dashed.
    NaN / inf values are masked (left blank), never raised on.
    """
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    anchors = np.asarray(result.anchors, dtype=float).reshape(-1, 2)
    names = list(getattr(result, "anchor_names", None) or [])
    curve_xy = getattr(result, "curve_xy", None)
    fig, axes = _figure(len(metrics))
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
            cbar = fig.colorbar(filled, ax=ax, format="%.3g", shrink=0.9)
            cbar.set_label(metric_label(metric))
        else:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center")
        if curve_xy is not None and len(curve_xy):
            cxy = np.asarray(curve_xy, dtype=float)
            ax.plot(cxy[:, 0], cxy[:, 1], color="black", linewidth=2.0, zorder=3, label="curve")
        if line and len(anchors) >= 2:
            s, e = _endpoint_indices(names, len(anchors))
            segment = anchors[[s, e]]
            ax.plot(
                *segment.T, color="black", linestyle="--", linewidth=1.3, zorder=2, label="line"
            )
        _draw_anchors(ax, anchors, names)
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(y[0], y[-1])
        ax.set_aspect("equal")
        ax.set_title(metric_label(metric))
        ax.set_xlabel("plane x")
        ax.set_ylabel("plane y")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------- path


def plot_path(
    curve_result: Any,
    line_result: Any = None,
    *,
    metrics: Sequence[str] = PLANE_METRICS,
    title: str | None = None,
) -> Figure:
    """Metrics vs t along the curve (solid) and, if given, along the straight line (dashed).

    curve_result / line_result: ts (T,) and each metric (T,). One panel per metric; losses and
    NLLs on a log axis (when all positive), errors linear.
    """
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        series = [(curve_result, "curve", "-", "C0"), (line_result, "line", "--", "C3")]
        drawn = []
        for res, label, style, colour in series:
            if res is None:
                continue
            values = np.asarray(getattr(res, metric), dtype=float)
            ax.plot(res.ts, values, style, color=colour, marker=".", ms=4, label=label)
            drawn.append(values)
        if ("loss" in metric or "nll" in metric) and _log_axis_ok(*drawn):
            ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel(metric_label(metric))
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
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


def plot_ensembles(result: Any, *, error_scale: str = "auto", title: str | None = None) -> Figure:
    """Ensembles along the curve: test error vs t (left), diversity vs t (right).

    result: ts (T,); member_error, ensemble_error, disagreement, kl (T,) and their `line_`
    versions (dashed; optional); scalars start_error (w1 alone) and reference_error (the
    {w1, w2} ensemble), drawn as horizontal lines. Disagreement is on the left axis of the
    second panel, KL(w1 || phi(t)) on a twin right axis, so the figure has three axes.
    error_scale: "linear", "log", or "auto": log when all errors are > 0 and span more than a
    factor 5 (the line's middle points near chance would squash the few-% ensembles).
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
        err_ax.set_yscale("log")
        err_ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        err_ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        err_ax.yaxis.set_minor_formatter(ticker.NullFormatter())
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
    if title:
        fig.suptitle(title)
    return fig


def plot_fge(result: Any, *, title: str | None = None) -> Figure:
    """Fast geometric ensembling: test error (left) and NLL (right) vs number of snapshots.

    result: snapshot_epochs (S,); member_error, member_nll, ensemble_error, ensemble_nll (S,),
    entry k for snapshot k alone and for the ensemble of snapshots 1..k; start_error and
    start_nll (the network FGE started from) as horizontal lines.
    """
    count = np.arange(1, len(np.asarray(result.snapshot_epochs)) + 1)
    fig, axes = _figure(2)
    for ax, kind in zip(axes, ("error", "nll"), strict=True):
        ax.plot(
            count,
            np.asarray(getattr(result, f"member_{kind}"), dtype=float),
            "o--",
            color="C0",
            label="snapshot alone",
        )
        ax.plot(
            count,
            np.asarray(getattr(result, f"ensemble_{kind}"), dtype=float),
            "o-",
            color="C1",
            label="FGE ensemble",
        )
        ax.axhline(
            float(getattr(result, f"start_{kind}")),
            color="grey",
            linestyle=":",
            label="start network",
        )
        ax.set_xlabel("number of snapshots")
        ax.set_ylabel(metric_label(f"test_{kind}"))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
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
