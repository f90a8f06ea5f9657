"""Checkpoints of the 2018 reference code load into our networks and curves.

The 2018 state dicts are generated here from the reference's layouts, written out by hand
(names, shapes and order of its base nets and of its curve nets, `weight_0 .. weight_{K-1}` per
layer), never by running our converter backwards; loaded networks are checked against the
reference's formulas of test_models_2018.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_models_2018 import convfc_2018, preresnet_2018, vgg16bn_2018
from torch import Tensor

from modeconn.curves.family import Bezier, PolyChain
from modeconn.io.legacy import (
    convert_2018_endpoint,
    is_2018_checkpoint,
    load_2018_curve,
)
from modeconn.models import build_model

CIFAR = (3, 32, 32)
Layout = list[tuple[str, tuple[int, ...]]]


# --- the reference's layouts ----------------------------------------------------------------


def _bn(prefix: str, c: int) -> Layout:
    return [
        (f"{prefix}.{leaf}", (c,)) for leaf in ("weight", "bias", "running_mean", "running_var")
    ]


def preresnet20_layout(classes: int = 10, nbt: bool = True) -> Layout:
    """PreResNetBase(depth=20): conv1, layer1..3 x 3 BasicBlocks (bn1, conv1, bn2, conv2,
    downsample.0 in the first block of layers 2 and 3), bn, fc."""
    out: Layout = [("conv1.weight", (16, 3, 3, 3))]
    inplanes = 16
    for stage, planes in ((1, 16), (2, 32), (3, 64)):
        for i in range(3):
            p = f"layer{stage}.{i}"
            out += _bn(f"{p}.bn1", inplanes) + [(f"{p}.conv1.weight", (planes, inplanes, 3, 3))]
            out += _bn(f"{p}.bn2", planes) + [(f"{p}.conv2.weight", (planes, planes, 3, 3))]
            if i == 0 and stage > 1:
                out.append((f"{p}.downsample.0.weight", (planes, inplanes, 1, 1)))
            inplanes = planes
    out += _bn("bn", 64) + [("fc.weight", (classes, 64)), ("fc.bias", (classes,))]
    if nbt:  # PyTorch >= 0.4.1 adds num_batches_tracked after each BatchNorm's running_var
        out = [e for name, s in out for e in _with_nbt(name, s)]
    return out


def _with_nbt(name: str, shape: tuple[int, ...]) -> Layout:
    tail = [(name.replace("running_var", "num_batches_tracked"), ())]
    return [(name, shape)] + (tail if name.endswith("running_var") else [])


def convfc_layout(classes: int = 10) -> Layout:
    """ConvFCBase: conv_part.{0,3,6} (5x5 convs 32, 64, 128), fc_part.{0,2,4} (1152-1000-...)."""
    convs = [("conv_part.0", 3, 32), ("conv_part.3", 32, 64), ("conv_part.6", 64, 128)]
    out: Layout = []
    for name, cin, cout in convs:
        out += [(f"{name}.weight", (cout, cin, 5, 5)), (f"{name}.bias", (cout,))]
    for name, fin, fout in (("fc_part.0", 1152, 1000), ("fc_part.2", 1000, 1000)):
        out += [(f"{name}.weight", (fout, fin)), (f"{name}.bias", (fout,))]
    return out + [("fc_part.4.weight", (classes, 1000)), ("fc_part.4.bias", (classes,))]


def vgg16bn_layout(scale: int = 8, classes: int = 10) -> Layout:
    """VGGBase(batch_norm=True), widths divided by `scale`: layer_blocks.i.{2j: conv, 2j+1: bn},
    classifier.{1,4,6}."""
    out: Layout = []
    cin = 3
    for i, (convs, width) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512), strict=True)):
        w = width // scale
        for j in range(convs):
            p = f"layer_blocks.{i}"
            out += [(f"{p}.{2 * j}.weight", (w, cin, 3, 3)), (f"{p}.{2 * j}.bias", (w,))]
            out += [e for name, s in _bn(f"{p}.{2 * j + 1}", w) for e in _with_nbt(name, s)]
            cin = w
    h = 512 // scale
    for name, fin, fout in (
        ("classifier.1", cin, h),
        ("classifier.4", h, h),
        ("classifier.6", h, classes),
    ):
        out += [(f"{name}.weight", (fout, fin)), (f"{name}.bias", (fout,))]
    return out


def random_state(layout: Layout, seed: int = 0) -> dict[str, Tensor]:
    """Plausible values: He-scaled weights, small biases, positive variances."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout:
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        elif leaf == "weight" and len(shape) > 1:
            state[name] = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
        elif leaf == "weight":  # BatchNorm scale
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.1
    return state


