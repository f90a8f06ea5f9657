"""The model registry and every registered architecture, at tiny sizes (CPU, seconds)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from modeconn.models import MODELS, build_model, model_names, register_model
from modeconn.models.registry import ExpandChannels

# Options that shrink each registered model so all of them run in a few seconds on a CPU.
TINY: dict[str, dict[str, object]] = {
    "mlp": {"hidden": (8, 8)},
    "convfc": {"widths": (4, 4, 4), "hidden": 8, "pool_padding": 1},  # 8x8 needs padded pools
    "allconv": {"width": 4, "norm": "batch", "conv7_padding": 1},
    "vgg16": {"width_multiplier": 1 / 16},
    "vgg16bn": {"width_multiplier": 1 / 16},
    "vgg16bn_2018": {"width_multiplier": 1 / 16},
    "preresnet": {"depth": 20, "width": 4},
    "preresnet20": {"width": 4},
    "preresnet56": {"width": 4},
    "preresnet110": {"width": 2},
    "preresnet164": {"width": 2},
    "wideresnet": {"depth": 10, "widen_factor": 1},
    "wideresnet28x10": None,  # fixed size, too slow to run: see test_wideresnet28x10_is_wrn_28_10
}
IMAGE_SHAPES = [(1, 8, 8), (3, 32, 32)]


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_every_registered_model_has_tiny_settings():
    assert set(TINY) == set(model_names())


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("name", [n for n, kw in TINY.items() if kw is not None])
def test_model_maps_image_batch_to_logits(name, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, input_shape=shape, **TINY[name])
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)


def test_mlp_maps_vectors_to_logits():
    model = build_model("mlp", num_classes=3, input_shape=(2,), hidden=(8,))
    assert model(torch.randn(5, 2)).shape == (5, 3)


def test_image_model_rejects_vector_input_shape():
    with pytest.raises(ValueError, match="mlp"):
        build_model("convfc", num_classes=3, input_shape=(2,))


@pytest.mark.parametrize("name", ["vgg16", "vgg16bn"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_vgg16_runs_all_13_convolutions(name, shape):
    model = build_model(name, num_classes=10, input_shape=shape, width_multiplier=1 / 16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    calls = Counter()
    for i, conv in enumerate(convs):
        conv.register_forward_hook(lambda module, args, out, i=i: calls.update([i]))
    model(torch.randn(2, *shape))
    assert len(convs) == 13 and calls == Counter(range(13))  # each conv called exactly once


def test_vgg16bn_has_batch_norm_after_every_convolution():
    model = build_model("vgg16bn", num_classes=10, input_shape=(3, 32, 32), width_multiplier=1 / 16)
    assert count(model, nn.BatchNorm2d) == count(model, nn.Conv2d) == 13


# A PreResNet of depth d has d weight layers on its main path: 1 stem conv, d - 2 convs inside
# the blocks, 1 final Linear. On top of those come 1x1 projection convs where a block changes
# shape: basic blocks keep the stem's width in stage 1, so only stages 2 and 3 project (2);
# bottleneck blocks (the 2018 code's choice from depth 44 on) expand 16 -> 64 channels already
# in stage 1, so all 3 stages project.
@pytest.mark.parametrize(
    ("depth", "block", "projections"),
    [(20, "auto", 2), (56, "auto", 3), (56, "basic", 2), (164, "auto", 3)],
)
def test_preresnet_has_depth_weight_layers_plus_projections(depth, block, projections):
    model = build_model(
        "preresnet", num_classes=10, input_shape=(3, 32, 32), depth=depth, width=2, block=block
    )
    assert count(model, nn.Conv2d) == (depth - 1) + projections
    assert count(model, nn.Linear) == 1


@pytest.mark.parametrize("depth", [21, 2, 100])
def test_preresnet_invalid_depth_states_the_rule(depth):
    with pytest.raises(ValueError, match=r"6n\+2.*9n\+2"):
        build_model("preresnet", num_classes=10, input_shape=(3, 32, 32), depth=depth)


def test_wideresnet_invalid_depth_states_the_rule():
    with pytest.raises(ValueError, match=r"6n\+4"):
        build_model("wideresnet", num_classes=10, input_shape=(3, 32, 32), depth=27)


def test_wideresnet_width_is_widen_factor_times_base():
    model = build_model(
        "wideresnet", num_classes=10, input_shape=(3, 32, 32), depth=10, widen_factor=2
    )
    assert model.linear.in_features == 64 * 2


def test_wideresnet28x10_is_wrn_28_10():
    with torch.device("meta"):  # 36.5M weights: counted, never allocated
        model = build_model("wideresnet28x10", num_classes=10, input_shape=(3, 32, 32))
    params = sum(p.numel() for p in model.parameters())
    assert model.linear.in_features == 640 and round(params / 1e6, 1) == 36.5  # 36.5M in the paper


def test_unknown_name_error_lists_valid_names_and_torchvision():
    with pytest.raises(ValueError) as info:
        build_model("resnet-9000", num_classes=10, input_shape=(3, 32, 32))
    message = str(info.value)
    assert all(name in message for name in model_names()) and "torchvision:" in message


def test_bad_option_error_names_model_and_accepted_arguments():
    with pytest.raises(ValueError, match=r"'preresnet20'.*width") as info:
        build_model("preresnet20", num_classes=10, input_shape=(3, 32, 32), depth=56)
    assert "depth" in str(info.value)


@pytest.mark.parametrize("shape", [(), (3, 0, 32), (2.5,)])
def test_bad_input_shape_is_rejected(shape):
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", num_classes=10, input_shape=shape)


def test_register_model_rejects_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp")(lambda num_classes, input_shape: nn.Identity())
    assert MODELS["mlp"].__name__ == "MLP"


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_torchvision_resnet18_maps_images_to_logits(shape):
    model = build_model("torchvision:resnet18", num_classes=10, input_shape=shape)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize(("channels", "adapters"), [(1, 1), (3, 0)])
def test_torchvision_model_expands_only_grayscale_inputs(channels, adapters):
    model = build_model("torchvision:resnet18", num_classes=10, input_shape=(channels, 8, 8))
    assert count(model, ExpandChannels) == adapters


def test_torchvision_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="torchvision:resnet18"):
        build_model("torchvision:nonexistent", num_classes=10, input_shape=(3, 32, 32))


def test_torchvision_model_rejects_vector_inputs():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model("torchvision:resnet18", num_classes=10, input_shape=(2,))
