"""The affine plane through three points of a weight space: w1 at the origin, w2 on the
positive x-axis, the third point above it (Garipov et al. 2018, Fig. 1; see `modeconn.plane`).

    origin = a,   u = (b - a) / |b - a|,   v = GS(c - a against u) / |...|

In float64 (two Gram-Schmidt passes), so u and v are orthonormal to rounding even for
millions of weights; points handed back to a network are cast to the original weights' dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from modeconn.curves.weights import WeightSpace, fingerprint

PointLike = Tensor | Mapping[str, Tensor] | nn.Module


def _as_vector(w: PointLike, space: WeightSpace | None, what: str) -> Tensor:
    """A flat weight vector (D,) or batch (N, D) from a tensor, state dict or module."""
    if isinstance(w, Tensor):
        if w.ndim not in (1, 2):
            raise ValueError(f"{what} must be a flat vector (D,) or a batch (N, D), got {w.shape}")
        return w.detach()
    if space is None:
        raise ValueError(
            f"{what} is a state dict: pass space=WeightSpace.from_module(model) to flatten it, "
            "or pass flat vectors"
        )
    return space.flatten(w, what)


@dataclass(frozen=True, eq=False)
class Plane:
    """The affine plane origin + x * u + y * v in a weight space of dimension D.

    origin, u, v: (D,) tensors, stored as float64; u and v must be orthonormal (build planes
        with `Plane.through` unless you have such a basis).
    space: the network's `WeightSpace`, needed by `weights(x, y)` and for state-dict inputs.
    anchors: (K, 2) plane coordinates of the points that define the plane, named by
        `anchor_names`; `evaluate_plane` spans its grid over them.
    dtype: dtype of the points `point(x, y)` returns (default: origin's dtype as given).
    """

    origin: Tensor
    u: Tensor
    v: Tensor
    space: WeightSpace | None = None
    anchors: np.ndarray | None = None
    anchor_names: tuple[str, ...] = ()
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        d = self.origin.shape
        if len(d) != 1 or self.u.shape != d or self.v.shape != d:
            raise ValueError(
                f"origin, u and v must be flat vectors of one shape (D,), got {tuple(d)}, "
                f"{tuple(self.u.shape)} and {tuple(self.v.shape)}"
            )
        if self.space is not None and self.space.size != d[0]:
            raise ValueError(f"space has {self.space.size} weights but the vectors have {d[0]}")
        set_ = object.__setattr__
        if self.dtype is None:
            set_(self, "dtype", self.origin.dtype)
        for name in ("origin", "u", "v"):
            set_(self, name, getattr(self, name).detach().to(torch.float64))
        gram = [[torch.dot(p, q).item() for q in (self.u, self.v)] for p in (self.u, self.v)]
        if not np.allclose(gram, np.eye(2), rtol=0, atol=1e-6):
            raise ValueError(
                f"u and v must be orthonormal (Gram matrix {gram}); build the plane with "
                "Plane.through(a, b, c)"
            )
        if self.anchors is not None:
            anchors = np.asarray(self.anchors, dtype=np.float64).reshape(-1, 2)
            set_(self, "anchors", anchors)
            names = tuple(self.anchor_names) or tuple(f"anchor {k}" for k in range(len(anchors)))
            if len(names) != len(anchors):
                raise ValueError(f"{len(names)} anchor_names for {len(anchors)} anchors")
            set_(self, "anchor_names", names)

    @property
    def dim(self) -> int:
        """Dimension D of the weight space."""
        return self.origin.shape[0]

    @classmethod
    def through(
        cls,
        a: PointLike,
        b: PointLike,
        c: PointLike,
        space: WeightSpace | None = None,
        names: tuple[str, str, str] = ("start", "end", "bend"),
    ) -> Plane:
        """The plane through a, b, c: origin a, u along b - a, v from c - a by Gram-Schmidt.

        The argument order is (origin, point on the positive x-axis, point above it):
        a = w1 (start) lands at (0, 0), b = w2 (end) at (|w2 - w1|, 0) and c = theta (bend)
        at y > 0, the convention of Garipov et al.'s `plane.py`, whose figures this
        reproduces. a, b, c: flat (D,) vectors, state dicts (with `space`) or modules (space
        inferred); `names` labels the three anchors in that order. Raises ValueError if the
        points are collinear (to the rounding of their dtype).
        """
        if space is None and isinstance(a, nn.Module):
            space = WeightSpace.from_module(a)
        va, vb, vc = (_as_vector(w, space, n) for w, n in ((a, "a"), (b, "b"), (c, "c")))
        if not (va.ndim == vb.ndim == vc.ndim == 1) or not (va.shape == vb.shape == vc.shape):
            raise ValueError(
                f"a, b, c must be flat vectors of one shape (D,), got {tuple(va.shape)}, "
                f"{tuple(vb.shape)} and {tuple(vc.shape)}"
            )
        dtype = va.dtype if va.is_floating_point() else torch.get_default_dtype()
        a64, b64, c64 = (w.to(va.device, torch.float64) for w in (va, vb, vc))
        scale = max(WeightSpace.norm(w).item() for w in (a64, b64, c64))
        tol = 16 * torch.finfo(dtype).eps * scale  # rounding of the input dtype
        collinear = (
            "the three points are collinear (to rounding of {}): {}. A plane needs three points "
            "that span two directions; pick a bend off the line through the endpoints"
        )
        du = b64 - a64
        nu = WeightSpace.norm(du).item()
        if not nu > tol:
            raise ValueError(collinear.format(dtype, "b coincides with a"))
        u = du / nu
        dv = c64 - a64
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to rounding whatever D is
            dv = dv - torch.dot(dv, u) * u
        nv = WeightSpace.norm(dv).item()
        if not nv > tol:
            raise ValueError(collinear.format(dtype, "c lies on the line through a and b"))
        v = dv / nv
        ac = c64 - a64
        anchors = [[0.0, 0.0], [nu, 0.0], [torch.dot(ac, u).item(), torch.dot(ac, v).item()]]
        return cls(a64, u, v, space, np.array(anchors), tuple(names), dtype)

    def _vectors(self, w: PointLike) -> Tensor:
        return _as_vector(w, self.space, "w").to(self.origin.device, torch.float64)

    def coords(self, w: PointLike) -> tuple[float, float] | Tensor:
        """Plane coordinates of the orthogonal projection of w.

        w (D,) (or a state dict / module with `space`) -> (x, y) floats; w (N, D) -> (N, 2)
        float64 tensor.
        """
        d = self._vectors(w) - self.origin
        if d.shape[-1] != self.dim:
            raise ValueError(f"w has {d.shape[-1]} weights, the plane lives in {self.dim}")
        xy = torch.stack([d @ self.u, d @ self.v], dim=-1)
        return (xy[0].item(), xy[1].item()) if d.ndim == 1 else xy

    def distance(self, w: PointLike) -> float | Tensor:
        """Euclidean distance from w to the plane: (D,) -> float, (N, D) -> (N,) tensor."""
        d = self._vectors(w) - self.origin
        if d.shape[-1] != self.dim:
            raise ValueError(f"w has {d.shape[-1]} weights, the plane lives in {self.dim}")
        x, y = (d @ self.u)[..., None], (d @ self.v)[..., None]
        dist = torch.linalg.vector_norm(d - x * self.u - y * self.v, dim=-1)
        return dist.item() if d.ndim == 1 else dist

    def point(self, x: float, y: float) -> Tensor:
        """origin + x * u + y * v as a flat (D,) vector in the dtype of the original weights."""
        return (self.origin + float(x) * self.u + float(y) * self.v).to(self.dtype)

    def fingerprint(self) -> str:
        """A digest of origin, u and v: two planes share it only if they are the same."""
        return fingerprint(self.origin, self.u, self.v)

    def weights(self, x: float, y: float) -> dict[str, Tensor]:
        """`point(x, y)` as a name->tensor dict for the network (needs `space`)."""
        if self.space is None:
            raise ValueError(
                "this plane has no WeightSpace: build it with space=WeightSpace.from_module(model)"
            )
        return self.space.unflatten(self.point(x, y))
