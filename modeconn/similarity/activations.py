"""Activations of any network at any weight point, layer by layer, as (n, features) matrices.

Forward hooks on modules chosen by name (`"fc_part.1"`), by type (`"ReLU"`, `nn.Conv2d`) or
`"blocks"` (see `select_layers`), plus `"output"`, the network's own output. The data are
streamed in batches (`stream_activations` yields one batch's features per layer, to feed
`Moments` or `MinibatchCKA` without ever holding a layer whole); `collect_activations`
concatenates them when the matrices are wanted. The network runs in eval mode under
`torch.inference_mode`.

A weight point other than the module's own (a state dict, a flat vector in the network's
`WeightSpace`, or phi(t) via `Curve.network_at`) is loaded into a copy of the network
(`network_at`), whose BatchNorm statistics are recomputed on un-augmented training inputs:
never the statistics of another point.

A conv layer's output (B, C, H, W) becomes a matrix by an explicit policy, recorded with the
result, because the four give four different numbers:
- "flatten": (B, C*H*W), every (channel, position) a neuron (Raghu et al. 2017's default);
- "positions": (B*H*W, C), every position of every image a sample (the channels are the
  neurons; both layers compared must have the same H*W);
- "avgpool": (B, C), the spatial mean of each channel;
- "dft": (B, 2*C*H'*W'), the real and imaginary parts of each channel's orthonormal 2-D DFT,
  keeping the frequencies with |f| <= `dft_frequencies` cycles per image on both axes (all:
  None). With all frequencies the map is an isometry of "flatten" (every CKA and CCA here
  equals flatten's); fewer frequencies is the low-pass Raghu et al. use to make large conv
  layers affordable. (Their per-frequency CCA, exact for translation-invariant data, is not
  implemented.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from modeconn.curves.weights import WeightSpace

POLICIES = ("flatten", "positions", "avgpool", "dft")
OUTPUT = "output"  # the network's own output, as a layer
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus)
LayerSpec = str | type | Sequence[str | type]


def _is_block(module: nn.Module) -> bool:
    name = type(module).__name__
    return name.endswith("Block") or name.endswith("Bottleneck")


def select_layers(model: nn.Module, layers: LayerSpec = "blocks") -> list[str]:
    """Module names to hook, in the network's order.

    layers: "blocks" (every residual block, i.e. a module whose class name ends in Block or
    Bottleneck, and every activation module outside one; if there are none, every leaf
    module with parameters), a module name, a type or its class name (every module of it),
    or a sequence of these; "output" is the network's output. "blocks" ends with "output".
    """
    modules = dict(model.named_modules())
    if isinstance(layers, (str, type)):
        layers = [layers]
    names: list[str] = []
    for spec in layers:
        if spec == "blocks":
            names += _blocks(model) + [OUTPUT]
        elif spec == OUTPUT or (isinstance(spec, str) and spec in modules and spec):
            names.append(spec)
        else:
            match = [
                n
                for n, m in model.named_modules()
                if n and (type(m) is spec or type(m).__name__ == spec)
            ]
            if not match:
                some = ", ".join(n for n in list(modules)[1:9])
                raise ValueError(
                    f"no module of {type(model).__name__} is named or typed {spec!r}; pass a "
                    f"module name (e.g. {some}), a type name (ReLU, Conv2d), 'blocks' or 'output'"
                )
            names += match
    return list(dict.fromkeys(names))


def _blocks(model: nn.Module) -> list[str]:
    chosen: list[str] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if not name or any(name.startswith(b + ".") for b in inside):
            continue
        if _is_block(m):
            chosen.append(name)
            inside.append(name)
        elif isinstance(m, ACTIVATIONS):
            chosen.append(name)
    if not chosen:
        chosen = [
            n
            for n, m in model.named_modules()
            if n and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
        ]
    return chosen


def features(out: Tensor, policy: str = "flatten", dft_frequencies: int | None = None) -> Tensor:
    """One batch of a layer's output (B, C, *spatial) as a matrix under `policy` (see the
    module); outputs with no spatial axes are (B, features) under every policy."""
    if policy not in POLICIES:
        raise ValueError(f"unknown conv policy '{policy}'; valid: {', '.join(POLICIES)}")
    if out.ndim <= 2:
        return out.reshape(len(out), -1)
    if policy == "flatten":
        return out.flatten(1)
    if policy == "avgpool":
        return out.flatten(2).mean(2)
    if policy == "positions":
        return out.movedim(1, -1).reshape(-1, out.shape[1])
    spatial = tuple(range(2, out.ndim))
    f = torch.fft.fftn(out.float(), dim=spatial, norm="ortho")  # unitary: ||f|| = ||out||
    if dft_frequencies is not None:
        for axis in spatial:
            freq = torch.fft.fftfreq(out.shape[axis], d=1.0 / out.shape[axis], device=out.device)
            keep = (freq.abs() <= dft_frequencies).nonzero().flatten()
            f = f.index_select(axis, keep)
    return torch.cat([f.real.flatten(1), f.imag.flatten(1)], dim=1)


def network_at(
    model: nn.Module, weights: Tensor | dict[str, Tensor] | None = None, data: Any = None
) -> nn.Module:
    """A copy of `model` at `weights` (a flat (D,) vector in `WeightSpace.from_module(model)`
    order, or a state dict; None: its own), BatchNorm statistics recomputed on `data` (a
    Dataset's train inputs, or inputs (N, ...)) when it has BatchNorm layers, in eval mode."""
    from modeconn.engine.point import batchnorm_layers, recompute_bn

    net = copy.deepcopy(model)
    if weights is not None:
        space = WeightSpace.from_module(net)
        named = space.unflatten(weights) if isinstance(weights, Tensor) else space.check(weights)
        with torch.no_grad():
            for name, value in named.items():
                net.get_parameter(name).copy_(value)
    if batchnorm_layers(net) and weights is not None:
        if data is None:
            raise ValueError(
                "the network has BatchNorm layers: pass data (a Dataset or train inputs) to "
                "recompute their statistics at these weights"
            )
        recompute_bn(net, getattr(data, "train_x", data))
    return net.eval()


def _first_tensor(out: Any) -> Tensor:
    while isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"a hooked module returned {type(out).__name__}, not a tensor")
    return out


