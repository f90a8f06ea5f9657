"""Curvature of the training loss: Hessian-vector products, the extremes (Lanczos, power
iteration), the trace (Hutchinson), the spectral density (SLQ), and curvature over a
surface or along a path."""

from modeconn.curvature.density import SpectralDensity
from modeconn.curvature.hessian import (
    HessianExtremes,
    HessianSettings,
    HessianTrace,
    directional_curvature,
    hessian_density,
    hessian_extremes,
    hessian_trace,
)
from modeconn.curvature.hvp import HessianOperator, hessian_operator
from modeconn.curvature.maps import (
    CurvaturePath,
    CurvatureSurface,
    curvature_path,
    curvature_surface,
)

__all__ = [
    "CurvaturePath",
    "CurvatureSurface",
    "HessianExtremes",
    "HessianOperator",
    "HessianSettings",
    "HessianTrace",
    "SpectralDensity",
    "curvature_path",
    "curvature_surface",
    "directional_curvature",
    "hessian_density",
    "hessian_extremes",
    "hessian_operator",
    "hessian_trace",
]
