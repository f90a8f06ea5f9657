"""Parametric curves in weight space that wrap any `nn.Module`.

A curve phi(t), t in [0, 1], is a weighted sum of control points:

    phi(t) = sum_k c_k(t) * w_k,   w_0 = start (fixed), w_K = end (fixed), w_1..w_{K-1} = bends

The control points are stored as flat vectors (see `WeightSpace`): `start` and `end` are
buffers, `bends` is one trainable (K-1, D) parameter. The weights at t are one small matrix
product, and the base network runs on them through `torch.func.functional_call`, so no layer
is rewritten and any architecture works unchanged (Garipov et al. 2018 rewrite every layer).
By the chain rule, dL/dw_k = c_k(t) * dL/dphi(t).

BatchNorm running statistics are not part of the curve: they live in the wrapped network and
are recomputed for each t with `modeconn.evaluation.recompute_bn`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modeconn.weights import StateLike, WeightSpace


def _as_t(t: float | Tensor) -> float:
    value = float(t)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"t must lie in [0, 1], got {value}")
    return value


class Curve(nn.Module):
    """Base class: control points + coefficients. Subclasses define `coefficients(t)`.

    Args:
        model: any network; it is deep-copied and used for its structure and buffers.
        start, end: the endpoint weights, as state dicts or modules of the same architecture.
        num_bends: number of trainable control points between the endpoints.
    """

    kind = "curve"

    def __init__(self, model: nn.Module, start: StateLike, end: StateLike, num_bends: int):
        super().__init__()
        if num_bends < 0:
            raise ValueError(f"num_bends must be >= 0, got {num_bends}")
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.space = WeightSpace.from_module(self.model)
        ref = next(self.model.parameters())
        w0 = self.space.flatten(start, "start").to(ref.device, ref.dtype)
        w1 = self.space.flatten(end, "end").to(ref.device, ref.dtype)
        # Both endpoints in one (2, D) buffer so phi(t) is two matrix-vector products.
        self.register_buffer("endpoints", torch.stack([w0, w1]))
        # Bends start on the segment between the endpoints, equally spaced (as in the paper).
        alphas = torch.arange(1, num_bends + 1, dtype=w0.dtype, device=w0.device) / (num_bends + 1)
        self.bends = nn.Parameter(torch.lerp(w0.expand(num_bends, -1), w1, alphas[:, None]).clone())
        self.last_t: float | None = None

    @property
    def start(self) -> Tensor:
        """The fixed start weights w_0 as a flat (D,) vector."""
        return self.endpoints[0]

    @property
    def end(self) -> Tensor:
        """The fixed end weights w_K as a flat (D,) vector."""
        return self.endpoints[1]

    @property
    def num_bends(self) -> int:
        return self.bends.shape[0]

    def extra_repr(self) -> str:
        return f"num_bends={self.num_bends}, dim={self.space.size}"

    def coefficients(self, t: float | Tensor) -> Tensor:
        """Coefficients c_0..c_K of the K+1 control points at t: shape (num_bends + 2,)."""
        raise NotImplementedError

    def control_points(self) -> Tensor:
        """All control points stacked, shape (num_bends + 2, D): start, bends..., end."""
        return torch.cat([self.start[None], self.bends, self.end[None]])

    def point(self, t: float | Tensor, wd: float = 0.0) -> Tensor:
        """phi(t) as a flat vector of shape (D,), differentiable with respect to the bends.

        wd > 0 folds the gradient of the regulariser 0.5 * wd * ||phi(t)||^2 into the
        backward pass (dL/dphi += wd * phi) without adding the term to any loss: the
        training step adds its value separately. One fused pass instead of four.
        """
        c = self.coefficients(t).to(self.endpoints.dtype)
        if not (torch.is_grad_enabled() and self.bends.requires_grad):
            if c[0] == 1:  # the endpoints themselves, no arithmetic
                return self.start
            if c[-1] == 1:
                return self.end
        c_fixed = torch.stack([c[0], c[-1]]).to(self.endpoints.device)
        if not self.num_bends:
            return torch.mv(self.endpoints.t(), c_fixed)
        return _CurvePoint.apply(
            self.bends, self.endpoints, c_fixed, c[1:-1].to(self.endpoints.device), wd
        )

    def weights(self, t: float | Tensor) -> dict[str, Tensor]:
        """phi(t) as a name->tensor dict in the wrapped network's parameter names."""
        return self.space.unflatten(self.point(t))

    def run(self, x: Tensor, point: Tensor) -> Tensor:
        """Run the wrapped network on input x with the flat weights `point` (shape (D,))."""
        return functional_call(self.model, self.space.unflatten(point), (x,))

    def forward(self, x: Tensor, t: float | Tensor | None = None) -> Tensor:
        """Network output at phi(t). In training mode t=None draws t ~ U[0, 1] (one per call)."""
        if t is None:
            if not self.training:
                raise ValueError("pass t explicitly in eval mode (t=None samples t in training)")
            t = torch.rand((), device="cpu").item()
        self.last_t = _as_t(t)
        return self.run(x, self.point(self.last_t))


