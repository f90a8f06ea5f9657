"""A re-implementation of Li et al.'s Hessian eigenvalue procedure (loss-landscape's
`hess_vec_prod.py`, `min_max_hessian_eigs`), written here from its description, for the
benchmark. What it does, as the original:

- the parameters are those with ndim > 1 (no biases, no BatchNorm affine parameters);
- the network is put in eval mode (the running statistics it holds), and a Hessian-vector
  product is one pass over the data loader: per batch, the gradient of the batch's mean loss
  with create_graph=True, its inner product with v, and `.backward()` of that, accumulating
  into `p.grad` over the batches: the products are summed over batches, not averaged, so the
  eigenvalues are those of the mean loss times the number of batches;
- vectors travel as float64 numpy arrays through a scipy `LinearOperator`, cast to float32 for
  the network;
- lambda_max = `eigsh(A, k=1, tol=1e-2)` (which="LM": the largest magnitude);
- lambda_min = `eigsh(A - 0.51 lambda_max I, k=1, tol=1e-2)` + 0.51 lambda_max, which is the
  smallest eigenvalue only when lambda_min < -0.02 lambda_max (for a positive-definite H it is
  lambda_max again); the two are swapped when lambda_max <= 0 < lambda_min.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn


def li_params(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.ndim > 1]


def li_hvp(net: nn.Module, loader, criterion, params: list[nn.Parameter]):
    """The product v -> sum over batches of H_b v, v a float64 numpy vector."""

    def hvp(vec: np.ndarray) -> np.ndarray:
        hvp.count += 1
        parts, start = [], 0
        for p in params:
            chunk = vec[start : start + p.numel()]
            parts.append(torch.from_numpy(np.ascontiguousarray(chunk)).view(p.shape).float())
            start += p.numel()
        net.eval()
        net.zero_grad()
        for x, y in loader:
            loss = criterion(net(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            prod = sum((g * v).sum() for g, v in zip(grads, parts, strict=True))
            prod.backward()  # accumulates d(g.v)/dw = H_b v into p.grad, batch after batch
        return np.concatenate([p.grad.detach().numpy().ravel() for p in params]).astype(np.float64)

    hvp.count = 0
    return hvp


def min_max_hessian_eigs(net: nn.Module, loader, criterion, tol: float = 1e-2):
    """(lambda_max, lambda_min, products) as Li et al. compute them (see the module), and the
    products the lambda_max stage used."""
    params = li_params(net)
    n = sum(p.numel() for p in params)
    hvp = li_hvp(net, loader, criterion, params)
    maxeig = eigsh(LinearOperator((n, n), matvec=hvp, dtype=np.float64), k=1, tol=tol)[0][0]
    for_max = hvp.count
    shift = 0.51 * maxeig
    shifted = LinearOperator((n, n), matvec=lambda v: hvp(v) - shift * v, dtype=np.float64)
    mineig = eigsh(shifted, k=1, tol=tol)[0][0] + shift
    if maxeig <= 0 and mineig > 0:
        maxeig, mineig = mineig, maxeig
    return float(maxeig), float(mineig), hvp.count, for_max
