"""The named models are the 2018 reference code's networks (timgaripov/dnn-mode-connectivity).

Each forward is compared with the reference's formula written here a second time, with
torch.nn.functional on the same tensors (state dicts in the reference's names, eval mode
unless stated, float64 so that only a different formula can make a difference). Parameter
counts are those of the reference networks for 10 and 100 classes.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from conftest import compose_app
from torch import Tensor, nn
from torch.nn import functional as F

from modeconn.apps.common import plain
from modeconn.models import build_model

CIFAR = (3, 32, 32)


# --- the reference's formulas, functional -------------------------------------------------


def bn(x: Tensor, sd: dict[str, Tensor], p: str, training: bool = False) -> Tensor:
    stats = (None, None) if training else (sd[p + "running_mean"], sd[p + "running_var"])
    return F.batch_norm(x, *stats, sd[p + "weight"], sd[p + "bias"], training, 0.1, 1e-5)


def preresnet_2018(x: Tensor, sd: dict[str, Tensor], depth: int) -> Tensor:
    """PreResNetBase.forward: out = branch(x) + (x or downsample(x)), bottleneck from 44 on."""
    bottleneck = depth >= 44
    n = (depth - 2) // (9 if bottleneck else 6)
    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for stage, stride in ((1, 1), (2, 2), (3, 2)):
        for i in range(n):
            p, s = f"layer{stage}.{i}.", stride if i == 0 else 1
            h = F.relu(bn(out, sd, p + "bn1."))
            if bottleneck:
                h = F.conv2d(h, sd[p + "conv1.weight"])
                h = F.conv2d(F.relu(bn(h, sd, p + "bn2.")), sd[p + "conv2.weight"], None, s, 1)
                h = F.conv2d(F.relu(bn(h, sd, p + "bn3.")), sd[p + "conv3.weight"])
            else:
                h = F.conv2d(h, sd[p + "conv1.weight"], None, s, 1)
                h = F.conv2d(F.relu(bn(h, sd, p + "bn2.")), sd[p + "conv2.weight"], padding=1)
            projects = i == 0 and (s != 1 or bottleneck)  # channels change: 16 -> 64 at once
            out = h + (F.conv2d(out, sd[p + "downsample.0.weight"], None, s) if projects else out)
    out = F.avg_pool2d(F.relu(bn(out, sd, "bn.")), 8).flatten(1)
    return F.linear(out, sd["fc.weight"], sd["fc.bias"])


def wideresnet_2018(x: Tensor, sd: dict[str, Tensor], n: int, k: int, p_drop: float) -> Tensor:
    """WideResNetBase.forward in train mode (batch statistics, dropout after conv1)."""

    def conv(h, key, stride=1, padding=1):
        return F.conv2d(h, sd[key + ".weight"], sd[key + ".bias"], stride, padding)

    out = conv(x, "conv1")
    for stage, stride in ((1, 1), (2, 2), (3, 2)):
        for i in range(n):
            p, s = f"layer{stage}.{i}.", stride if i == 0 else 1
            h = F.dropout(conv(F.relu(bn(out, sd, p + "bn1.", True)), p + "conv1"), p_drop, True)
            h = conv(F.relu(bn(h, sd, p + "bn2.", True)), p + "conv2", stride=s)
            projects = i == 0 and (s != 1 or k != 1)  # shape changes: 16 -> 16k, 2x, 2x
            out = h + (conv(out, p + "shortcut.0", s, 0) if projects else out)
    out = F.avg_pool2d(F.relu(bn(out, sd, "bn1.", True)), 8).flatten(1)
    return F.linear(out, sd["linear.weight"], sd["linear.bias"])


def convfc_2018(x: Tensor, sd: dict[str, Tensor]) -> Tensor:
    """ConvFCBase.forward: [conv5x5 pad 2, ReLU, MaxPool(3, 2)] x 3, three linear layers."""
    for i in (0, 3, 6):
        x = F.conv2d(x, sd[f"conv_part.{i}.weight"], sd[f"conv_part.{i}.bias"], padding=2)
        x = F.max_pool2d(F.relu(x), 3, 2)
    x = x.flatten(1)
    for i in (0, 2):
        x = F.relu(F.linear(x, sd[f"fc_part.{i}.weight"], sd[f"fc_part.{i}.bias"]))
    return F.linear(x, sd["fc_part.4.weight"], sd["fc_part.4.bias"])


VGG16_BLOCKS = (2, 2, 3, 3, 3)


def vgg_head(x: Tensor, sd: dict[str, Tensor], keys: tuple[str, str, str]) -> Tensor:
    x = F.relu(F.linear(x.flatten(1), sd[keys[0] + ".weight"], sd[keys[0] + ".bias"]))
    x = F.relu(F.linear(x, sd[keys[1] + ".weight"], sd[keys[1] + ".bias"]))
    return F.linear(x, sd[keys[2] + ".weight"], sd[keys[2] + ".bias"])


def vgg16bn_2018(x: Tensor, sd: dict[str, Tensor]) -> Tensor:
    """VGGBase.forward with batch_norm=True: block i's list [conv, bn, conv, bn, ...] zipped
    with one ReLU per conv, so only its first (number of convs) entries run."""
    for i, convs in enumerate(VGG16_BLOCKS):
        for j in range(convs):
            p = f"layer_blocks.{i}.{j}."
            x = (
                F.conv2d(x, sd[p + "weight"], sd[p + "bias"], padding=1)
                if j % 2 == 0
                else bn(x, sd, p)
            )
            x = F.relu(x)
        x = F.max_pool2d(x, 2)
    return vgg_head(x, sd, ("classifier.1", "classifier.4", "classifier.6"))


def vgg16_ours(x: Tensor, sd: dict[str, Tensor], batch_norm: bool) -> Tensor:
    """VGG-16(-BN) with all 13 convolutions, in our `features.N` / `classifier.N` names."""
    i = 0
    for convs in VGG16_BLOCKS:
        for _ in range(convs):
            x = F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
            if batch_norm:
                x = bn(x, sd, f"features.{i + 1}.")
            x = F.relu(x)
            i += 3 if batch_norm else 2
        x = F.max_pool2d(x, 2)
        i += 1
    return vgg_head(x, sd, ("classifier.2", "classifier.5", "classifier.7"))


def allconv_formula(x: Tensor, sd: dict[str, Tensor], norm: str) -> Tensor:
    """All-CNN-C: 9 convs (strides 1,1,2,1,1,2,1,1,1; the 7th unpadded), then global mean."""
    strides, i = (1, 1, 2, 1, 1, 2, 1, 1, 1), 0
    for layer, stride in enumerate(strides):
        w = sd[f"features.{i}.weight"]
        pad = 1 if w.shape[-1] == 3 and layer != 6 else 0
        x = F.conv2d(x, w, sd.get(f"features.{i}.bias"), stride, pad)
        if norm == "batch":
            x = bn(x, sd, f"features.{i + 1}.")
        x = F.relu(x)
        if norm == "lrn":
            x = F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)
        i += 2 if norm == "none" else 3
    return x.mean((2, 3))


@torch.no_grad()
def randomize_bn(model: nn.Module) -> nn.Module:
    """BatchNorm affine and running statistics away from 1/0 so that they matter."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _sd(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.state_dict())


