"""Centred kernel alignment between two layers: linear, RBF, debiased and minibatch CKA.

Kornblith et al. 2019 ("Similarity of Neural Network Representations Revisited"):
CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) on the samples' Gram matrices. For a
linear kernel on centred features, <HKH, HLH> = ||Xcᵀ Yc||²_F, so linear CKA is
||Xcᵀ Yc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F), computed in feature space or sample space,
whichever is cheaper (the numbers are equal).

- RBF CKA: K_ij = exp(-||x_i - x_j||² / (2 sigma²)), sigma² = threshold² x the median of all
  n² squared distances (diagonal included): Kornblith's colab convention, where "bandwidth =
  threshold x median distance".
- Debiased CKA: HSIC replaced by the unbiased estimator of Song et al. 2012 (eq. 5),
  HSIC_1 = [tr(K~ L~) + 1ᵀK~1 1ᵀL~1 / ((n-1)(n-2)) - 2/(n-2) 1ᵀK~L~1] / (n(n-3)),
  K~ = K with its diagonal set to 0. The estimator does not change when the features are
  shifted, so the features are centred first (in float64): then K~1 = -d, d_i = ||x_i||², and
  every term is a product of feature-space sums. torch_cka computes the same formula on
  uncentred features in float32, which loses HSIC(K, K) to cancellation when a feature's mean
  is large against its spread (a ReLU layer) and returns NaN.
- Minibatch CKA (Nguyen et al. 2021, "Do Wide and Deep Networks Learn the Same Things?"):
  average HSIC_1 over batches first, then the ratio, each batch's HSIC_1 with its own
  1/(n(n-3)) factor (their official code drops it, and runs in float32), so batches of any
  size may be mixed. With one batch it is the debiased CKA.
"""

from __future__ import annotations

import torch
from torch import Tensor

from modeconn.similarity.inputs import ArrayLike, as_pair, centred, degenerate


