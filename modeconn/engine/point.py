"""Evaluate weights on data: BatchNorm statistics recomputed, then the task's metrics
(NLL and error for classification, mse for regression: `modeconn.data.tasks`).

Everything that evaluates a point in weight space (a curve at t, a plane grid node, a random
direction) comes down to `evaluate_point(model, weights, data)`: weights are a name->tensor
dict run through `torch.func.functional_call`, so the same network object serves every point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeconn.data.tasks import CLASSIFICATION, targets_like, task_of
from modeconn.engine.execution import Runner, autocast_dtype, device_of, eval_plan, precision
from modeconn.models.batchnorm import (  # noqa: F401  (check_bn_samples: the engine's check too)
    Batches,
    batchnorm_layers,
    check_bn_samples,
    statistics_pass,
)

BN_POLICIES = ("recompute", "fixed")  # statistics of each point, or the model's buffers


def check_bn_policy(bn: str) -> str:
    """`bn` if it is one of BN_POLICIES, else a ValueError listing them."""
    if bn not in BN_POLICIES:
        raise ValueError(
            f"bn must be one of {', '.join(map(repr, BN_POLICIES))} ('recompute': statistics "
            f"of every point from the train data; 'fixed': the model's own buffers), got {bn!r}"
        )
    return bn


@torch.no_grad()
def recompute_bn(
    model: nn.Module,
    data: Batches,
    weights: Mapping[str, Tensor] | None = None,
    *,
    batch_size: int = 1024,
    num_samples: int | None = None,
    exact: bool = True,
    compile: bool = False,
    autocast: str | torch.dtype | None = None,
) -> int:
    """Reset and re-estimate every BatchNorm layer's running mean and variance.

    One pass over `data` (input tensor (N, ...) or an iterable of batches / (x, y) pairs,
    never augmented) with the BatchNorm layers in train mode and everything else in eval mode
    (dropout off). Each layer's statistics are accumulated over all samples exactly
    (Chan's parallel mean/variance merge in float64), so with equal batches they equal the
    equal-weight average of `torch.optim.swa_utils.update_bn` for the mean, and the exact
    population variance (unbiased) rather than an average of per-batch variances.
    `exact=False` reproduces the 2018 reference's estimator instead (momentum b / (n + b):
    a batch-size-weighted average of per-batch means and unbiased variances), which depends
    on the batch size. Training flags are restored afterwards. `weights` (a name->tensor
    dict) are used instead of the model's own parameters when given. Returns the number of
    samples used.

    Cost: the layers run with momentum 1, so after each batch their running buffers hold that
    batch's mean and unbiased variance (computed by BatchNorm anyway); a hook copies these
    per-channel numbers, merged after the batch, so no activation is read twice.
    `compile=True` runs the full-size batches through `torch.compile` (`compiled`);
    `autocast` runs the pass in lower precision (`precision`).
    """
    check_bn_samples(num_samples, "num_samples")
    if not batchnorm_layers(model):
        return 0
    run = Runner(model, compile)
    device = next(iter(weights.values())).device if weights else device_of(model)
    with precision(device, autocast):
        return statistics_pass(
            model,
            data,
            weights,
            batch_size=batch_size,
            num_samples=num_samples,
            exact=exact,
            forward=run,
        )


@dataclass
class Metrics:
    """Mean negative log-likelihood, error in percent and accuracy-relevant counts."""

    nll: float
    error: float
    samples: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class RegressionMetrics:
    """Mean squared error over every target value of a split, and its number of samples.
    The Gaussian NLL needs the train split's mse too (`modeconn.data.tasks`), so it is made from
    these by the grid engine (`node_metrics`)."""

    mse: float
    samples: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.inference_mode()
def predict(
    model: nn.Module,
    x: Tensor,
    weights: Mapping[str, Tensor] | None = None,
    *,
    batch_size: int = 1024,
    compile: bool = False,
    autocast: str | torch.dtype | None = None,
    task: str = CLASSIFICATION,
) -> Tensor:
    """Log-probabilities (N, C) of the network on inputs x (N, ...), in eval mode
    (`compile=True`: full-size batches through `torch.compile`, see `compiled`; `autocast`:
    forward passes in lower precision, see `precision`), always float32. A regression
    `task` returns the predictions (N, K) themselves."""
    mode = model.training
    model.eval()
    run = Runner(model, compile)
    try:
        with precision(x.device, autocast):
            outs = [run(weights, xb) for xb in torch.split(x, batch_size)]
        if task == CLASSIFICATION:
            outs = [F.log_softmax(out.float(), dim=1) for out in outs]
        else:
            outs = [out.float() for out in outs]
    finally:
        model.train(mode)
    return torch.cat(outs)


def metrics(log_probs: Tensor, y: Tensor) -> Metrics:
    """NLL and error (%) from log-probabilities (N, C) and labels (N,)."""
    nll = F.nll_loss(log_probs, y.to(log_probs.device)).item()
    wrong = (log_probs.argmax(1) != y.to(log_probs.device)).sum().item()
    return Metrics(nll=nll, error=100.0 * wrong / len(y), samples=len(y))


def regression_metrics(preds: Tensor, y: Tensor) -> RegressionMetrics:
    """Mean squared error (in float64, over every target value) of predictions (N, K)
    against targets (N, K) or (N,)."""
    err = preds.double() - targets_like(preds, y).double()
    return RegressionMetrics(mse=(err**2).mean().item(), samples=len(y))


def task_metrics(task: str, out: Tensor, y: Tensor) -> Metrics | RegressionMetrics:
    """`metrics` of log-probabilities or `regression_metrics` of predictions, by task."""
    return metrics(out, y) if task == CLASSIFICATION else regression_metrics(out, y)


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weights: Mapping[str, Tensor] | None = None,
    *,
    batch_size: int = 1024,
    compile: bool = False,
    autocast: str | torch.dtype | None = None,
    task: str = CLASSIFICATION,
) -> Metrics | RegressionMetrics:
    """NLL and error (%) of the network on inputs x (N, ...) and labels y (N,), in eval mode;
    for a regression `task`, the mse against targets y."""
    kw = dict(batch_size=batch_size, compile=compile, autocast=autocast, task=task)
    return task_metrics(task, predict(model, x, weights, **kw), y)


def prepare_point(
    model: nn.Module,
    weights: Mapping[str, Tensor] | None,
    data,
    *,
    bn_samples: int | None = None,
    bn_batch_size: int = 128,
    bn_exact: bool = True,
    compile: bool = False,
    autocast: str | torch.dtype | None = None,
    bn: str = "recompute",
    layout: str = "auto",
) -> dict[str, Tensor] | None:
    """Make `model` ready to evaluate `weights`: BatchNorm statistics recomputed on the
    un-augmented train data of `data` (a `Dataset`). Returns the weights, detached.

    `bn_batch_size` is fixed (not tuned for speed) because the statistics of deeper layers
    depend on the batch statistics that normalise earlier ones in this pass.
    `bn="fixed"` recomputes nothing: the point is evaluated with the model's current
    running statistics (Li et al.'s loss-landscape keeps the centre's for every point).
    `layout`: the inputs' memory layout ("auto", "contiguous", "channels_last": `eval_plan`).
    """
    check_bn_samples(bn_samples)
    if weights is not None:
        weights = {k: v.detach() for k, v in weights.items()}
    if check_bn_policy(bn) == "fixed":
        return weights
    recompute_bn(
        model,
        eval_plan(data.train_x, layout=layout).layout(data.train_x),
        weights,
        batch_size=bn_batch_size,
        num_samples=bn_samples,
        exact=bn_exact,
        compile=compile,
        autocast=autocast,
    )
    return weights


def evaluate_point(
    model: nn.Module,
    weights: Mapping[str, Tensor] | None,
    data,
    *,
    splits: tuple[str, ...] = ("train", "test"),
    bn_samples: int | None = None,
    batch_size: int | None = None,
    bn_batch_size: int = 128,
    bn_exact: bool = True,
    compile: bool = False,
    autocast: str | torch.dtype | None = None,
    eval_data=None,
    bn: str = "recompute",
    layout: str = "auto",
) -> dict[str, Metrics | RegressionMetrics]:
    """Recompute BatchNorm statistics on un-augmented train data, then evaluate each split
    (`Metrics`; `RegressionMetrics` for a regression data set). `bn="fixed"` skips the
    recompute and evaluates with the model's current buffers (`prepare_point`).

    `eval_data`: a `Dataset` whose splits are evaluated instead of `data`'s (an evaluation
    subset, `modeconn.engine.subset`); the statistics still come from `data`.

    `data` is a `modeconn.data.catalogue.Dataset`; `weights` a name->tensor dict (None: the model's
    own).
    `batch_size` of the evaluation passes (None: `eval_plan`'s rule; it changes no number
    unless compiled) and `layout` of the inputs (`eval_plan`: "auto", "contiguous",
    "channels_last"; the layout changes convolutions' last bits).
    `compile=True` runs the forward passes through `torch.compile` (`compiled`): one graph
    per mode and batch size, compiled on the first point and reused by every later one,
    results equal up to float rounding; worth its compile time on long jobs.
    `autocast` ("bfloat16" or "float16"; None: full precision) runs every forward pass in
    that precision under `torch.autocast`: faster where the hardware has it, at a cost in
    accuracy that benchmarks/bench_eval.py reports (not for results compared at 1e-4).
    """
    autocast_dtype(autocast)  # a bad name fails here, before any work
    weights = prepare_point(
        model,
        weights,
        data,
        bn_samples=bn_samples,
        bn_batch_size=bn_batch_size,
        bn_exact=bn_exact,
        compile=compile,
        autocast=autocast,
        bn=bn,
        layout=layout,
    )
    out = {}
    task = task_of(data)
    source = data if eval_data is None else eval_data
    for split in splits:
        x, y = getattr(source, f"{split}_x"), getattr(source, f"{split}_y")
        plan = eval_plan(data.train_x, batch_size=batch_size, layout=layout)
        out[split] = evaluate(
            model,
            plan.layout(x),
            y,
            weights,
            batch_size=plan.batch_size,
            compile=compile,
            autocast=autocast,
            task=task,
        )
    return out
