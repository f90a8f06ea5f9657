"""The predictive functions along a curve, beside the plane it lies in: the blog's figure 7.

The mode-connectivity blog (after Izmailov et al. 2019's regression toy) shows a 1-D
regression network's low-loss path holding visibly different functions: every phi(t) fits
the two clusters of training data, and they disagree in the gap between them.
`plot_functions` draws f(x; phi(t)) for several t, coloured by t, over the training data,
and (with a `PlaneResult`) the plane through w1, w2, theta with the curve on it and the same
t marked in the same colours. Unlike the blog, the plane's colours are the train loss
(mse + 0.5 wd ||w||^2) on the geometric levels of `plot_plane`, not a clipped log scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib import cm, colors
from matplotlib.figure import Figure

from modeconn.plotting.common import _finite, _suptitle, metric_label
from modeconn.plotting.plane import _endpoint_indices, anchor_panel, log_levels


@torch.no_grad()
def function_values(curve: Any, data: Any, ts: Sequence[float], xs: np.ndarray) -> np.ndarray:
    """f(x; phi(t)) (len(ts), len(xs)) of a curve of 1-D regressors on inputs xs, each
    network taken with `curve.network_at(t, data)` (BatchNorm recomputed if it has any)."""
    device = data.train_x.device
    x = torch.as_tensor(xs, dtype=data.train_x.dtype, device=device).reshape(-1, 1)
    return np.stack([curve.network_at(float(t), data)(x).double().cpu().numpy()[:, 0] for t in ts])


def _check_1d(data: Any) -> None:
    """Refuse data sets other than 1-D inputs (N, 1) with one regression target (N, 1)."""
    if tuple(data.train_x.shape[1:]) != (1,) or getattr(data, "task", None) != "regression":
        raise ValueError(
            f"plot_functions draws 1-D regression functions; got a {getattr(data, 'task', '?')} "
            f"data set with input shape {tuple(data.train_x.shape[1:])} (use e.g. toy1d)"
        )
    if data.train_y[0].numel() != 1:
        raise ValueError(
            f"plot_functions draws one function of x; this data set has "
            f"{data.train_y[0].numel()} targets per sample (use a data set with one)"
        )


def _plane_panel(fig: Figure, ax: Any, result: Any, ts: np.ndarray, cmap: Any, norm: Any) -> None:
    """Train loss contours of a plane, the curve and the line, anchors, phi(t) marked."""
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    values = np.asarray(result.train_loss, dtype=float)
    finite = _finite(values)
    if finite.size:
        lv = log_levels(float(finite.min()), float(finite.max()), 8)
        bounds = colors.BoundaryNorm(lv, 256)
        filled = ax.contourf(
            x, y, np.ma.masked_invalid(values.T), levels=lv, cmap="Greys_r", norm=bounds, zorder=0
        )
        ax.contour(
            x,
            y,
            np.ma.masked_invalid(values.T),
            levels=lv,
            colors="black",
            linewidths=0.4,
            alpha=0.4,
            zorder=1,
        )
        cax = ax.inset_axes([1.04, 0.0, 0.05, 1.0], label="<colorbar>")
        fig.colorbar(filled, cax=cax, format="%.3g").set_label(metric_label("train_loss"))
    anchors = np.asarray(result.anchors, dtype=float).reshape(-1, 2)
    names = [str(n) for n in result.anchor_names]
    ends = _endpoint_indices(names, len(anchors))
    curve_xy = np.asarray(result.curve_xy, dtype=float).reshape(-1, 2)
    if len(curve_xy):
        ax.plot(*curve_xy.T, color="white", linewidth=2.0, zorder=3)
        grid = np.linspace(0, 1, len(curve_xy))
        for t in ts:
            point = [np.interp(t, grid, curve_xy[:, k]) for k in (0, 1)]
            ax.plot(*point, "o", ms=8, color=cmap(norm(t)), markeredgecolor="black", zorder=7)
    segment = anchors[list(ends)]
    ax.plot(*segment.T, color="white", linestyle="--", linewidth=1.2, zorder=2)
    anchor_panel(ax, x, y, anchors, names, ends)
    ax.set_title("the plane through w1, w2, θ", pad=16)


def plot_functions(
    curve: Any,
    data: Any,
    ts: Sequence[float] = (0, 0.25, 0.5, 0.75, 1),
    plane_result: Any = None,
    *,
    margin: float = 0.3,
    points: int = 300,
    cmap: str = "viridis",
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """The functions f(x; phi(t)) at each t of `ts` (colour by t, with a colour bar) over the
    training data of a 1-D regression data set (`toy1d`); beside them, if `plane_result`
    (a `PlaneResult` of the plane through w1, w2 and the bend, `evaluate_plane_through_curve`)
    is given, its train loss with the curve on it and phi(t) marked in the same colours.

    curve: a trained `Curve` of networks with inputs (1,) and one output. The x range is the
    data's, widened by `margin` of it on each side; `points` inputs are evaluated.
    title / model: see `figure_title`.
    """
    _check_1d(data)
    ts = np.asarray(ts, dtype=float)
    train_x = data.train_x.detach().cpu().numpy().ravel()
    train_y = data.train_y.detach().cpu().numpy().ravel()
    lo, hi = float(train_x.min()), float(train_x.max())
    xs = np.linspace(lo - margin * (hi - lo), hi + margin * (hi - lo), points)
    values = function_values(curve, data, ts, xs)
    panels = 2 if plane_result is not None else 1
    fig = Figure(figsize=(5.6 * panels, 4.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    scale = matplotlib.colormaps[cmap]
    norm = colors.Normalize(0.0, 1.0)
    ax = axes[0]
    for t, f in zip(ts, values, strict=True):
        ax.plot(xs, f, color=scale(norm(t)), linewidth=1.8, zorder=2)
    ax.scatter(train_x, train_y, s=14, color="black", zorder=3, label="training data")
    order = np.sort(train_x)
    widest = int(np.argmax(np.diff(order))) if len(order) > 1 else None
    if widest is not None:  # the widest stretch without data: where the functions may differ
        ax.axvspan(order[widest], order[widest + 1], color="0.92", zorder=0, label="no data")
    ax.set(xlabel="x", ylabel="f(x; φ(t))", xlim=(xs[0], xs[-1]))
    ax.set_title("functions along the curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=scale), ax=ax, ticks=ts)
    bar.set_label("t")
    if plane_result is not None:
        _plane_panel(fig, axes[1], plane_result, ts, scale, norm)
    _suptitle(fig, SimpleNamespace(meta={"dataset": getattr(data, "name", None)}), title, model)
    return fig