def curve_net_state(
    bases: list[dict[str, Tensor]], kind: str, rename: dict[str, str]
) -> dict[str, Tensor]:
    """CurveNet(...).state_dict() with control points `bases` (start, bends..., end).

    coeff_layer buffers first, then per layer `weight_0..K-1`, `bias_0..K-1`, then the
    BatchNorm buffers (from the first base); `rename` maps base module names to the curve
    net's (e.g. `layer2.0.downsample.0` -> `layer2.0.downsample`).
    """
    k = len(bases)
    out = {"coeff_layer.range": torch.arange(0.0, k)}
    if kind == "Bezier":
        out["coeff_layer.binom"] = torch.tensor(
            [math.comb(k - 1, j) for j in range(k)], dtype=torch.float
        )
        out["coeff_layer.rev_range"] = torch.arange(k - 1.0, -1, -1)
        out = {
            key: out[key]
            for key in ("coeff_layer.binom", "coeff_layer.range", "coeff_layer.rev_range")
        }
    modules: dict[str, list[str]] = {}
    for name in bases[0]:
        module, leaf = name.rsplit(".", 1)
        modules.setdefault(module, []).append(leaf)
    for module, leaves in modules.items():
        new = "net." + rename.get(module, module)
        for leaf in ("weight", "bias"):
            if leaf in leaves:
                for j, base in enumerate(bases):
                    out[f"{new}.{leaf}_{j}"] = base[f"{module}.{leaf}"]
        for leaf in leaves:
            if leaf not in ("weight", "bias"):
                out[f"{new}.{leaf}"] = bases[0][f"{module}.{leaf}"]
    return out


def reference_coefficients(kind: str, k: int, t: float) -> list[float]:
    """curves.Bezier / curves.PolyChain of the reference for K control points."""
    if kind == "Bezier":
        return [math.comb(k - 1, j) * t**j * (1 - t) ** (k - 1 - j) for j in range(k)]
    return [max(0.0, 1.0 - abs(t * (k - 1) - j)) for j in range(k)]


def save_2018(path, state: dict[str, Tensor]) -> None:
    """As the reference's utils.save_checkpoint called by its train.py."""
    momentum = {k: torch.zeros_like(v) for k, v in list(state.items())[:2]}
    optimizer = {"state": {0: {"momentum_buffer": momentum}}, "param_groups": [{"lr": 0.01}]}
    torch.save({"epoch": 200, "model_state": state, "optimizer_state": optimizer}, path)


PRERESNET_CURVE_NAMES = {f"layer{s}.0.downsample.0": f"layer{s}.0.downsample" for s in (2, 3)}
CONVFC_CURVE_NAMES = {
    "conv_part.0": "conv1", "conv_part.3": "conv2", "conv_part.6": "conv3",
    "fc_part.0": "fc4", "fc_part.2": "fc5", "fc_part.4": "fc6",
}  # fmt: skip


# --- recognising and converting endpoints ---------------------------------------------------


def test_2018_checkpoint_is_recognised_by_its_model_state(tmp_path):
    save_2018(tmp_path / "checkpoint-200.pt", random_state(convfc_layout()))
    payload = torch.load(tmp_path / "checkpoint-200.pt", weights_only=True)
    assert is_2018_checkpoint(payload)
    assert not is_2018_checkpoint({"modeconn": 1, "model_state": {}})
    assert not is_2018_checkpoint(payload["model_state"]) and not is_2018_checkpoint([1])


