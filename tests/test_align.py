"""Permutation groups traced from the graph, and weight matching.

The independent check of a traced spec is the function itself: a network permuted by random
permutations of its groups computes the same outputs. The independent check of weight
matching is a known permutation to recover: a network against a permuted copy of itself.
"""

import copy

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import modeconn as mc
from modeconn.align import (
    PermutationSpec,
    SpecError,
    activation_matching,
    apply_permutation,
    check_spec,
    inverse,
    merge_many,
    permutation_spec,
    weight_matching,
)

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)


def registry_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    small = {
        "mlp": dict(hidden=[32, 32]),
        "convfc": dict(widths=[8, 16, 16], hidden=32, pool_padding=1),
        "vgg16": dict(width_multiplier=0.125),
        "vgg16bn": dict(width_multiplier=0.125),
        "vgg16bn_2018": dict(),
        "wideresnet": dict(depth=10, widen_factor=1),
        "preresnet": dict(depth=8),
    }
    shape = DIGITS if name in ("mlp", "convfc") else CIFAR
    return mc.build_model(name, num_classes=10, input_shape=shape, **small.get(name, {})), shape


REGISTRY = [
    "allconv",
    "convfc",
    "mlp",
    "preresnet",
    "preresnet20",
    "vgg16",
    "vgg16bn",
    "wideresnet",
]


@pytest.mark.parametrize("name", REGISTRY)
def test_every_registry_model_traces_to_groups_that_keep_its_outputs(name):
    model, shape = registry_model(name)
    spec = permutation_spec(model, torch.randn(4, *shape), check=False)
    assert spec.groups, f"{name}: no permutation group found"
    for seed in range(3):  # the check itself: eval and train mode
        check_spec(spec, model, torch.randn(4, *shape), seed=seed)


@pytest.mark.parametrize(
    "build, groups",
    [
        (lambda: torchvision.models.resnet18(num_classes=10), 12),
        (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), None),
        (lambda: torchvision.models.vgg11_bn(num_classes=10), 10),
        (
            lambda: torchvision.models.googlenet(
                num_classes=10, aux_logits=False, init_weights=False
            ),
            57,
        ),
    ],
    ids=["resnet18", "mobilenet_v3_small", "vgg11_bn", "googlenet"],
)
def test_torchvision_models_trace_and_keep_their_outputs(build, groups):
    torch.manual_seed(0)
    spec = permutation_spec(build(), torch.randn(2, *CIFAR))
    # resnet18: 4 residual streams + 8 inner; vgg11_bn: 8 convolutions + 2 hidden Linear, the
    # first of which reads the 7 x 7 adaptive pool of a 1 x 1 map (each channel 49 times)
    assert groups is None or len(spec.groups) == groups


def test_a_residual_stream_is_one_group():
    """preresnet20: 3 streams (one per stage, through every addition) + 9 inner groups."""
    model, shape = registry_model("preresnet20")
    spec = permutation_spec(model, torch.randn(2, *shape))
    assert len(spec.groups) == 12
    stream = next(g for g, e in spec.groups.items() if any(t == "conv1.weight" for t, *_ in e))
    members = {t for t, *_ in spec.groups[stream]}
    assert {"layer1.0.conv2.weight", "layer1.1.conv2.weight", "layer1.2.conv2.weight"} <= members


def test_tracing_leaves_the_network_untouched_and_takes_any_float_input():
    model, shape = registry_model("preresnet20")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    permutation_spec(model.double(), torch.randn(2, *shape))  # float32 input, float64 net
    assert model.training
    assert all(torch.equal(v, before[k].double() if v.is_floating_point() else before[k])
               for k, v in model.state_dict().items())  # fmt: skip


def test_batchnorm_buffers_are_permuted_but_never_num_batches_tracked():
    model, shape = registry_model("preresnet20")
    spec = permutation_spec(model, torch.randn(2, *shape))
    tensors = {t for e in spec.groups.values() for t, *_ in e}
    assert any(t.endswith("running_mean") for t in tensors)
    assert not any(t.endswith("num_batches_tracked") for t in tensors)
    assert set(spec.buffers) >= {t for t in tensors if t.endswith(("running_mean", "running_var"))}


