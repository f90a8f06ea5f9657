"""Canonical correlations between two layers: CCA, SVCCA and PWCCA, from streamed moments.

Everything is computed from the centred second moments of the pair, accumulated batch by
batch (`Moments.update`, Chan et al.'s parallel merge in float64), so a layer never has to be
one (n, features) matrix; `cca(X, Y)` etc. are the one-batch case. With co-moment matrices
Cxx = Xcᵀ Xc, Cxy = Xcᵀ Yc, Cyy = Yc^T Yc (Xc: X with its column means removed):

- each side is reduced to its principal directions, Cxx = V diag(s²) Vᵀ (s: the singular
  values of Xc), keeping the directions with s² > 1e-10 max s² (the rank; dead and duplicated
  neurons drop out) or, for SVCCA, the leading ones whose s² reach `keep` of the total;
- the canonical correlations rho_1 >= rho_2 >= ... are the singular values of
  M = (Vx / sx)ᵀ Cxy (Vy / sy), the cross-covariance of the two whitened sides
  (Hotelling 1936; the formula of google/svcca's `compute_ccas`, there with a pseudo-inverse
  and an epsilon on the diagonal instead of the rank cut).

SVCCA (Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis"): keep on
each side the top directions whose squared singular values (the variance) reach `keep`
(0.99 in the paper) of the total, then the mean of all min(kx, ky) canonical correlations.
google/svcca's `results["mean"]` instead averages only the leading coefficients whose own
cumulative sum reaches its `threshold`; its tutorial and anatome keep directions by
unsquared singular values; ours is the paper's definition.

PWCCA (Morcos et al. 2018, "Insights on representational similarity in neural networks with
canonical correlation", eq. in section 2.3): rho_pw = sum_i alpha_i rho_i / sum_i alpha_i,
alpha_i = sum_j |<h_i, x_j>|, h_i the unit-norm canonical variates of the weighted side and
x_j its (centred) neurons. With h_i = Xc (Vx / sx) u_i / ||.||, Xcᵀ h_i = Vx diag(sx) u_i, so
alpha = the column sums of |Vx diag(sx) U| (U: the left singular vectors of M). The weighted
side is X by default (`side="x"`, the paper's "weighted by L1"); google/svcca's `pwcca.py`
weights the side with fewer neurons, omits the whitening Sigma^{-1/2} from its canonical
variates and fails with an IndexError when the first input has more neurons.

Fewer samples than directions: when kx + ky > n - 1 the two subspaces of the (n - 1)-
dimensional centred sample space must intersect, so some correlations are 1 by construction;
the measures return NaN and say so (reduce with SVCCA's keep, avgpool, or use more samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from modeconn.similarity.inputs import ArrayLike, as_pair, degenerate

RANK_RTOL = 1e-10  # directions with s² below this fraction of the largest are not directions


@dataclass
class Moments:
    """Centred first and second moments of a layer pair, merged over batches in float64.

    n: samples seen; mean_x (p,), mean_y (q,); cxx (p, p), cxy (p, q), cyy (q, q): the
    co-moments sum_i (x_i - mean_x)(y_i - mean_y)ᵀ (covariances times n - 1).
    """

    n: int = 0
    mean_x: Tensor | None = None
    mean_y: Tensor | None = None
    cxx: Tensor | None = None
    cxy: Tensor | None = None
    cyy: Tensor | None = None

    @classmethod
    def of(cls, x: ArrayLike, y: ArrayLike) -> Moments:
        """The moments of a whole pair of (n, p), (n, q) matrices."""
        return cls().update(x, y)

    def update(self, x: ArrayLike, y: ArrayLike) -> Moments:
        """Add a batch (b, p), (b, q) of the same b samples; returns self.

        Chan, Golub & LeVeque's merge: each batch is centred on its own mean, and the shift
        between the means enters as delta deltaᵀ n n_b / (n + n_b), so large means never
        meet small variances in one sum."""
        a, b = as_pair(x, y)
        nb = len(a)
        if nb == 0:
            return self
        ma, mb = a.mean(0), b.mean(0)
        ac, bc = a - ma, b - mb
        if self.n == 0:
            self.n, self.mean_x, self.mean_y = nb, ma, mb
            self.cxx, self.cxy, self.cyy = ac.T @ ac, ac.T @ bc, bc.T @ bc
            return self
        if ma.shape != self.mean_x.shape or mb.shape != self.mean_y.shape:
            raise ValueError(
                f"a batch has {len(ma)} and {len(mb)} features, earlier batches "
                f"{len(self.mean_x)} and {len(self.mean_y)}: every batch must be the same layers"
            )
        total = self.n + nb
        dx, dy = ma - self.mean_x, mb - self.mean_y
        w = self.n * nb / total
        self.cxx += ac.T @ ac + w * torch.outer(dx, dx)
        self.cxy += ac.T @ bc + w * torch.outer(dx, dy)
        self.cyy += bc.T @ bc + w * torch.outer(dy, dy)
        self.mean_x += dx * (nb / total)
        self.mean_y += dy * (nb / total)
        self.n = total
        return self

    def cca(self, layer: str | None = None) -> np.ndarray:
        """The canonical correlations, largest first (min(rank_x, rank_y) of them)."""
        c = _canonical(self, None, None, layer, "CCA")
        return np.array([np.nan]) if c is None else c[0].cpu().numpy()

    def svcca(self, keep: float = 0.99, layer: str | None = None) -> float:
        """Mean canonical correlation after keeping `keep` of the variance on each side."""
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep is a fraction of the variance in (0, 1], got {keep}")
        c = _canonical(self, keep, keep, layer, "SVCCA")
        return float("nan") if c is None else c[0].mean().item()

    def pwcca(self, side: str = "x", layer: str | None = None) -> float:
        """Projection-weighted mean canonical correlation, the weights from `side`'s neurons."""
        if side not in ("x", "y"):
            raise ValueError(f"side is 'x' or 'y' (whose neurons weight the CCA), got {side!r}")
        c = _canonical(self, None, None, layer, "PWCCA")
        if c is None:
            return float("nan")
        rho, u, vt, (vx, sx), (vy, sy) = c
        basis, scale, coords = (vx, sx, u) if side == "x" else (vy, sy, vt.T)
        alpha = (basis @ (scale[:, None] * coords)).abs().sum(0)  # sum_j |<h_i, x_j>|
        return (alpha @ rho / alpha.sum()).item()

    def linear_cka(self, layer: str | None = None) -> float:
        """Linear CKA, ||Cxy||²_F / (||Cxx||_F ||Cyy||_F) (Kornblith et al. 2019, eq. 7)."""
        if self.n < 2:
            return degenerate(f"{self.n} sample(s); CKA needs at least 2", layer, "linear CKA")
        norm_x, norm_y = torch.linalg.matrix_norm(self.cxx), torch.linalg.matrix_norm(self.cyy)
        if norm_x == 0 or norm_y == 0:
            return degenerate("a constant (or dead) layer: nothing varies", layer, "linear CKA")
        return (torch.linalg.matrix_norm(self.cxy) ** 2 / (norm_x * norm_y)).item()


