"""Checkpoints: written atomically, loaded with `weights_only=True`, validated on load.

A checkpoint is a plain dict that `torch.load(path, weights_only=True)` reads without
modeconn:

    {"modeconn": FORMAT, "kind": "endpoint" | "curve", "meta": {...}, "state": {...},
     "training": {...} (optimizer, RNG states, history; absent in a finished file's use)}

`meta` says what the weights are: model name and arguments, number of classes, input shape,
data set, seed, epoch, whether training finished and, for curves, the curve type.

Endpoints may also be other people's files: a plain `torch.save(model.state_dict())` (or one
inside a training checkpoint, or a 2018 reference-code checkpoint) is read by `load_endpoint`
once it is told the architecture and data set. Nothing is ever unpickled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modeconn._messages import a_or_an
from modeconn.curves.family import Curve, build_curve
from modeconn.curves.weights import WeightSpace
from modeconn.io.legacy import (
    convert_2018_endpoint,
    is_2018_checkpoint,
    is_2018_curve,
    open_2018_curve,
)
from modeconn.io.store import atomic_write, environment, plain_meta
from modeconn.io.torch_files import UnreadableCheckpoint, read_torch_file
from modeconn.models import build_model

log = logging.getLogger("modeconn")

FORMAT = 1
KINDS = ("endpoint", "curve", "fge", "simplex")  # fge: an FGE run; simplex: a vertex stage


@dataclass
class Checkpoint:
    kind: str
    meta: dict[str, Any]
    state: dict[str, Tensor]
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def finished(self) -> bool:
        return bool(self.meta.get("finished", False))


def save_checkpoint(
    path: str | Path,
    kind: str,
    state: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically. `meta` must hold plain values (str, int, float, list...)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got '{kind}'")
    payload = {
        "modeconn": FORMAT,
        "kind": kind,
        "meta": dict(meta),
        "state": {k: v.detach().cpu() for k, v in state.items()},
        "training": dict(training or {}),
        "environment": environment(),  # the thread count and kernel set it was written with
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


_PLAIN_HINT = (
    "name its architecture and data set: model=<name> dataset=<name> on the command line "
    "(e.g. model=preresnet20 dataset=cifar10), load_endpoint(path, meta=endpoint_meta(...)) "
    "or load_endpoint(path, model) in Python"
)


# What to pass instead of a checkpoint of the wrong kind, unless the caller knows better; a
# training run resumes from its own path, where a file of another kind is in the way.
_KIND_HINTS = {
    "endpoint": "Pass an endpoint checkpoint (one `python -m modeconn.apps.train` writes).",
    "curve": "Pass a curve checkpoint written by `python -m modeconn.apps.connect`.",
    "simplex": "Pass a simplex checkpoint written by `modeconn simplex` (one per vertex).",
}
_RESUME_HINT = (
    "Training saves and resumes at this path: choose another one for this run "
    "(checkpoint=...), or delete the file to train from scratch."
)


def load_checkpoint(
    path: str | Path, expect: str | None = None, *, hint: str | None = None
) -> Checkpoint:
    """Read and validate a modeconn checkpoint; `expect` ("endpoint", "curve", "fge") checks
    its kind, and `hint` is what a file of another kind is told to pass instead (by default
    a word on where such checkpoints come from). Plain state dicts are read by
    `load_endpoint`, which is told the architecture."""
    path = Path(path)
    return _checkpoint_from(read_torch_file(path), path, expect, hint)


def resume_checkpoint(path: str | Path, kind: str) -> Checkpoint:
    """The checkpoint at `path` that a training run of `kind` resumes from. A damaged file is
    an error naming it and the ways on, never replaced by a fresh start (it holds the epochs
    trained so far); a checkpoint of another kind is refused: choose another path."""
    path = Path(path)
    try:
        payload = read_torch_file(path)
    except UnreadableCheckpoint as err:
        if err.damage is None:
            raise
        raise ValueError(
            f"cannot resume training from '{path}': it is not a readable checkpoint "
            f"({err.damage}). It is left as it is: restore it from a backup, or move it aside "
            f"(e.g. to '{path}.corrupt') to train from scratch"
        ) from None
    return _checkpoint_from(payload, path, kind, _RESUME_HINT)


def _checkpoint_from(payload: Any, path: Path, expect: str | None, hint: str | None) -> Checkpoint:
    if not isinstance(payload, dict) or "modeconn" not in payload:
        if _plain_state(payload) is not None:
            use = f"pass {a_or_an(expect)} checkpoint"
            use = _PLAIN_HINT if expect in (None, "endpoint") else use
            raise ValueError(
                f"'{path}' is a plain state dict, not a modeconn checkpoint"
                + (f". {hint}" if hint else f": {use}")
            )
        raise ValueError(
            f"'{path}' is a torch file but not a modeconn checkpoint (no 'modeconn' key) and "
            f"holds no state dict; write endpoints with torch.save(model.state_dict(), path)"
        )
    kind = str(payload["kind"])
    if expect is not None and kind != expect:
        default = _KIND_HINTS.get(expect, "Use another checkpoint path.")
        raise ValueError(
            f"'{path}' is {a_or_an(kind)} checkpoint, but {a_or_an(expect)} checkpoint is "
            f"expected here. {hint or default}"
        )
    return Checkpoint(kind, payload["meta"], payload["state"], payload.get("training", {}), path)


def model_from_checkpoint(ckpt: Checkpoint) -> nn.Module:
    """Build the architecture a checkpoint's metadata names (weights not loaded)."""
    m = ckpt.meta
    return build_model(
        m["model"],
        num_classes=m["num_classes"],
        input_shape=tuple(m["input_shape"]),
        **(m.get("model_args") or {}),
    )


