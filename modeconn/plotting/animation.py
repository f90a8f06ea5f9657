"""Animations: a training path moving over its plane (with the network's decision regions at
each frame beside it, for 2-D inputs), and a curve being trained on the plane through w1, w2
and the current bend (the mode-connectivity blog's video).

`matplotlib.animation.FuncAnimation` draws the frames; a GIF is written through pillow
always, an MP4 too when ffmpeg is on the PATH. Frames are drawn on a bare Agg figure (no
pyplot, no display). Each frame carries its step in the title, so no two frames are equal
(pillow would merge equal frames and the GIF would have fewer than asked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import animation, cm, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modeconn.plotting.common import metric_label
from modeconn.plotting.surface import contour_levels
from modeconn.plotting.trajectory import axis_labels, draw_landscape, draw_path, draw_regions
from modeconn.trajectory.pca import frame_indices


def save_animation(
    fig: Figure, draw: Callable[[int], None], frames: int, path: str | Path, fps: int = 10
) -> list[Path]:
    """Run `draw(k)` for k in range(frames) as a FuncAnimation and write path.gif (pillow)
    and path.mp4 (when ffmpeg is available). Returns the written files."""
    FigureCanvasAgg(fig)
    base = Path(path).with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    anim = animation.FuncAnimation(fig, draw, frames=frames, interval=1000 / fps, blit=False)
    written = [base.with_suffix(".gif")]
    anim.save(written[0], writer=animation.PillowWriter(fps=fps))
    if animation.writers.is_available("ffmpeg"):
        written.append(base.with_suffix(".mp4"))
        anim.save(written[-1], writer=animation.FFMpegWriter(fps=fps))
    return written


def animate_trajectory(
    result: Any,
    surface: Any,
    path: str | Path,
    *,
    frames: int = 50,
    regions: Sequence[tuple] | None = None,
    data: Any = None,
    fps: int = 8,
    title: str | None = None,
) -> list[Path]:
    """The path drawn up to each frame's point over the plane's contours (the trajectory
    post's 50-frame animation); with `regions` (one (axes, labels, confidence) per frame, at
    `frame_indices(T, frames)`), the decision regions of the network at that point beside it."""
    idx = frame_indices(len(result.coords), frames)
    if regions is not None and len(regions) != len(idx):
        raise ValueError(f"regions: one per frame, {len(idx)} expected, got {len(regions)}")
    ncols = 2 if regions is not None else 1
    fig = Figure(figsize=(5.6 * ncols, 4.6), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    xl, yl = axis_labels(result)
    steps = np.asarray(result.steps)

    ax = axes[0]
    draw_landscape(ax, surface)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    if title:
        fig.suptitle(title)
    drawn: list[Any] = []

    def draw(k: int) -> None:
        for artist in drawn:
            artist.remove()
        drawn[:] = draw_path(ax, result, upto=int(idx[k]))
        ax.set_title(f"step {int(steps[idx[k]])}", fontsize=10)
        if regions is not None:
            axes[1].clear()
            draw_regions(axes[1], regions[k], data)
            axes[1].set_title(f"decision regions at step {int(steps[idx[k]])}", fontsize=10)

    return save_animation(fig, draw, len(idx), path, fps)


def animate_curve_training(
    planes: Sequence[Any],
    path: str | Path,
    *,
    steps: Sequence[int] | None = None,
    metric: str = "train_loss",
    fps: int = 4,
) -> list[Path]:
    """One frame per `PlaneResult` (the plane through w1, w2 and the bend at that moment,
    with the curve projected on it): the contours on one shared log-spaced scale, the curve,
    and the three anchors."""
    values = np.concatenate([np.ravel(getattr(p, metric)) for p in planes])
    values = values[np.isfinite(values)]
    lv = contour_levels(float(values.min()), float(values.max()), 14, log=True)
    norm = colors.BoundaryNorm(lv, 256)
    fig = Figure(figsize=(6.0, 4.8), layout="constrained")
    ax = fig.subplots()
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, format="%.3g")
    bar.set_label(f"{metric_label(metric)} (log-spaced levels)")
    labels = ("w1 (start)", "w2 (end)", "bend")

    def draw(k: int) -> None:
        ax.clear()
        p = planes[k]
        draw_landscape(ax, p, metric, norm=norm, bar=False)
        ax.plot(p.curve_xy[:, 0], p.curve_xy[:, 1], "-", color="white", lw=2)
        for (x, y), name, mark in zip(p.anchors[:3], labels, "oos", strict=False):
            ax.plot(x, y, mark, color="white", mec="k", ms=7)
            ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", color="white")
        ax.set_xlabel("along w2 - w1")
        ax.set_ylabel("towards the bend")
        step = f"step {steps[k]}" if steps is not None else f"frame {k + 1}"
        ax.set_title(f"curve training, {step}", fontsize=10)

    return save_animation(fig, draw, len(planes), path, fps)
