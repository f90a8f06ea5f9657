"""Curves between networks: the Curve family (line, Bezier, polygonal chain) that wraps any
`nn.Module`, the arithmetic of phi(t), and `WeightSpace` (named tensors <-> flat vectors)."""

from modeconn.curves.family import CURVES, Bezier, Curve, Line, PolyChain, build_curve, curve_args
from modeconn.curves.geometry import Plane
from modeconn.curves.weights import WeightSpace

__all__ = [
    "CURVES",
    "Bezier",
    "Curve",
    "Line",
    "Plane",
    "PolyChain",
    "WeightSpace",
    "build_curve",
    "curve_args",
]
