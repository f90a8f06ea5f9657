"""The point a surface is drawn around, resolved: its network, weights and BatchNorm statistics.

An origin is flat weights, a state dict, a module, or phi(t) of a trained curve given as the
pair (curve, t). `resolve_origin` turns any of them into a `Centre`; with the BatchNorm policy
"origin" (Li et al.: every node evaluated with the centre's running statistics),
`load_centre_statistics` puts those statistics into the network: a module's or state dict's
own buffers, the model's for flat weights, and for (curve, t) statistics recomputed once at
phi(t). `buffers_restored` gives the model its buffers back when a job ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from modeconn.curves.family import Curve, curve_args
from modeconn.curves.weights import WeightSpace, fingerprint
from modeconn.engine import EvalSettings
from modeconn.engine.point import batchnorm_layers, prepare_point

log = logging.getLogger("modeconn")

OriginLike = Tensor | Mapping[str, Tensor] | nn.Module | tuple[Curve, float]


@dataclass
class Centre:
    """The origin resolved: the network to run, its weight space, the flat origin (D,),
    what it was given as, and where BatchNorm buffers for bn="origin" come from."""

    model: nn.Module
    space: WeightSpace
    vector: Tensor
    kind: str
    buffers: Mapping[str, Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def resolve_origin(model: nn.Module | None, origin: OriginLike) -> Centre:
    if isinstance(origin, (tuple, list)) and len(origin) == 2 and isinstance(origin[0], Curve):
        curve, t = origin
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"the origin (curve, t) needs t in [0, 1], got t={t}")
        model = curve.model if model is None else model
        space = WeightSpace.from_module(model)
        if space != curve.space:
            raise ValueError(
                "the model's parameters are not the curve's network's: pass model=None (the "
                "curve's network) or a network of the same architecture"
            )
        with torch.no_grad():
            vector = curve.point(t).detach().clone()
        info = {"curve": {"type": curve.kind, **curve_args(curve)}, "t": t}
        return Centre(model, space, vector, "curve", info=info)
    if isinstance(origin, nn.Module):
        model = origin if model is None else model
        space = WeightSpace.from_module(model)
        buffers = dict(origin.named_buffers())
        return Centre(model, space, space.flatten(origin, "origin"), "module", buffers)
    if model is None:
        raise ValueError(
            "pass the network as model: the origin is plain weights (model may be left None only "
            "for a module origin or a (curve, t) origin)"
        )
    space = WeightSpace.from_module(model)
    if isinstance(origin, Mapping):
        return Centre(model, space, space.flatten(origin, "origin"), "state_dict", origin)
    if not isinstance(origin, Tensor) or origin.shape != (space.size,):
        got = tuple(origin.shape) if isinstance(origin, Tensor) else type(origin).__name__
        raise ValueError(
            f"origin must be a flat (D,) tensor with D = {space.size}, a state dict, a module "
            f"or a pair (curve, t), got {got}"
        )
    return Centre(model, space, origin.detach(), "vector")


def bn_buffer_names(model: nn.Module) -> list[str]:
    layers = set(batchnorm_layers(model))
    return [
        f"{name}.{buf}" if name else buf
        for name, m in model.named_modules()
        if m in layers
        for buf in ("running_mean", "running_var", "num_batches_tracked")
    ]


@contextlib.contextmanager
def buffers_restored(model: nn.Module) -> Iterator[None]:
    """The model's buffers (BatchNorm statistics) as they were, whatever happens inside."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


def load_centre_statistics(centre: Centre, data, settings: EvalSettings) -> str:
    """Put the centre's BatchNorm running statistics into the model's buffers (bn="origin");
    returns a word for where they came from."""
    net = centre.model
    names = bn_buffer_names(net)
    if not names:
        return "none (no BatchNorm)"
    if centre.kind == "curve":  # once, at phi(t), exactly as the engine would at that point
        prepare_point(
            net,
            centre.space.unflatten(centre.vector),
            data,
            bn_samples=settings.bn_samples,
            bn_exact=settings.bn_exact,
            autocast=settings.autocast,
        )
        return "recomputed once at phi(t)"
    given = {k: v for k, v in (centre.buffers or {}).items() if k in names}
    if given and len(given) < len(names):
        missing = sorted(set(names) - set(given))
        raise ValueError(
            f"the origin holds some BatchNorm buffers but not {', '.join(missing[:3])}: pass "
            f"a complete state dict (model.state_dict()) or bn='recompute'"
        )
    own = dict(net.named_buffers())
    with torch.no_grad():
        for name, value in given.items():
            if own[name] is not value:
                own[name].copy_(value)
    if all(own[n].item() == 0 for n in names if n.endswith("num_batches_tracked")):
        log.warning(
            "bn='origin': the BatchNorm statistics in use were never estimated "
            "(num_batches_tracked is 0); pass the trained module or its state dict as origin"
        )
    return "origin buffers" if given else "model buffers"


def statistics_fingerprint(net: nn.Module) -> str:
    own = dict(net.named_buffers())
    names = [n for n in bn_buffer_names(net) if not n.endswith("num_batches_tracked")]
    return fingerprint(*(own[n] for n in names)) if names else "none"