def test_2018_convfc_checkpoint_loads_and_computes_the_reference_forward(tmp_path):
    state = random_state(convfc_layout())
    save_2018(tmp_path / "convfc.pt", state)
    payload = torch.load(tmp_path / "convfc.pt", weights_only=True)
    model = build_model("convfc", 10, CIFAR).eval()
    model.load_state_dict(convert_2018_endpoint(payload["model_state"], model))
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        torch.testing.assert_close(model(x), convfc_2018(x, state))


def test_2018_preresnet_state_of_pytorch_0_4_0_loads_without_num_batches_tracked():
    state = random_state(preresnet20_layout(nbt=False))
    model = build_model("preresnet20", 10, CIFAR).double().eval()
    model.load_state_dict(convert_2018_endpoint(state, model))
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        expected = preresnet_2018(x, {k: v.double() for k, v in state.items()}, 20)
        torch.testing.assert_close(model(x), expected)


def test_2018_vgg16bn_names_map_by_structure_onto_vgg16bn_2018():
    state = random_state(vgg16bn_layout(scale=8))
    model = build_model("vgg16bn_2018", 10, CIFAR, width_multiplier=1 / 8).double().eval()
    model.load_state_dict(convert_2018_endpoint(state, model))
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        expected = vgg16bn_2018(x, {k: v.double() for k, v in state.items()})
        torch.testing.assert_close(model(x), expected)


def test_2018_vgg16bn_checkpoint_is_refused_by_the_correct_vgg16bn():
    state = random_state(vgg16bn_layout(scale=8))
    model = build_model("vgg16bn", 10, CIFAR, width_multiplier=1 / 8)
    with pytest.raises(ValueError, match="8 of its 13 convolutions.*'vgg16bn_2018'"):
        convert_2018_endpoint(state, model)


def test_mismatched_shape_names_the_first_tensor_on_both_sides():
    state = random_state(convfc_layout())
    model = build_model("convfc", 10, CIFAR, pool_padding=1)  # 2048 features, not 1152
    with pytest.raises(ValueError) as info:
        convert_2018_endpoint(state, model)
    message = str(info.value)
    assert "\n" not in message
    assert "'fc_part.0.weight' (1000, 1152) in the checkpoint" in message
    assert "'fc_part.0.weight' (1000, 2048) in the model" in message


def test_other_architecture_is_refused_with_the_first_mismatch():
    state = random_state(preresnet20_layout())
    model = build_model("preresnet56", 10, CIFAR)
    with pytest.raises(
        ValueError, match=r"PreResNet: tensor #\d+ is '.*' \(.*\) in the checkpoint"
    ):
        convert_2018_endpoint(state, model)


def test_curve_state_passed_as_endpoint_points_to_the_curve_loader():
    bases = [random_state(convfc_layout(), seed) for seed in range(3)]
    net = curve_net_state(bases, "Bezier", CONVFC_CURVE_NAMES)
    with pytest.raises(ValueError, match="load_2018_curve"):
        convert_2018_endpoint(net, build_model("convfc", 10, CIFAR))


# --- curves ---------------------------------------------------------------------------------


def test_2018_bezier_of_3_points_is_our_degree_2_bezier_with_its_control_points(tmp_path):
    bases = [random_state(preresnet20_layout(), seed) for seed in range(3)]
    save_2018(tmp_path / "curve.pt", curve_net_state(bases, "Bezier", PRERESNET_CURVE_NAMES))
    curve = load_2018_curve(tmp_path / "curve.pt", build_model("preresnet20", 10, CIFAR))
    assert isinstance(curve, Bezier) and curve.degree == 2
    c = reference_coefficients("Bezier", 3, 0.3)
    weights = curve.weights(0.3)
    for name, _ in curve.model.named_parameters():
        expected = sum(cj * base[name] for cj, base in zip(c, bases, strict=True))
        torch.testing.assert_close(weights[name], expected)


