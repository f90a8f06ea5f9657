"""Ensemble members per task: one weight point's test predictions, alone and together.

A member is what an ensemble needs of one weight point (BatchNorm statistics recomputed for
it on the un-augmented train data first):

- classification: its test log-probabilities (N, C); an ensemble averages probabilities,
  p_ens(y | x) = 1/n sum_i p_i(y | x) (Garipov et al. 2018), and reports error (%) and NLL;
  members differ by their disagreement (%) and KL(p_w1 || p_member).
- regression: its test predictions (N, K) and its noise variance sigma^2 (the data set's
  noise_scale^2, or the member's own train mse: the maximum-likelihood fit); an ensemble
  averages predictions (reported: their mse) and its NLL is that of the equal-weight mixture
  of the members' Gaussians (`modeconn.data.tasks.mixture_nll`); members differ by the mean
  squared difference of their predictions and by the KL divergence of their Gaussians.

`columns(task)` names what `compare` returns for a point against w1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modeconn.data.tasks import (
    CLASSIFICATION,
    gaussian_nll,
    mixture_nll,
    noise_variance,
    targets_like,
    task_of,
)
from modeconn.engine.execution import eval_plan
from modeconn.engine.point import metrics, predict, prepare_point, regression_metrics
from modeconn.ensembles.measures import disagreement, kl_divergence

_COLUMNS = {
    CLASSIFICATION: (
        "member_error",
        "member_nll",
        "ensemble_error",
        "ensemble_nll",
        "disagreement",
        "kl",
    ),
    "regression": (
        "member_mse",
        "member_nll",
        "ensemble_mse",
        "ensemble_nll",
        "sq_difference",
        "kl",
    ),
}


def columns(task: str) -> tuple[str, ...]:
    """The per-point columns of an ensemble study: member alone, ensemble {w1, member}
    (data term and nll), then the two diversity measures against w1."""
    return _COLUMNS[task]


def score_name(task: str) -> str:
    """The data term an ensemble is scored by: "error" (%) or "mse"."""
    return "error" if task == CLASSIFICATION else "mse"


@dataclass
class Member:
    """One point's test outputs (log-probabilities, or predictions) and, for regression,
    its noise variance."""

    outputs: Tensor
    sigma2: float | None = None


def point_member(
    model: nn.Module,
    weights: Mapping[str, Tensor] | None,
    data,
    *,
    bn_samples: int | None = None,
    batch_size: int | None = None,
    autocast: str | None = None,
    compile: bool = False,
    split: str = "test",
    layout: str = "auto",
) -> Member:
    """The member of one weight point on `split` of `data` (a `Dataset`): BatchNorm
    statistics of `model` recomputed for `weights` first (parameters only; buffers come
    from `model`); for regression the train split is predicted too when the noise variance
    is fitted. `autocast`, `compile`, `layout`: how the forward passes run (see
    `evaluate_point`)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    task = task_of(data)
    run = dict(autocast=autocast, compile=compile)
    weights = prepare_point(model, weights, data, bn_samples=bn_samples, layout=layout, **run)
    plan = eval_plan(data.train_x, batch_size=batch_size, layout=layout)
    kw = dict(batch_size=plan.batch_size, task=task, **run)

    def outputs(x: Tensor) -> Tensor:
        return predict(model, plan.layout(x), weights, **kw)

    out = outputs(data.test_x if split == "test" else data.train_x)
    if task == CLASSIFICATION:
        return Member(out)
    noise = getattr(data, "noise_scale", None)
    train_mse = None
    if noise is None:
        train_mse = regression_metrics(outputs(data.train_x), data.train_y).mse
    return Member(out, noise_variance(train_mse, noise))


def alone(task: str, member: Member, y: Tensor) -> tuple[float, float]:
    """(error % or mse, nll) of one member against the test targets y."""
    if task == CLASSIFICATION:
        m = metrics(member.outputs, y)
        return m.error, m.nll
    mse = regression_metrics(member.outputs, y).mse
    return mse, gaussian_nll(mse, member.sigma2)


def together(task: str, members: Sequence[Member], y: Tensor) -> tuple[float, float]:
    """(error % or mse, nll) of the equal-weight ensemble of `members`: mean probability
    (classification), or mean prediction and the Gaussian mixture's nll (regression)."""
    stacked = torch.stack([m.outputs for m in members])
    if task == CLASSIFICATION:
        m = metrics(torch.logsumexp(stacked, dim=0) - math.log(len(members)), y)
        return m.error, m.nll
    mse = regression_metrics(stacked.mean(0), y).mse
    sigma2 = torch.tensor([m.sigma2 for m in members], dtype=torch.float64)
    return mse, mixture_nll(stacked, y, sigma2)


def gaussian_kl(a: Member, b: Member) -> float:
    """Mean over target values of KL(N(f_a, s_a^2) || N(f_b, s_b^2)), in nats:
    0.5 log(s_b^2 / s_a^2) + (s_a^2 + (f_a - f_b)^2) / (2 s_b^2) - 0.5."""
    sa, sb = a.sigma2, b.sigma2
    if not (sa > 0 and sb > 0):
        return float("nan")
    sq = ((a.outputs.double() - b.outputs.double()) ** 2).mean().item()
    return max(0.5 * math.log(sb / sa) + (sa + sq) / (2 * sb) - 0.5, 0.0)


def compare(task: str, w1: Member, member: Member, y: Tensor) -> list[float]:
    """The `columns(task)` of `member` against w1: alone, ensembled with w1, diversity."""

    diversity: list[float]
    if task == CLASSIFICATION:
        diversity = [disagreement(w1.outputs, member.outputs)]
        diversity.append(kl_divergence(w1.outputs, member.outputs))
    else:
        diff = member.outputs.double() - targets_like(member.outputs, w1.outputs).double()
        diversity = [(diff**2).mean().item(), gaussian_kl(w1, member)]
    return [*alone(task, member, y), *together(task, [w1, member], y), *diversity]
