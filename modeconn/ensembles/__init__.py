"""Ensembles along a curve (w1 with phi(t), and the curve's own), their members and
diversity and calibration measures, and fast geometric ensembling (FGE)."""

from modeconn.ensembles.along_curve import EnsembleResult, ensembles_along_curve
from modeconn.ensembles.fge import FGEResult, fge, fge_lr
from modeconn.ensembles.measures import (
    disagreement,
    ensemble_log_probs,
    expected_calibration_error,
    kl_divergence,
)

__all__ = [
    "EnsembleResult",
    "FGEResult",
    "disagreement",
    "ensemble_log_probs",
    "ensembles_along_curve",
    "expected_calibration_error",
    "fge",
    "fge_lr",
    "kl_divergence",
]
