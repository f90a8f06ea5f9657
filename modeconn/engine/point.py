"""Evaluate weights on data: BatchNorm statistics recomputed, then the task's metrics
(NLL and error for classification, mse for regression: `modeconn.tasks`).

Everything that evaluates a point in weight space (a curve at t, a plane grid node, a random
direction) comes down to `evaluate_point(model, weights, data)`: weights are a name->tensor
dict run through `torch.func.functional_call`, so the same network object serves every point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from modeconn.execution import Runner, autocast_dtype, device_of, eval_plan, precision
from modeconn.tasks import CLASSIFICATION, targets_like, task_of

Batches = Tensor | Iterable[Tensor] | Iterable[tuple[Tensor, Tensor]]

BN_POLICIES = ("recompute", "fixed")  # statistics of each point, or the model's buffers


def check_bn_policy(bn: str) -> str:
    """`bn` if it is one of BN_POLICIES, else a ValueError listing them."""
    if bn not in BN_POLICIES:
        raise ValueError(
            f"bn must be one of {', '.join(map(repr, BN_POLICIES))} ('recompute': statistics "
            f"of every point from the train data; 'fixed': the model's own buffers), got {bn!r}"
        )
    return bn


def check_bn_samples(value: int | None, name: str = "bn_samples") -> None:
    """Refuse a sample count for the BatchNorm recompute other than an int >= 1 or None (all):
    a negative one would silently drop samples from the end (`x[:-5]`)."""
    if value is None:
        return
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < 1:  # ints, np ints
        raise ValueError(
            f"{name} must be an int >= 1 (train samples for the BatchNorm statistics) "
            f"or None (null on the command line) for all of them, got {value!r}"
        )


def _input_batches(data: Batches, batch_size: int, num_samples: int | None) -> Iterable[Tensor]:
    """Input tensors in batches, stopping after `num_samples` samples (None: all)."""
    if isinstance(data, Tensor):
        data = data[:num_samples] if num_samples is not None else data
        if len(data):
            yield from torch.split(data, batch_size)
        return
    seen = 0
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if num_samples is not None:
            x = x[: num_samples - seen]
        if len(x) == 0:
            break
        seen += len(x)
        yield x


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers that keep running statistics (those a recompute must refresh)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


Moments = tuple[int, Tensor | float, Tensor | float]  # count, mean, M2 (float64 per channel)


def merge_moments(
    count: int,
    mean: Tensor | float,
    m2: Tensor | float,
    n_b: int,
    mean_b: Tensor,
    var_b: Tensor,
    *,
    exact: bool = True,
) -> Moments:
    """Merge one batch's per-channel mean and unbiased variance into running moments.

    (count, mean, m2) are the moments so far (start with (0, 0.0, 0.0)); n_b is the number of
    values per channel in the batch, mean_b / var_b its mean and unbiased variance, of any
    shape (C,) or (P, C) for P points at once. The arithmetic runs in float64 so that the
    merged statistics do not depend on how the data was split into batches. `exact=False` keeps
    the 2018 reference's batch-size-weighted sum of unbiased batch variances instead of M2.
    Both BatchNorm recomputes (`recompute_bn` and the batched engine) use this one function.
    """
    mean_b, var_b = mean_b.double(), var_b.double()
    n = count + n_b
    delta = mean_b - mean
    merged_mean = mean + delta * (n_b / n)
    if exact:  # Chan et al.: M2 = M2_a + M2_b + delta^2 n_a n_b / n
        return n, merged_mean, m2 + var_b * (n_b - 1) + delta**2 * (count * n_b / n)
    # the reference: batch-size-weighted average of unbiased batch variances
    return n, merged_mean, m2 + var_b * n_b


def finish_moments(
    count: int, mean: Tensor, m2: Tensor, *, exact: bool = True
) -> tuple[Tensor, Tensor]:
    """Running mean and variance from merged moments: the unbiased variance M2 / (n - 1), or
    with `exact=False` the reference's weighted average of batch variances (sum / n)."""
    return mean, (m2 / max(count - 1, 1) if exact else m2 / count)


@contextlib.contextmanager
def batchnorm_pass(
    model: nn.Module, layers: Iterable[_BatchNorm], hook: Callable[..., None]
) -> Iterator[None]:
    """The model set up for a statistics pass: `layers` in train mode with momentum 1 (so
    after each call their running buffers hold that batch's mean and unbiased variance) and
    `hook` registered on them as a forward hook; every other module in eval mode (dropout
    off). Modes, momenta and hooks are restored on exit."""
    layers = list(layers)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    hooks = [m.register_forward_hook(hook) for m in layers]
    try:
        model.eval()
        for m in layers:
            m.train()
            m.momentum = 1.0
        yield
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)
        for m, momentum in momenta.items():
            m.momentum = momentum


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
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    stats: dict[int, Moments] = {id(m): (0, 0.0, 0.0) for m in layers}
    seen: list[tuple[int, int, Tensor, Tensor]] = []  # one batch's (layer, n, mean, var)

    def collect(module: _BatchNorm, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = inputs[0]
        # momentum 1: the buffers hold this batch's mean and unbiased variance
        seen.append(
            (
                id(module),
                x.numel() // x.shape[1],
                module.running_mean.clone(),
                module.running_var.clone(),
            )
        )

    # Reset first: with momentum 1 the update is 0 * old + batch, and 0 * NaN (left by a
    # diverged point) would poison every later point.
    for m in layers:
        m.reset_running_stats()
    samples = 0
    run = Runner(model, compile)
    device = next(iter(weights.values())).device if weights else device_of(model)
    with batchnorm_pass(model, layers, collect), precision(device, autocast):
        for x in _input_batches(data, batch_size, num_samples):
            seen.clear()  # only the statistics of the call that returned
            run(weights, x)
            samples += len(x)
            # merged outside the forward pass, so a compiled graph holds no running counts
            for key, n_b, mean_b, var_b in seen:
                stats[key] = merge_moments(*stats[key], n_b, mean_b, var_b, exact=exact)
            seen.clear()
    if samples == 0:
        raise ValueError("recompute_bn got no data: pass at least one sample")
    for m in layers:
        mean, var = finish_moments(*stats[id(m)], exact=exact)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.fill_(1)
    return samples


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
    The Gaussian NLL needs the train split's mse too (`modeconn.tasks`), so it is made from
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

    `data` is a `modeconn.data.Dataset`; `weights` a name->tensor dict (None: the model's own).
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