# --- forwards -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [20, 56])
def test_preresnet_forward_is_the_2018_formula(depth):
    model = randomize_bn(build_model(f"preresnet{depth}", 10, CIFAR)).double().eval()
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), preresnet_2018(x, _sd(model), depth))


def test_wideresnet_forward_is_the_2018_formula_with_dropout_after_conv1():
    model = randomize_bn(
        build_model("wideresnet", 10, CIFAR, depth=16, widen_factor=1, dropout=0.3)
    ).double()
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        torch.manual_seed(5)
        ours = model.train()(x)
        torch.manual_seed(5)  # the same dropout masks, if drawn at the same places
        torch.testing.assert_close(ours, wideresnet_2018(x, sd, n=2, k=1, p_drop=0.3))


def test_convfc_forward_is_the_2018_formula():
    model = build_model("convfc", 10, CIFAR).double().eval()
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), convfc_2018(x, _sd(model)))


def test_vgg16bn_2018_forward_is_the_reference_forward():
    model = randomize_bn(build_model("vgg16bn_2018", 10, CIFAR, width_multiplier=1 / 4))
    model = model.double().eval()
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), vgg16bn_2018(x, _sd(model)))


def test_vgg16bn_2018_runs_8_of_13_convolutions():
    model = build_model("vgg16bn_2018", 10, CIFAR, width_multiplier=1 / 16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    calls = Counter()
    for i, conv in enumerate(convs):
        conv.register_forward_hook(lambda module, args, out, i=i: calls.update([i]))
    model(torch.randn(2, *CIFAR))
    assert len(convs) == 13 and sorted(calls) == [0, 2, 4, 5, 7, 8, 10, 11]


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg16_forward_runs_all_13_convolutions_of_the_formula(batch_norm):
    name = "vgg16bn" if batch_norm else "vgg16"
    model = randomize_bn(build_model(name, 10, CIFAR, width_multiplier=1 / 8)).double().eval()
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), vgg16_ours(x, _sd(model), batch_norm))


