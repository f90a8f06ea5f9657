"""How ensemble members differ and how they combine: the mean of probabilities, the
disagreement of predicted classes, the KL divergence between predictive distributions, and
how well the predicted confidences are calibrated (expected calibration error)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def ensemble_log_probs(log_probs: Sequence[Tensor] | Tensor) -> Tensor:
    """Log of the mean of the members' probabilities, shape (N, C).

    `log_probs`: n tensors of log-probabilities (N, C), or one (n, N, C) tensor.
    log(1/n sum_i exp(l_i)) = logsumexp_i(l_i) - log n, stable for very confident members.
    """
    stacked = log_probs if isinstance(log_probs, Tensor) else None
    if stacked is None:
        if len(log_probs) == 0:
            raise ValueError("ensemble_log_probs needs at least one member")
        shapes = {tuple(lp.shape) for lp in log_probs}
        if len(shapes) != 1:
            raise ValueError(f"members must all have the same (N, C) shape, got {sorted(shapes)}")
        stacked = torch.stack(list(log_probs))
    if stacked.ndim != 3 or stacked.shape[0] == 0:
        raise ValueError(f"expected n >= 1 members of shape (N, C), got {tuple(stacked.shape)}")
    return torch.logsumexp(stacked, dim=0) - math.log(stacked.shape[0])


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"expected two log-probability tensors of the same shape (N, C), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def disagreement(log_probs_a: Tensor, log_probs_b: Tensor) -> float:
    """Percentage of inputs on which the two predicted classes differ; inputs (N, C) each."""
    _check_pair(log_probs_a, log_probs_b)
    differ = log_probs_a.argmax(1) != log_probs_b.argmax(1).to(log_probs_a.device)
    return 100.0 * differ.double().mean().item()


def kl_divergence(log_probs_a: Tensor, log_probs_b: Tensor) -> float:
    """Mean over inputs of KL(p_a || p_b) = sum_c p_a (log p_a - log p_b), in nats.

    Inputs are log-probabilities (N, C). Both are renormalised in float64 and each input's
    divergence is clipped at 0, so rounding never gives a (meaningless) negative value.
    Classes with p_a = 0 contribute 0.
    """
    _check_pair(log_probs_a, log_probs_b)
    a = log_probs_a.double()
    b = log_probs_b.double().to(a.device)
    a = a - torch.logsumexp(a, dim=1, keepdim=True)
    b = b - torch.logsumexp(b, dim=1, keepdim=True)
    p = a.exp()
    terms = torch.where(p > 0, p * (a - b), torch.zeros_like(p))
    return terms.sum(1).clamp_min(0).mean().item()


def expected_calibration_error(log_probs: Tensor, y: Tensor, bins: int = 15) -> float:
    """Expected calibration error of log-probabilities (N, C) against labels (N,), a fraction
    in [0, 1] (not percent): sum_m |B_m| / N * |acc(B_m) - conf(B_m)|.

    Guo, Pleiss, Sun, Weinberger 2017 ("On Calibration of Modern Neural Networks", Eq. 3):
    the confidence of an input is its largest predicted probability, the inputs fall into
    `bins` equal-width bins ((m - 1) / M, m / M] of it (15 as in the paper), and acc / conf
    are each bin's accuracy and mean confidence. Renormalised and summed in float64.
    """
    if log_probs.ndim != 2 or y.shape != (len(log_probs),) or len(y) == 0:
        raise ValueError(
            f"expected log-probabilities (N, C) and labels (N,) with N >= 1, got "
            f"{tuple(log_probs.shape)} and {tuple(y.shape)}"
        )
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    lp = log_probs.double()
    lp = lp - torch.logsumexp(lp, dim=1, keepdim=True)
    top, predicted = lp.max(1)
    confidence = top.exp()
    correct = (predicted == y.to(lp.device)).double()
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)  # bin m holds (m-1, m]/M
    gap = torch.zeros(bins, dtype=torch.float64, device=lp.device)
    gap.index_add_(0, index, correct - confidence)  # per bin: sum(acc) - sum(conf)
    return (gap.abs().sum() / len(y)).item()
