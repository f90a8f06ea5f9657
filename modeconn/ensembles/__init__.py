"""Ensembles along a curve (w1 with phi(t), and the curve's own), their members and
diversity measures, and fast geometric ensembling (FGE)."""

from modeconn.ensembles.along_curve import EnsembleResult, ensembles_along_curve
from modeconn.ensembles.fge import FGEResult, fge, fge_lr
from modeconn.ensembles.measures import disagreement, ensemble_log_probs, kl_divergence

__all__ = [
    "EnsembleResult",
    "FGEResult",
    "disagreement",
    "ensemble_log_probs",
    "ensembles_along_curve",
    "fge",
    "fge_lr",
    "kl_divergence",
]