def test_every_axis_of_size_above_one_is_in_a_group_or_listed_fixed():
    model, shape = registry_model("preresnet20")
    spec = permutation_spec(model, torch.randn(2, *shape))
    grouped = {(t, a) for e in spec.groups.values() for t, a, *_ in e}
    fixed = set(spec.fixed)
    assert not grouped & fixed
    for name, value in model.state_dict().items():
        for axis, size in enumerate(value.shape):
            if size > 1 and not name.endswith("num_batches_tracked"):
                assert (name, axis) in grouped | fixed, (name, axis)


def test_flatten_into_a_linear_repeats_the_channel_over_positions():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    spec = permutation_spec(net, torch.randn(2, *DIGITS))
    (entries,) = spec.groups.values()
    assert ("3.weight", 1, 36, 0) in entries and spec.sizes[next(iter(spec.groups))] == 4


def test_a_grouped_convolution_fixes_its_axes_and_a_depthwise_one_passes_them():
    grouped = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2))
    assert permutation_spec(grouped, torch.randn(2, *DIGITS)).groups == {}
    depthwise = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 2, 1))
    (entries,) = permutation_spec(depthwise, torch.randn(2, *DIGITS)).groups.values()
    assert ("1.weight", 0, 1, 0) in entries and ("2.weight", 1, 1, 0) in entries


