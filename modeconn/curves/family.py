"""Parametric curves in weight space that wrap any `nn.Module`.

A curve phi(t), t in [0, 1], is a weighted sum of control points:

    phi(t) = sum_k c_k(t) * w_k,   w_0 = start (fixed), w_K = end (fixed), w_1..w_{K-1} = bends

The control points are stored as flat vectors (see `WeightSpace`): `start` and `end` are
buffers, `bends` is one trainable (K-1, D) parameter. The weights at t are one small matrix
product, and the base network runs on them through `torch.func.functional_call`, so no layer
is rewritten and any architecture works unchanged (Garipov et al. 2018 rewrite every layer).
By the chain rule, dL/dw_k = c_k(t) * dL/dphi(t).

BatchNorm running statistics are not part of the curve: they live in the wrapped network and
are recomputed for each t (`Curve.network_at(t, data)` gives a standalone network at phi(t)
with its own statistics; `Curve.recompute_bn(t, data)` refreshes the wrapped network's). An
eval-mode `curve(x, t)` of a network with BatchNorm refuses to run on statistics that were not
recomputed at that t: the wrapped network's buffers hold whatever point was evaluated last.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modeconn.curves.phi import CurveWeights, ScaleGrad, combine_terms, control_terms
from modeconn.curves.weights import StateLike, WeightSpace
from modeconn.models.batchnorm import batchnorm_layers, statistics_pass


def _as_t(t: float | Tensor) -> float:
    value = float(t)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"t must lie in [0, 1], got {value}")
    return value


class Curve(nn.Module):
    """Base class: control points + coefficients. Subclasses define `coefficients(t)`.

    Args:
        model: any network; it is deep-copied and used for its structure and buffers.
        start: the first endpoint's weights, a state dict or a module of the same architecture.
        end: the second endpoint's weights, likewise.
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
        for which, w in (("start", w0), ("end", w1)):
            _check_finite(self.space, w, which)
        # Both endpoints in one (2, D) buffer so phi(t) is two matrix-vector products.
        self.register_buffer("endpoints", torch.stack([w0, w1]))
        # Bends start on the segment between the endpoints, equally spaced (as in the paper).
        alphas = torch.arange(1, num_bends + 1, dtype=w0.dtype, device=w0.device) / (num_bends + 1)
        self.bends = nn.Parameter(torch.lerp(w0.expand(num_bends, -1), w1, alphas[:, None]).clone())
        self.last_t: float | None = None
        # (t, versions) of the last `recompute_bn`: the wrapped network's BatchNorm buffers
        # hold phi(t)'s statistics while neither they nor the bends have changed since
        self._bn_record: tuple[float, tuple] | None = None
        # phi as one piece: `point` runs through the same fused Function as training steps
        self._flat = WeightSpace(("phi",), (torch.Size([self.space.size]),))

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

    def slopes(self, t: float | Tensor) -> Tensor:
        """dc_k/dt at t, shape (num_bends + 2,): the tangent is sum_k c_k'(t) w_k."""
        raise NotImplementedError

    def tangent(self, t: float | Tensor) -> Tensor:
        """dphi/dt at t as a flat (D,) vector (float64 sums, in the weights' dtype)."""
        c = self.slopes(t).to(self.start.device)
        with torch.no_grad():
            return (c[:, None] * self.control_points().double()).sum(0).to(self.start.dtype)

    def control_points(self) -> Tensor:
        """All control points stacked, shape (num_bends + 2, D): start, bends..., end."""
        return torch.cat([self.start[None], self.bends, self.end[None]])

    def point(self, t: float | Tensor, wd: float = 0.0) -> Tensor:
        """phi(t) as a flat vector of shape (D,), differentiable with respect to the bends.

        wd > 0 folds the gradient of the regulariser 0.5 * wd * ||phi(t)||^2 into the
        backward pass (dL/dphi += wd * phi) without adding the term to any loss: the
        training step adds its value separately. One fused pass instead of four.
        """
        c = self.coefficients(t).tolist()
        if not (torch.is_grad_enabled() and self.bends.requires_grad):
            if c[0] == 1:  # the endpoints themselves, no arithmetic
                return self.start
            if c[-1] == 1:
                return self.end
            return combine_terms(control_terms(self.bends, self.endpoints, c))
        phi, _ = CurveWeights.apply(self.bends, self.endpoints, c, wd, self._flat, None)
        return phi

    def weights(self, t: float | Tensor) -> dict[str, Tensor]:
        """phi(t) as a name->tensor dict in the wrapped network's parameter names."""
        return self.space.unflatten(self.point(t))

    def run(self, x: Tensor, point: Tensor) -> Tensor:
        """Run the wrapped network on input x with the flat weights `point` (shape (D,))."""
        return functional_call(self.model, self.space.unflatten(point), (x,))

    def forward(self, x: Tensor, t: float | Tensor | None = None) -> Tensor:
        """Network output at phi(t). In training mode t=None draws t ~ U[0, 1] (one per call).

        In eval mode a network with BatchNorm needs statistics recomputed at this t first
        (`recompute_bn(t, data)`); otherwise its buffers belong to another point and the
        output would be silently wrong, so it raises. `network_at(t, data)` is the network at
        phi(t) as a module of its own.
        """
        if t is None:
            if not self.training:
                raise ValueError("pass t explicitly in eval mode (t=None samples t in training)")
            t = torch.rand((), device="cpu").item()
        self.last_t = _as_t(t)
        if not self.training and self._batchnorm_buffers():
            self._check_bn(self.last_t)
        return self.run(x, self.point(self.last_t))

    def _batchnorm_buffers(self) -> list[Tensor]:
        return [
            b
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            for b in (m.running_mean, m.running_var)
        ]

    def _bn_versions(self) -> tuple:
        return (self.bends._version, *((id(b), b._version) for b in self._batchnorm_buffers()))

    def _check_bn(self, t: float) -> None:
        record = self._bn_record
        if record is not None and record[0] == t and record[1] == self._bn_versions():
            return
        why = (
            "they were never recomputed for this curve"
            if record is None
            else f"they were recomputed at t={record[0]:g}"
            if record[0] != t
            else "the bends or the statistics changed since they were recomputed"
        )
        raise ValueError(
            f"the BatchNorm statistics of this curve's network are not those of phi({t:g}): "
            f"{why}. Call curve.network_at({t:g}, data) for the network at t (a module of "
            f"its own), or curve.recompute_bn({t:g}, data) before curve(x, t={t:g})"
        )

    @torch.no_grad()
    def recompute_bn(self, t: float, data, **kwargs) -> int:
        """Recompute the wrapped network's BatchNorm statistics at phi(t) on `data` (a
        `Dataset`: its un-augmented train inputs; or inputs (N, ...) / batches), so that an
        eval-mode `curve(x, t)` is the network at phi(t). kwargs go to
        `modeconn.models.batchnorm.statistics_pass` (batch_size, num_samples, exact). Returns the
        number of samples used."""
        t = _as_t(t)
        inputs = getattr(data, "train_x", data)
        samples = statistics_pass(self.model, inputs, self.weights(t), **kwargs)
        self._bn_record = (t, self._bn_versions())
        return samples

    @torch.no_grad()
    def network_at(self, t: float, data=None, **kwargs) -> nn.Module:
        """The network at phi(t) as a standalone module: a copy of the wrapped network with
        phi(t)'s weights (trainable again) and, if it has BatchNorm layers, their statistics
        recomputed on `data` (a `Dataset`: its un-augmented train inputs; or inputs (N, ...)
        / batches), in eval mode. The object to keep, save or hand to other tools.
        kwargs go to `modeconn.models.batchnorm.statistics_pass` (batch_size, num_samples,
        exact)."""
        t = _as_t(t)
        net = copy.deepcopy(self.model)
        for name, value in self.weights(t).items():
            param = net.get_parameter(name)
            param.copy_(value)
            param.requires_grad_(True)
        if batchnorm_layers(net):
            if data is None:
                raise ValueError(
                    f"the network has BatchNorm layers: pass data (a Dataset or train inputs) "
                    f"to recompute their statistics at t={t:g}, e.g. curve.network_at(t, data)"
                )
            statistics_pass(net, getattr(data, "train_x", data), **kwargs)
        return net.eval()

    def train_output(self, x: Tensor, t: float, wd: float = 0.0) -> tuple[Tensor, Tensor]:
        """(network output at phi(t), ||phi(t)||^2) for a training step on the bends.

        The gradient of a loss on the output reaches the bends with the regulariser
        0.5 * wd * ||phi(t)||^2 folded in (its value is the second output times wd / 2, to
        add to the loss), through one fused pass per control point (`CurveWeights`).
        Without gradients (bends frozen or no_grad) the second output is still ||phi||^2.
        """
        self.last_t = _as_t(t)
        c = self.coefficients(t).tolist()
        if not (torch.is_grad_enabled() and self.bends.requires_grad and self.num_bends):
            point = self.point(t)
            return self.run(x, point), torch.dot(point, point).detach()
        scale = c[1] if self.num_bends == 1 else None
        *pieces, sq = CurveWeights.apply(self.bends, self.endpoints, c, wd, self.space, scale)
        out = functional_call(self.model, dict(zip(self.space.names, pieces, strict=True)), (x,))
        if scale is not None:
            out = ScaleGrad.apply(out, scale)
        return out, sq


