"""Curvature figures: the |lambda_min / lambda_max| map of Li et al. 2018 (Fig. 7) with the loss
contours over it, lambda_max(t), lambda_min(t) and trace(t) along curves beside the loss, and
the Hessian's spectral density (log scale, as Ghorbani et al. 2019 and PyHessian draw it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from modeconn.plotting.common import _figure, _suptitle, draw_evaluated, metric_label
from modeconn.plotting.surface import _bar, _frame, direction_labels, surface_values

_PATH_STYLES = {"curve": ("tab:blue", "-"), "line": ("tab:red", "--")}


def plot_curvature_map(
    result: Any,
    values: tuple[str, ...] = ("ratio", "lambda_max"),
    *,
    loss: str | None = "train_loss",
    title: str | None = None,
    model: str | None = None,
    mark_evaluated: bool = False,
) -> Figure:
    """One heat map per value of a `CurvatureSurface` ("ratio" = |lambda_min / lambda_max|,
    "lambda_max", "lambda_min", "trace", "curvature_x", ...), each with its colour bar and the
    loss contours (`loss`, None for none) drawn over it in white. mark_evaluated: dots at the
    evaluated nodes of an adaptive map (drawn on its whole grid either way)."""
    labels = {
        "ratio": r"$|\lambda_{min} / \lambda_{max}|$",
        "lambda_max": r"$\lambda_{max}$",
        "lambda_min": r"$\lambda_{min}$",
        "trace": "trace of H",
        "curvature_x": r"$d_1^T H d_1 / \|d_1\|^2$",
        "curvature_y": r"$d_2^T H d_2 / \|d_2\|^2$",
    }
    fig, axes = _figure(len(values), width=5.2, height=4.2)
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    for ax, name in zip(axes, values, strict=True):
        z = np.ma.masked_invalid(surface_values(result, name).T)
        mesh = ax.pcolormesh(x, y, z, shading="nearest", cmap="viridis", zorder=0)
        _bar(fig, ax, mesh, labels.get(name, name))
        if loss is not None and len(x) > 2 and len(y) > 2:
            lz = np.ma.masked_invalid(surface_values(result, loss).T)
            cs = ax.contour(x, y, lz, levels=8, colors="white", linewidths=0.8, zorder=2)
            ax.clabel(cs, cs.levels[::2], inline=True, fontsize=7, fmt="%.3g")
        _frame(ax, x, y, direction_labels(result))
        dots = draw_evaluated(ax, result) if mark_evaluated else None
        ax.set_title(
            labels.get(name, name)
            + (f"  (contours: {metric_label(loss)})" if loss else "")
            + (f"\n{dots.get_label()}" if dots is not None else ""),
        )
    _suptitle(fig, result, title or "curvature of the loss surface", model)
    return fig


def plot_curvature_path(
    paths: Mapping[str, Any] | Any,
    *,
    loss: str = "train_loss",
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """Panels over t for one or more `CurvaturePath`s ({"curve": ..., "line": ...}): the loss,
    lambda_max (solid) and lambda_min (dotted, symlog axis: both signs), and trace(t) with a
    band of two standard errors when the paths have it (else |lambda_min / lambda_max|)."""
    paths = dict(paths) if isinstance(paths, Mapping) else {"curve": paths}
    first = next(iter(paths.values()))
    has_trace = all("trace" in p.values for p in paths.values())
    fig, axes = _figure(3, width=4.4, height=3.6)
    for k, (name, path) in enumerate(paths.items()):
        color, style = _PATH_STYLES.get(name, (f"C{k}", "-"))
        ts = np.asarray(path.ts)
        axes[0].plot(ts, path.values[loss], style, color=color, marker="o", ms=3, label=name)
        axes[1].plot(
            ts,
            path.lambda_max,
            style,
            color=color,
            marker="o",
            ms=3,
            label=rf"$\lambda_{{max}}$ ({name})",
        )
        axes[1].plot(
            ts,
            path.lambda_min,
            ":",
            color=color,
            marker="v",
            ms=3,
            label=rf"$\lambda_{{min}}$ ({name})",
        )
        if has_trace:
            mean, err = np.asarray(path.trace), 2 * np.asarray(path.trace_stderr)
            axes[2].plot(ts, mean, style, color=color, marker="o", ms=3, label=name)
            axes[2].fill_between(ts, mean - err, mean + err, color=color, alpha=0.2, lw=0)
        else:
            axes[2].plot(ts, path.ratio, style, color=color, marker="o", ms=3, label=name)
    axes[0].set_ylabel(metric_label(loss))
    axes[1].set_ylabel("eigenvalue of H")
    lo = min(float(np.nanmin(np.abs(p.lambda_min))) for p in paths.values())
    hi = max(float(np.nanmax(np.abs(p.lambda_max))) for p in paths.values())
    axes[1].set_yscale("symlog", linthresh=max(min(lo, hi) / 2, 1e-8))
    axes[1].axhline(0.0, color="grey", lw=0.6)
    axes[2].set_ylabel("trace of H (± 2 s.e.)" if has_trace else r"$|\lambda_{min}/\lambda_{max}|$")
    for ax in axes:
        ax.set_xlabel("t")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _suptitle(fig, first, title or "curvature along the path", model)
    return fig


def plot_density(
    density: Any,
    *,
    sigma: float = 0.01,
    points: int = 1000,
    log: bool = True,
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """The smoothed SLQ density of a `SpectralDensity` (Gaussian kernel of width sigma times
    the range), on a log axis by default, with the Ritz values as ticks along the bottom."""
    lo, hi = density.support()
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    grid = np.linspace(lo - pad, hi + pad, points)
    fig, (ax,) = _figure(1, width=6.0, height=3.8)
    values = density.density(grid, sigma)
    ax.plot(grid, values, color="tab:blue", lw=1.2, label="SLQ density")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(max(values.max() * 1e-8, 1e-300), values.max() * 3)
    ax.plot(
        np.unique(density.nodes),
        np.full(np.unique(density.nodes).shape, ax.get_ylim()[0]),
        "|",
        color="black",
        ms=8,
        label="Ritz values",
    )
    ax.axvline(0.0, color="grey", lw=0.6)
    ax.set_xlabel("eigenvalue of H")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _suptitle(fig, density, title or "Hessian spectral density", model)
    return fig
