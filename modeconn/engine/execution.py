"""How the engine runs a network's forward passes: precision, compilation, layout, batch size.

These choices never change what is computed beyond float rounding (autocast aside, which is
opt-in and recorded): `precision` wraps passes in `torch.autocast`, `compiled` / `Runner`
send them through `torch.compile`, and `eval_plan` gives the memory layout and evaluation
batch size by rule (never by timing, so that a busy machine cannot change a number);
`fixed_threads` runs a job on a given intra-op thread count. `modeconn.engine.point` builds
the engine on them.
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
from typing import Any

import torch
from torch import Tensor, nn

from modeconn.models.batchnorm import forward_with

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

LAYOUTS = ("auto", "contiguous", "channels_last")


def check_layout(layout: str) -> str:
    """`layout` if it is one of LAYOUTS, else a ValueError listing them."""
    if layout not in LAYOUTS:
        raise ValueError(
            f"layout must be one of {', '.join(map(repr, LAYOUTS))} ('auto': channels_last for "
            f"images of 16x16 pixels or more, contiguous otherwise), got {layout!r}"
        )
    return layout


@dataclass(frozen=True)
class EvalPlan:
    """How the engine runs a model's evaluation passes: image layout and batch size."""

    channels_last: bool
    batch_size: int

    def layout(self, x: Tensor) -> Tensor:
        return channels_last(x) if self.channels_last and x.ndim == 4 else x

    def meta(self) -> dict[str, Any]:
        """The plan as a result's metadata records it."""
        return {
            "layout": "channels_last" if self.channels_last else "contiguous",
            "batch_size": self.batch_size,
        }


def eval_plan(x: Tensor, *, batch_size: int | None = None, layout: str = "auto") -> EvalPlan:
    """The layout and evaluation batch size for inputs like x (N, ...), by rule, never by
    timing: a timed choice flips on a busy machine, and the layout changes the last bits of
    convolutions (and so, through BatchNorm statistics and argmax ties, the numbers).

    layout "auto": channels_last for images (N, C, H, W) of at least 16x16 pixels, where it
    ran 1.3-2x faster (PreResNet-20, VGG16 on 32x32, 2-core CPU), contiguous for smaller
    ones (digits' 8x8: no gain) and every other input. batch_size None: 128 for images on a
    CPU (ResNets on 32x32 ran 2x faster at 64-128 than at 1024: the activations stay in
    cache), 1024 for other inputs and on accelerators. The batch size never changes a number
    in eager evaluation (each sample's output is computed alone; tests/test_reproducible.py
    forces each size and compares bitwise); with compile=True each size is its own graph.
    """
    check_layout(layout)
    image = x.ndim == 4
    if layout == "auto":
        last = image and x.shape[-1] * x.shape[-2] >= 256
    else:
        last = layout == "channels_last" and image
    if batch_size is None:
        batch_size = 128 if image and x.device.type == "cpu" else 1024
    return EvalPlan(last, int(batch_size))


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


# The intra-op thread count this process started with (OMP_NUM_THREADS, else torch's default
# for this machine), read when modeconn is imported.
STARTUP_THREADS = torch.get_num_threads()


@contextlib.contextmanager
def fixed_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block on `threads` intra-op threads (None: `STARTUP_THREADS`, the count a fresh
    process gets), restoring the process's count afterwards.

    CPU kernels split some reductions by thread (oneDNN's convolution weight gradient, MKL's
    small matrix products), so a network trained on 1 thread differs in the last bits from
    one trained on 2, and training grows the difference into another network. The apps run
    inside this, so that what ran before in the process (a notebook cell, a test that set
    the count) cannot change their numbers; results and checkpoints record the count
    (`modeconn.io.store.environment`)."""
    threads = STARTUP_THREADS if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads}")
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
