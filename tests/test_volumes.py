"""Mode-connecting volumes (issue 23, parts 3-4): SPRO and complexes trained by `fit`, resume,
the simplex ensemble, the faces' heat maps, the `simplex` app and its messages."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, compose_app
from torch import nn

import modeconn as mc
from modeconn.apps import simplex as simplex_app
from modeconn.apps import train
from modeconn.apps.common import run_app
from modeconn.curves import Simplex
from modeconn.ensembles import expected_calibration_error
from modeconn.io.checkpoints import load_checkpoint
from modeconn.plotting import plot_simplex, triangle_xy
from modeconn.plotting.simplex import CORNERS
from modeconn.volumes import (
    SimplexConfig,
    SimplexEnsembleResult,
    SimplexPointsResult,
    default_triples,
    evaluate_faces,
    fge_cycles,
    simplex_ensemble,
    stage_checkpoint,
    train_simplex,
    vertex_names,
)

FAST = dict(epochs_per_vertex=1, batch_size=100, samples=2, progress=False)


@pytest.fixture(scope="module")
def small():
    return mc.load_dataset("digits").subset(train=200, test=100)


def _mlp(seed: int, data) -> nn.Module:
    torch.manual_seed(seed)
    return mc.build_model("mlp", num_classes=10, input_shape=data.input_shape, hidden=[16])


@pytest.fixture(scope="module")
def base(small):
    net = _mlp(1, small)
    mc.train_endpoint(net, small, mc.TrainConfig(epochs=2, batch_size=100, progress=False))
    return net


def _tiny(seed: int) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


# -- training ---------------------------------------------------------------------------------


def test_a_trained_vertex_moves_while_the_frozen_ones_stay_bitwise(base, small, tmp_path):
    path = tmp_path / "s.pt"
    first = train_simplex(base, [base], small, SimplexConfig(vertices=2, **FAST), checkpoint=path)
    after_one = {n: t.clone() for n, t in first.simplex.vertex(1).items()}
    grown = train_simplex(base, [base], small, SimplexConfig(vertices=3, **FAST), checkpoint=path)
    s = grown.simplex
    assert grown.stages[0]["resumed_from_epoch"] == 1  # the finished vertex is not retrained
    assert all(torch.equal(s.vertex(0)[n], p) for n, p in base.named_parameters())
    assert all(torch.equal(s.vertex(1)[n], t) for n, t in after_one.items())
    centroid = {n: (s.vertex(0)[n] + after_one[n]) / 2 for n in after_one}
    assert all(not torch.allclose(s.vertex(2)[n], centroid[n]) for n in centroid)
    assert s.fixed == (True, True, False) and math.isfinite(s.log_volume().item())


def test_resuming_an_interrupted_vertex_equals_an_uninterrupted_run(small, tmp_path):
    config = SimplexConfig(vertices=3, **{**FAST, "epochs_per_vertex": 2}, save_every=1)
    net = _tiny(0)  # BatchNorm and dropout: buffers and the RNG go through the checkpoint
    whole = train_simplex(net, [net], small, config, checkpoint=tmp_path / "a.pt")

    class Stop(Exception):
        pass

    calls = []

    def stop_in_the_second_vertex(epoch, record):
        calls.append(epoch)
        if len(calls) == 4:  # vertex 2, epoch 2: its epoch 1 is on disk
            raise Stop

    with pytest.raises(Stop):
        train_simplex(
            net, [net], small, config, checkpoint=tmp_path / "b.pt",
            callbacks=[stop_in_the_second_vertex],
        )  # fmt: skip
    resumed = train_simplex(net, [net], small, config, checkpoint=tmp_path / "b.pt")
    assert [s["resumed_from_epoch"] for s in resumed.stages] == [2, 1]
    a, b = whole.simplex.stacked(), resumed.simplex.stacked()
    assert all(torch.equal(a[n], b[n]) for n in a)

    def steady(stages):
        return [
            {k: v for k, v in r.items() if k != "seconds"} for s in stages for r in s["history"]
        ]

    assert steady(whole.stages) == steady(resumed.stages)


def test_every_vertex_stage_records_its_volume_weight_in_its_checkpoint(base, small, tmp_path):
    config = SimplexConfig(vertices=3, lam=0.05, **FAST)
    run = train_simplex(base, [base], small, config, checkpoint=tmp_path / "s.pt")
    for vertex in (1, 2):
        ckpt = load_checkpoint(stage_checkpoint(tmp_path / "s.pt", vertex), expect="simplex")
        assert ckpt.finished and ckpt.meta["simplex"]["lam"] == 0.05
        assert ckpt.meta["simplex"]["vertex"] == vertex
    assert run.meta["lam"] == [0.05, 0.05] and run.epochs == 2
    assert {"data_loss", "log_volume", "train_loss"} <= set(run.stages[1]["history"][0])


def test_the_reference_normalisation_gives_a_tiny_recorded_weight(base, small):
    run = train_simplex(base, [base], small, SimplexConfig(vertices=2, reference=True, **FAST))
    assert 1e-8 <= run.stages[0]["lam"] < 1e-5 and run.meta["config"]["reference"]


def test_a_complex_joins_the_networks_through_shared_connectors(small):
    nets = [_mlp(s, small) for s in (1, 2, 3)]
    run = train_simplex(nets[0], nets, small, SimplexConfig(connectors=2, **FAST))
    complex_ = run.simplex
    assert complex_.simplexes == ((0, 3, 4), (1, 3, 4), (2, 3, 4))
    assert vertex_names(complex_) == ["w1", "w2", "w3", "c1", "c2"]
    for i, net in enumerate(nets):
        assert all(torch.equal(complex_.vertex(i)[n], p) for n, p in net.named_parameters())
    assert bool(torch.isfinite(complex_.log_volume()).all())
    assert default_triples(complex_) == [(0, 3, 4), (1, 3, 4), (2, 3, 4)]


# -- evaluation -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def triangle():
    """An untrained 2-simplex of TinyNets (BatchNorm: recomputed at every point)."""
    return Simplex(_tiny(0), [_tiny(i) for i in range(3)])


def test_the_ensemble_probabilities_are_the_mean_of_the_members(triangle, small):
    result = simplex_ensemble(triangle, small, 4, seed=3, progress=False)
    points = triangle.sample_coefficients(4, torch.Generator().manual_seed(3))
    assert np.array_equal(result.coefficients, points.numpy())
    probs = [F.softmax(triangle.network_at(c, small)(small.test_x), 1) for c in points]
    mean = torch.stack(probs).mean(0).detach()
    nll = F.nll_loss(mean.log(), small.test_y).item()
    error = 100.0 * (mean.argmax(1) != small.test_y).double().mean().item()
    assert math.isclose(result.ensemble_nll[-1], nll, rel_tol=1e-5)
    assert result.ensemble_error[-1] == pytest.approx(error)
    ece = expected_calibration_error(mean.log(), small.test_y)
    assert result.scores()["ece"] == pytest.approx(ece, rel=1e-4, abs=1e-6)


def test_the_ensemble_result_saves_and_loads(triangle, small, tmp_path):
    result = simplex_ensemble(triangle, small, 2, progress=False)
    result.save(tmp_path / "e")
    assert SimplexEnsembleResult.load(tmp_path / "e") == result


def test_the_triangle_heat_maps_corners_are_the_vertex_networks_losses(triangle, small):
    faces = evaluate_faces(triangle, small, resolution=3, progress=False)
    assert faces.triples.tolist() == [[0, 1, 2]] and len(faces.point) == 10
    xy = triangle_xy(faces.coefficients)
    for i in range(3):
        alone = mc.evaluate_point(triangle.model, triangle.vertex(i), small)
        corner = np.flatnonzero(np.all(np.isclose(xy, CORNERS[i]), 1))
        assert faces.train_loss[corner].tolist() == [alone["train"].nll]
        assert faces.at_vertex(i, "test_error") == alone["test"].error
    figure = plot_simplex(faces)
    assert len([ax for ax in figure.axes if ax.get_label() != "<colorbar>"]) == 2


def test_a_larger_simplex_is_drawn_as_slices_through_vertex_triples(small, tmp_path):
    simplex = Simplex(_mlp(0, small), [_mlp(i, small) for i in range(4)])
    faces = evaluate_faces(simplex, small, resolution=1, progress=False)
    assert faces.triples.tolist() == [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]
    figure = plot_simplex(faces, metrics=["train_loss"])
    assert len([ax for ax in figure.axes if ax.get_label() != "<colorbar>"]) == 4
    faces.save(tmp_path / "f")
    assert SimplexPointsResult.load(tmp_path / "f") == faces


def test_ece_is_the_binned_gap_between_confidence_and_accuracy():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right): bins (0.8, 0.9] and (0.6, 0.7]
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    y = torch.tensor([0, 1, 1])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
    assert expected_calibration_error(p.log(), y, bins=10) == pytest.approx(expected)


def test_fge_at_equal_epochs_never_trains_longer():
    for epochs, cycle in ((20, 2), (20, 4), (3, 2), (1, 2)):
        cycles = fge_cycles(epochs, cycle)
        assert (cycles - 1) * cycle + cycle // 2 <= epochs < cycles * cycle + cycle // 2


# -- the app ----------------------------------------------------------------------------------

ARCH = ["model=mlp", "model.args.hidden=[16]", "dataset=digits"]


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("simplex")
    paths = [tmp / f"seed{s}.pt" for s in (1, 2)]
    for seed, path in zip((1, 2), paths, strict=True):
        overrides = [*ARCH, "optim.epochs=1", "optim.batch_size=256", "progress=false"]
        train.run(compose_app("train", [*overrides, f"seed={seed}", f"checkpoint={path}"]))
    return tmp, paths


def _app(tmp, paths, *extra):
    return compose_app(
        "simplex",
        [f"start={paths[0]}", f"compare=[{paths[0]},{paths[1]}]", f"out={tmp / 'out'}"]
        + [f"checkpoint={tmp / 'ck' / 's.pt'}", "simplex=digits", "simplex.vertices=3"]
        + ["simplex.epochs_per_vertex=1", "simplex.batch_size=512", "simplex.samples=2"]
        + ["ensemble.samples=3", "faces.resolution=2", "progress=false", *extra],
    )


def test_the_app_trains_evaluates_and_writes_its_report(endpoints):
    tmp, paths = endpoints
    out = simplex_app.run(_app(tmp, paths))
    report = json.loads((tmp / "out" / "simplex.json").read_text())
    assert set(report["ensembles"]) == {"simplex", "deep ensemble", "fge"}
    assert report["ensembles"]["deep ensemble"]["members"] == 2
    assert report["ensembles"]["fge"]["epochs"] <= report["epochs"] == 2
    assert {"accuracy", "nll", "ece"} <= set(report["ensembles"]["simplex"])
    assert report["vertices"] == ["w0", "v1", "v2"]
    for name in ("ensemble.npz", "faces.npz", "simplex.png"):
        assert (tmp / "out" / name).exists()
    assert out["faces"].at_vertex(0, "train_loss") > 0
    again = simplex_app.run(_app(tmp, paths))  # finished: every vertex resumed, not retrained
    assert [s["resumed_from_epoch"] for s in again["run"].stages] == [1, 1]
    with pytest.raises(SystemExit, match="finished result of another configuration"):
        run_app(simplex_app.run, _app(tmp, paths, "ensemble.samples=4"))


def test_the_app_refuses_a_start_and_networks_at_once_in_one_line(endpoints):
    tmp, paths = endpoints
    with pytest.raises(SystemExit) as stop:
        run_app(simplex_app.run, _app(tmp, paths, f"networks=[{paths[0]},{paths[1]}]"))
    message = str(stop.value)
    assert message.startswith("modeconn: error: pass start=") and "not both" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "config,match",
    [
        (dict(vertices=1), "vertices must be an int >= 2"),
        (dict(samples=0), "samples must be an int >= 1"),
        (dict(lam=-1.0), "lam must be a finite number >= 0"),
        (dict(lr=-0.1), "lr must be >= 0"),
    ],
)
def test_bad_settings_are_refused_by_name(config, match):
    with pytest.raises(ValueError, match=match):
        SimplexConfig(**config)


def test_a_single_network_not_in_a_list_is_refused_with_the_fix(base, small):
    with pytest.raises(ValueError, match=r"\[net\] grows a simplex"):
        train_simplex(base, base, small)


def test_resuming_with_another_volume_weight_is_refused(base, small, tmp_path):
    train_simplex(base, [base], small, SimplexConfig(vertices=2, **FAST), checkpoint=tmp_path / "s")
    with pytest.raises(ValueError, match=r"cannot resume .* differs in lam"):
        config = SimplexConfig(vertices=2, lam=0.5, **FAST)
        train_simplex(base, [base], small, config, checkpoint=tmp_path / "s")


def test_the_volumes_api_is_exported_from_modeconn():
    assert mc.train_simplex is train_simplex and mc.simplex_ensemble is simplex_ensemble
    assert {"train_simplex", "SimplexConfig", "evaluate_faces"} <= set(mc.__all__)
