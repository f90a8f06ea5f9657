"""Directions in weight space for loss-landscape pictures, as flat vectors of a `WeightSpace`.

Sources:

- Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", code tomgoldstein/loss-landscape
  (net_plotter.py: `create_random_direction`, `normalize_directions_for_weights`,
  `normalize_direction`, `create_target_direction`). Their rules, kept here: one Gaussian `randn`
  per parameter tensor in parameter order; "filter": every slice d_i along axis 0 becomes
  d_i * ||w_i|| / (||d_i|| + 1e-10); "layer": d * ||w|| / ||d|| per tensor; tensors with ndim <= 1
  (biases, BatchNorm affine) are zeroed under ignore="biasbn" and otherwise set to d = w (a copy of
  the weights, not random), whatever the norm. Their global `torch.manual_seed(123)` followed by
  the same draws equals our `seed=123`: the Gaussian draws are identical.
- The critique "Visualizing the loss landscape of neural nets... but can we trust them?": the same
  networks under QR-orthogonalised, ZCA-whitened and principal-component directions. We build the
  three families side by side, each then normalised with the rules above.

Deliberate differences (each says why):

- "weight" is d * |w| (each entry on the scale of its weight). The reference multiplies by the
  signed w; for Gaussian d both have the same distribution, but for the deterministic families
  (principal directions) a signed product would flip entries by the weights' signs.
- ConvTranspose weights are stored (in, out/groups, k...): their axis 0 is the *input* channels.
  Their filters here are the output channels (axis 1, within each group), the units that Conv and
  Linear filters are; the reference would use axis 0. A name->tensor mapping carries no module
  types: every ndim > 1 tensor of a mapping is taken as axis-0 filters.
- All arithmetic runs in float64 on the CPU; the noise is drawn there in float32 from a
  `torch.Generator` seeded per call, then the result moves to the weights' device and dtype. The
  same seed gives the same direction on any device and for a float64 copy of the same weights.
- A direction part with zero norm stays zero under "filter"/"layer" (the reference's layer rule
  would divide by 0); Gaussian parts never hit this, principal components beyond a block's rank do.
- The reference's "dfilter"/"dlayer" (unit-norm filters) are not offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modeconn.curves.weights import StateLike, WeightSpace

NORMS = ("filter", "layer", "weight", None)
IGNORES = ("biasbn", None)


@dataclass(frozen=True)
class _Layout:
    """A space, its weights as one float64 CPU vector, and where each tensor's filters lie."""

    space: WeightSpace
    weights: Tensor  # (D,) float64, CPU
    groups: tuple[int, ...]  # 0: axis-0 filters; g > 0: ConvTranspose with g groups
    device: torch.device
    dtype: torch.dtype

    def parts(self, flat: Tensor) -> dict[str, Tensor]:
        return self.space.unflatten(flat)

    def finish(self, flat: Tensor) -> Tensor:
        return flat.to(device=self.device, dtype=self.dtype)


def _layout(model_or_weights: nn.Module | Mapping[str, Tensor]) -> _Layout:
    if isinstance(model_or_weights, nn.Module):
        space = WeightSpace.from_module(model_or_weights)
        tensors = space.check(model_or_weights)
        transposed = {
            f"{name}.weight" if name else "weight": module.groups
            for name, module in model_or_weights.named_modules()
            if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        }
    elif isinstance(model_or_weights, Mapping):
        tensors = dict(model_or_weights)
        if not tensors:
            raise ValueError("the weights mapping is empty: pass dict(model.named_parameters())")
        bad = [n for n, t in tensors.items() if not torch.is_floating_point(t)]
        if bad:
            raise ValueError(
                f"tensor '{bad[0]}' is not floating point (a buffer such as num_batches_tracked?): "
                "pass the parameters only, e.g. dict(model.named_parameters())"
            )
        space = WeightSpace(tuple(tensors), tuple(t.shape for t in tensors.values()))
        transposed = {}
    else:
        raise TypeError(
            "expected an nn.Module or a name->tensor mapping of parameters, got "
            f"{type(model_or_weights).__name__}"
        )
    first = next(iter(tensors.values()))
    flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors.values()])
    groups = tuple(transposed.get(n, 0) for n in space.names)
    return _Layout(space, flat, groups, first.device, first.dtype)


def _check_rules(norm: str | None, ignore: str | None) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not one of {NORMS}")
    if ignore not in IGNORES:
        raise ValueError(f"ignore={ignore!r} is not one of {IGNORES}")


