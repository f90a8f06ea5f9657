"""Checkpoints written by the 2018 reference code (timgaripov/dnn-mode-connectivity).

Its train.py saves `torch.save({'epoch': e, 'model_state': net.state_dict(), 'optimizer_state':
...})` for base networks and for curve networks alike. A base network's state has one tensor
per weight and BatchNorm buffer, named after its own modules (`layer_blocks.0.0.weight` for
the reference's VGG, where ours says `features.0.weight`). A curve network (its curves.py,
`CurveNet`) holds `coeff_layer.*` buffers (`binom`, `range`, `rev_range` for `Bezier`, `range`
for `PolyChain`) and `net.*`, the architecture rebuilt from curve layers: each layer stores
`weight_0 .. weight_{K-1}` then `bias_0 .. bias_{K-1}`, one per control point (0 = start,
K-1 = end), and each BatchNorm one set of running statistics. Its `Bezier` of K points is our
Bezier of degree K - 1; its `PolyChain` of K points is our polychain with K - 2 bends (knots
at j / (K - 1) in both).

Names are mapped by structure: the reference's tensors, in their order, must pair one to one
with `model.state_dict()`, with the same leaf name (`weight`, `bias`, `running_mean`, ...) and
shape; the first pair that differs is named in a ValueError. State dicts of PyTorch 0.4.0 and
earlier, without `num_batches_tracked`, get it as 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modeconn.curves.family import Curve, build_curve, curve_args
from modeconn.models import build_model
from modeconn.models.vgg import VGG

_CURVE_KEY = re.compile(r"^(?P<base>.*(?:^|\.)(?:weight|bias))_(?P<index>\d+)$")
_BN_2018_VGG = re.compile(r"(?:^|\.)layer_blocks\.\d+\.\d+\.running_mean$")
_CURVE_KINDS = {"bezier": "bezier", "polychain": "polychain", "line": "line"}


def is_2018_checkpoint(payload: object) -> bool:
    """True for what the reference's train.py saves: a dict with a 'model_state' mapping."""
    return (
        isinstance(payload, Mapping)
        and isinstance(payload.get("model_state"), Mapping)
        and "modeconn" not in payload
    )


def read_2018_state(source: str | Path | Mapping) -> dict[str, Tensor]:
    """The 'model_state' of a 2018 checkpoint, given as a path or as the loaded payload."""
    payload = source
    if isinstance(source, str | Path):
        payload = torch.load(source, map_location="cpu", weights_only=True)
    if not is_2018_checkpoint(payload):
        raise ValueError(
            f"{_what(source)} is not a checkpoint of the 2018 reference code (a dict with a "
            "'model_state' state dict, as its train.py writes)"
        )
    return dict(payload["model_state"])


