"""One registry and one factory, so configs name models by string.

A builder is any callable `builder(num_classes, input_shape, **options) -> nn.Module`; a model
class whose constructor has that signature is registered as is. `build_model` checks the name,
the shape and the options where they enter, so a typo fails with the list of valid choices
instead of deep inside a constructor. Names of the form `torchvision:NAME` build an untrained
torchvision classifier (weights are never downloaded).
"""

from __future__ import annotations

import difflib
import inspect
import operator
from collections.abc import Callable, Sequence

from torch import Tensor, nn

Builder = Callable[..., nn.Module]

MODELS: dict[str, Builder] = {}

TORCHVISION_PREFIX = "torchvision:"

# Arguments every builder receives from `build_model` itself, never from the user's options.
_FIXED_ARGS = ("num_classes", "input_shape")


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding a builder (function or nn.Module class) to `MODELS` under `name`."""
    if not name or TORCHVISION_PREFIX in name:
        raise ValueError(f"invalid model name {name!r}: must be non-empty and not contain ':'")

    def decorate(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered (by {MODELS[name]!r})")
        MODELS[name] = builder
        return builder

    return decorate


def model_names() -> list[str]:
    """Sorted names of the registered models (torchvision models are not listed)."""
    return sorted(MODELS)


def build_model(
    name: str, num_classes: int, input_shape: Sequence[int], **kwargs: object
) -> nn.Module:
    """Build the model registered as `name` for inputs of shape `(B, *input_shape)`.

    `input_shape` is one sample without the batch dimension: `(C, H, W)` for images, `(D,)` for
    vectors. The model maps a batch `(B, *input_shape)` to logits `(B, num_classes)`. `kwargs`
    are the builder's own options (e.g. `depth=56` for `preresnet`).
    """
    shape = _check_shape(input_shape)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if name.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(name[len(TORCHVISION_PREFIX) :], num_classes, shape, kwargs)
    if name not in MODELS:
        raise ValueError(_unknown_name_message(name))
    builder = MODELS[name]
    _check_kwargs(name, builder, kwargs)
    return builder(num_classes=num_classes, input_shape=shape, **kwargs)


def image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """`input_shape` as `(C, H, W)`, or a ValueError saying that `model` needs images."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model {model!r} needs image inputs of shape (C, H, W), got input_shape "
            f"{tuple(input_shape)}; use 'mlp' for vector data"
        )
    c, h, w = input_shape
    return int(c), int(h), int(w)


class ExpandChannels(nn.Module):
    """Repeat a 1-channel image to `channels` channels: (B, 1, H, W) -> (B, channels, H, W)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x.expand(-1, self.channels, -1, -1)  # a view: no copy, gradients still flow

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(operator.index(d) for d in input_shape)  # ints only: 2.5 is an error
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive ints without the batch "
            f"dimension, e.g. (3, 32, 32) or (2,); got {input_shape!r}"
        )
    return shape


def _unknown_name_message(name: str) -> str:
    close = difflib.get_close_matches(name, model_names(), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return (
        f"unknown model {name!r}.{hint} Valid names: {', '.join(model_names())}. "
        f"Models from torchvision can be named '{TORCHVISION_PREFIX}NAME', "
        f"e.g. '{TORCHVISION_PREFIX}resnet18'."
    )


def _check_kwargs(name: str, builder: Builder, kwargs: dict[str, object]) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the builder takes anything; it reports bad options itself
    accepted = [
        p.name
        for p in params.values()
        if p.name not in _FIXED_ARGS
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    passed_fixed = sorted(set(kwargs) & set(_FIXED_ARGS))
    unknown = sorted(set(kwargs) - set(accepted))
    if passed_fixed:
        raise ValueError(f"pass {passed_fixed} as build_model arguments, not as options")
    if unknown:
        listed = ", ".join(
            f"{p.name}={p.default!r}" if p.default is not p.empty else p.name
            for p in params.values()
            if p.name in accepted
        )
        raise ValueError(
            f"model {name!r} got unexpected argument(s) {unknown}; "
            f"it accepts: {listed or 'no options'}"
        )


def _build_torchvision(
    name: str, num_classes: int, shape: tuple[int, ...], kwargs: dict[str, object]
) -> nn.Module:
    """An untrained torchvision classifier, with a 1->3 channel adapter for grayscale images."""
    import torchvision  # imported here: only this path needs it

    valid = torchvision.models.list_models(module=torchvision.models)
    if name.lower() not in valid:
        close = difflib.get_close_matches(name.lower(), valid, n=5)
        examples = close or [m for m in ("resnet18", "resnet50", "vgg16_bn") if m in valid]
        raise ValueError(
            f"unknown torchvision classification model {name!r}; for example "
            f"{', '.join(TORCHVISION_PREFIX + m for m in examples)} "
            f"(all {len(valid)}: torchvision.models.list_models(module=torchvision.models))"
        )
    c, _, _ = image_shape(shape, TORCHVISION_PREFIX + name)
    if c not in (1, 3):
        raise ValueError(
            f"torchvision models take 3-channel images (1-channel ones are repeated to 3); "
            f"got input_shape {shape}"
        )
    if "weights" in kwargs:
        raise ValueError("pretrained weights are not supported: models are built untrained")
    try:
        model = torchvision.models.get_model(
            name.lower(), weights=None, num_classes=num_classes, **kwargs
        )
    except TypeError as err:
        raise ValueError(f"model '{TORCHVISION_PREFIX}{name}' rejected its options: {err}") from err
    return model if c == 3 else nn.Sequential(ExpandChannels(3), model)