def _rows(t: Tensor, groups: int) -> Tensor:
    """A tensor as a (filters, entries) matrix: axis 0 rows, or ConvTranspose output channels."""
    if groups == 0:
        return t.reshape(t.shape[0], -1)
    cin, cout_g, *kernel = t.shape  # (in, out/groups, k...): group g's output j reads in-block g
    t = t.reshape(groups, cin // groups, cout_g, *kernel).transpose(1, 2)
    return t.reshape(groups * cout_g, -1)


def _unrows(rows: Tensor, shape: torch.Size, groups: int) -> Tensor:
    """Inverse of `_rows`."""
    if groups == 0:
        return rows.reshape(shape)
    cin, cout_g, *kernel = shape
    t = rows.reshape(groups, cout_g, cin // groups, *kernel).transpose(1, 2)
    return t.reshape(shape)


def _noise(space: WeightSpace, generator: torch.Generator) -> Tensor:
    """One float32 `randn` per tensor in parameter order (as the reference), as float64 (D,)."""
    parts = [torch.randn(s, generator=generator, dtype=torch.float32) for s in space.shapes]
    return torch.cat([p.reshape(-1) for p in parts]).double()


def _normalise(direction: Tensor, layout: _Layout, norm: str | None, ignore: str | None) -> Tensor:
    """Li et al.'s per-tensor rules on a float64 (D,) direction; returns a new vector."""
    out = direction.clone()
    d_parts, w_parts = layout.parts(out), layout.parts(layout.weights)
    for name, groups in zip(layout.space.names, layout.groups, strict=True):
        d, w = d_parts[name], w_parts[name]
        if d.ndim <= 1:  # biases, BatchNorm: zero (ignore="biasbn") or the weights themselves
            d.copy_(torch.zeros_like(d) if ignore == "biasbn" else w)
        elif norm == "filter":  # d_i * ||w_i|| / (||d_i|| + 1e-10), per filter
            dr, wr = _rows(d, groups), _rows(w, groups)
            dn = dr.norm(dim=1, keepdim=True)
            scale = torch.where(dn > 0, wr.norm(dim=1, keepdim=True) / (dn + 1e-10), 0.0)
            d.copy_(_unrows(dr * scale, d.shape, groups))
        elif norm == "layer":  # d * ||w|| / ||d||, per tensor
            dn = d.norm()
            d.mul_(w.norm() / dn if dn > 0 else 0.0)
        elif norm == "weight":  # d * |w|, elementwise
            d.mul_(w.abs())
    return out


def random_direction(
    model_or_weights: nn.Module | Mapping[str, Tensor],
    *,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    seed: int = 0,
) -> Tensor:
    """A Gaussian direction normalised by Li et al.'s rules, shape (D,) in `WeightSpace` order.

    `model_or_weights`: a module (its parameters), or a name->tensor mapping of parameters
    (axis-0 filters for every ndim > 1 tensor). `norm`: "filter" | "layer" | "weight" | None;
    `ignore`: "biasbn" zeroes ndim <= 1 tensors, None sets them to the weights (the reference's
    rule). Same `seed`, same direction, on any device; returned on the weights' device and dtype.
    """
    _check_rules(norm, ignore)
    layout = _layout(model_or_weights)
    noise = _noise(layout.space, torch.Generator().manual_seed(seed))
    return layout.finish(_normalise(noise, layout, norm, ignore))


def qr_directions(
    model_or_weights: nn.Module | Mapping[str, Tensor],
    k: int = 2,
    *,
    seed: int = 0,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
) -> list[Tensor]:
    """k Gaussian directions orthonormalised by QR over the whole flat space, then normalised.

    The k raw vectors are the draws `random_direction` would make, one after another from one
    generator; Q's columns are signed so that R has a positive diagonal (so Q[:, 0] = g1/||g1||).
    Before normalisation (norm=None on a network without ndim <= 1 tensors) the k vectors are
    orthonormal to float64 rounding. Normalisation rescales every filter (or tensor) of each vector
    by its own factor and replaces ndim <= 1 parts: the results are neither unit nor orthogonal
    any more (their cosines are O(1/sqrt(D)), not 0); use `orthonormal_pair` for an exact plane.
    Returns k tensors of shape (D,).
    """
    _check_rules(norm, ignore)
    _check_k(k)
    layout = _layout(model_or_weights)
    generator = torch.Generator().manual_seed(seed)
    g = torch.stack([_noise(layout.space, generator) for _ in range(k)], dim=1)  # (D, k)
    if g.shape[0] < k:
        raise ValueError(f"k={k} directions do not fit in a space of dimension {g.shape[0]}")
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r))  # unique Q: positive diag(R)
    return [layout.finish(_normalise(q[:, j], layout, norm, ignore)) for j in range(k)]


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _block(rows: Tensor) -> tuple[Tensor, bool]:
    """The samples x features matrix of a (filters, entries) matrix, and whether it is transposed.

    Per-kernel blocks (samples = filters, features = each filter's entries) when there are more
    filters than entries, so the centred covariance can have full rank; otherwise per-position
    blocks (samples = entry positions, features = filters).
    """
    return (rows, False) if rows.shape[0] > rows.shape[1] else (rows.T, True)


