"""Evaluate weights on data: BatchNorm statistics recomputed, then loss and error.

Everything that evaluates a point in weight space (a curve at t, a plane grid node, a random
direction) comes down to `evaluate_point(model, weights, data)`: weights are a name->tensor
dict run through `torch.func.functional_call`, so the same network object serves every point.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

Batches = Tensor | Iterable[Tensor] | Iterable[tuple[Tensor, Tensor]]


def _forward(model: nn.Module, weights: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
    return model(x) if weights is None else functional_call(model, dict(weights), (x,))


AUTOCAST = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def autocast_dtype(autocast: str | torch.dtype | None) -> torch.dtype | None:
    """The lower precision named by `autocast` ("bfloat16"/"bf16", "float16"/"fp16", a torch
    dtype of those, or None: full precision), or a ValueError listing the choices."""
    if autocast is None or autocast in (torch.bfloat16, torch.float16):
        return autocast
    if isinstance(autocast, str) and autocast.lower() in AUTOCAST:
        return AUTOCAST[autocast.lower()]
    raise ValueError(
        f"autocast must be one of {', '.join(AUTOCAST)} or None (full precision), got {autocast!r}"
    )


def autocast_name(autocast: str | torch.dtype | None) -> str | None:
    """The canonical name ("bfloat16", "float16") of an `autocast` choice, None for none."""
    dtype = autocast_dtype(autocast)
    return str(dtype).removeprefix("torch.") if dtype is not None else None


@contextlib.contextmanager
def precision(device: torch.device, autocast: str | torch.dtype | None) -> Iterator[None]:
    """Forward passes on `device` under `torch.autocast` in the given lower precision
    (convolutions and matrix products in bf16/fp16; BatchNorm statistics, their float64
    merge, log-softmax and the losses stay float32 or wider); None: full precision."""
    dtype = autocast_dtype(autocast)
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


_COMPILED: dict[int, tuple[weakref.ref, nn.Module | None]] = {}


def compiled(model: nn.Module) -> nn.Module | None:
    """`torch.compile(model)` with static shapes, made once per model object (None once it
    has failed). It shares the model's parameters, buffers and hooks, and weights passed by
    `functional_call` become graph inputs, so every weight point reuses one compiled graph per
    mode and batch shape."""
    key = id(model)
    entry = _COMPILED.get(key)
    if entry is None or entry[0]() is not model:
        entry = (weakref.ref(model), torch.compile(model, dynamic=False))
        _COMPILED[key] = entry
    return entry[1]


class _Runner:
    """Runs a pass of a model's forward calls over batches: through its compiled version
    (`compiled`) when `compile` is set, for batches of the size of the pass's first batch (the
    batch size, or all the data when there is less); a batch of another size (the last,
    shorter one) runs eagerly rather than compiling another graph. A compile failure warns
    once and falls back to eager execution for this model."""

    def __init__(self, model: nn.Module, compile: bool):
        self.model, self.size = model, None
        self.fast = compiled(model) if compile else None

    def __call__(self, weights: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
        self.size = len(x) if self.size is None else self.size
        if self.fast is None or len(x) != self.size:
            return _forward(self.model, weights, x)
        try:
            return _forward(self.fast, weights, x)
        except Exception as err:  # any compiler failure means: run eagerly
            if isinstance(err, torch.OutOfMemoryError):
                raise
            out = _forward(self.model, weights, x)  # the model's own error if it fails too
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"torch.compile failed on {type(self.model).__name__} ({reason}); evaluating "
                "it without compiling (compile=False)",
                RuntimeWarning,
                stacklevel=2,
            )
            _COMPILED[id(self.model)] = (weakref.ref(self.model), None)
            self.fast = None
            return out


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
    run = _Runner(model, compile)
    device = next(iter(weights.values())).device if weights else _device_of(model)
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


def _device_of(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@dataclass
class Metrics:
    """Mean negative log-likelihood, error in percent and accuracy-relevant counts."""

    nll: float
    error: float
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
) -> Tensor:
    """Log-probabilities (N, C) of the network on inputs x (N, ...), in eval mode
    (`compile=True`: full-size batches through `torch.compile`, see `compiled`; `autocast`:
    forward passes in lower precision, see `precision`), always float32."""
    mode = model.training
    model.eval()
    run = _Runner(model, compile)
    try:
        with precision(x.device, autocast):
            outs = [run(weights, xb) for xb in torch.split(x, batch_size)]
        outs = [F.log_softmax(out.float(), dim=1) for out in outs]
    finally:
        model.train(mode)
    return torch.cat(outs)


def metrics(log_probs: Tensor, y: Tensor) -> Metrics:
    """NLL and error (%) from log-probabilities (N, C) and labels (N,)."""
    nll = F.nll_loss(log_probs, y.to(log_probs.device)).item()
    wrong = (log_probs.argmax(1) != y.to(log_probs.device)).sum().item()
    return Metrics(nll=nll, error=100.0 * wrong / len(y), samples=len(y))


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weights: Mapping[str, Tensor] | None = None,
    *,
    batch_size: int = 1024,
    compile: bool = False,
    autocast: str | torch.dtype | None = None,
) -> Metrics:
    """NLL and error (%) of the network on inputs x (N, ...) and labels y (N,), in eval mode."""
    kw = dict(batch_size=batch_size, compile=compile, autocast=autocast)
    return metrics(predict(model, x, weights, **kw), y)


def channels_last(x: Tensor) -> Tensor:
    """x (N, C, H, W) in channels_last layout, converted once per tensor and cached.

    The copy is a normal tensor even when made under `inference_mode`, so the BatchNorm pass
    (no_grad) and the evaluation passes (inference_mode) hand a compiled model the same kind
    of input, and one graph per batch shape serves both modes' guards."""
    key = id(x)
    entry = _LAYOUTS.get(key)
    if entry is None or entry[0]() is not x:
        with torch.inference_mode(False):
            converted = x.contiguous(memory_format=torch.channels_last)
        entry = (weakref.ref(x, functools.partial(_forget_layout, key)), converted)
        _LAYOUTS[key] = entry
    return entry[1]


