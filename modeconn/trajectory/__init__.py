"""Training trajectories: the on-disk recorder, PCA (or fixed) planes and the projection of
the path onto them with the loss underneath, and the frames of a curve's training."""

from modeconn.trajectory.curve_frames import curve_training_planes
from modeconn.trajectory.pca import (
    TrajectoryResult,
    evaluate_trajectory,
    fixed_directions,
    pca_directions,
    project,
)
from modeconn.trajectory.recorder import TrajectoryRecorder, TrajectoryStore, record_trajectory

__all__ = [
    "TrajectoryRecorder",
    "TrajectoryResult",
    "TrajectoryStore",
    "curve_training_planes",
    "evaluate_trajectory",
    "fixed_directions",
    "pca_directions",
    "project",
    "record_trajectory",
]