def linear_products(xc: Tensor, yc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(||Xcᵀ Yc||², ||Xcᵀ Xc||², ||Ycᵀ Yc||²) = (<K, L>, <K, K>, <L, L>) for linear Grams,
    through (p, q) products or (n, n) Grams, whichever costs fewer multiplications."""
    n, p, q = xc.shape[0], xc.shape[1], yc.shape[1]
    if n * (p * p + q * q + p * q) <= n * n * (p + q) + 3 * n * n:
        fro = torch.linalg.matrix_norm
        return fro(xc.T @ yc) ** 2, fro(xc.T @ xc) ** 2, fro(yc.T @ yc) ** 2
    k, ll = xc @ xc.T, yc @ yc.T
    return (k * ll).sum(), (k * k).sum(), (ll * ll).sum()


def linear_cka(x: ArrayLike, y: ArrayLike, *, layer: str | None = None) -> float:
    """Linear CKA of X (n, p) and Y (n, q) (Kornblith et al. 2019), centred, float64.

    Invariant to orthogonal maps and isotropic scaling of either side, not to general
    invertible maps; 1 for identical inputs. NaN (warning) for a constant layer or n < 2."""
    a, b = as_pair(x, y)
    if len(a) < 2:
        return degenerate(f"{len(a)} sample(s); CKA needs at least 2", layer, "linear CKA")
    xy, xx, yy = linear_products(centred(a), centred(b))
    if xx == 0 or yy == 0:
        return degenerate("a constant (or dead) layer: nothing varies", layer, "linear CKA")
    return (xy / (xx.sqrt() * yy.sqrt())).item()


def rbf_gram(x: Tensor, threshold: float) -> Tensor | None:
    """exp(-d²_ij / (2 threshold² median(d²))) for the rows of x; None if the median is 0."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    median = d2.median()
    if median <= 0:
        return None
    return torch.exp(-d2 / (2 * threshold**2 * median))


def _centre_gram(k: Tensor) -> Tensor:
    """H K H with H = I - 11ᵀ/n."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def rbf_cka(
    x: ArrayLike, y: ArrayLike, threshold: float = 1.0, *, layer: str | None = None
) -> float:
    """RBF-kernel CKA of X (n, p) and Y (n, q): bandwidth sigma = threshold x the median
    distance between samples, per side (Kornblith et al. 2019's colab). Costs n² memory."""
    if threshold <= 0:
        raise ValueError(f"threshold scales the median distance and must be > 0, got {threshold}")
    a, b = as_pair(x, y)
    if len(a) < 2:
        return degenerate(f"{len(a)} sample(s); CKA needs at least 2", layer, "RBF CKA")
    k, ll = rbf_gram(a, threshold), rbf_gram(b, threshold)
    if k is None or ll is None:
        return degenerate(
            "the median distance between samples is 0 (a constant layer, or most samples equal)",
            layer,
            "RBF CKA",
        )
    kc, lc = _centre_gram(k), _centre_gram(ll)
    kk, lll = (kc * kc).sum(), (lc * lc).sum()
    if kk <= 0 or lll <= 0:
        return degenerate("a kernel matrix is constant after centring", layer, "RBF CKA")
    return ((kc * lc).sum() / (kk.sqrt() * lll.sqrt())).item()


def unbiased_hsic(xc: Tensor, yc: Tensor) -> Tensor:
    """Song et al.'s unbiased HSIC_1 of linear kernels on centred features (n >= 4)."""
    return unbiased_hsics(xc, yc)[0]


def unbiased_hsics(xc: Tensor, yc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(HSIC_1(K, L), HSIC_1(K, K), HSIC_1(L, L)) of linear kernels on centred features,
    from one `linear_products` call (each Gram or cross-product computed once)."""
    n = xc.shape[0]
    dx, dy = (xc * xc).sum(1), (yc * yc).sum(1)  # the Grams' diagonals; K~1 = -dx
    products = linear_products(xc, yc)  # <K, L>, <K, K>, <L, L>
    out = []
    for full, (da, db) in zip(products, ((dx, dy), (dx, dx), (dy, dy)), strict=True):
        trace = full - da @ db  # tr(K~ L~)
        ones = da.sum() * db.sum() / ((n - 1) * (n - 2))  # 1ᵀK~1 1ᵀL~1 / ((n-1)(n-2))
        cross = 2.0 / (n - 2) * (da @ db)  # 2/(n-2) 1ᵀK~L~1
        out.append((trace + ones - cross) / (n * (n - 3)))
    return out[0], out[1], out[2]


def _ratio(xy: Tensor, xx: Tensor, yy: Tensor, layer: str | None, measure: str) -> float:
    if xx <= 0 or yy <= 0:
        return degenerate(
            "an unbiased self-HSIC estimate is <= 0 (a constant layer, or too few samples for "
            "the debiased estimator)",
            layer,
            measure,
        )
    return (xy / (xx.sqrt() * yy.sqrt())).item()


def debiased_cka(x: ArrayLike, y: ArrayLike, *, layer: str | None = None) -> float:
    """Debiased linear CKA of X (n, p) and Y (n, q): CKA with Song et al.'s unbiased HSIC
    (Kornblith et al. 2019's `debiased=True`), centred, float64; needs n >= 4."""
    a, b = as_pair(x, y)
    if len(a) < 4:
        return degenerate(f"{len(a)} sample(s); the unbiased HSIC needs 4", layer, "debiased CKA")
    return _ratio(*unbiased_hsics(centred(a), centred(b)), layer, "debiased CKA")


class MinibatchCKA:
    """Nguyen et al. 2021's minibatch CKA, accumulated batch by batch: sum_b HSIC_1(X_b, Y_b)
    / sqrt(sum_b HSIC_1(X_b, X_b) sum_b HSIC_1(Y_b, Y_b)). Batches of fewer than 4 samples
    (where HSIC_1 is undefined) are skipped and counted in `skipped`."""

    def __init__(self) -> None:
        self.xy = self.xx = self.yy = torch.zeros((), dtype=torch.float64)
        self.batches = self.skipped = 0

    def update(self, x: ArrayLike, y: ArrayLike) -> MinibatchCKA:
        """Add one batch of the same samples of both layers, (b, p) and (b, q); returns self."""
        a, b = as_pair(x, y)
        if len(a) < 4:
            self.skipped += 1
            return self
        xy, xx, yy = unbiased_hsics(centred(a), centred(b))
        self.xy, self.xx, self.yy = (
            self.xy.to(a.device) + xy,
            self.xx.to(a.device) + xx,
            self.yy.to(a.device) + yy,
        )
        self.batches += 1
        return self

    def value(self, layer: str | None = None) -> float:
        """The minibatch CKA so far (NaN with a warning if no batch could be used)."""
        if self.batches == 0:
            return degenerate("no batch of at least 4 samples", layer, "minibatch CKA")
        return _ratio(self.xy, self.xx, self.yy, layer, "minibatch CKA")


def minibatch_cka(
    x: ArrayLike, y: ArrayLike, batch_size: int = 256, *, layer: str | None = None
) -> float:
    """Minibatch CKA of X (n, p) and Y (n, q) over consecutive batches of `batch_size` rows
    (shuffle the rows first if their order means something)."""
    if batch_size < 4:
        raise ValueError(f"batch_size must be >= 4 (the unbiased HSIC needs 4), got {batch_size}")
    a, b = as_pair(x, y)
    acc = MinibatchCKA()
    for start in range(0, len(a), batch_size):
        acc.update(a[start : start + batch_size], b[start : start + batch_size])
    return acc.value(layer)
