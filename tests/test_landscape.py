"""The landscape and critique apps, and how the critique measures disagreement."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_app
from test_interrupt import write_curve_checkpoint

from modeconn.apps import critique as critique_app
from modeconn.apps import landscape, train
from modeconn.engine.point import evaluate_point
from modeconn.io.checkpoints import load_curve
from modeconn.landscape.critique import Critique, disagreement, disagreement_table

QUICK = ["optim.epochs=1", "optim.batch_size=256", "progress=false"]


def _bowl(curvature: float, g: int = 41) -> SimpleNamespace:
    x = y = np.linspace(-1, 1, g)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return SimpleNamespace(x=x, y=y, train_loss=0.1 + curvature * (xx**2 + yy**2))


def test_disagreement_measures_the_rise_on_a_circle_and_orders_the_networks():
    surfaces = {
        ("flat", "a"): _bowl(1.0),
        ("sharp", "a"): _bowl(4.0),
        ("flat", "b"): _bowl(3.0),  # family b draws the "flat" network sharper
        ("sharp", "b"): _bowl(2.0),
    }
    table = disagreement(Critique(surfaces, ["flat", "sharp"], ["a", "b"]), radius=0.5)
    assert table["rows"][("flat", "a")]["rise@0.5"] == pytest.approx(0.25, rel=0.05)
    assert table["rows"][("flat", "a")]["centre"] == pytest.approx(0.1)
    assert table["orders"] == {"a": ["flat", "sharp"], "b": ["sharp", "flat"]}
    assert table["agree"] is False
    assert "disagree" in disagreement_table(table)


def test_landscape_app_draws_the_surface_around_an_endpoint(tmp_path):
    ep = tmp_path / "ep.pt"
    train.run(
        compose_app("train", ["model=mlp", "model.args.hidden=[16]", *QUICK, f"checkpoint={ep}"])
    )
    cfg = compose_app(
        "landscape",
        [f"ckpt={ep}", "grid=[5,3]", "span=0.5", f"out={tmp_path / 'out'}", "progress=false"],
    )
    result = landscape.run(cfg)
    assert result.train_loss.shape == (5, 3)
    assert (tmp_path / "out" / "landscape2d-filter.png").exists()
    assert (tmp_path / "out" / "landscape2d-filter.npz").exists()


def test_landscape_app_around_phi_t_of_a_curve_has_phi_t_at_its_centre(tmp_path):
    write_curve_checkpoint(tmp_path / "c.pt")
    overrides = [f"ckpt={tmp_path / 'c.pt'}", "t=0.25", "grid=3", "span=0.5", "progress=false"]
    result = landscape.run(compose_app("landscape", [*overrides, f"out={tmp_path / 'o'}"]))
    curve, ckpt = load_curve(tmp_path / "c.pt")
    from modeconn.data.catalogue import load_dataset

    ref = evaluate_point(curve.model, curve.weights(0.25), load_dataset("digits"))
    assert result.train_nll[1, 1] == pytest.approx(ref["train"].nll, rel=1e-6)


def test_landscape_app_draws_a_line_with_dims_1(tmp_path):
    write_curve_checkpoint(tmp_path / "c.pt")
    overrides = [f"ckpt={tmp_path / 'c.pt'}", "dims=1", "grid=7", "progress=false"]
    result = landscape.run(compose_app("landscape", [*overrides, f"out={tmp_path / 'o'}"]))
    assert result.train_loss.shape == (7,)
    assert (tmp_path / "o" / "landscape1d-filter-t0p5.png").exists()


def test_critique_app_writes_the_panel_figure_and_the_disagreement_table(tmp_path):
    overrides = [
        "norms=[none,batch]",
        "families=[filter,qr]",
        "width=4",
        "epochs=1",
        "grid=5",
        "progress=false",
        f"checkpoints={tmp_path / 'ck'}",
        f"out={tmp_path / 'out'}",
    ]
    torch.manual_seed(0)
    out = critique_app.run(compose_app("critique", overrides))
    table = out["tables"]["bn-recompute-seed0"]
    assert len(table["rows"]) == 4 and set(table["orders"]) == {"filter", "qr"}
    assert (tmp_path / "out" / "critique-bn-recompute-seed0.png").exists()
    assert (
        "flattest to sharpest" in (tmp_path / "out" / "critique-bn-recompute-seed0.md").read_text()
    )


def test_landscape_app_tangent_directions_follow_the_curve_at_phi_t(tmp_path):
    write_curve_checkpoint(tmp_path / "c.pt")
    overrides = [f"ckpt={tmp_path / 'c.pt'}", "t=0.5", "directions=tangent", "dims=1"]
    overrides += ["grid=3", "span=0.1", "progress=false", f"out={tmp_path / 'o'}"]
    result = landscape.run(compose_app("landscape", overrides))
    curve, _ = load_curve(tmp_path / "c.pt")
    from modeconn.data.catalogue import load_dataset

    data = load_dataset("digits")
    # x = +0.1 along dphi/dt is phi(0.6) to first order: nearer it than phi(0.5) is
    at = curve.point(0.5) + 0.1 * curve.tangent(0.5)
    ahead = evaluate_point(curve.model, curve.space.unflatten(at), data)["train"].nll
    assert result.train_nll[2] == pytest.approx(ahead, rel=1e-5)
    assert (tmp_path / "o" / "landscape1d-tangent-t0p5.npz").exists()


def test_landscape_app_refuses_tangent_directions_around_an_endpoint(tmp_path):
    ep = tmp_path / "ep.pt"
    train.run(
        compose_app("train", ["model=mlp", "model.args.hidden=[8]", *QUICK, f"checkpoint={ep}"])
    )
    cfg = compose_app("landscape", [f"ckpt={ep}", "directions=tangent", "progress=false"])
    with pytest.raises(ValueError, match="needs a curve checkpoint"):
        landscape.run(cfg)


def test_landscape_app_uses_the_configured_direction_scaling(tmp_path):
    write_curve_checkpoint(tmp_path / "c.pt")
    runs = {}
    for norm in ("filter", "layer"):
        overrides = [f"ckpt={tmp_path / 'c.pt'}", "dims=1", "grid=3", "progress=false"]
        overrides += [f"directions.norm={norm}", f"out={tmp_path / norm}"]
        runs[norm] = landscape.run(compose_app("landscape", overrides))
    assert runs["filter"].train_nll[0] != pytest.approx(runs["layer"].train_nll[0], rel=1e-4)


def test_landscape_app_reads_a_plain_state_dict_with_model_and_dataset_named(tmp_path):
    from modeconn.models import build_model

    torch.manual_seed(0)
    net = build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=[8])
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    overrides = [f"ckpt={tmp_path / 'plain.pt'}", "model=mlp", "model.args.hidden=[8]"]
    overrides += ["dataset=digits", "dims=1", "grid=3", "progress=false", f"out={tmp_path / 'o'}"]
    result = landscape.run(compose_app("landscape", overrides))
    from modeconn.data.catalogue import load_dataset

    ref = evaluate_point(net, dict(net.named_parameters()), load_dataset("digits"))
    assert result.train_nll[1] == pytest.approx(ref["train"].nll, rel=1e-6)