def _forget_layout(key: int, _ref: weakref.ref) -> None:
    if _LAYOUTS is not None:  # None at interpreter shutdown
        _LAYOUTS.pop(key, None)


_LAYOUTS: dict[int, tuple[weakref.ref, Tensor]] = {}
# Per live model object: an entry dies with its model, so a new model that reuses a freed
# model's id() never sees a stale one.
_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, EvalPlan]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class EvalPlan:
    """How the engine runs a model fastest: image layout and evaluation batch size."""

    channels_last: bool
    batch_size: int

    def layout(self, x: Tensor) -> Tensor:
        return channels_last(x) if self.channels_last and x.ndim == 4 else x


def best_seconds(run: Callable[[], object], device: torch.device) -> float:
    """Best of two timed calls of `run` after a warm-up call (one timing is too noisy on a
    busy host), waiting for the device's queued work before and after each."""
    run()
    best = float("inf")
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - began)
    return best


def eval_plan(
    model: nn.Module,
    x: Tensor,
    weights: Mapping[str, Tensor] | None,
    autocast: str | torch.dtype | None = None,
) -> EvalPlan:
    """The fastest layout and batch size for this model, input shape, device and precision
    (`autocast`), timed once.

    Evaluation results do not depend on either (BatchNorm is in eval mode), so the engine
    picks them by speed: batch sizes 32..2048 (..8192 on a GPU) in both memory layouts for
    images (channels_last is ~1.5x faster for ResNets on a CPU, slower for tiny 8x8 inputs),
    stopping once the time per sample stops improving.
    """
    plans = _PLANS.setdefault(model, {})
    key = (tuple(x.shape[1:]), x.device, autocast_dtype(autocast))
    if key in plans:
        return plans[key]
    layouts = [False, True] if x.ndim == 4 else [False]
    sizes = (32, 64, 128, 256, 512, 1024, 2048) + ((4096, 8192) if x.device.type == "cuda" else ())
    best, best_rate = EvalPlan(False, 32), float("inf")
    mode = model.training
    model.eval()
    try:
        with torch.inference_mode(), precision(x.device, autocast):
            for last in layouts:
                xs = channels_last(x) if last else x
                layout_best, layout_rate = 32, float("inf")
                for size in sizes:
                    chunk = xs[:size]
                    seconds = best_seconds(lambda c=chunk: _forward(model, weights, c), x.device)
                    rate = seconds / len(chunk)
                    if rate < layout_rate * 0.97:
                        layout_best, layout_rate = size, rate
                    if size > 2 * layout_best or len(chunk) < size:
                        break
                if layout_rate < best_rate:
                    best, best_rate = EvalPlan(last, layout_best), layout_rate
    finally:
        model.train(mode)
    plans[key] = best
    return best


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
) -> dict[str, Tensor] | None:
    """Make `model` ready to evaluate `weights`: BatchNorm statistics recomputed on the
    un-augmented train data of `data` (a `Dataset`). Returns the weights, detached.

    `bn_batch_size` is fixed (not tuned for speed) because the statistics of deeper layers
    depend on the batch statistics that normalise earlier ones in this pass.
    """
    if weights is not None:
        weights = {k: v.detach() for k, v in weights.items()}
    plan = eval_plan(model, data.train_x, weights, autocast)
    recompute_bn(
        model,
        plan.layout(data.train_x),
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
) -> dict[str, Metrics]:
    """Recompute BatchNorm statistics on un-augmented train data, then evaluate each split.

    `data` is a `modeconn.data.Dataset`; `weights` a name->tensor dict (None: the model's own).
    `batch_size` of the evaluation passes: None picks the fastest (`eval_plan`).
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
    )
    out = {}
    for split in splits:
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        plan = eval_plan(model, data.train_x, weights, autocast)
        out[split] = evaluate(
            model,
            plan.layout(x),
            y,
            weights,
            batch_size=batch_size or plan.batch_size,
            compile=compile,
            autocast=autocast,
        )
    return out
