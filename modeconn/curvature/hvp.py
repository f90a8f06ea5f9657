"""Hessian-vector products of the mean training loss at any weight point of any network.

The loss is the data set's task loss (`modeconn.data.tasks.task_loss`: cross-entropy or mse)
averaged over a data budget of N train samples,

    L(w) = (1/N) sum_i l_i(w)  (+ 0.5 * wd * ||w||^2 when wd > 0),

so that H v = sum_b (n_b / N) H_b v + wd * v, where H_b is the Hessian of the mean loss of
batch b (n_b samples). The weighting by n_b / N makes the scale independent of the batch
size and the number of batches (Li et al.'s hess_vec_prod.py sums per-batch products
without dividing; PyHessian's `dataloader_hv_product` weights by batch size as here).

Each product runs forward-over-reverse, `torch.func.jvp` of `torch.func.grad` (Pearlmutter's
R-operator: one forward pass with dual numbers through the backward graph), or by double
backward (`torch.autograd.grad(..., create_graph=True)`); `method="auto"` (default) is double
backward, by rule: it runs on every network (forward-mode AD does not cover every layer), it
was ~25 % faster on a 2-core CPU for PreResNet-20 (benchmarks/bench_hessian.py), and a choice
made by timing would change the last bits of every product on a busy machine. Products are
computed in the weights' dtype (float32) and accumulated over batches in float64.

BatchNorm (`bn`):
- "recompute" (default): statistics recomputed at the point (exact, from the train split, or
  its first `bn_samples` samples), then the Hessian of the eval-mode network: the function
  that is evaluated and deployed at that point. Dropout is off.
- "batch": each batch normalised by its own statistics (BatchNorm layers in train mode,
  buffers untouched): the Hessian of the training objective as SGD sees it; it depends on the
  batch size.
- "fixed": the statistics the model holds now, in eval mode (PyHessian's `model.eval()`).

The parameter set is explicit (`params`): "all" (default), "ndim>1" (Li et al.: weights of
convolutions and linear layers, no biases or BatchNorm affine parameters), or a list of names.
Parameters left out stay fixed at the point.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modeconn.curves.weights import WeightSpace
from modeconn.data.tasks import task_loss, task_of
from modeconn.engine.point import batchnorm_layers, recompute_bn
from modeconn.engine.subset import stratified_indices

log = logging.getLogger("modeconn")

HESSIAN_BN = ("recompute", "batch", "fixed")
METHODS = ("auto", "jvp", "double")
PARAM_SETS = ("all", "ndim>1")

WeightsLike = Tensor | Mapping[str, Tensor] | None


def select_params(model: nn.Module, params: str | Sequence[str]) -> tuple[str, ...]:
    """The names of the parameters the Hessian is taken over, in the module's order."""
    names = [n for n, _ in model.named_parameters()]
    if isinstance(params, str):
        if params == "all":
            return tuple(names)
        if params == "ndim>1":
            return tuple(n for n, p in model.named_parameters() if p.ndim > 1)
        raise ValueError(
            f"params must be one of {', '.join(map(repr, PARAM_SETS))} or a list of parameter "
            f"names, got {params!r}"
        )
    chosen = set(params)
    unknown = sorted(chosen - set(names))
    if unknown or not chosen:
        raise ValueError(
            f"unknown parameter names {unknown[:3]} (or none given); the network has "
            f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
        )
    return tuple(n for n in names if n in chosen)


def full_weights(model: nn.Module, weights: WeightsLike) -> dict[str, Tensor]:
    """Every parameter of `model` at the point, detached: from a name->tensor dict, a flat
    (D,) vector in `WeightSpace.from_module(model)` order, or (None) the model's own."""
    space = WeightSpace.from_module(model)
    if weights is None:
        return {n: p.detach() for n, p in model.named_parameters()}
    if isinstance(weights, Tensor):
        return {k: v.detach() for k, v in space.unflatten(weights.detach()).items()}
    return {k: v.detach() for k, v in space.check(weights, "weights").items()}