def zca_whitening(block: Tensor, eps: float = 1e-5) -> Tensor:
    """The ZCA whitening matrix Z (m, m) of the centred rows of `block` (n samples, m features).

    C = Xc^T Xc / n = U diag(s) U^T, Z = U diag(1 / (sqrt(s) + eps)) U^T, so Xc Z has covariance
    (almost, for eps > 0) the identity: the textbook ZCA (Bell & Sejnowski 1997), a matrix
    function of C, not the element-wise inverse of the whole diagonal matrix that the critique's
    notebook computes. Eigenvalues at rounding level (rank-deficient C, e.g. n <= m) get factor 0,
    not 1/eps: Z whitens on the range of C (its pseudo-inverse square root). Float64 throughout.
    """
    x = block.double()
    xc = x - x.mean(dim=0, keepdim=True)
    s, u = torch.linalg.eigh(xc.T @ xc / x.shape[0])
    s = s.clamp_min(0.0)
    tol = s.max() * s.numel() * torch.finfo(torch.float64).eps
    factor = torch.where(s > tol, 1.0 / (s.sqrt() + eps), 0.0)
    return (u * factor) @ u.T


def zca_directions(
    model_or_weights: nn.Module | Mapping[str, Tensor],
    k: int = 2,
    *,
    seed: int = 0,
    eps: float = 1e-5,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
) -> list[Tensor]:
    """k Gaussian directions whitened by the ZCA matrix of the converged weights, then normalised.

    For every ndim > 1 tensor: Z = `zca_whitening` of the weights' block (see `_block`: per-kernel
    rows = filters when there are more filters than entries per filter, else per-position); each
    direction's Gaussian block G (the draws of `qr_directions`) becomes G Z. Z is applied to noise,
    not to the weights, so there are k distinct directions per seed; the whitened *weights* Xc Z
    have identity covariance (on the range of C). The directions weigh most what the weights vary
    least in, the mirror image of `principal_directions`. Returns k tensors of shape (D,).
    """
    _check_rules(norm, ignore)
    _check_k(k)
    layout = _layout(model_or_weights)
    w_parts = layout.parts(layout.weights)
    whiteners = {}
    for name, groups in zip(layout.space.names, layout.groups, strict=True):
        if w_parts[name].ndim > 1:
            whiteners[name] = zca_whitening(_block(_rows(w_parts[name], groups))[0], eps)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        d = _noise(layout.space, generator)
        d_parts = layout.parts(d)
        for name, groups in zip(layout.space.names, layout.groups, strict=True):
            if name in whiteners:
                block, transposed = _block(_rows(d_parts[name], groups))
                white = block @ whiteners[name]
                rows = white.T if transposed else white
                d_parts[name].copy_(_unrows(rows, d_parts[name].shape, groups))
        out.append(layout.finish(_normalise(d, layout, norm, ignore)))
    return out


def principal_directions(
    model_or_weights: nn.Module | Mapping[str, Tensor],
    k: int = 2,
    *,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
) -> list[Tensor]:
    """The weights' principal directions: direction j is, per tensor, the j-th SVD component.

    For every ndim > 1 tensor, the centred block Xc of `zca_directions` (the same blocks) has the
    SVD Xc = sum_j s_j u_j v_j^T; direction j holds s_j u_j v_j^T there (the rank-1 component,
    free of the SVD's sign ambiguity), zero where j is beyond the block's rank. Deterministic (no
    seed). Returns k tensors of shape (D,), normalised by the rules of `random_direction`.
    """
    _check_rules(norm, ignore)
    _check_k(k)
    layout = _layout(model_or_weights)
    w_parts = layout.parts(layout.weights)
    out = [torch.zeros_like(layout.weights) for _ in range(k)]
    for name, groups in zip(layout.space.names, layout.groups, strict=True):
        w = w_parts[name]
        if w.ndim <= 1:
            continue
        block, transposed = _block(_rows(w, groups))
        xc = block - block.mean(dim=0, keepdim=True)
        u, s, vh = torch.linalg.svd(xc, full_matrices=False)
        tol = s.max() * max(xc.shape) * torch.finfo(torch.float64).eps
        for j in range(min(k, s.numel())):
            if s[j] <= tol:
                break
            component = s[j] * torch.outer(u[:, j], vh[j])
            rows = component.T if transposed else component
            layout.parts(out[j])[name].copy_(_unrows(rows, w.shape, groups))
    return [layout.finish(_normalise(d, layout, norm, ignore)) for d in out]