def test_2018_curve_network_at_t_is_the_reference_network_at_t(tmp_path):
    bases = [random_state(preresnet20_layout(), seed) for seed in range(3)]
    payload = {"epoch": 600, "model_state": curve_net_state(bases, "Bezier", PRERESNET_CURVE_NAMES)}
    curve = load_2018_curve(payload, build_model("preresnet20", 10, CIFAR)).double().eval()
    c = reference_coefficients("Bezier", 3, 0.7)
    at_t = {n: sum(cj * b[n].double() for cj, b in zip(c, bases, strict=True)) for n in bases[0]}
    at_t.update({n: v.double() for n, v in bases[0].items() if "running" in n})  # as stored
    x = torch.randn(2, *CIFAR, dtype=torch.float64)
    with torch.no_grad():
        expected = preresnet_2018(x, at_t, 20)
        # run, not forward: forward refuses statistics not recomputed at t, as it should
        torch.testing.assert_close(curve.run(x, curve.point(0.7)), expected)


def test_2018_polychain_of_4_points_is_our_polychain_with_2_bends():
    bases = [random_state(convfc_layout(), seed) for seed in range(4)]
    payload = {"model_state": curve_net_state(bases, "PolyChain", CONVFC_CURVE_NAMES)}
    curve = load_2018_curve(payload, build_model("convfc", 10, CIFAR), "PolyChain", bends=2)
    assert isinstance(curve, PolyChain) and curve.num_bends == 2
    c = reference_coefficients("PolyChain", 4, 0.5)  # halfway between points 1 and 2
    expected = sum(cj * base["fc_part.2.weight"] for cj, base in zip(c, bases, strict=True))
    torch.testing.assert_close(curve.weights(0.5)["fc_part.2.weight"], expected)


def test_2018_curve_of_another_kind_or_degree_than_asked_is_refused():
    bases = [random_state(convfc_layout(), seed) for seed in range(3)]
    payload = {"model_state": curve_net_state(bases, "Bezier", CONVFC_CURVE_NAMES)}
    model = build_model("convfc", 10, CIFAR)
    with pytest.raises(ValueError, match="holds a bezier curve, not a polychain"):
        load_2018_curve(payload, model, "polychain")
    with pytest.raises(ValueError, match="3 control points"):
        load_2018_curve(payload, model, "bezier", degree=3)


# --- 2018 curve checkpoints on the command line ---------------------------------------------


def _mlp_2018_curve(path) -> list[dict[str, Tensor]]:
    bases = []
    for seed in range(3):
        torch.manual_seed(seed)
        bases.append(build_model("mlp", 10, (1, 8, 8), hidden=[16]).state_dict())
    save_2018(path, curve_net_state(bases, "Bezier", {}))
    return bases


def test_the_evaluate_app_reads_a_2018_curve_checkpoint_with_model_and_dataset_named(tmp_path):
    from conftest import compose_app

    from modeconn.apps import evaluate
    from modeconn.data.catalogue import load_dataset
    from modeconn.engine.point import evaluate_point

    bases = _mlp_2018_curve(tmp_path / "curve.pt")
    overrides = [f"curve_ckpt={tmp_path / 'curve.pt'}", "model=mlp", "model.args.hidden=[16]"]
    overrides += ["dataset=digits", "points=3", "progress=false", f"out={tmp_path / 'out'}"]
    results = evaluate.run(compose_app("evaluate", overrides))
    net = build_model("mlp", 10, (1, 8, 8), hidden=[16])
    net.load_state_dict(bases[0])
    expected = evaluate_point(net, dict(net.named_parameters()), load_dataset("digits"))
    assert results["curve"].train_nll[0] == pytest.approx(expected["train"].nll, rel=1e-6)


def test_a_2018_curve_checkpoint_without_its_architecture_says_what_to_name(tmp_path):
    from modeconn.io.checkpoints import load_curve

    _mlp_2018_curve(tmp_path / "curve.pt")
    with pytest.raises(ValueError, match="2018 reference-code curve checkpoint; name its"):
        load_curve(tmp_path / "curve.pt")