@pytest.mark.parametrize("norm", ["none", "batch", "lrn"])
def test_allconv_forward_is_all_cnn_c(norm):
    model = randomize_bn(build_model("allconv", 10, CIFAR, norm=norm, width=16)).double().eval()
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), allconv_formula(x, _sd(model), norm))


def test_allconv_maps_32x32_to_6x6_before_the_global_average():
    model = build_model("allconv", 10, CIFAR, width=4)
    assert model.features(torch.randn(1, *CIFAR)).shape == (1, 10, 6, 6)


# --- parameter counts -----------------------------------------------------------------------

# (name, options): (weights for 10 classes, for 100 classes); the 2018 networks' counts. A
# head of C classes on F features has C * (F + 1) weights, so the two columns differ by
# 90 * (F + 1): F = 64 (preresnet20), 256 (bottlenecks), 1152 (convfc), 640 (WRN), 512 (VGG).
COUNTS = {
    ("preresnet20", ()): (272_282, 278_132),
    ("preresnet56", ()): (590_426, 613_556),
    ("preresnet110", ()): (1_146_842, 1_169_972),
    ("preresnet164", ()): (1_703_258, 1_726_388),
    # without its 2 projection convs, 16*32 + 32*64 = 2,560 weights
    ("preresnet20", (("shortcut", False),)): (269_722, 275_572),
    ("convfc", ()): (2_422_634, 2_512_724),
    ("wideresnet28x10", ()): (36_489_290, 36_546_980),
    ("vgg16", ()): (15_245_130, 15_291_300),
    ("vgg16bn", ()): (15_253_578, 15_299_748),
    ("vgg16bn_2018", ()): (15_253_578, 15_299_748),
    # 3x3 convs 3*96, 96*96 x2, 96*192, 192*192 x3, 1x1 192*192 and 192*C, with biases
    ("allconv", ()): (1_369_738, 1_387_108),
}


@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize(("name", "options"), list(COUNTS))
def test_parameter_count_is_the_reference_count(name, options, classes):
    with torch.device("meta"):  # no memory, no initialisation work
        model = build_model(name, classes, CIFAR, **dict(options))
    expected = COUNTS[name, options][0 if classes == 10 else 1]
    assert sum(p.numel() for p in model.parameters()) == expected


def test_allconv_count_is_the_all_cnn_c_formula():
    convs = [(3, 96, 3), (96, 96, 3), (96, 96, 3), (96, 192, 3)] + [(192, 192, 3)] * 3
    convs += [(192, 192, 1), (192, 10, 1)]
    assert COUNTS["allconv", ()][0] == sum(i * o * k * k + o for i, o, k in convs)


