"""The volume of a simplex in weight space, and the regulariser that keeps a simplex open.

For vertices w_0..w_n (n + 1 of them) the edges e_i = w_i - w_0 span the simplex, and

    V = sqrt(det G) / n!,   G_ij = <e_i, e_j>   (the n x n Gram matrix of the edges)

so log V = 0.5 * logdet(G) - log(n!). G is accumulated block by block over the network's
parameters, in float64 and in chunks of at most `CHUNK` values per vertex: no flat copy of the
network is ever made. `cayley_menger_volume` is the same volume from the pairwise squared
distances (the formula of Benton et al. 2021's code, here in float64), to check against.

A degenerate simplex (a duplicated vertex, or a new vertex still at the centroid of the others)
has V = 0: `log_volume` returns -inf with a zero gradient (log V has no gradient direction
there), never NaN, and `volume_penalty` leaves such a simplex out.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

CHUNK = 1 << 20  # values per vertex and block: bounds the float64 copies to (n, CHUNK)
REFERENCE_EPS = 1e-4  # Benton et al.: -lambda * log(V^2 + 1e-4)
REFERENCE_FLOOR = 1e-8  # Benton et al.: lambda = max(LMBD / log(V_rand^2 + 1e-4), 1e-8)


def _gram(blocks: Iterable[Sequence[Tensor]]) -> tuple[Tensor, float, float]:
    """(G, max_i ||w_i||^2, the largest dtype epsilon) of the edges w_i - w_0, where each block
    holds one parameter's tensor for every vertex (all of one shape). G is differentiable."""
    gram, norms, eps = None, None, 0.0
    for block in blocks:
        first, *rest = (w.reshape(-1) for w in block)
        eps = max(eps, torch.finfo(first.dtype).eps)
        if gram is None:
            gram = torch.zeros((len(rest), len(rest)), dtype=torch.float64, device=first.device)
            norms = torch.zeros(len(block), dtype=torch.float64, device=first.device)
        for s in range(0, first.numel(), CHUNK):
            base = first[s : s + CHUNK].double()
            with torch.no_grad():
                norms[0] += base.square().sum()
            if not rest:
                continue
            edges = torch.stack([w[s : s + CHUNK].double() - base for w in rest])  # (n, chunk)
            gram = gram + edges @ edges.T
            with torch.no_grad():
                norms[1:] += (edges + base).square().sum(1)
    if gram is None:
        raise ValueError("no parameters: a simplex needs weights to have a volume")
    return gram, float(norms.max()), eps


def _degenerate(gram: Tensor, max_norm_sq: float, eps: float) -> bool:
    """Whether the simplex is flat to the precision of its weights.

    Its thinnest height h satisfies lambda_min(G) <= h^2. A height within rounding of the
    weights (16 ulps of the largest vertex norm: a vertex put at the centroid in float32 lies
    that far off the others' hull) is noise, and so is an eigenvalue ratio below what a float64
    Gram matrix resolves (its entries carry relative errors of n * eps64)."""
    lam = torch.linalg.eigvalsh(gram.detach())
    top = float(lam[-1])
    if not top > 0.0:
        return True
    noise = (16 * eps) ** 2 * max_norm_sq
    resolution = 64 * gram.shape[0] * torch.finfo(torch.float64).eps * top
    return float(lam[0]) <= max(noise, resolution)


def log_volume(blocks: Iterable[Sequence[Tensor]]) -> Tensor:
    """log V of the simplex spanned by n + 1 vertices, a float64 scalar, differentiable.

    `blocks`: for each network parameter, the sequence of that parameter's tensors of every
    vertex (n + 1 tensors of one shape; e.g. rows of a stacked (n + 1, *shape) tensor).
    log V = 0.5 * logdet(G) - log(n!); a single vertex has V = 1 (log V = 0); a degenerate
    simplex gives -inf with a zero gradient (see `_degenerate`).
    """
    gram, max_norm_sq, eps = _gram(blocks)
    n = gram.shape[0]
    log_factorial = math.lgamma(n + 1)
    if n == 0:
        return gram.sum()  # an empty sum: 0 = log 1
    if _degenerate(gram, max_norm_sq, eps):
        # -inf, with a zero gradient flowing back to the vertices instead of G^{-1}'s inf/NaN
        return gram.sum() * 0.0 - math.inf
    return 0.5 * torch.linalg.slogdet(gram).logabsdet - log_factorial