def endpoint_meta(
    model: str, data: Any, model_args: Mapping[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    """What describes an endpoint of the registered `model` trained on `data` (a Dataset):
    the `meta` that `load_endpoint` needs to read a plain state dict. `more`: extra keys."""
    return {
        "model": model,
        "model_args": dict(model_args or {}),
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "dataset": data.name,
        **more,
    }


# Metadata that names what an endpoint is; given keys must agree with a checkpoint's own.
# what makes two endpoint checkpoints one architecture on one data set
IDENTITY = ("model", "model_args", "num_classes", "input_shape", "dataset")


def load_endpoint(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    hint: str | None = None,
) -> tuple[nn.Module, Checkpoint]:
    """Load a finished endpoint into `model` (built from the metadata if None).

    path: a modeconn endpoint checkpoint, or a plain `torch.save(model.state_dict())` file
    (also one under 'state_dict' or 'model_state_dict' of a training checkpoint, and the 2018
    reference code's {'model_state': ...}). A 'module.' (DataParallel / DDP) or '_orig_mod.'
    (torch.compile) prefix on every tensor name is removed, with a logged note.
    meta: for a plain state dict, what a modeconn checkpoint's meta would say ('model',
    'model_args', 'num_classes', 'input_shape', 'dataset'; see `endpoint_meta`); the model is
    built from it when `model` is None. A modeconn checkpoint carries its own meta: the keys
    given must agree with it, or a ValueError names the ones that differ.
    hint: what a modeconn checkpoint of another kind (a curve) is told to pass instead, in
    the caller's words (connect: the two endpoints; fge: one); by default, an endpoint.
    A state dict of another architecture fails naming the first mismatched tensor; an
    unfinished checkpoint fails with the epoch it reached.
    """
    path, given = Path(path), dict(meta or {})
    payload = read_torch_file(path)
    if isinstance(payload, dict) and "modeconn" in payload:
        ckpt = _checkpoint_from(payload, path, "endpoint", hint)
        if not ckpt.finished:
            raise ValueError(
                f"'{path}' holds an unfinished training run (epoch {ckpt.meta.get('epoch')} "
                f"of {ckpt.meta.get('epochs')}). Rerun the same training command to resume "
                "and finish it."
            )
        _check_agrees(path, ckpt.meta, given)
        model = model_from_checkpoint(ckpt) if model is None else model
        load_state(model, ckpt.state, what=f"checkpoint '{path}'")
        return model, ckpt
    found = _plain_state(payload)
    if found is None:
        keys = sorted(map(str, payload))[:8] if isinstance(payload, dict) else []
        holds = f"a dict (keys: {', '.join(keys)})" if keys else a_or_an(type(payload).__name__)
        raise ValueError(
            f"'{path}' holds {holds} but no state dict modeconn recognises; save the "
            f"network's state dict alone: torch.save(model.state_dict(), '{path.name}')"
        )
    state, source = found
    if model is None:
        if any(given.get(k) is None for k in ("model", "num_classes", "input_shape")):
            raise ValueError(f"'{path}' is a {source}; {_PLAIN_HINT}")
        model = build_model(
            given["model"],
            num_classes=given["num_classes"],
            input_shape=tuple(given["input_shape"]),
            **(given.get("model_args") or {}),
        )
    state = _unwrapped(state, path)
    if source == _SOURCE_2018:
        state = convert_2018_endpoint(state, model)
    named = f" (read as model {given['model']!r})" if "model" in given else ""
    load_state(model, state, what=f"{source} '{path}'{named}")
    info = {**given, "finished": True, "source": source}
    return model, Checkpoint("endpoint", info, state, {}, path)


def _check_agrees(path: Path, own: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    differing = [
        k
        for k in IDENTITY
        if given.get(k) is not None and plain_meta({k: given[k]}) != plain_meta({k: own.get(k)})
    ]
    if differing:
        raise ValueError(
            f"'{path}' is a modeconn checkpoint of another kind than the one named ("
            + "; ".join(f"{k}: {own.get(k)!r} in the file, {given[k]!r} named" for k in differing)
            + "); leave model and dataset out for modeconn checkpoints (they carry their own), "
            "or name the matching ones"
        )


_SOURCE_2018 = "2018 reference-code checkpoint"


def _plain_state(payload: Any) -> tuple[dict[str, Tensor], str] | None:
    """The state dict in a non-modeconn torch file, with a word on where it was, or None."""

    def is_state(x: Any) -> bool:
        return (
            isinstance(x, dict)
            and len(x) > 0
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in x.items())
        )

    if is_state(payload):
        return dict(payload), "plain state dict"
    if not isinstance(payload, dict):
        return None
    if is_2018_checkpoint(payload):
        return dict(payload["model_state"]), _SOURCE_2018
    for key in ("state_dict", "model_state_dict"):
        if is_state(payload.get(key)):
            return dict(payload[key]), f"state dict (under '{key}')"
    return None


# Prefixes that wrappers put before every tensor name, and who adds them.
_WRAPPERS = {"module.": "DataParallel / DistributedDataParallel", "_orig_mod.": "torch.compile"}


def _unwrapped(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix, wrapper in _WRAPPERS.items():
            if all(k.startswith(prefix) for k in state):
                log.info("'%s': removed the '%s' prefix (saved from %s)", path, prefix, wrapper)
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def load_state(model: nn.Module, state: Mapping[str, Tensor], what: str = "state") -> None:
    """`model.load_state_dict(state)` with an error naming the first mismatched tensor."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise ValueError(
                f"{what} does not match the architecture: tensor '{name}' (shape "
                f"{tuple(tensor.shape)}) is missing from it. Was it trained with another model?"
            )
        if state[name].shape != tensor.shape:
            raise ValueError(
                f"{what} does not match the architecture: tensor '{name}' has shape "
                f"{tuple(state[name].shape)}, the model expects {tuple(tensor.shape)}. "
                "Was it trained with another model or other model arguments?"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise ValueError(
            f"{what} does not match the architecture: it has tensor '{extra[0]}' "
            "that the model does not have. Was it trained with another model?"
        )
    model.load_state_dict(state)


def load_curve(
    path: str | Path, *, meta: Mapping[str, Any] | None = None
) -> tuple[Curve, Checkpoint]:
    """Rebuild a trained curve (and its base network) from a curve checkpoint.

    path: a modeconn curve checkpoint, or a 2018 reference-code curve checkpoint
    ({'model_state': ...} with `coeff_layer.*` and `net.*` entries; `modeconn.io.legacy`).
    meta: what the architecture and data set are ('model', 'model_args', 'num_classes',
    'input_shape', 'dataset'; see `endpoint_meta`): needed for a 2018 file, checked against a
    modeconn checkpoint's own.
    """
    path, given = Path(path), dict(meta or {})
    payload = read_torch_file(path)
    if is_2018_curve(payload):
        curve, info, state = open_2018_curve(path, payload, given)
        return curve, Checkpoint("curve", info, state, {}, path)
    ckpt = _checkpoint_from(payload, path, "curve", None)
    _check_agrees(path, ckpt.meta, given)
    model = model_from_checkpoint(ckpt)
    space = WeightSpace.from_module(model)
    try:
        start, end = space.unflatten(ckpt.state["start"]), space.unflatten(ckpt.state["end"])
    except ValueError as err:
        raise ValueError(f"curve checkpoint '{path}' does not match its own model: {err}") from err
    args = {k: v for k, v in ckpt.meta["curve"].items() if k != "type"}
    curve = build_curve(ckpt.meta["curve"]["type"], model, start, end, **args)
    with torch.no_grad():
        curve.bends.copy_(ckpt.state["bends"])
    return curve, ckpt


def checkpoint_kind(path: str | Path) -> str:
    """ "curve" for a modeconn or 2018 curve checkpoint, the kind a modeconn checkpoint names,
    else "endpoint" (a plain state dict, which `load_endpoint` reads or explains)."""
    payload = read_torch_file(path)
    if isinstance(payload, dict) and "modeconn" in payload:
        return str(payload.get("kind"))
    return "curve" if is_2018_curve(payload) else "endpoint"
