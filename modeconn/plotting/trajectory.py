"""Optimisation paths on a plane: the path over log-spaced loss contours (Li et al. 2018,
Fig. 10: explained variance on the axes), the loss along the path (batch, true, and the
contour value under the projection), several runs on one fixed plane, decision regions of a
2-D classifier, and the gallery of the trajectory post's grid of networks.

Inputs are `TrajectoryResult` and `SurfaceResult` objects (or anything with their fields);
decision regions come precomputed (`modeconn.trajectory.pca.decision_regions`): plotting does no
math.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from modeconn.plotting.common import _figure, _finite, metric_label
from modeconn.plotting.surface import contour_levels

REGION_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def axis_labels(result: Any) -> tuple[str, str]:
    """'PC 1: 95.0 % of the variance' for PCA planes, 'd1 (fixed, |d1| = ...)' otherwise."""
    ratios = np.asarray(result.ratios, dtype=float)
    if np.all(np.isfinite(ratios)):
        return tuple(f"PC {k + 1}: {100 * r:.1f} % of the variance" for k, r in enumerate(ratios))
    norms = (result.meta or {}).get("direction_norms") or [np.nan, np.nan]
    return tuple(f"$d_{k + 1}$ (fixed, $\\|d\\|$ = {n:.3g})" for k, n in enumerate(norms))


def landscape_norm(surface: Any, metric: str = "train_loss", levels: int = 14) -> Any:
    """BoundaryNorm of log-spaced levels above the surface's minimum (`log_levels`)."""
    values = _finite(getattr(surface, metric))
    lv = contour_levels(float(values.min()), float(values.max()), levels, log=True)
    return colors.BoundaryNorm(lv, 256, extend="neither")


def level_format(levels: np.ndarray) -> str:
    """A tick format with enough digits to tell neighbouring levels apart (a flat plane of
    a network stuck at ln 3 = 1.0986 spans 1e-5: '%.3g' would print 1.1 at every tick)."""
    lv = np.asarray(levels, dtype=float)
    gaps, size = np.diff(lv), np.maximum(np.abs(lv[1:]), 1e-300)
    ok = gaps > 0
    need = np.ceil(np.log10(size[ok] / gaps[ok])).max() + 1 if ok.any() else 3
    return f"%.{int(np.clip(need, 3, 10))}g"


def draw_landscape(
    ax: Any, surface: Any, metric: str = "train_loss", norm: Any = None, bar: bool = True
) -> Any:
    """Filled log-spaced contours of `metric` on `ax`, with a colour bar; returns the set."""
    norm = norm or landscape_norm(surface, metric)
    z = np.ma.masked_invalid(np.asarray(getattr(surface, metric), dtype=float).T)
    cs = ax.contourf(surface.x, surface.y, z, levels=norm.boundaries, norm=norm, cmap="viridis")
    ax.contour(surface.x, surface.y, z, levels=norm.boundaries, colors="k", linewidths=0.3)
    if bar:
        cax = ax.inset_axes([1.03, 0.0, 0.04, 1.0], label="<colorbar>")
        cb = ax.figure.colorbar(cs, cax=cax, format=level_format(norm.boundaries))
        cb.set_label(f"{metric_label(metric)} (log-spaced levels)")
    ax.set_xlim(surface.x[0], surface.x[-1])
    ax.set_ylim(surface.y[0], surface.y[-1])
    return cs


def draw_path(
    ax: Any, result: Any, upto: int | None = None, colour: str = "white", label: str | None = None
) -> list[Any]:
    """The projected path up to point `upto` (all by default): a trail, start and current
    point. Returns the artists (an animation removes them for the next frame)."""
    xy = np.asarray(result.coords)[: None if upto is None else upto + 1]
    return [
        *ax.plot(xy[:, 0], xy[:, 1], "-", color=colour, lw=1.4, label=label, zorder=3),
        *ax.plot(*xy[0], "o", color=colour, mec="k", ms=5, zorder=4),
        *ax.plot(*xy[-1], "*", color=colour, mec="k", ms=11, zorder=5),
    ]


