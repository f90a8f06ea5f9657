"""Similarity analyses (networks, curve, training, classes), their figures and the app."""

import numpy as np
import pytest
import torch
from conftest import compose_app
from test_interrupt import write_curve_checkpoint

from modeconn.apps import similarity as similarity_app
from modeconn.apps import train
from modeconn.models import build_model
from modeconn.plotting import (
    plot_along_curve,
    plot_class_wise,
    plot_layer_similarity,
    plot_over_training,
)
from modeconn.similarity.analyses import (
    SimilarityResult,
    along_curve,
    class_wise,
    compare_networks,
    over_training,
    training_snapshots,
)
from modeconn.training import TrainConfig


def _small_convfc(seed: int = 1):
    torch.manual_seed(seed)
    return build_model("convfc", num_classes=10, input_shape=(1, 8, 8), widths=[8, 16, 32],
                       hidden=64, pool_padding=1)  # fmt: skip


@pytest.fixture(scope="module")
def trained(data):
    """A small ConvFC trained 10 epochs on 300 digits, with its snapshots at 0/35/75/100 %."""
    from modeconn.data.catalogue import load_dataset

    digits = load_dataset("digits")
    model = _small_convfc()
    config = TrainConfig(epochs=10, batch_size=64, progress=False, seed=1)
    states, fractions = training_snapshots(model, digits.subset(train=600), config)
    return model, states, fractions, digits


# Outcomes of training below: each has room that no last-bit difference between CPUs or kernel
# sets can cross (measured here; 10 epochs on 600 digits are not chaotic: other kernel sets or
# the initial weights' last bits flipped move every similarity by < 1e-6).


# measured (baseline): shuffled pairs 0.004-0.034 against 0.5 (15x room)
@pytest.mark.outcome
def test_a_network_against_itself_is_one_on_the_diagonal(trained):
    model, _, _, digits = trained
    result = compare_networks(model, model, digits, samples=200, baseline=2)
    assert result.values.shape == (6, 6)
    np.testing.assert_allclose(np.diag(result.values), 1.0, atol=1e-9)
    assert (np.diag(result.baseline) < 0.5).all()  # shuffled pairs are far from it


def test_snapshots_are_taken_at_the_asked_fractions_of_training(trained):
    _, states, fractions, _ = trained
    assert fractions == [0.0, 0.4, 0.8, 1.0]  # round(f * 10) epochs of 10
    assert not torch.equal(states[0]["fc_part.0.weight"], states[-1]["fc_part.0.weight"])


# measured: at 40 % the first layer's similarity 0.982, the last hidden layer's 0.900: 5.6x
# further from its final self, a gap of 0.08
@pytest.mark.outcome
def test_over_training_shows_bottom_up_convergence_on_digits(trained):
    model, states, fractions, digits = trained
    result = over_training(model, states, digits, fractions)
    diagonal = np.array([np.diag(v) for v in result.values])  # (fraction, layer)
    names = list(result.layers)
    first, last_hidden = names.index("conv_part.1"), names.index("fc_part.3")
    # at 35 % (here 40 %) the layer nearest the input already resembles its final self more
    assert diagonal[1, first] > diagonal[1, last_hidden]
    np.testing.assert_allclose(diagonal[-1], 1.0, atol=1e-9)


def test_over_training_takes_flat_weight_points_as_well_as_state_dicts(trained):
    from modeconn.curves.weights import WeightSpace

    model, states, fractions, digits = trained
    space = WeightSpace.from_module(model)
    flat = [space.flatten(s) for s in states[-2:]]
    a = over_training(model, flat, digits, fractions[-2:], samples=100)
    b = over_training(model, states[-2:], digits, fractions[-2:], samples=100)
    np.testing.assert_allclose(a.values, b.values, atol=1e-9)


# measured: all 10 classes grow (by 0.43-0.77) against the asked 8 of 10
@pytest.mark.outcome
def test_class_wise_similarity_grows_towards_the_output(trained):
    model, _, _, digits = trained
    result = class_wise(model, digits, split="train")
    assert result.values.shape == (10, 5)
    assert list(result.columns) == [str(c) for c in range(10)]
    assert (result.values[:, -1] > result.values[:, 0]).mean() >= 0.8


def test_along_the_curve_its_ends_are_the_endpoints(bezier, data):
    result = along_curve(bezier, data, ts=[0.0, 0.5, 1.0], samples=80)
    assert result.values.shape == (2, 3, len(result.layers), 2)
    np.testing.assert_allclose(result.values[:, 0, :, 0], 1.0, atol=1e-9)  # phi(0) = w1
    np.testing.assert_allclose(result.values[:, -1, :, 1], 1.0, atol=1e-9)  # phi(1) = w2
    # the bend is off the line: at t=0.5 the curve and the line hold other representations
    assert not np.allclose(result.values[0, 1], result.values[1, 1], atol=1e-3)


