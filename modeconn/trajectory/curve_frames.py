"""A curve's training as a sequence of planes (the mode-connectivity blog's video).

While `train_curve` runs, a `TrajectoryRecorder` on the curve keeps its bends (T, R, D).
Each frame here is the plane through w1, w2 and the (middle) bend at that moment, in Garipov
et al.'s convention (`Plane.through`: w1 at the origin, w2 on the positive x-axis, the bend
above it), evaluated by the grid engine with the curve at that moment projected onto it.
"""

from __future__ import annotations

import numpy as np
import torch

from modeconn.curves.family import Curve
from modeconn.engine import EvalSettings
from modeconn.plane import Plane, PlaneResult, evaluate_plane
from modeconn.trajectory.pca import frame_indices
from modeconn.trajectory.recorder import TrajectoryStore


def curve_training_planes(
    curve: Curve,
    store: TrajectoryStore,
    data,
    *,
    frames: int = 12,
    grid: int | tuple[int, int] = 15,
    margin: float = 0.3,
    wd: float = 0.0,
    settings: EvalSettings | None = None,
    progress: bool = False,
) -> tuple[list[int], list[PlaneResult]]:
    """The plane through w1, w2 and the recorded bend at `frames` moments of training, each
    evaluated on a `grid` with the curve of that moment drawn on it.

    curve: the trained curve (its endpoints and network; its bends are restored after).
    store: the curve's trajectory (rows of R bends). Frames where the bend still lies on the
    segment w1-w2 (the very start) span no plane and are skipped. Returns the steps of the
    frames kept and their `PlaneResult`s.
    """
    if store.rows != curve.num_bends or store.dim != curve.space.size:
        raise ValueError(
            f"the trajectory holds {store.rows} x {store.dim} bends, the curve "
            f"{curve.num_bends} x {curve.space.size}: record this curve's training"
        )
    points, steps = store.points(), store.steps
    middle = curve.num_bends // 2
    saved = curve.bends.detach().clone()
    kept_steps, planes = [], []
    try:
        for i in frame_indices(len(steps), frames):
            bends = torch.as_tensor(np.array(points[i])).to(saved)
            with torch.no_grad():
                curve.bends.copy_(bends)
            try:
                plane = Plane.through(curve.start, curve.end, bends[middle], curve.space)
            except ValueError:
                continue  # collinear: the bends have not left the segment yet
            planes.append(
                evaluate_plane(
                    curve.model,
                    plane,
                    data,
                    grid=grid,
                    margin=margin,
                    curve=curve,
                    wd=wd,
                    settings=settings,
                    progress=progress,
                )  # fmt: skip
            )
            kept_steps.append(int(steps[i]))
    finally:
        with torch.no_grad():
            curve.bends.copy_(saved)
    return kept_steps, planes