def stream_activations(
    model: nn.Module,
    inputs: Tensor,
    layers: LayerSpec = "blocks",
    *,
    policy: str = "flatten",
    batch_size: int = 512,
    dft_frequencies: int | None = None,
) -> Iterator[dict[str, Tensor]]:
    """One dict per batch of `inputs` (N, ...): layer name -> (b, features) float32 matrix
    ((b*H*W, C) under "positions"), in the order of `select_layers`."""
    names = select_layers(model, layers)
    modules = dict(model.named_modules())
    seen: dict[str, Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, args: Any, out: Any) -> None:
            if name in seen:
                raise ValueError(
                    f"module '{name}' runs more than once per forward pass (a reused module), so "
                    "its output is not one representation; choose another layer"
                )
            seen[name] = features(_first_tensor(out).float(), policy, dft_frequencies)

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names if n != OUTPUT]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inputs), batch_size):
            seen.clear()
            # inference mode around the pass only: a generator suspended inside the context
            # would leave it on for its caller (and two interleaved ones would restore it
            # in the wrong order, leaving gradients off for good)
            with torch.inference_mode():
                out = model(inputs[start : start + batch_size])
                if OUTPUT in names:
                    seen[OUTPUT] = features(_first_tensor(out).float(), policy, dft_frequencies)
            yield {n: seen[n] for n in names}
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@dataclass
class Activations:
    """Every chosen layer's representation of the same n inputs: layers[name] is (n, f)
    (n*H*W rows under "positions"); `policy` and `dft_frequencies` say how a conv layer
    became a matrix."""

    layers: dict[str, Tensor]
    policy: str = "flatten"
    dft_frequencies: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.layers)


def collect_activations(
    model: nn.Module,
    inputs: Tensor,
    layers: LayerSpec = "blocks",
    *,
    weights: Tensor | dict[str, Tensor] | None = None,
    bn_data: Any = None,
    policy: str = "flatten",
    batch_size: int = 512,
    dft_frequencies: int | None = None,
) -> Activations:
    """The chosen layers' outputs on `inputs` (N, ...) as whole matrices (see
    `stream_activations`); at `weights` (flat or a state dict) with BatchNorm statistics
    recomputed on `bn_data`, else at the module's own weights and statistics."""
    net = network_at(model, weights, bn_data) if weights is not None else model
    parts: dict[str, list[Tensor]] = {}
    for batch in stream_activations(
        net, inputs, layers, policy=policy, batch_size=batch_size, dft_frequencies=dft_frequencies
    ):
        for name, value in batch.items():
            parts.setdefault(name, []).append(value)
    return Activations(
        {n: torch.cat(v) for n, v in parts.items()},
        policy,
        dft_frequencies,
        {"samples": len(inputs)},
    )