def convert_2018_endpoint(state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """A 2018 base network's state dict, renamed to `model.state_dict()`'s names.

    The result loads with `model.load_state_dict(...)`; tensors are not copied. Raises a
    ValueError naming the first tensor whose position, leaf name or shape differs.
    """
    curve_keys = [k for k in state if _CURVE_KEY.match(k)]
    if curve_keys:
        raise ValueError(
            f"this 2018 state holds curve control points ('{curve_keys[0]}'): it is a curve "
            "network, load it with modeconn.io.legacy.load_2018_curve"
        )
    _refuse_2018_vgg16bn(state, model)
    return _match([(k, v, v) for k, v in state.items()], model)


def load_2018_curve(
    source: str | Path | Mapping, model: nn.Module, curve: str | None = None, **curve_args: int
) -> Curve:
    """Our `Bezier` / `PolyChain` with the control points of a 2018 curve checkpoint.

    `source` is the checkpoint's path or loaded payload; `model` an untrained network of the
    matching architecture (e.g. `build_model("preresnet20", 10, (3, 32, 32))`). The kind and
    the number of control points K are read from the checkpoint; `curve` ("bezier",
    "polychain"; the reference's "Bezier", "PolyChain" too) and `degree` / `bends`, when given,
    must agree with them. The running BatchNorm statistics stored with the curve are copied into
    `curve.model` (the engine recomputes them at every t in any case).
    """

    state = read_2018_state(source)
    coeff = {k[len("coeff_layer.") :] for k in state if k.startswith("coeff_layer.")}
    found = "bezier" if "binom" in coeff else "polychain" if "range" in coeff else None
    net = {k.removeprefix("net."): v for k, v in state.items() if not k.startswith("coeff_layer.")}
    _refuse_2018_vgg16bn(net, model)
    entries, num_points = _group_control_points(net)
    kind, args = _curve_kind(curve, found, num_points, curve_args)
    mapped = _match([(name, v[0] if isinstance(v, list) else v, v) for name, v in entries], model)
    params = dict(model.named_parameters())
    stray = [n for n in params if not isinstance(mapped[n], list)]
    if stray:
        raise ValueError(f"2018 curve state has no control points for parameter '{stray[0]}'")
    points = [{n: mapped[n][j] for n in params} for j in range(num_points)]
    out = build_curve(kind, model, points[0], points[-1], **args)
    with torch.no_grad():
        if num_points > 2:
            inner = [out.space.flatten(p, "a 2018 control point") for p in points[1:-1]]
            out.bends.copy_(torch.stack(inner))
        for name, buffer in out.model.named_buffers():
            buffer.copy_(mapped[name])
    return out


def _group_control_points(net: Mapping[str, Tensor]) -> tuple[list[tuple[str, object]], int]:
    """[(base name, [K tensors] or a buffer)] in the state's order, and K."""
    entries: dict[str, object] = {}
    for key, value in net.items():
        m = _CURVE_KEY.match(key)
        if m is None:
            entries[key] = value
        else:
            entries.setdefault(m["base"], {})[int(m["index"])] = value
    counts = {len(v) for v in entries.values() if isinstance(v, dict)}
    if len(counts) != 1 or min(counts) < 2:
        raise ValueError(
            "not a 2018 curve state: expected every layer to hold the same number (>= 2) of "
            f"control points 'weight_0', 'weight_1', ...; found counts {sorted(counts)}"
        )
    k = counts.pop()
    out: list[tuple[str, object]] = []
    for name, value in entries.items():
        if isinstance(value, dict):
            if sorted(value) != list(range(k)):
                raise ValueError(f"2018 curve state: '{name}_j' has indices {sorted(value)}")
            value = [value[j] for j in range(k)]
        out.append((name, value))
    return out, k


def _curve_kind(
    curve: str | None, found: str | None, num_points: int, args: dict[str, int]
) -> tuple[str, dict[str, int]]:
    """Our curve name and its arguments for a 2018 curve of `num_points` control points."""
    kind = _CURVE_KINDS.get((curve or found or "").lower())
    if curve is not None and kind is None:
        raise ValueError(f"unknown curve {curve!r}; 2018 curves are 'bezier' and 'polychain'")
    if kind is None:
        raise ValueError(
            "the 2018 state has no 'coeff_layer' buffers: pass curve='bezier'/'polychain'"
        )
    if found is not None and kind != found and not (kind == "line" and num_points == 2):
        raise ValueError(f"the 2018 checkpoint holds a {found} curve, not a {kind}")
    expected = {
        "bezier": {"degree": num_points - 1},
        "polychain": {"bends": num_points - 2},
        "line": {},
    }[kind]
    if kind == "line" and num_points != 2:
        raise ValueError(f"the 2018 curve has {num_points} control points: not a line")
    if args and args != expected:
        raise ValueError(
            f"the 2018 curve has {num_points} control points, i.e. {kind} with {expected}; "
            f"got {args}"
        )
    return kind, expected


def _match(source: list[tuple[str, Tensor, object]], model: nn.Module) -> dict[str, object]:
    """Pair (name, tensor for the shape, value) entries with `model.state_dict()` in order."""
    out: dict[str, object] = {}
    rest = iter(enumerate(source))
    pending = next(rest, None)
    for name, tensor in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        src_leaf = None if pending is None else pending[1][0].rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked" and src_leaf != leaf:
            out[name] = torch.zeros_like(tensor)  # a state saved before PyTorch 0.4.1
            continue
        if pending is None:
            raise _mismatch(model, f"the model's '{name}' {tuple(tensor.shape)} has no counterpart")
        i, (src_name, src, value) = pending
        if src_leaf != leaf or src.shape != tensor.shape:
            raise _mismatch(
                model,
                f"tensor #{i} is '{src_name}' {tuple(src.shape)} in the checkpoint but "
                f"'{name}' {tuple(tensor.shape)} in the model",
            )
        out[name] = value
        pending = next(rest, None)
    if pending is not None:
        raise _mismatch(model, f"the checkpoint's tensor '{pending[1][0]}' has no counterpart")
    return out


def _mismatch(model: nn.Module, detail: str) -> ValueError:
    return ValueError(
        f"2018 checkpoint does not match {type(model).__name__}: {detail}; was it trained with "
        "another architecture or other model arguments?"
    )


def _refuse_2018_vgg16bn(state: Mapping[str, Tensor], model: nn.Module) -> None:
    if isinstance(model, VGG) and any(_BN_2018_VGG.search(k) for k in state):
        raise ValueError(
            "this is a 2018 VGG16BN checkpoint, whose forward runs only 8 of its 13 "
            "convolutions: load it into model 'vgg16bn_2018' (the network it was trained as), "
            "not into 'vgg16bn'"
        )


def _what(source: object) -> str:
    return f"'{source}'" if isinstance(source, str | Path) else "the payload"


SOURCE_2018_CURVE = "2018 reference-code curve checkpoint"


def is_2018_curve(payload: Any) -> bool:
    """Whether a checkpoint's payload is the 2018 code's CurveNet ({'model_state': ...} with
    its coeff_layer weights)."""
    state = payload.get("model_state") if isinstance(payload, dict) else None
    return isinstance(state, Mapping) and any(str(k).startswith("coeff_layer.") for k in state)


def open_2018_curve(path: Path, payload: Mapping, given: Mapping[str, Any]):
    """(curve, meta, state) of a 2018 curve checkpoint read from `path`, its architecture
    and data set named by `given` (model, num_classes, input_shape, model_args)."""
    if any(given.get(k) is None for k in ("model", "num_classes", "input_shape")):
        raise ValueError(
            f"'{path}' is a {SOURCE_2018_CURVE}; name its architecture and data set: "
            "model=<name> dataset=<name> (e.g. model=preresnet20 dataset=cifar10)"
        )
    model = build_model(
        given["model"],
        num_classes=given["num_classes"],
        input_shape=tuple(given["input_shape"]),
        **(given.get("model_args") or {}),
    )
    try:
        curve = load_2018_curve(payload, model)
    except ValueError as err:
        raise ValueError(
            f"{SOURCE_2018_CURVE} '{path}' (read as {given['model']!r}): {err}"
        ) from err
    info = {
        **given,
        "curve": {"type": curve.kind, **curve_args(curve)},
        "finished": True,
        "source": SOURCE_2018_CURVE,
    }
    state = {"start": curve.start, "end": curve.end, "bends": curve.bends.detach()}
    return curve, info, state
