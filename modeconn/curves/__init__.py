"""Curves between networks: the Curve family (line, Bezier, polygonal chain) that wraps any
`nn.Module`, the arithmetic of phi(t), `WeightSpace` (named tensors <-> flat vectors), and the
simplexes and complexes of networks with their volume (Benton et al. 2021)."""

from modeconn.curves.family import CURVES, Bezier, Curve, Line, PolyChain, build_curve, curve_args
from modeconn.curves.geometry import Plane
from modeconn.curves.simplex import Simplex, SimplicialComplex
from modeconn.curves.volume import cayley_menger_volume, reference_lambda, volume_penalty
from modeconn.curves.weights import WeightSpace

__all__ = [
    "CURVES",
    "Bezier",
    "Curve",
    "Line",
    "Plane",
    "PolyChain",
    "Simplex",
    "SimplicialComplex",
    "WeightSpace",
    "build_curve",
    "cayley_menger_volume",
    "curve_args",
    "reference_lambda",
    "volume_penalty",
]