def test_results_save_and_load_exactly(tmp_path, bezier, data):
    result = along_curve(bezier, data, ts=[0.0, 1.0], samples=40, line=False)
    result.save(tmp_path / "r")
    again = SimilarityResult.load(tmp_path / "r")
    assert again == result
    assert again.meta["policy"] == "flatten" and again.meta["measure"] == "linear_cka"


def test_figures_label_their_axes_and_carry_a_colour_bar(tmp_path, trained, bezier, data):
    model, states, fractions, digits = trained
    pair = compare_networks(model, model, digits, samples=100)
    fig = plot_layer_similarity(pair)
    ax, bar = fig.axes
    assert "input at the bottom" in ax.get_ylabel() and "layer of" in ax.get_xlabel()
    assert "linear CKA" in bar.get_ylabel()
    training = over_training(model, states, digits, fractions, samples=100)
    fig = plot_over_training(training)
    assert len(fig.axes) == 5 and fig.axes[1].get_title() == "40% of training"
    curve = along_curve(bezier, data, ts=[0.0, 0.5, 1.0], samples=60)
    labels = [line.get_label() for line in plot_along_curve(curve).axes[0].get_lines()]
    assert labels == ["curve vs w1", "curve vs w2", "line vs w1", "line vs w2"]
    classes = class_wise(model, digits, samples=300)
    assert "with the output" in plot_class_wise(classes).axes[0].get_ylabel()


QUICK = ["optim.epochs=1", "optim.batch_size=256", "progress=false"]


def test_similarity_app_compares_two_endpoints_and_writes_result_and_figure(tmp_path):
    eps = []
    for seed in (1, 2):
        ep = tmp_path / f"ep{seed}.pt"
        overrides = ["model=mlp", "model.args.hidden=[16,16]", *QUICK, f"seed={seed}"]
        train.run(compose_app("train", [*overrides, f"checkpoint={ep}"]))
        eps.append(ep)
    out = tmp_path / "out"
    cfg = compose_app(
        "similarity",
        [f"a={eps[0]}", f"b={eps[1]}", f"out={out}", "measure=svcca", "+args.keep=0.9",
         "samples=200", "progress=false"],
    )  # fmt: skip
    result = similarity_app.run(cfg)
    assert result.values.shape == (3, 3)
    assert result.meta["options"] == {"keep": 0.9} and result.meta["dataset"] == "digits"
    for suffix in (".npz", ".json", ".png"):
        assert (out / f"similarity-pair-svcca{suffix}").exists()
    cfg = compose_app(
        "similarity", ["analysis=classes", f"a={eps[0]}", f"out={out}", "progress=false"]
    )
    assert similarity_app.run(cfg).values.shape == (10, 2)  # two ReLUs, per class
    assert (out / "similarity-classes-linear_cka.png").exists()


def test_similarity_app_along_a_curve_and_over_training(tmp_path):
    write_curve_checkpoint(tmp_path / "c.pt")
    out = tmp_path / "out"
    cfg = compose_app(
        "similarity",
        ["analysis=curve", f"ckpt={tmp_path / 'c.pt'}", "points=3", f"out={out}",
         "samples=100", "progress=false"],
    )  # fmt: skip
    assert similarity_app.run(cfg).values.shape == (2, 3, 3, 2)
    assert (out / "similarity-curve-linear_cka.png").exists()
    cfg = compose_app(
        "similarity",
        ["analysis=training", "model=mlp", "model.args.hidden=[16]", "optim.epochs=4",
         f"out={out}", "samples=100", "progress=false"],
    )  # fmt: skip
    result = similarity_app.run(cfg)
    assert result.values.shape == (4, 2, 2)
    np.testing.assert_allclose(result.axis, [0.0, 0.25, 0.75, 1.0])
    assert (out / "similarity-training-linear_cka.png").exists()


def test_streamed_minibatch_cka_equals_the_collected_one_and_never_collects(trained, monkeypatch):
    import modeconn.similarity.analyses as reps

    model, states, fractions, digits = trained
    other = _small_convfc(seed=2)
    whole = compare_networks(model, other, digits, samples=300, measure="minibatch_cka",
                             options={"batch_size": 64}, stream=False)  # fmt: skip
    whole_t = over_training(model, states, digits, fractions, samples=300,
                            measure="minibatch_cka", stream=False)  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("a streamed analysis collected a whole activation matrix")

    monkeypatch.setattr(reps, "collect_activations", refuse)
    streamed = compare_networks(model, other, digits, samples=300, measure="minibatch_cka",
                                options={"batch_size": 64})  # fmt: skip
    np.testing.assert_allclose(streamed.values, whole.values, rtol=1e-9, atol=1e-12)
    assert streamed.meta["streamed"] is True
    streamed_t = over_training(model, states, digits, fractions, samples=300,
                               measure="minibatch_cka")  # fmt: skip
    np.testing.assert_allclose(streamed_t.values, whole_t.values, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="needs whole matrices"):
        compare_networks(model, other, digits, measure="linear_cka", stream=True)
