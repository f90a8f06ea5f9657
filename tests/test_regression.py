"""The regression task: toy1d, MSE and Gaussian NLL metrics, regression training, ensembles,
result files and figures, and the acceptance numbers of the blog's figure 7 on toy1d."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from modeconn import Bezier, Line, TrainConfig, build_model, load_dataset
from modeconn.curves.weights import WeightSpace
from modeconn.data.tasks import metric_names, mixture_nll
from modeconn.engine import node_metrics
from modeconn.engine.execution import fixed_threads
from modeconn.engine.point import Metrics, RegressionMetrics, evaluate_point
from modeconn.ensembles.along_curve import EnsembleResult, ensembles_along_curve
from modeconn.ensembles.members import Member, together
from modeconn.path import PathResult, evaluate_path
from modeconn.plane import PlaneResult, evaluate_plane_through_curve
from modeconn.plotting import plot_ensembles, plot_functions, plot_path, plot_plane
from modeconn.plotting.functions import function_values
from modeconn.training import train_curve, train_endpoint

HIDDEN = [50, 50]
WD = 1e-4


def mlp() -> torch.nn.Module:
    return build_model("mlp", num_classes=1, input_shape=(1,), hidden=HIDDEN)


def config(seed: int, epochs: int = 300) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=0.05, batch_size=20, wd=WD, seed=seed, progress=False)


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toy1d")


@pytest.fixture(scope="module")
def trained(toy):
    """Two endpoints (seeds 1, 2) and a quadratic Bezier curve between them (~2 s, on one
    thread: tensors this small run fastest there; the count is restored afterwards)."""
    with fixed_threads(1):
        ends = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            net = mlp()
            train_endpoint(net, toy, config(seed))
            ends.append(net)
        torch.manual_seed(3)
        curve = Bezier(mlp(), *ends, degree=2)
        train_curve(curve, toy, config(3, epochs=600))
    return curve


@pytest.fixture(scope="module")
def paths(trained, toy):
    line = Line(mlp(), *(trained.space.unflatten(p) for p in (trained.start, trained.end)))
    curve_path = evaluate_path(trained, toy, ts=11, wd=WD, progress=False)
    line_path = evaluate_path(line, toy, ts=11, wd=WD, progress=False)
    return curve_path, line_path


# --------------------------------------------------------------------------- data, model


def test_toy1d_is_a_seeded_regression_set_with_a_gap():
    data, again = load_dataset("toy1d"), load_dataset("toy1d")
    x = data.train_x.ravel()
    assert data.task == "regression" and data.input_shape == (1,) and data.outputs == 1
    assert torch.equal(data.train_y, again.train_y)
    assert bool(((x.abs() >= 0.5) & (x.abs() <= 1)).all())
    assert 0.4 < float((x > 0).float().mean()) < 0.6


def test_every_other_dataset_is_classification():
    assert load_dataset("spiral").task == "classification"
    assert load_dataset("digits").task == "classification"


def test_mlp_regressor_outputs_one_value_per_sample():
    assert mlp()(torch.zeros(7, 1)).shape == (7, 1)


# --------------------------------------------------------------------------- metrics


def test_regression_point_reports_mse_against_a_direct_computation(trained, toy):
    res = evaluate_point(trained.model, trained.space.unflatten(trained.start), toy)
    with torch.no_grad():
        net = trained.network_at(0.0)
        direct = ((net(toy.test_x).double() - toy.test_y.double()) ** 2).mean().item()
    assert isinstance(res["test"], RegressionMetrics)
    assert res["test"].mse == pytest.approx(direct, rel=1e-6)


def test_fitted_noise_nll_equals_the_maximum_likelihood_gaussian():
    res = {"train": RegressionMetrics(0.04, 10), "test": RegressionMetrics(0.09, 10)}
    node = node_metrics(torch.zeros(3), res, wd=0.0)
    # sigma^2 = train mse; an independent computation of the mean Gaussian log density
    sigma2 = 0.04
    for split, mse in (("train", 0.04), ("test", 0.09)):
        direct = -np.mean(
            [-0.5 * math.log(2 * math.pi * sigma2) - mse / (2 * sigma2)]  # E over residuals
        )
        assert node[f"{split}_nll"] == pytest.approx(direct, rel=1e-12)
    assert node["train_nll"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.04))


def test_fitted_noise_nll_of_a_path_point_equals_a_direct_computation(trained, toy, paths):
    curve_path, _ = paths
    with torch.no_grad():
        net = trained.network_at(0.5)
        r_train = (net(toy.train_x) - toy.train_y).double().ravel()
        r_test = (net(toy.test_x) - toy.test_y).double().ravel()
    sigma2 = float((r_train**2).mean())
    dist = torch.distributions.Normal(0.0, math.sqrt(sigma2))
    direct = -dist.log_prob(r_test).mean().item()
    assert curve_path.test_nll[5] == pytest.approx(direct, rel=1e-6)


def test_given_noise_scale_nll_follows_the_gaussian_formula():
    res = {"train": RegressionMetrics(0.04, 10), "test": RegressionMetrics(0.09, 10)}
    node = node_metrics(torch.zeros(3), res, wd=0.0, noise_scale=0.1)
    expected = 0.5 * math.log(2 * math.pi * 0.01) + 0.09 / (2 * 0.01)
    assert node["test_nll"] == pytest.approx(expected, rel=1e-12)


def test_given_noise_scale_reaches_the_path_from_the_data_set(trained, toy):
    given = dataclasses.replace(toy, noise_scale=0.1)
    result = evaluate_path(trained, given, ts=[0.0, 1.0], wd=WD, progress=False)
    expected = 0.5 * math.log(2 * math.pi * 0.01) + result.test_mse / (2 * 0.01)
    np.testing.assert_allclose(result.test_nll, expected, rtol=1e-12)
    assert result.meta["noise_scale"] == 0.1


def test_regression_loss_is_mse_plus_half_wd_squared_norm(trained, paths):
    curve_path, _ = paths
    point = trained.point(float(curve_path.ts[3])).detach()
    l2 = 0.5 * WD * WeightSpace.norm(point).item() ** 2
    assert curve_path.train_loss[3] == pytest.approx(curve_path.train_mse[3] + l2, rel=1e-9)


def test_classification_node_metrics_are_unchanged():
    res = {"train": Metrics(0.5, 10.0, 4), "test": Metrics(0.7, 20.0, 4)}
    node = node_metrics(torch.ones(2), res, wd=0.1)
    assert node == {
        "train_nll": 0.5,
        "train_error": 10.0,
        "train_loss": 0.5 + 0.1,
        "test_nll": 0.7,
        "test_error": 20.0,
        "test_loss": 0.7 + 0.1,
    }


# --------------------------------------------------------------------------- results


def test_regression_path_holds_the_task_metrics_and_no_error(paths):
    curve_path, _ = paths
    assert curve_path.task == "regression"
    assert curve_path.metrics == metric_names("regression")
    assert not hasattr(curve_path, "test_error")


def test_regression_path_barriers_use_mse_and_nll(paths):
    curve_path, _ = paths
    assert set(curve_path.barriers()) == {"train_mse", "train_nll", "test_mse", "test_nll"}


def test_regression_path_result_survives_save_and_load(paths, tmp_path):
    curve_path, _ = paths
    curve_path.save(tmp_path / "path")
    back = PathResult.load(tmp_path / "path")
    assert back == curve_path and back.task == "regression"
    assert np.array_equal(back.test_mse, curve_path.test_mse)


def test_a_path_file_without_a_task_loads_as_classification(tmp_path):
    ts = np.linspace(0, 1, 3)
    old = PathResult(ts, np.ones(2), **{n: np.zeros(3) for n in metric_names("classification")})
    old.save(tmp_path / "old")
    arrays = dict(np.load(tmp_path / "old.npz"))
    del arrays["task"]  # as written before tasks existed
    np.savez(tmp_path / "old.npz", **arrays)
    assert PathResult.load(tmp_path / "old").task == "classification"


def test_regression_plane_survives_save_and_load(trained, toy, tmp_path):
    plane = evaluate_plane_through_curve(trained, toy, grid=4, wd=WD, progress=False)
    plane.save(tmp_path / "plane")
    back = PlaneResult.load(tmp_path / "plane")
    assert back == plane and set(back.metrics) == set(metric_names("regression"))


# --------------------------------------------------------------------------- ensembles


def test_mixture_nll_equals_a_direct_logsumexp():
    gen = torch.Generator().manual_seed(0)
    preds, y = torch.randn(3, 20, 1, generator=gen), torch.randn(20, 1, generator=gen)
    sigma2 = torch.tensor([0.1, 0.2, 0.5])
    log_density = torch.stack(
        [
            torch.distributions.Normal(preds[i].double(), sigma2[i].double().sqrt()).log_prob(
                y.double()
            )
            for i in range(3)
        ]
    )
    direct = -(torch.logsumexp(log_density, 0) - math.log(3)).mean().item()
    assert mixture_nll(preds, y, sigma2) == pytest.approx(direct, rel=1e-12)


def test_regression_ensemble_scores_the_mean_prediction():
    y = torch.zeros(4, 1)
    a, b = Member(torch.ones(4, 1), 0.5), Member(-torch.ones(4, 1), 0.5)
    mse, _ = together("regression", [a, b], y)
    assert mse == 0.0


def test_regression_ensembles_along_a_curve_name_their_columns(trained, toy, tmp_path):
    result = ensembles_along_curve(trained, toy, ts=3, progress=False)
    assert result.task == "regression" and "ensemble_mse" in result.metrics
    assert result.ensemble_mse[0] == pytest.approx(result.start_mse, rel=1e-9)
    result.save(tmp_path / "ens")
    assert EnsembleResult.load(tmp_path / "ens") == result


# --------------------------------------------------------------------------- figures


def test_regression_figures_label_mse_not_error(trained, toy, paths):
    curve_path, line_path = paths
    fig = plot_path(curve_path, line_path)
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["train loss", "test MSE"]
    ens = ensembles_along_curve(trained, toy, ts=3, progress=False)
    labels = [ax.get_ylabel() for ax in plot_ensembles(ens).axes]
    assert "test MSE" in labels and not any("%" in label for label in labels)


def test_plot_functions_draws_one_function_per_t_beside_the_plane(trained, toy):
    plane = evaluate_plane_through_curve(trained, toy, grid=4, wd=WD, progress=False)
    fig = plot_functions(trained, toy, ts=(0, 0.5, 1), plane_result=plane)
    functions = fig.axes[0]
    assert len(functions.get_lines()) == 3
    assert any(ax.get_ylabel() == "t" for ax in fig.axes)  # the colour bar of t
    assert plot_plane(plane).axes[0].get_title() == "train loss"


# --------------------------------------------------------------------------- acceptance
# Outcomes of training, each with room that no last-bit difference between CPUs or kernel sets
# can cross (the range measured over this host's run, the AVX2 and SSE kernel sets' and three
# with the initial weights' last bits flipped: the ratios move by 5 % at most).


# measured: 121-122 against 5 (24x room)
@pytest.mark.outcome
def test_straight_line_max_train_mse_is_at_least_5x_the_curves(paths):
    curve_path, line_path = paths
    ratio = line_path.train_mse.max() / curve_path.train_mse.max()
    print(f"toy1d: line / curve max train mse = {ratio:.1f}")
    assert ratio >= 5


# measured: 5.4-5.6 against 1 (5x room)
@pytest.mark.outcome
def test_functions_along_the_curve_differ_more_in_the_gap_than_on_the_data(trained, toy):
    gap = np.linspace(-0.5, 0.5, 101)
    on_data = toy.train_x.numpy().ravel()
    ts = (0.0, 0.25, 0.5, 0.75)
    in_gap = function_values(trained, toy, ts, gap)
    at_data = function_values(trained, toy, ts, on_data)
    ratio = np.abs(in_gap[1:] - in_gap[0]).mean() / np.abs(at_data[1:] - at_data[0]).mean()
    print(f"toy1d: mean |f(x; phi(t)) - f(x; w1)|, t = 0.25, 0.5, 0.75: gap / data = {ratio:.2f}")
    assert ratio > 1


# --------------------------------------------------------------------------- apps


@pytest.fixture(scope="module")
def demo_toy1d(tmp_path_factory):
    from conftest import compose_app

    from modeconn.apps import demo

    tmp = tmp_path_factory.mktemp("demo_toy1d")
    overrides = [
        "dataset=toy1d",
        "model=mlp",
        "model.args.hidden=[32,32]",
        f"checkpoints={tmp / 'ckpt'}",
        f"out={tmp / 'results'}",
        "path_points=5",
        "plane_grid=4",
        "ensemble_points=3",
        "progress=false",
    ]
    return demo.run(compose_app("demo", overrides)), tmp


def test_demo_app_runs_on_toy1d_and_reports_mse(demo_toy1d):
    run, _ = demo_toy1d
    assert run["paths"]["curve"].task == "regression"
    assert "train mse barrier" in run["table"] and "error" not in run["table"]


def test_fge_app_runs_on_a_toy1d_endpoint(demo_toy1d, tmp_path):
    from conftest import compose_app

    from modeconn.apps import fge

    _, tmp = demo_toy1d
    start = tmp / "ckpt" / "toy1d-seed1.pt"
    overrides = [f"start={start}", "cycles=2", f"out={tmp_path}", "progress=false"]
    result = fge.run(compose_app("fge", overrides))
    assert result.task == "regression" and len(result.ensemble_mse) == 2
    assert (tmp_path / "fge.png").exists()