class Concatenating(nn.Module):
    """Two branches concatenated along channels, normalised together, then concatenated with
    the input (a fixed slice) and read by one convolution: DenseNet's and U-Net's pattern."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(11, 5, 3)
        self.fc = nn.Linear(5 * 6 * 6, 3)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        y = torch.cat([torch.relu(self.bn(y)), x], 1)
        return self.fc(torch.flatten(torch.relu(self.c(y)), 1))


def test_a_concatenation_maps_each_branch_to_its_slice():
    torch.manual_seed(0)
    net = Concatenating()
    spec = permutation_spec(net, torch.randn(4, *DIGITS))  # checked by the function
    assert sorted(spec.sizes.values()) == [4, 5, 6]
    ga = next(g for g, e in spec.groups.items() if ("a.weight", 0, 1, 0) in e)
    gb = next(g for g, e in spec.groups.items() if ("b.weight", 0, 1, 0) in e)
    assert {("bn.weight", 0, 1, 0), ("bn.running_var", 0, 1, 0), ("c.weight", 1, 1, 0)} <= set(
        spec.groups[ga]
    )
    assert {("bn.bias", 0, 1, 6), ("c.weight", 1, 1, 6)} <= set(spec.groups[gb])
    assert ("c.weight", 1) not in spec.fixed  # partly grouped, the input's slice unpermuted
    for seed in range(5):
        p = spec.random_permutations(torch.Generator().manual_seed(seed))
        permuted = apply_permutation(spec, net.state_dict(), p)
        _, match = weight_matching(net, net, permuted, spec=spec)
        assert all(torch.equal(match.perms[g], inverse(p[g])) for g in p)
    _, match = activation_matching(net, net, permuted, torch.randn(256, *DIGITS), spec=spec)
    assert all(torch.equal(match.perms[g], inverse(p[g])) for g in p)


def test_a_hand_written_slice_is_checked_against_its_axis():
    net = Concatenating()
    state = net.state_dict()
    spec = PermutationSpec.from_dict(
        {"b": [("b.weight", 0), ("b.bias", 0), ("bn.weight", 0, 1, 6), ("c.weight", 1, 1, 6)]},
        state,
    )
    assert spec.sizes == {"b": 4} and ("c.weight", 1, 1, 6) in spec.groups["b"]
    with pytest.raises(SpecError, match="does not fit"):
        PermutationSpec.from_dict({"b": [("b.weight", 0), ("c.weight", 1, 1, 8)]}, state)
    with pytest.raises(SpecError, match="only slices"):
        PermutationSpec.from_dict({"b": [("c.weight", 1, 1, 6)]}, state)


def test_a_branch_concatenated_twice_is_fixed():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Conv2d(1, 4, 3), nn.Conv2d(8, 2, 3)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.c(torch.cat([y, y], 1)).mean((2, 3))

    assert permutation_spec(Twice(), torch.randn(2, *DIGITS)).groups == {}


def test_an_unknown_op_is_one_error_naming_it():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.fft.fft(self.fc(x)).real

    with pytest.raises(SpecError, match="fft"):
        permutation_spec(Odd(), torch.randn(2, 4))


def test_a_hand_written_spec_permutes_like_the_traced_one():
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    hand = PermutationSpec.from_dict(
        {"hidden": [("0.weight", 0), ("0.bias", 0), ("2.weight", 1)]}, net.state_dict()
    )
    check_spec(hand, net, torch.randn(4, 3))
    wrong = PermutationSpec.from_dict(
        {"hidden": [("0.weight", 0), ("0.bias", 0)]}, net.state_dict()
    )
    with pytest.raises(SpecError, match="change"):
        check_spec(wrong, net, torch.randn(4, 3))


# --------------------------------------------------------------------------- weight matching


def recovers(model, shape, seeds):
    spec = permutation_spec(model, torch.randn(2, *shape))
    for seed in seeds:
        p = spec.random_permutations(torch.Generator().manual_seed(seed))
        permuted = apply_permutation(spec, model.state_dict(), p)
        aligned, match = weight_matching(model, model.state_dict(), permuted, spec=spec)
        assert all(torch.equal(match.perms[g], inverse(p[g])) for g in p), (type(model), seed)
        assert all(torch.equal(aligned[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["mlp", "convfc", "preresnet20"])
def test_weight_matching_recovers_a_known_permutation_exactly_over_20_seeds(name):
    model, shape = registry_model(name)
    recovers(model, shape, range(20))


def test_weight_matching_recovers_a_known_permutation_on_vgg16bn_and_resnet18():
    """Two seeds each here (a full-width VGG16-BN takes ~6 s per match on 2 cores)."""
    model, shape = registry_model("vgg16bn")
    recovers(model, shape, range(2))
    torch.manual_seed(0)
    recovers(torchvision.models.resnet18(num_classes=10), CIFAR, range(2))


def test_matching_a_network_with_itself_is_the_identity():
    model, shape = registry_model("preresnet20")
    _, match = weight_matching(model, model, model, example_input=torch.randn(2, *shape))
    assert all(torch.equal(p, torch.arange(len(p))) for p in match.perms.values())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), restarts=st.integers(1, 3))
def test_the_objective_never_decreases_over_sweeps(seed, restarts):
    torch.manual_seed(seed)
    a = mc.build_model("mlp", num_classes=10, input_shape=DIGITS, hidden=[16, 16])
    b = mc.build_model("mlp", num_classes=10, input_shape=DIGITS, hidden=[16, 16])
    _, match = weight_matching(
        a, a, b, example_input=torch.randn(2, *DIGITS), restarts=restarts, seed=seed
    )
    assert all(y >= x - 1e-9 for x, y in zip(match.history, match.history[1:], strict=False))
    assert match.objective == max(r["objective"] for r in match.runs)


def test_the_aligned_network_computes_the_same_function_and_the_line_to_it_is_flat():
    data = mc.load_dataset("digits")
    torch.manual_seed(1)
    a = mc.build_model("mlp", num_classes=10, input_shape=data.input_shape, hidden=[32])
    mc.train_endpoint(a, data, mc.TrainConfig(epochs=2, seed=1, progress=False))
    spec = permutation_spec(a, data.train_x[:4])
    b_state = apply_permutation(
        spec, a.state_dict(), spec.random_permutations(torch.Generator().manual_seed(3))
    )
    b = mc.build_model("mlp", num_classes=10, input_shape=data.input_shape, hidden=[32])
    b.load_state_dict(b_state)
    aligned, _ = weight_matching(a, a, b, spec=spec)
    c = mc.build_model("mlp", num_classes=10, input_shape=data.input_shape, hidden=[32])
    c.load_state_dict(aligned)
    x = data.test_x[:64]
    assert torch.allclose(b.eval()(x), c.eval()(x), atol=1e-5)
    before = mc.evaluate_path(mc.Line(a, a, b), data, ts=5, progress=False)
    after = mc.evaluate_path(mc.Line(a, a, c), data, ts=5, progress=False)
    assert after.barrier("test_error") == 0 and before.barrier("test_error") > 0


def test_weight_matching_without_groups_says_how_to_give_them():
    model, _ = registry_model("mlp")
    with pytest.raises(ValueError, match="example_input"):
        weight_matching(model, model, model)


# --------------------------------------------------------------------------- activation matching


def trained(name, data, **kw):
    torch.manual_seed(1)
    net = mc.build_model(name, num_classes=10, input_shape=data.input_shape, **kw)
    mc.train_endpoint(net, data, mc.TrainConfig(epochs=2, seed=1, progress=False))
    return net.eval()


def test_activation_matching_recovers_a_known_permutation_on_a_residual_net(digits):
    net = trained("preresnet", digits, depth=8)
    spec = permutation_spec(net, digits.train_x[:4])
    p = spec.random_permutations(torch.Generator().manual_seed(0))
    permuted = apply_permutation(spec, net.state_dict(), p)
    aligned, match = activation_matching(net, net, permuted, digits, spec=spec)
    assert all(torch.equal(match.perms[g], inverse(p[g])) for g in p)
    assert all(torch.equal(aligned[k], v) for k, v in net.state_dict().items())


def test_activation_matching_recovers_every_live_unit_and_keeps_the_function(digits):
    """Dead ReLU units (never active on the data) correlate with nothing: any order of them
    is as good, and the aligned network computes the same function either way."""
    net = trained("mlp", digits, hidden=[64, 64])
    spec = permutation_spec(net, digits.train_x[:4])
    p = spec.random_permutations(torch.Generator().manual_seed(2))
    permuted = apply_permutation(spec, net.state_dict(), p)
    aligned, match = activation_matching(net, net, permuted, digits, spec=spec)
    x = digits.train_x
    hidden = {"net.1": net.net[:3](x), "net.3": net.net[:5](x)}  # the two ReLU outputs
    for group, perm in match.perms.items():
        live = hidden[group].std(0) > 0
        assert torch.equal(perm[live], inverse(p[group])[live]), group
    copy_ = mc.build_model("mlp", num_classes=10, input_shape=digits.input_shape, hidden=[64, 64])
    copy_.load_state_dict(aligned)
    assert torch.allclose(copy_.eval()(x), net(x), atol=1e-5)


def test_activation_matching_refuses_an_unknown_tap_point(digits):
    net = trained("mlp", digits, hidden=[16])
    with pytest.raises(ValueError, match="where must be one of"):
        activation_matching(net, net, net, digits, where="middle")


def test_merge_many_aligns_permuted_copies_onto_one_network():
    model, shape = registry_model("convfc")
    spec = permutation_spec(model, torch.randn(2, *shape))
    copies = [
        apply_permutation(
            spec, model.state_dict(), spec.random_permutations(torch.Generator().manual_seed(s))
        )
        for s in range(3)
    ]
    aligned, mean = merge_many(None, copies, spec=spec)
    for state in aligned[1:]:
        assert all(torch.equal(state[k], aligned[0][k]) for k in state)
    assert all(torch.allclose(mean[k], aligned[0][k]) for k in mean)
    x = torch.randn(8, *shape)
    for original, state in zip(copies, aligned, strict=True):
        a, b = (
            mc.build_model(
                "convfc",
                num_classes=10,
                input_shape=shape,
                widths=[8, 16, 16],
                hidden=32,
                pool_padding=1,
            )
            for _ in range(2)
        )
        a.load_state_dict(original)
        b.load_state_dict(state)
        assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


@pytest.mark.outcome
def test_alignment_cuts_a_narrow_mlps_test_error_barrier_at_least_five_fold(digits):
    """Two 3 x 64 MLPs on digits (20 epochs each): the line between them crosses a barrier of
    ~24 points; to w2 aligned by weight matching ~2 (benchmarks/bench_align_width.py has the
    widths, ConvFC and PreResNet). At 3 x 512 the unaligned barrier is only ~2.6 points."""
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = mc.build_model("mlp", num_classes=10, input_shape=digits.input_shape, hidden=[64] * 3)
        mc.train_endpoint(net, digits, mc.TrainConfig(epochs=20, seed=seed, progress=False))
        nets.append(net.eval())
    a, b = nets
    aligned, _ = weight_matching(a, a, b, restarts=4, example_input=digits.train_x[:4])
    end = copy.deepcopy(b)
    end.load_state_dict(aligned)
    before = mc.evaluate_path(mc.Line(a, a, b), digits, ts=11, progress=False)
    after = mc.evaluate_path(mc.Line(a, a, end), digits, ts=11, progress=False)
    assert before.barrier("test_error") > 10
    assert after.barrier("test_error") * 5 <= before.barrier("test_error")
    assert min(after.test_error) <= max(before.test_error)
