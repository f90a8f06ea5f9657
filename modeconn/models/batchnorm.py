"""BatchNorm statistics of any network, recomputed: the layers that keep running statistics,
the exact (float64, Chan et al.) merge of per-batch moments, and one statistics pass.

Below the curves and the engine: a curve's `network_at(t, data)` and the engine's
`recompute_bn` (which adds compile and autocast) both run `statistics_pass`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

Batches = Tensor | Iterable[Tensor] | Iterable[tuple[Tensor, Tensor]]


def forward_with(model: nn.Module, weights: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
    """`model(x)`, or with `weights` (a name->tensor dict) the model run on those weights."""
    return model(x) if weights is None else functional_call(model, dict(weights), (x,))


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


def input_batches(data: Batches, batch_size: int, num_samples: int | None) -> Iterable[Tensor]:
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
def statistics_pass(
    model: nn.Module,
    data: Batches,
    weights: Mapping[str, Tensor] | None = None,
    *,
    batch_size: int = 1024,
    num_samples: int | None = None,
    exact: bool = True,
    forward: Callable[[Mapping[str, Tensor] | None, Tensor], Tensor] | None = None,
) -> int:
    """Reset and re-estimate every BatchNorm layer's running mean and variance in one pass
    over `data` (see `modeconn.engine.point.recompute_bn` for the estimator); `forward(weights,
    x)` runs one batch (default: eager, `forward_with`). Returns the number of samples used."""
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
    run = forward or (lambda w, x: forward_with(model, w, x))
    with batchnorm_pass(model, layers, collect):
        for x in input_batches(data, batch_size, num_samples):
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