def _train_batches(data: Any, samples: int | None, seed: int) -> tuple[Tensor, Tensor, str]:
    """The budget's inputs and targets: `data` a `Dataset` (its train split) or a pair (x, y);
    `samples` of them (class-stratified, seeded) or all."""
    if isinstance(data, (tuple, list)):
        x, y = data
        task = "classification" if not y.is_floating_point() else "regression"
    else:
        x, y, task = data.train_x, data.train_y, task_of(data)
    if samples is not None:
        if isinstance(samples, bool) or int(samples) < 1:
            raise ValueError(f"samples must be an int >= 1 or None (all), got {samples!r}")
        keep = stratified_indices(y, int(samples), seed).to(y.device)
        x, y = x[keep], y[keep]
    if len(x) == 0:
        raise ValueError("the Hessian needs at least one training sample")
    return x, y, task


@contextlib.contextmanager
def _modes(model: nn.Module, bn: str) -> Iterator[None]:
    """Eval mode everywhere; with bn="batch" the BatchNorm layers normalise by the batch's
    own statistics without writing their buffers (track_running_stats off meanwhile)."""
    modes = {m: m.training for m in model.modules()}
    layers = batchnorm_layers(model) if bn == "batch" else []
    try:
        model.eval()
        for m in layers:
            m.train()
            m.track_running_stats = False
        yield
    finally:
        for m in layers:
            m.track_running_stats = True
        for m, mode in modes.items():
            m.train(mode)


@dataclass
class HessianOperator:
    """H v of the mean training loss at one point, over the selected parameters.

    `matvec(v)` takes a (P,) vector (P = `size`, the selected parameters in module order) and
    returns H v (P,) in float64; `hvps` counts the products and `seconds` their time. Build it
    with `hessian_operator`; it holds its own copy of the point's BatchNorm statistics, so the
    model's buffers may change afterwards.
    """

    model: nn.Module
    names: tuple[str, ...]
    point: dict[str, Tensor]
    buffers: dict[str, Tensor]
    x: Tensor
    y: Tensor
    task: str
    wd: float = 0.0
    bn: str = "recompute"
    method: str = "auto"
    batch_size: int = 128
    hvps: int = 0
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    on_product: Callable[[], None] | None = None  # called after each product (progress bars)

    @property
    def size(self) -> int:
        return sum(self.point[n].numel() for n in self.names)

    @property
    def samples(self) -> int:
        return len(self.x)

    @property
    def vector(self) -> Tensor:
        """The selected parameters at the point, flat (P,)."""
        return torch.cat([self.point[n].reshape(-1) for n in self.names])

    def _split(self, flat: Tensor) -> dict[str, Tensor]:
        parts = torch.split(flat, [self.point[n].numel() for n in self.names])
        return {n: p.view(self.point[n].shape) for n, p in zip(self.names, parts, strict=True)}

    def _loss(self, flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        weights = {**self.point, **self._split(flat)}
        out = functional_call(self.model, (weights, self.buffers), (x,))
        return task_loss(self.task, out, y)

    def _batch_hvp(self, w: Tensor, v: Tensor, x: Tensor, y: Tensor) -> Tensor:
        if self.method == "jvp":  # forward-over-reverse: jvp of grad (Pearlmutter's R-op)
            grad = torch.func.grad(lambda p: self._loss(p, x, y))
            return torch.func.jvp(grad, (w,), (v,))[1]
        with torch.enable_grad():  # double backward: d/dw (grad(w) . v)
            p = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self._loss(p, x, y), p, create_graph=True)
            (hv,) = torch.autograd.grad(g, p, grad_outputs=v)
        return hv

    def matvec(self, v: Tensor) -> Tensor:
        """H v (float64, (P,)) for a (P,) vector v of any dtype."""
        began = time.perf_counter()
        w = self.vector
        v_c = v.detach().to(w.device, w.dtype)
        out = torch.zeros(self.size, dtype=torch.float64, device=w.device)
        n = len(self.x)
        with _modes(self.model, self.bn):
            for xb, yb in zip(
                torch.split(self.x, self.batch_size),
                torch.split(self.y, self.batch_size),
                strict=True,
            ):
                out += self._batch_hvp(w, v_c, xb, yb).double() * (len(xb) / n)
        if self.wd:
            out += self.wd * v.detach().to(out.device, torch.float64)
        self.hvps += 1
        self.seconds += time.perf_counter() - began
        if self.on_product is not None:
            self.on_product()
        return out

    def gradient(self) -> Tensor:
        """The gradient (P,) of the same mean loss (float64): for timing a HVP against it."""
        w = self.vector
        out = torch.zeros(self.size, dtype=torch.float64, device=w.device)
        with _modes(self.model, self.bn), torch.enable_grad():
            for xb, yb in zip(
                torch.split(self.x, self.batch_size),
                torch.split(self.y, self.batch_size),
                strict=True,
            ):
                p = w.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self._loss(p, xb, yb), p)
                out += g.double() * (len(xb) / len(self.x))
        return out + self.wd * w.double() if self.wd else out

    def dense(self) -> Tensor:
        """The whole (P, P) Hessian by P products with unit vectors (small networks only)."""
        eye = torch.eye(self.size, dtype=torch.float64, device=self.vector.device)
        columns = [self.matvec(e) for e in eye]
        h = torch.stack(columns, dim=1)
        return 0.5 * (h + h.T)


