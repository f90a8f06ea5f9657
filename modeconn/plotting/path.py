"""Metrics along t: the curve (solid) and the straight line (dashed), zoomed when the line
squashes the curve (Garipov et al. 2018, Fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from modeconn.plotting.common import (
    _figure,
    _finite,
    _log_axis_ok,
    _log_y,
    _suptitle,
    metric_label,
    task_metrics,
)

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
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """Metrics vs t along the curve (solid) and, if given, along the straight line (dashed).

    curve_result / line_result: ts (T,) and each metric (T,); metrics default to the train
    loss and the test error (test MSE for a regression result). One panel per metric; losses and
    NLLs on a log axis (when all positive), errors linear, with an inset zoomed on the curve
    when the line squashes it (its range under ZOOM_BELOW of the panel's: `ax.child_axes`).
    title / model: see `figure_title`; the data set is read from curve_result.meta.
    """
    metrics = task_metrics(curve_result) if metrics is None else metrics
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
