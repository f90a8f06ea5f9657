"""How the engine runs a network's forward passes: precision, compilation, layout, batch size.

These choices never change what is computed beyond float rounding (autocast aside, which is
opt-in and recorded): `precision` wraps passes in `torch.autocast`, `compiled` / `Runner`
send them through `torch.compile`, and `eval_plan` times once per model which memory layout
and evaluation batch size run fastest. `modeconn.evaluation` builds the engine on them.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call


def forward_with(model: nn.Module, weights: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
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


_COMPILED: dict[type, Callable] = {}  # network class -> compiled copy of `forward_with`
_FAILED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models the compiler failed on


def compiled(model: nn.Module) -> Callable | None:
    """`forward_with` through `torch.compile` (static shapes) for networks of this model's
    class, or None once compiling has failed for this model.

    The network is an argument of the compiled function, not part of it: the compiled code
    keeps no model alive (compiling `torch.compile(model)` would, for the process's lifetime),
    and weights passed by `functional_call` are graph inputs, so every weight point and every
    instance of the class reuse one graph per mode, precision and batch shape. Each class gets
    its own copy of the function (a code object of its own), so that dynamo's limit on graphs
    per code object counts per network class, not across every network of the process.
    """
    if model in _FAILED:
        return None
    cls = type(model)
    if cls not in _COMPILED:
        code = forward_with.__code__.replace(co_name=f"forward_with_{cls.__name__}")
        fn = types.FunctionType(code, forward_with.__globals__, code.co_name)
        _COMPILED[cls] = torch.compile(fn, dynamic=False)
    return _COMPILED[cls]


class Runner:
    """Runs a pass of a model's forward calls over batches: through `compiled` when
    `compile` is set, for batches of the size of the pass's first batch (the batch size, or
    all the data when there is less); a batch of another size (the last, shorter one) runs
    eagerly rather than compiling another graph. A compile failure warns once and falls back
    to eager execution for this model."""

    def __init__(self, model: nn.Module, compile: bool):
        self.model, self.size = model, None
        self.fast = compiled(model) if compile else None

    def __call__(self, weights: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
        self.size = len(x) if self.size is None else self.size
        if self.fast is None or len(x) != self.size:
            return forward_with(self.model, weights, x)
        try:
            return self.fast(self.model, weights, x)
        except Exception as err:  # any compiler failure means: run eagerly
            if isinstance(err, torch.OutOfMemoryError):
                raise
            out = forward_with(self.model, weights, x)  # the model's own error if it fails too
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"torch.compile failed on {type(self.model).__name__} ({reason}); evaluating "
                "it without compiling (compile=False)",
                RuntimeWarning,
                stacklevel=2,
            )
            _FAILED.add(self.model)
            self.fast = None
            return out


def device_of(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


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
                    run = functools.partial(forward_with, model, weights, chunk)
                    seconds = best_seconds(run, x.device)
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