def test_wideresnet28x10_has_108_tensors_and_every_conv_has_a_bias():
    with torch.device("meta"):
        model = build_model("wideresnet28x10", 10, CIFAR)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(list(model.parameters())) == 108 and all(c.bias is not None for c in convs)


def test_wideresnet_final_batchnorm_has_the_reference_momentum():
    model = build_model("wideresnet", 10, CIFAR, depth=10, widen_factor=1)
    assert model.bn1.momentum == 0.9


# --- initialisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [("preresnet20", {}), ("convfc", {}), ("vgg16bn_2018", {"width_multiplier": 0.25})],
)
def test_convolutions_start_from_the_reference_he_normal(name, options):
    torch.manual_seed(0)
    model = build_model(name, 10, CIFAR, **options)
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        if conv.weight.numel() >= 20_000:  # enough draws to pin the standard deviation
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
            assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / n), rel=0.03)
        assert conv.bias is None or not conv.bias.any()


def test_batchnorm_starts_at_scale_1_shift_0():
    model = build_model("preresnet56", 10, CIFAR)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and not m.bias.any()) for m in norms)


def test_wideresnet_keeps_pytorch_default_init():
    torch.manual_seed(0)
    model = build_model("wideresnet", 10, CIFAR, depth=10, widen_factor=4)
    conv = model.layer3[0].conv2  # 256 * 256 * 9 weights, PyTorch's U(+-1/sqrt(fan_in))
    bound = 1 / math.sqrt(conv.in_channels * 9)
    assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert conv.bias.abs().max() <= bound and conv.bias.any()


# --- variants -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [20, 56])
def test_preresnet_without_shortcut_has_no_identity_path(depth):
    """Each block is its residual branch alone: zeroing its last conv zeroes its output."""
    model = build_model(f"preresnet{depth}", 10, CIFAR, width=4, shortcut=False).eval()
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3) for b in layer]
    with torch.no_grad():
        for block in blocks:
            last = block.conv3 if hasattr(block, "conv3") else block.conv2
            last.weight.zero_()
            inp = torch.randn(2, block.bn1.num_features, 8, 8)
            assert not block(inp).any(), f"{depth}: a block passes its input on"
    assert not any("downsample" in name for name, _ in model.named_parameters())


def test_preresnet_with_shortcut_passes_the_input_on():
    model = build_model("preresnet20", 10, CIFAR, width=4).eval()
    block = model.layer1[1]
    with torch.no_grad():
        block.conv2.weight.zero_()
        inp = torch.randn(2, 4, 8, 8)
        torch.testing.assert_close(block(inp), inp)


def test_convfc_paper_network_refuses_small_inputs_naming_the_option():
    with pytest.raises(ValueError, match="pool_padding=1"):
        build_model("convfc", 10, (1, 8, 8))


def test_demo_config_sets_padded_pools_for_8x8_digits():
    cfg = compose_app("demo", [])
    args = plain(cfg.model.args)
    assert args["pool_padding"] == 1
    assert build_model("convfc", 10, (1, 8, 8), **args)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_mlp_hidden_0_is_logistic_regression():
    model = build_model("mlp", 3, (4, 5), hidden=0, depth=5)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 3)]


@pytest.mark.parametrize(("depth", "width"), [(1, 5), (5, 20), (10, 100)])
def test_mlp_depth_width_grid_composes_from_hydra_overrides(depth, width):
    cfg = compose_app(
        "train", ["model=mlp", f"model.args.hidden={width}", f"model.args.depth={depth}"]
    )
    model = build_model(cfg.model.name, 2, (2,), **plain(cfg.model.args))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == depth + 1 and all(m.out_features == width for m in linears[:-1])


def test_mlp_list_of_widths_contradicting_depth_is_refused():
    with pytest.raises(ValueError, match="depth=3 contradicts"):
        build_model("mlp", 2, (2,), hidden=[8, 8], depth=3)
