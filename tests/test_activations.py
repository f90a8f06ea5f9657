"""Activations of networks at weight points: layer choice, conv policies, streaming, BatchNorm."""

import pytest
import torch
from conftest import TinyNet
from torch import nn

from modeconn.curves.weights import WeightSpace
from modeconn.models import build_model
from modeconn.similarity.activations import (
    collect_activations,
    features,
    network_at,
    select_layers,
    stream_activations,
)
from modeconn.similarity.measures import linear_cka, svcca


def _convfc():
    torch.manual_seed(0)
    return build_model("convfc", num_classes=10, input_shape=(1, 8, 8), widths=[4, 8, 8],
                       hidden=16, pool_padding=1)  # fmt: skip


def test_blocks_are_the_activations_and_the_output_of_a_plain_network():
    assert select_layers(_convfc()) == [
        "conv_part.1", "conv_part.4", "conv_part.7", "fc_part.1", "fc_part.3", "output",
    ]  # fmt: skip


def test_blocks_of_a_resnet_are_its_residual_blocks():
    net = build_model("preresnet20", num_classes=10, input_shape=(3, 32, 32))
    names = select_layers(net)
    assert names[:3] == ["layer1.0", "layer1.1", "layer1.2"]
    assert names[-1] == "output" and len(names) == 10


def test_layers_by_type_name_and_unknown_names_say_what_exists():
    net = _convfc()
    assert select_layers(net, "Conv2d") == ["conv_part.0", "conv_part.3", "conv_part.6"]
    assert select_layers(net, [nn.Linear, "output"])[-1] == "output"
    with pytest.raises(ValueError, match="conv_part"):
        select_layers(net, "conv9")


def test_conv_policies_give_their_documented_shapes():
    out = torch.randn(5, 3, 4, 4)
    assert features(out, "flatten").shape == (5, 48)
    assert features(out, "positions").shape == (80, 3)
    assert features(out, "avgpool").shape == (5, 3)
    assert features(out, "dft").shape == (5, 96)  # real and imaginary parts
    assert features(out, "dft", dft_frequencies=1).shape == (5, 2 * 3 * 3 * 3)
    torch.testing.assert_close(features(out, "positions")[:16, 0], out[0, 0].flatten())


def test_the_full_dft_is_an_isometry_of_flatten_and_the_low_pass_is_not():
    x = torch.randn(60, 1, 8, 8)
    net = _convfc()
    kw = dict(layers="conv_part.1")
    flat = collect_activations(net, x, **kw).layers["conv_part.1"]
    dft = collect_activations(net, x, policy="dft", **kw).layers["conv_part.1"]
    low = collect_activations(net, x, policy="dft", dft_frequencies=1, **kw).layers["conv_part.1"]
    torch.testing.assert_close(dft @ dft.T, flat @ flat.T, rtol=1e-4, atol=1e-3)
    other = torch.randn(60, 7)
    assert linear_cka(dft, other) == pytest.approx(linear_cka(flat, other), abs=1e-6)
    assert linear_cka(low, other) != pytest.approx(linear_cka(flat, other), abs=1e-4)


def test_streamed_batches_concatenate_to_the_collected_matrices():
    x = torch.randn(50, 1, 8, 8)
    net = _convfc()
    whole = collect_activations(net, x, batch_size=512).layers
    parts = list(stream_activations(net, x, batch_size=16))
    assert len(parts) == 4
    for name, value in whole.items():
        torch.testing.assert_close(torch.cat([p[name] for p in parts]), value)
    torch.testing.assert_close(whole["output"], net(x))


def test_activations_at_a_flat_point_recompute_batchnorm_as_the_curve_does(bezier, data):
    x = data.test_x[:40]
    ours = network_at(bezier.model, bezier.point(0.3).detach(), data)
    reference = bezier.network_at(0.3, data)
    got = collect_activations(ours, x, ["bn", "output"]).layers
    want = collect_activations(reference, x, ["bn", "output"]).layers
    for name in got:
        torch.testing.assert_close(got[name], want[name])


def test_a_state_dict_point_is_loaded_into_a_copy():
    a, b = TinyNet(), TinyNet()
    state = b.state_dict()
    moved = network_at(a, state, torch.randn(30, 1, 8, 8))
    space = WeightSpace.from_module(a)
    torch.testing.assert_close(space.flatten(moved), space.flatten(b))
    assert not torch.equal(space.flatten(a), space.flatten(b))  # the original is untouched


def test_a_module_run_twice_per_forward_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.act(self.fc(self.act(x)))

    with pytest.raises(ValueError, match="more than once"):
        collect_activations(Twice(), torch.randn(3, 4), "act")


def test_positions_give_channels_as_features_for_cca():
    net = _convfc()
    x = torch.randn(40, 1, 8, 8)
    reps = collect_activations(net, x, ["conv_part.0", "conv_part.1"], policy="positions").layers
    assert reps["conv_part.1"].shape == (40 * 64, 4)
    # positions as samples: enough samples for CCA of these narrow layers
    assert svcca(reps["conv_part.1"], reps["conv_part.0"]) < 1.0 - 1e-3
    assert svcca(reps["conv_part.1"], reps["conv_part.1"]) == pytest.approx(1.0, abs=1e-9)


def test_interleaved_activation_streams_leave_gradients_on():
    from modeconn.similarity.activations import stream_activations

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()) for _ in range(2)]
    x = torch.randn(10, 4)
    for a, b in zip(*(stream_activations(n, x, ["1"], batch_size=4) for n in nets), strict=True):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert a["1"].shape == b["1"].shape
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
