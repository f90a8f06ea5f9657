"""Several weight points in one pass: `evaluate_point` for P points at once under `vmap`.

A plane grid or a path asks for the same network at many weight points. For a small network
one point leaves most of a GPU idle, so `evaluate_points` stacks the P points' parameters
along a new leading dim and runs `torch.func.functional_call` under `torch.func.vmap` with
the input shared (in_dims=(0, None)): every forward pass evaluates all P points on one batch.
The results are those of `[evaluate_point(model, w, data) for w in weights_list]` up to float
rounding. Whether this is faster depends on the device and the network, so the analyses take
`points_per_pass`, and its default "auto" chooses per device (`resolve_points_per_pass`): one
point at a time on a CPU, where batching measured 0.37-0.94x the sequential engine
(benchmarks/bench_batched.py), and on an accelerator the count that `choose_points_per_pass`
times fastest for this network.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from modeconn.data.tasks import CLASSIFICATION, task_of
from modeconn.engine.execution import (
    EvalPlan,
    autocast_dtype,
    best_seconds,
    eval_plan,
    forward_with,
    precision,
)
from modeconn.engine.point import Metrics, RegressionMetrics, check_bn_policy, task_metrics
from modeconn.models.batchnorm import (
    batchnorm_layers,
    batchnorm_pass,
    finish_moments,
    merge_moments,
)


def _stack(weights_list: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """name -> (P, ...) tensor from P name -> tensor dicts with the same names and shapes."""
    names = list(weights_list[0])
    for k, w in enumerate(weights_list[1:], start=1):
        if set(w) != set(names):
            diff = sorted(set(w) ^ set(names))
            raise ValueError(
                f"weights_list[{k}] names other tensors than weights_list[0] (differing: "
                f"{', '.join(diff[:5])}); every point must hold the same parameters"
            )
        for name in names:
            if w[name].shape != weights_list[0][name].shape:
                raise ValueError(
                    f"weights_list[{k}][{name!r}] has shape {tuple(w[name].shape)}, "
                    f"weights_list[0] has {tuple(weights_list[0][name].shape)}"
                )
    return {name: torch.stack([w[name].detach() for w in weights_list]) for name in names}


def _bn_prefixes(model: nn.Module) -> dict[_BatchNorm, str]:
    """Each BatchNorm layer that keeps running statistics -> the prefix of its buffer names."""
    layers = set(batchnorm_layers(model))
    return {m: f"{name}." if name else "" for name, m in model.named_modules() if m in layers}


def _vmapped(model: nn.Module, state: dict[str, Tensor], x: Tensor) -> Tensor:
    """Logits (P, B, K) of the P points in `state` (name -> (P, ...)) on the shared input x.

    vmap cannot run every network: data-dependent control flow, `.item()`, random ops or an
    op without a batching rule fail inside it. Those failures become a ValueError naming the
    way out (points_per_pass=1), unless the plain forward pass of the first point fails too:
    then the network itself is at fault and its own error is raised.
    """

    def one(point: dict[str, Tensor], xb: Tensor) -> Tensor:
        return functional_call(model, point, (xb,))

    try:
        return vmap(one, in_dims=(0, None))(state, x)
    except (RuntimeError, NotImplementedError) as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        first = {name: t[0].clone() for name, t in state.items()}
        one(first, x)  # raises the network's own error if it fails without vmap too
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{type(model).__name__} cannot be evaluated at several points in one pass: "
            f"torch.func.vmap fails on it ({reason}). Use points_per_pass=1 to evaluate one "
            "point at a time"
        ) from err


def _recompute_bn_stacked(
    model: nn.Module,
    params: dict[str, Tensor],
    x: Tensor,
    *,
    batch_size: int,
    num_samples: int | None,
    exact: bool,
) -> dict[str, Tensor]:
    """BatchNorm running statistics of P points at once: name -> stacked (P, ...) buffers.

    The same pass as `recompute_bn`, for all points together. Each point gets its own
    running_mean / running_var (P, C) and num_batches_tracked (P,), handed to
    `functional_call` next to its parameters; the BatchNorm layers run in train mode with
    momentum 1, everything else in eval mode (dropout off). BatchNorm's in-place update of
    batched running buffers works under vmap (checked against the sequential engine in
    tests/test_batched.py): it writes each point's batch mean and unbiased variance into its
    row of our stacked tensors. A forward hook on each layer reads those rows right after the
    layer ran (so a layer called twice in one forward is merged twice, as in `recompute_bn`)
    and merges them into float64 moments with `merge_moments`; the hook sees the per-point
    input shape, so the count per channel is that of one point.
    """
    prefixes = _bn_prefixes(model)
    if not prefixes:
        return {}
    p = next(iter(params.values())).shape[0]
    buffers: dict[str, Tensor] = {}
    for m, prefix in prefixes.items():
        # Fresh statistics (mean 0, variance 1), never the layer's own: with momentum 1 the
        # update is 0 * old + batch, and 0 * NaN (left by a diverged point) would stay NaN.
        mean = torch.zeros_like(m.running_mean)
        buffers[prefix + "running_mean"] = mean.expand(p, -1).clone()
        buffers[prefix + "running_var"] = torch.ones_like(mean).expand(p, -1).clone()
        buffers[prefix + "num_batches_tracked"] = m.num_batches_tracked.new_zeros(p)
    stats = {m: (0, 0.0, 0.0) for m in prefixes}

    def accumulate(module: _BatchNorm, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        xb = inputs[0]  # the shape of one point's input: vmap hides the points dim
        n_b = xb.numel() // xb.shape[1]
        prefix = prefixes[module]
        stats[module] = merge_moments(
            *stats[module],
            n_b,
            buffers[prefix + "running_mean"],
            buffers[prefix + "running_var"],
            exact=exact,
        )

    data = x[:num_samples] if num_samples is not None else x
    with batchnorm_pass(model, prefixes, accumulate):
        for xb in torch.split(data, batch_size):
            _vmapped(model, {**params, **buffers}, xb)
    if len(data) == 0:
        raise ValueError("the BatchNorm recompute got no data: pass bn_samples >= 1")
    for m, prefix in prefixes.items():
        mean, var = finish_moments(*stats[m], exact=exact)
        buffers[prefix + "running_mean"].copy_(mean)
        buffers[prefix + "running_var"].copy_(var)
        buffers[prefix + "num_batches_tracked"].fill_(1)
    return buffers


def _predict_stacked(
    model: nn.Module, state: dict[str, Tensor], x: Tensor, batch_size: int, task: str
) -> Tensor:
    """Log-probabilities (P, N, K) of the P points in `state` on inputs x (N, ...), eval mode
    (the predictions themselves for a regression `task`)."""
    mode = model.training
    model.eval()
    try:
        outs = [_vmapped(model, state, xb).float() for xb in torch.split(x, batch_size)]
        if task == CLASSIFICATION:
            outs = [F.log_softmax(out, dim=-1) for out in outs]
    finally:
        model.train(mode)
    return torch.cat(outs, dim=1)


@torch.inference_mode()
def evaluate_points(
    model: nn.Module,
    weights_list: Sequence[Mapping[str, Tensor]],
    data,
    *,
    splits: tuple[str, ...] = ("train", "test"),
    bn_samples: int | None = None,
    batch_size: int | None = None,
    bn_batch_size: int = 128,
    bn_exact: bool = True,
    autocast: str | torch.dtype | None = None,
    eval_data=None,
    bn: str = "recompute",
) -> list[dict[str, Metrics | RegressionMetrics]]:
    """`evaluate_point` for P weight points at once: one forward pass serves all P.

    eval_data: a `Dataset` whose splits are evaluated instead of `data`'s (as in
    `evaluate_point`); the statistics still come from `data`.

    weights_list: P name -> tensor dicts of the model's parameters (like evaluate_point's
        `weights`), all with the same names and shapes.
    data: a `modeconn.data.catalogue.Dataset`; BatchNorm statistics are recomputed for every point
    on
        its un-augmented train data (the first `bn_samples` samples, None: all) in batches of
        `bn_batch_size`, exactly as the sequential engine does (`bn_exact` picks the
        estimator, see `recompute_bn`); then each split is evaluated in eval mode.
    batch_size: samples per forward pass in the evaluation passes. Each pass runs all P points
        on them, so its activations take P times the memory of a sequential pass of the same
        size; None: the sequential engine's batch size (`eval_plan`) divided by P
        (at least 1), which keeps the memory of a sequential pass. The BatchNorm pass runs
        bn_batch_size samples for all P points (its size fixes the result, so it is not
        scaled down).
    autocast: forward passes in lower precision ("bfloat16" or "float16"; see
        `modeconn.engine.execution.precision`), None: full precision.
    bn: "recompute" (the default, above) or "fixed": no statistics pass; every point is
        evaluated with the model's current running statistics, shared by all P points.

    Returns one {split: Metrics} dict per point, in order, equal to the sequential engine's up
    to float rounding. The model's own buffers and training flags are left as they were.
    Raises ValueError if vmap cannot run the model; evaluate it with points_per_pass=1.
    """
    if len(weights_list) == 0:
        return []
    params = _stack(weights_list)
    p = len(weights_list)
    if batch_size is None:
        batch_size = max(1, eval_plan(data.train_x).batch_size // p)
    if batch_size < 1 or bn_batch_size < 1:
        raise ValueError(
            f"batch_size and bn_batch_size must be >= 1, got {batch_size} and {bn_batch_size}"
        )
    buffers: dict[str, Tensor] = {}  # "fixed": functional_call takes the model's own
    if check_bn_policy(bn) == "recompute":
        with precision(data.train_x.device, autocast):
            buffers = _recompute_bn_stacked(
                model,
                params,
                data.train_x,
                batch_size=bn_batch_size,
                num_samples=bn_samples,
                exact=bn_exact,
            )
    state = {**params, **buffers}  # recomputed statistics replace any given in the weights
    out: list[dict[str, Metrics | RegressionMetrics]] = [{} for _ in range(p)]
    task = task_of(data)
    source = data if eval_data is None else eval_data
    for split in splits:
        x, y = getattr(source, f"{split}_x"), getattr(source, f"{split}_y")
        with precision(x.device, autocast):
            outs = _predict_stacked(model, state, x, batch_size, task)
        for k in range(p):
            out[k][split] = task_metrics(task, outs[k], y)
    return out


AUTO = "auto"
_CHOICES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


def check_points_per_pass(points_per_pass: int | str) -> int | str:
    """points_per_pass as an int >= 1 or "auto", or a ValueError that says what is allowed."""
    if points_per_pass == AUTO:
        return AUTO
    if (
        not isinstance(points_per_pass, (int, np.integer))
        or isinstance(points_per_pass, bool)
        or points_per_pass < 1
    ):
        raise ValueError(
            f"points_per_pass must be an int >= 1 (1: one point at a time) or 'auto' (the "
            f"default: chosen per device and network), got {points_per_pass!r}"
        )
    return int(points_per_pass)


def resolve_points_per_pass(
    points_per_pass: int | str,
    model: nn.Module,
    weights: Mapping[str, Tensor],
    data,
    *,
    bn_batch_size: int = 128,
    compile: bool = False,
    autocast: str | torch.dtype | None = None,
) -> int:
    """The number of points per pass to run: an int as given; "auto" is 1 on a CPU (batching
    never won there in benchmarks/bench_batched.py) and on other devices the fastest count
    timed by `choose_points_per_pass` for this network and data (cached). A compiled network
    (`compile=True`) runs one point per pass."""
    points_per_pass = check_points_per_pass(points_per_pass)
    if compile and points_per_pass not in (AUTO, 1):
        raise ValueError(
            f"compile=True evaluates one point per pass, got points_per_pass={points_per_pass}: "
            "use points_per_pass=1 (or auto), or compile=False to batch points with vmap"
        )
    if points_per_pass != AUTO:
        return points_per_pass
    if compile or data.train_x.device.type == "cpu":
        return 1
    return choose_points_per_pass(
        model, weights, data, bn_batch_size=bn_batch_size, autocast=autocast
    )


def _seconds_per_point(
    model: nn.Module,
    weights: Mapping[str, Tensor],
    data,
    plan: EvalPlan,
    points: int,
    bn_batch_size: int,
) -> float:
    """Estimated seconds per point of a whole evaluation (BatchNorm pass over the train set
    at bn_batch_size, evaluation passes over train and test at the plan's batch size / P)
    from one timed forward pass at each of the two batch sizes."""
    x = plan.layout(data.train_x)
    eval_batch = max(1, plan.batch_size // points)
    state = dict(weights) if points == 1 else _stack([weights] * points)

    def seconds(xb: Tensor) -> float:
        if points == 1:
            return best_seconds(lambda: forward_with(model, state, xb), xb.device)
        return best_seconds(lambda: _vmapped(model, state, xb), xb.device)

    bn = seconds(x[:bn_batch_size]) if batchnorm_layers(model) else 0.0
    ev = seconds(x[:eval_batch])
    n_bn = len(x) if bn else 0
    n_eval = len(data.train_x) + len(data.test_x)
    bn_passes = -(-n_bn // min(bn_batch_size, len(x)))
    eval_passes = -(-n_eval // min(eval_batch, len(x)))
    return (bn * bn_passes + ev * eval_passes) / points


@torch.inference_mode()
def choose_points_per_pass(
    model: nn.Module,
    weights: Mapping[str, Tensor],
    data,
    *,
    candidates: Sequence[int] = (1, 2, 4, 8, 16),
    bn_batch_size: int = 128,
    autocast: str | torch.dtype | None = None,
) -> int:
    """The number of points per vmap'd pass that evaluates this network fastest, timed once
    per model, input shape and device (like `eval_plan`): each candidate's forward passes are
    timed at the BatchNorm pass's batch size and at the evaluation batch size, and the time
    per point of a whole evaluation estimated from them. Larger counts are tried while they
    keep winning (by more than 3 %); a count that runs out of memory, and every count for a
    network vmap cannot run, lose to one point at a time.
    """
    device = data.train_x.device
    choices = _CHOICES.setdefault(model, {})  # per live model object, like eval_plan's plans
    key = (tuple(data.train_x.shape[1:]), device, autocast_dtype(autocast))
    if key in choices:
        return choices[key]
    weights = {name: w.detach() for name, w in weights.items()}
    plan = eval_plan(data.train_x)
    mode = model.training
    model.eval()
    best, best_time = 1, float("inf")
    try:
        with precision(device, autocast):
            for points in candidates:
                try:
                    seconds = _seconds_per_point(model, weights, data, plan, points, bn_batch_size)
                except (ValueError, torch.OutOfMemoryError):
                    break
                if seconds < best_time * 0.97:
                    best, best_time = points, seconds
                elif points > 1:
                    break
    finally:
        model.train(mode)
        if data.train_x.device.type == "cuda":
            torch.cuda.empty_cache()
    choices[key] = best
    return best