def cayley_menger_volume(points: Tensor) -> Tensor:
    """The volume of the simplex with vertices `points` (k, D) from pairwise squared distances,
    in float64: V^2 = (-1)^(n+1) det(CM) / (2^n (n!)^2), n = k - 1, where CM is the
    (k + 1, k + 1) Cayley-Menger matrix [[0, 1^T], [1, D2]], D2 the squared distances.

    Benton et al.'s `volume_loss` computes the same V^2 from float32 distances; this one is for
    comparison with `log_volume` in tests (it needs the (k, D) flat vertices).
    """
    p = points.detach().double()
    k = p.shape[0]
    n = k - 1
    cm = torch.ones((k + 1, k + 1), dtype=torch.float64, device=p.device)
    cm[0, 0] = 0.0
    for i in range(k):
        for j in range(k):
            cm[i + 1, j + 1] = (p[i] - p[j]).square().sum()
    v2 = (-1) ** (n + 1) * torch.linalg.det(cm) / (2**n * math.factorial(n) ** 2)
    return v2.clamp_min(0.0).sqrt()


def volume_penalty(log_volumes: Tensor, lam: float, reference: bool = False) -> Tensor:
    """The volume regulariser to add to a loss, summed over `log_volumes`: one simplex's log V
    (a scalar), or a complex's (S,) per-simplex log volumes.

    reference=False: -lam * log V, with lam given explicitly (to be recorded with the run). A
        degenerate simplex (log V = -inf, e.g. a vertex just added at the centroid) adds 0 with
        a zero gradient rather than +inf: the first data step moves the vertex off the others'
        hull, and from then on the term pushes it outwards.
    reference=True: Benton et al. 2021's -lam * log(V^2 + 1e-4) (g-benton/loss-surface-simplexes,
        `utils.train_epoch_volume`), finite at V = 0; lam is then normally `reference_lambda`.
        Deliberate difference: V^2 comes from our float64 Gram volume, not from their float32
        Cayley-Menger determinant.
    """
    if reference:
        eps = torch.full_like(log_volumes, math.log(REFERENCE_EPS))
        terms = torch.logaddexp(2.0 * log_volumes, eps)  # log(V^2 + 1e-4), no overflow of V^2
    else:
        terms = torch.where(torch.isfinite(log_volumes), log_volumes, 0.0)
    return 0.0 - lam * terms.sum()  # 0 - 0: no -0.0 when nothing is penalised


def reference_lambda(
    model: nn.Module, num_vertices: int, lmbd: float = 1e-6, seed: int = 0
) -> float:
    """Benton et al.'s volume weight for a simplex of `num_vertices` vertices:
    max(lmbd / log(V_rand^2 + 1e-4), 1e-8), V_rand the volume of a simplex whose vertices are
    freshly initialised copies of `model` (LMBD = 1e-6 in their CIFAR-10 runs' text, 1e-10 as
    a script default), to use with `volume_penalty(..., reference=True)`.

    The copies are re-initialised on the CPU by every module's `reset_parameters`, seeded
    seed, seed + 1, ...; the process's random state is left as it was. Parameters that no
    `reset_parameters` covers keep the model's values (they add nothing to V_rand). A
    non-positive log (V_rand^2 + 1e-4 <= 1) gives the floor 1e-8, as in the reference.
    """
    if num_vertices < 2:
        raise ValueError(f"num_vertices must be >= 2 for a volume, got {num_vertices}")
    nets = []
    with torch.random.fork_rng(devices=[]):
        for i in range(num_vertices):
            torch.default_generator.manual_seed(seed + i)
            net = copy.deepcopy(model).cpu()
            for module in net.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
            nets.append([p.detach() for p in net.parameters()])
    with torch.no_grad():
        log_v = log_volume(zip(*nets, strict=True))
    denominator = float(torch.logaddexp(2.0 * log_v, torch.tensor(math.log(REFERENCE_EPS))))
    if denominator <= 0.0:
        return REFERENCE_FLOOR
    return max(lmbd / denominator, REFERENCE_FLOOR)