def hessian_operator(
    model: nn.Module,
    weights: WeightsLike,
    data: Any,
    *,
    samples: int | None = None,
    batch_size: int = 128,
    wd: float = 0.0,
    bn: str = "recompute",
    bn_samples: int | None = None,
    params: str | Sequence[str] = "all",
    method: str = "auto",
    seed: int = 0,
    buffers: Mapping[str, Tensor] | None = None,
) -> HessianOperator:
    """The Hessian-vector product of the mean training loss of `model` at `weights`.

    weights: a name->tensor dict or a flat (D,) vector in `WeightSpace.from_module(model)`
        order (None: the model's own parameters).
    data: a `Dataset` (its train split and task) or a pair (x (N, ...), y (N,)).
    samples: the data budget, a seeded class-stratified subset of that many train samples
        (None: all); batch_size only splits the work, it does not change H (except bn="batch").
    wd: adds the Hessian of 0.5 * wd * ||w||^2 (wd * I); 0 (default): the data term only.
    bn: "recompute" | "batch" | "fixed" (see the module); bn_samples: the recompute's budget.
    params: "all", "ndim>1" (Li et al.) or a list of parameter names.
    method: "jvp" (forward-over-reverse), "double" (double backward), or "auto": double
        backward (a rule, not a timing: see the module).
    buffers: for bn="fixed", the running statistics to use (default: the model's now).
    """
    if bn not in HESSIAN_BN:
        raise ValueError(f"bn must be one of {', '.join(map(repr, HESSIAN_BN))}, got {bn!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    point = full_weights(model, weights)
    names = select_params(model, params)
    x, y, task = _train_batches(data, samples, seed)
    own = {n: b.detach().clone() for n, b in model.named_buffers()}
    if bn == "recompute" and batchnorm_layers(model):
        bn_x = data[0] if isinstance(data, (tuple, list)) else data.train_x
        recompute_bn(model, bn_x, point, batch_size=128, num_samples=bn_samples)
    if bn == "fixed" and buffers is not None:
        state = {n: b.detach().clone() for n, b in buffers.items() if n in own}
    else:
        state = {n: b.detach().clone() for n, b in model.named_buffers()}
    with torch.no_grad():  # the model's own buffers as they were
        for n, b in model.named_buffers():
            b.copy_(own[n])
    info = {
        "dataset": getattr(data, "name", None),
        "samples": len(x),
        "params": list(names) if not isinstance(params, str) else params,
    }
    return HessianOperator(
        model,
        names,
        point,
        state,
        x,
        y,
        task,
        float(wd),
        bn,
        "double" if method == "auto" else method,
        int(batch_size),
        info=info,
    )


@contextlib.contextmanager
def products_shown(op: HessianOperator, desc: str, total: int, show: bool = True) -> Iterator[None]:
    """A progress bar of `op`'s Hessian-vector products while the block runs (`total`: the
    most it may take; estimators that converge stop short of it). `show=False`: none."""
    if not show:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="HVP", leave=False)
    before, op.on_product = op.on_product, lambda: bar.update(1)
    try:
        yield
    finally:
        op.on_product = before
        bar.close()