def _check_finite(space: WeightSpace, flat: Tensor, which: str) -> None:
    """Refuse endpoint weights with NaN or inf, naming the first tensor that holds them (a
    curve between them could only diverge, and its loss would take the blame)."""
    if bool(torch.isfinite(flat).all()):
        return
    for name, piece in space.unflatten(flat).items():
        bad = int((~torch.isfinite(piece)).sum())
        if bad:
            raise ValueError(
                f"the {which} weights are not finite: tensor '{name}' holds {bad} NaN or inf "
                f"values of {piece.numel()}. Check the {which} network or checkpoint (did its "
                "training diverge?) before connecting it"
            )


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

    def slopes(self, t: float | Tensor) -> Tensor:
        # d/dt C(n,k) t^k (1-t)^(n-k) = n [B_{k-1,n-1}(t) - B_{k,n-1}(t)]
        t, n = _as_t(t), self.degree
        b = [math.comb(n - 1, k) * t**k * (1 - t) ** (n - 1 - k) for k in range(n)]
        return torch.tensor(
            [n * ((b[k - 1] if k > 0 else 0.0) - (b[k] if k < n else 0.0)) for k in range(n + 1)],
            dtype=torch.float64,
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

    def slopes(self, t: float | Tensor) -> Tensor:
        # constant on each segment; at a knot, the slope of the segment that starts there
        segments = self.num_bends + 1
        s = min(int(_as_t(t) * segments), segments - 1)
        c = torch.zeros(segments + 1, dtype=torch.float64)
        c[s], c[s + 1] = -segments, segments
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