def principal(c: Tensor, keep: float | None = None) -> tuple[Tensor, Tensor]:
    """(V (p, k), s (k,)): the principal directions of a co-moment matrix c = V diag(s²) Vᵀ,
    largest first, without the null space; with `keep`, only the leading k whose s² reach
    `keep` of the total (the SVCCA rule on squared singular values)."""
    lam, vecs = torch.linalg.eigh(c)
    lam, vecs = lam.flip(0).clamp_min(0), vecs.flip(1)
    if len(lam) == 0 or lam[0] <= 0:
        return vecs[:, :0], lam[:0]
    rank = int((lam > RANK_RTOL * lam[0]).sum())
    k = rank
    if keep is not None:
        share = torch.cumsum(lam, 0) / lam.sum()
        k = min(rank, int((share < keep * (1 - 1e-12)).sum()) + 1)
    return vecs[:, :k], lam[:k].sqrt()


def _canonical(m: Moments, keep_x: float | None, keep_y: float | None, layer, measure):
    """(rho, U, Vᵀ, (Vx, sx), (Vy, sy)) of the whitened cross-covariance, or None (NaN)."""
    if m.n < 2:
        degenerate(f"{m.n} sample(s); CCA needs more", layer, measure)
        return None
    vx, sx = principal(m.cxx, keep_x)
    vy, sy = principal(m.cyy, keep_y)
    if len(sx) == 0 or len(sy) == 0:
        degenerate("a constant (or dead) layer: no feature varies over the samples", layer, measure)
        return None
    if len(sx) + len(sy) > m.n - 1:
        degenerate(
            f"{len(sx)} + {len(sy)} directions in {m.n} samples: some correlations are 1 by "
            "construction (the subspaces must meet); use more samples, SVCCA with a smaller "
            "keep, or the avgpool policy",
            layer,
            measure,
        )
        return None
    whitened = (vx / sx).T @ m.cxy @ (vy / sy)  # the cross-covariance of the whitened sides
    u, rho, vt = torch.linalg.svd(whitened, full_matrices=False)
    return rho.clamp(0.0, 1.0), u, vt, (vx, sx), (vy, sy)


def cca(x: ArrayLike, y: ArrayLike, *, layer: str | None = None) -> np.ndarray:
    """Canonical correlations of X (n, p) and Y (n, q), largest first, centred, float64.

    min(rank X, rank Y) coefficients in [0, 1]; invariant to any invertible linear map of
    either side. NaN (with a warning naming `layer`) for a constant layer or too few samples.
    """
    return Moments.of(x, y).cca(layer)


def svcca(x: ArrayLike, y: ArrayLike, keep: float = 0.99, *, layer: str | None = None) -> float:
    """SVCCA of X (n, p) and Y (n, q): the mean canonical correlation of the leading principal
    directions whose squared singular values reach `keep` of the total on each side (Raghu et
    al. 2017; keep=1 is the mean of `cca`)."""
    return Moments.of(x, y).svcca(keep, layer)


def pwcca(x: ArrayLike, y: ArrayLike, side: str = "x", *, layer: str | None = None) -> float:
    """PWCCA of X (n, p) and Y (n, q) (Morcos et al. 2018): canonical correlations weighted by
    how much of `side`'s neurons ("x": X's, the default; "y": Y's) each canonical variate
    accounts for. Not symmetric: pwcca(X, Y) == pwcca(Y, X, side="y")."""
    return Moments.of(x, y).pwcca(side, layer)
