"""The loss-landscape kit: directions (Li et al.'s filter-normalised random ones and the
critique's families), 1-D and 2-D surfaces around any point, and the critique's comparison."""

from modeconn.landscape.critique import Critique, critique
from modeconn.landscape.directions import (
    orthonormal_pair,
    principal_directions,
    qr_directions,
    random_direction,
    tangent_directions,
    target_direction,
    zca_directions,
)
from modeconn.landscape.surface import (
    LineResult,
    SurfaceResult,
    evaluate_interpolation,
    evaluate_line,
    evaluate_surface,
)

__all__ = [
    "Critique",
    "LineResult",
    "SurfaceResult",
    "critique",
    "evaluate_interpolation",
    "evaluate_line",
    "evaluate_surface",
    "orthonormal_pair",
    "principal_directions",
    "qr_directions",
    "random_direction",
    "tangent_directions",
    "target_direction",
    "zca_directions",
]
