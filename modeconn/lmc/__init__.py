"""Linear mode connectivity (LMC) and the stability of SGD (Frankle et al. 2020): exact
spawning of children from one run's state at step k, and the error barrier between them
against k (`stability`)."""

from modeconn.lmc.analysis import StabilityResult, stability
from modeconn.lmc.spawn import SPAWN, VARY, spawn_points, train_child, train_parent

__all__ = [
    "SPAWN",
    "VARY",
    "StabilityResult",
    "spawn_points",
    "stability",
    "train_child",
    "train_parent",
]