class _CurvePoint(torch.autograd.Function):
    """phi = endpoints^T c_fixed + bends^T c_bends, with dL/dbends = c_bends (g + wd phi)^T.

    Equal to the autograd of the two products (plus 0.5 wd ||phi||^2 when wd > 0) but reads
    each control point once and writes the bends' gradient in one outer product.
    """

    @staticmethod
    def forward(ctx, bends, endpoints, c_fixed, c_bends, wd):  # noqa: D102
        phi = torch.addmv(torch.mv(endpoints.t(), c_fixed), bends.t(), c_bends)
        ctx.save_for_backward(phi, c_bends)
        ctx.wd = wd
        return phi

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        phi, c_bends = ctx.saved_tensors
        if ctx.wd:
            grad = torch.add(grad, phi, alpha=ctx.wd)
        return torch.outer(c_bends, grad), None, None, None, None


class Bezier(Curve):
    """Bezier curve of any degree >= 1; coefficients are the Bernstein polynomials.

    c_k(t) = C(n, k) t^k (1 - t)^(n - k), n = degree; degree 2 is the paper's quadratic curve.
    """

    kind = "bezier"

    def __init__(self, model: nn.Module, start: StateLike, end: StateLike, degree: int = 2):
        if degree < 1:
            raise ValueError(f"Bezier degree must be >= 1, got {degree}")
        super().__init__(model, start, end, num_bends=degree - 1)

    @property
    def degree(self) -> int:
        return self.num_bends + 1

    def coefficients(self, t: float | Tensor) -> Tensor:
        t = _as_t(t)
        n = self.degree
        return torch.tensor(
            [math.comb(n, k) * t**k * (1 - t) ** (n - k) for k in range(n + 1)], dtype=torch.float64
        )


class PolyChain(Curve):
    """Polygonal chain through the bends with equally spaced knots t_k = k / (bends + 1)."""

    kind = "polychain"

    def __init__(self, model: nn.Module, start: StateLike, end: StateLike, bends: int = 1):
        super().__init__(model, start, end, num_bends=bends)

    def coefficients(self, t: float | Tensor) -> Tensor:
        t = _as_t(t)
        segments = self.num_bends + 1
        s = min(int(t * segments), segments - 1)  # segment index
        u = t * segments - s  # position inside the segment, in [0, 1]
        c = torch.zeros(segments + 1, dtype=torch.float64)
        c[s], c[s + 1] = 1 - u, u
        return c


class Line(PolyChain):
    """The straight segment (1 - t) * start + t * end: a chain with no bends."""

    kind = "line"

    def __init__(self, model: nn.Module, start: StateLike, end: StateLike):
        super().__init__(model, start, end, bends=0)


CURVES: dict[str, type[Curve]] = {"line": Line, "bezier": Bezier, "polychain": PolyChain}


def build_curve(
    kind: str, model: nn.Module, start: StateLike, end: StateLike, **kwargs: int
) -> Curve:
    """Factory by name: `build_curve("bezier", model, w1, w2, degree=3)`."""
    if kind not in CURVES:
        raise ValueError(f"unknown curve '{kind}'; valid curves: {', '.join(CURVES)}")
    return CURVES[kind](model, start, end, **kwargs)


def curve_args(curve: Curve) -> dict[str, int]:
    """The constructor arguments that rebuild `curve` with `build_curve`."""
    if isinstance(curve, Bezier):
        return {"degree": curve.degree}
    if isinstance(curve, Line):
        return {}
    return {"bends": curve.num_bends}