def target_direction(
    a: StateLike | Tensor, b: StateLike | Tensor, space: WeightSpace | None = None
) -> Tensor:
    """The direction b - a from one network to another, shape (D,) (the reference's target).

    `a`, `b`: flat (D,) tensors, modules (space from `a` by default), or state dicts with a
    `space` (their buffers are skipped). Returned in a's dtype and device.
    """
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.ndim != 1 or a.shape != b.shape:
            raise ValueError(
                f"flat directions need two vectors of one shape (D,), got {tuple(a.shape)} and "
                f"{tuple(b.shape)}; pass state dicts with space=WeightSpace.from_module(model)"
            )
        return b.to(a) - a
    if space is None:
        if not isinstance(a, nn.Module):
            raise ValueError(
                "target_direction of state dicts needs their space: "
                "target_direction(a, b, space=WeightSpace.from_module(model))"
            )
        space = WeightSpace.from_module(a)
    fa, fb = space.flatten(a, "a"), space.flatten(b, "b")
    return fb.to(fa) - fa


def orthonormal_pair(d1: Tensor, d2: Tensor) -> tuple[Tensor, Tensor, float]:
    """An orthonormal pair (u, v) spanning the plane of d1, d2 (D,), and the raw pair's cosine.

    Gram-Schmidt with re-orthogonalisation ("twice is enough", Giraud et al. 2005) in float64:
    u = d1/||d1||, v = d2 - <u, d2> u, once more v -= <u, v> u, then v/||v||. u, v come back in
    the inputs' dtype and device, orthonormal to that dtype's rounding (1e-15 in float64).
    Coordinates (x, y) in this pair are exact projections, unlike <delta, d>/||d|| on a raw pair.
    """
    if d1.ndim != 1 or d1.shape != d2.shape:
        raise ValueError(f"expected two (D,) vectors, got {tuple(d1.shape)} and {tuple(d2.shape)}")
    a, b = d1.double(), d2.double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        raise ValueError("a direction is zero: an orthonormal pair needs two nonzero directions")
    cosine = float(torch.dot(a, b) / (na * nb))
    u = a / na
    v = b - torch.dot(u, b) * u
    v = v - torch.dot(u, v) * u
    nv = v.norm()
    dtype = torch.promote_types(d1.dtype, d2.dtype)
    if nv <= 100 * torch.finfo(dtype).eps * nb:  # parallel to the inputs' rounding
        raise ValueError(
            f"the two directions are parallel (cosine {cosine:+.12f}): they span no plane; "
            "draw another direction (e.g. another seed)"
        )
    return u.to(dtype), (v / nv).to(dtype), cosine


def tangent_directions(
    curve, t: float, *, seed: int = 0, norm: str | None = "filter", ignore: str | None = "biasbn"
) -> list[Tensor]:
    """Two directions at phi(t) of a trained curve: across the low-loss tunnel and along it.

    d1 = dphi/dt (`Curve.tangent`: one unit of x moves as far as one unit of t does, to first
    order, so x = +-0.1 reaches about phi(t +- 0.1)); d2 = a random direction of
    `random_direction`'s rules at phi(t)'s weights with its component along d1 removed
    (float64), then rescaled to the norm it had, so it keeps Li et al.'s filter scale and the
    plane is orthogonal: the surface shows the tunnel's cross-section along y. Returns [d1, d2].
    """
    along = curve.tangent(t)
    if not bool(along.abs().sum() > 0):
        raise ValueError(f"the curve's tangent at t={t} is zero: pick another t")
    with torch.no_grad():
        at = {name: w.detach() for name, w in curve.weights(t).items()}
    normal = random_direction(at, norm=norm, ignore=ignore, seed=seed).to(along)
    a, b = along.double(), normal.double()
    u = a / a.norm()
    c = b - torch.dot(u, b) * u
    c = c - torch.dot(u, c) * u
    if c.norm() == 0:
        raise ValueError("the random direction is parallel to the tangent: use another seed")
    return [along, (c * (b.norm() / c.norm())).to(along)]