def draw_regions(ax: Any, regions: tuple, data: Any = None, num_classes: int | None = None) -> None:
    """Decision regions (axes, labels, confidence) of a 2-D classifier, the data on top."""
    (gx, gy), labels, conf = regions
    k = num_classes or (data.num_classes if data is not None else int(labels.max()) + 1)
    cmap = colors.ListedColormap(REGION_COLOURS[:k])
    ax.pcolormesh(gx, gy, labels.T, cmap=cmap, vmin=-0.5, vmax=k - 0.5, alpha=0.35, shading="auto")
    ax.contour(gx, gy, labels.T, levels=np.arange(k) + 0.5, colors="k", linewidths=0.6)
    if data is not None:
        x = data.train_x.detach().cpu().numpy()
        y = data.train_y.detach().cpu().numpy()
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap=cmap, vmin=-0.5, vmax=k - 0.5, s=3, lw=0)
    ax.set_xlim(gx[0], gx[-1])
    ax.set_ylim(gy[0], gy[-1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_trajectory(
    result: Any, surface: Any, *, metric: str = "train_loss", title: str | None = None
) -> Figure:
    """Left: the path over the plane's log-spaced contours, variance ratios on the axes.
    Right: along the path, the batch loss, the true train loss of each point and the contour
    value at its projection (log scale), and each point's distance to the plane."""
    fig, (ax, ax2) = _figure(2, width=5.2, height=4.2)
    draw_landscape(ax, surface, metric)
    draw_path(ax, result)
    xl, yl = axis_labels(result)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title("path on the plane through the final point", fontsize=10)
    steps = np.asarray(result.steps)
    ax2.plot(steps, result.batch_loss, ".", color="0.6", ms=3, label="batch loss")
    if result.true_loss is not None:
        ax2.plot(steps, result.true_loss, "-", color="C0", label="true train loss")
        ax2.plot(steps, result.plane_loss, "--", color="C1", label="contour value under it")
    if np.all(_finite(result.batch_loss) > 0):
        ax2.set_yscale("log")
    ax2.set_xlabel("optimizer steps")
    ax2.set_ylabel(metric_label(metric))
    twin = ax2.twinx()
    twin.plot(steps, result.residual, ":", color="C3", label="distance to the plane")
    twin.set_ylabel("distance to the plane", color="C3")
    lines = ax2.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax2.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper right")
    ax2.set_title("loss along the path", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


def plot_trajectories(
    surface: Any,
    results: Sequence[Any],
    labels: Sequence[str],
    *,
    metric: str = "train_loss",
    title: str | None = None,
) -> Figure:
    """Several runs projected on one fixed plane (all results share its directions)."""
    fig, (ax,) = _figure(1, width=6.0, height=4.8)
    draw_landscape(ax, surface, metric)
    for k, (res, label) in enumerate(zip(results, labels, strict=True)):
        draw_path(ax, res, colour=f"C{(k + 1) % 10}", label=label)
    xl, yl = axis_labels(results[0])
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_gallery(entries: Sequence[dict[str, Any]], *, cols: int = 3) -> Figure:
    """One cell per configuration: its path on its PCA plane and its final decision regions.

    entries: dicts with "name", "result", "surface", and optionally "regions" (axes, labels,
    confidence) and "data" (drawn under the regions)."""
    rows = int(np.ceil(len(entries) / cols))
    fig = Figure(figsize=(7.2 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for k in range(rows * cols):
        ax, axr = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        if k >= len(entries):
            ax.set_axis_off()
            axr.set_axis_off()
            continue
        e = entries[k]
        draw_landscape(ax, e["surface"])
        draw_path(ax, e["result"])
        ratios = np.asarray(e["result"].ratios)
        ax.set_title(f"{e['name']}: {100 * np.nansum(ratios):.1f} % in 2 PCs", fontsize=9)
        ax.set_xlabel(f"PC 1 ({100 * ratios[0]:.1f} %)", fontsize=8)
        ax.set_ylabel(f"PC 2 ({100 * ratios[1]:.1f} %)", fontsize=8)
        ax.tick_params(labelsize=7)
        if e.get("regions") is not None:
            draw_regions(axr, e["regions"], e.get("data"))
            axr.set_title("decision regions (final)", fontsize=9)
        else:
            axr.set_axis_off()
    return fig
