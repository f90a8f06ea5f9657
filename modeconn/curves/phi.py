"""The arithmetic of phi(t) = sum_k c_k w_k and its gradient with respect to the bends, in as
few passes over memory as possible (`Curve.point` and `Curve.train_output` use it).
"""

from __future__ import annotations

import torch
from torch import Tensor


def combine_terms(terms: list[tuple[Tensor, float]]) -> Tensor:
    """sum_k c_k w_k over (w_k, c_k) pairs, in as few passes over memory as possible.

    Terms with c_k = 0 are skipped. When the coefficients sum to 1 (Bezier and polygonal
    chains) the sum is a chain of in-place `lerp`s, one read-read-write pass per extra term;
    otherwise scaled additions. (BLAS matrix-vector products with 2-3 columns run at a
    fraction of memory bandwidth, which is what this replaces.)
    """
    terms = [(w, c) for w, c in terms if c != 0.0] or terms[:1]
    if len(terms) == 1 or abs(sum(c for _, c in terms) - 1.0) > 1e-12:
        out = torch.mul(terms[0][0], terms[0][1])
        for w, c in terms[1:]:
            out.add_(w, alpha=c)
        return out
    (w0, c0), (w1, c1) = terms[:2]
    out = torch.lerp(w0, w1, c1 / (c0 + c1))  # (c0 w0 + c1 w1) / (c0 + c1)
    total = c0 + c1
    for w, c in terms[2:]:
        total += c
        out.lerp_(w, c / total)
    return out


def control_terms(bends: Tensor, endpoints: Tensor, c: list[float]) -> list[tuple[Tensor, float]]:
    rows = [endpoints[0], *bends.unbind(0), endpoints[1]]
    return list(zip(rows, c, strict=True))


def scaled_rows(grad: Tensor, c: list[float]) -> Tensor:
    """The (K-1, D) bends' gradient: row k = c_k * grad (scaled in place for one bend)."""
    if len(c) == 1:
        return grad.mul_(c[0])[None]
    out = grad.new_empty((len(c), grad.shape[0]))
    for k, ck in enumerate(c):
        torch.mul(grad, ck, out=out[k])
    return out


class CurveWeights(torch.autograd.Function):
    """phi(t) as the network's parameter tensors, plus ||phi||^2 (`Curve.train_output`; with
    a one-piece space, the flat phi of `Curve.point`), differentiable with respect to the bends.

    The forward pass returns the pieces of phi as views (so the network's parameter
    gradients arrive one by one) and the backward pass writes g + wd * phi straight into the
    bends' gradient piece by piece: no concatenation of the network's gradients, one pass.
    With `scale` = c_1 of a single bend, the caller has already scaled the incoming gradient
    by c_1 (`ScaleGrad` on the network output, a few numbers per sample), so the bend's
    gradient c_1 (g + wd phi) is a single fused addition.
    """

    @staticmethod
    def forward(ctx, bends, endpoints, c, wd, space, scale):  # noqa: D102
        phi = combine_terms(control_terms(bends, endpoints, c))
        sq = torch.dot(phi, phi) if wd else phi.new_zeros(())
        ctx.mark_non_differentiable(sq)
        ctx.save_for_backward(phi)
        ctx.c_bends, ctx.wd, ctx.space, ctx.scale = c[1:-1], wd, space, scale
        pieces = torch.split(phi, space.numels)
        return (*(p.view(s) for p, s in zip(pieces, space.shapes, strict=True)), sq)

    @staticmethod
    def backward(ctx, *grads):  # noqa: D102
        (phi,) = ctx.saved_tensors
        full = phi.new_empty(phi.shape)
        alpha = ctx.wd * (ctx.scale if ctx.scale is not None else 1.0)
        sizes = ctx.space.numels
        for g, p, out in zip(
            grads[:-1], torch.split(phi, sizes), torch.split(full, sizes), strict=True
        ):
            if g is None:  # a parameter the network did not use
                torch.mul(p, alpha, out=out)
            elif alpha:
                torch.add(g.reshape(-1), p, alpha=alpha, out=out)
            else:
                out.copy_(g.reshape(-1))
        if ctx.scale is not None:
            return full[None], None, None, None, None, None
        return scaled_rows(full, ctx.c_bends), None, None, None, None, None


class ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` in the backward pass."""

    @staticmethod
    def forward(ctx, x, scale):  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad * ctx.scale, None
