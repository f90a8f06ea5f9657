"""The public API: every name `modeconn` exported before the package was split into
subpackages is still importable from `modeconn`, and each subpackage exports its own names."""

import importlib

import pytest

import modeconn

# modeconn.__all__ of the flat layout (version 0.1, before the restructure), verbatim.
BEFORE = [
    "Bezier",
    "CURVES",
    "Checkpoint",
    "CurvaturePath",
    "CurvatureSurface",
    "Curve",
    "Dataset",
    "EnsembleResult",
    "EvalSettings",
    "FGEResult",
    "HessianExtremes",
    "HessianSettings",
    "HessianTrace",
    "Line",
    "LineResult",
    "Metrics",
    "MinibatchCKA",
    "Moments",
    "PathResult",
    "Plane",
    "PlaneResult",
    "PolyChain",
    "SimilarityResult",
    "SimilarityWarning",
    "SpectralDensity",
    "SurfaceResult",
    "TrainConfig",
    "TrajectoryRecorder",
    "TrajectoryResult",
    "TrajectoryStore",
    "WeightSpace",
    "along_curve",
    "barrier",
    "build_curve",
    "build_model",
    "cca",
    "choose_points_per_pass",
    "class_wise",
    "collect_activations",
    "compare_networks",
    "curvature_path",
    "curvature_surface",
    "dataset_names",
    "debiased_cka",
    "directional_curvature",
    "disagreement",
    "endpoint_meta",
    "ensemble_log_probs",
    "ensembles_along_curve",
    "eval_plan",
    "evaluate",
    "evaluate_grid",
    "evaluate_interpolation",
    "evaluate_line",
    "evaluate_path",
    "evaluate_plane",
    "evaluate_plane_through_curve",
    "evaluate_point",
    "evaluate_points",
    "evaluate_surface",
    "evaluate_trajectory",
    "fge",
    "fixed_directions",
    "fixed_threads",
    "hessian_density",
    "hessian_extremes",
    "hessian_trace",
    "kl_divergence",
    "linear_cka",
    "load_checkpoint",
    "load_curve",
    "load_dataset",
    "load_endpoint",
    "lr_schedule",
    "merge_shards",
    "minibatch_cka",
    "model_names",
    "network_at",
    "orthonormal_pair",
    "over_training",
    "pca_directions",
    "permutation_baseline",
    "predict",
    "principal_directions",
    "project",
    "pwcca",
    "qr_directions",
    "random_direction",
    "rbf_cka",
    "recompute_bn",
    "record_trajectory",
    "resolve_points_per_pass",
    "save_checkpoint",
    "stream_activations",
    "svcca",
    "tangent_directions",
    "target_direction",
    "train_curve",
    "train_endpoint",
    "training_snapshots",
    "zca_directions",
]
SUBPACKAGES = [
    "align",
    "curves",
    "data",
    "models",
    "io",
    "engine",
    "ensembles",
    "landscape",
    "trajectory",
    "curvature",
    "similarity",
    "lmc",
    "volumes",
    "plotting",
]


@pytest.mark.parametrize("name", BEFORE)
def test_every_name_of_the_flat_layout_is_importable_from_modeconn(name):
    assert name in modeconn.__all__
    assert getattr(modeconn, name) is not None


def test_modeconn_all_names_only_what_it_has():
    missing = [n for n in modeconn.__all__ if not hasattr(modeconn, n)]
    assert missing == []


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_subpackage_exports_its_public_names(package):
    module = importlib.import_module(f"modeconn.{package}")
    exported = getattr(module, "__all__", None)
    assert exported, f"modeconn.{package} has no __all__"
    assert [n for n in exported if not hasattr(module, n)] == []


def test_the_top_level_names_are_the_subpackages_objects():
    """modeconn re-exports, never redefines: the same object from both places."""
    from modeconn.curvature import hessian_extremes
    from modeconn.curves import Bezier
    from modeconn.landscape import evaluate_surface
    from modeconn.similarity import linear_cka

    assert modeconn.hessian_extremes is hessian_extremes
    assert modeconn.Bezier is Bezier
    assert modeconn.evaluate_surface is evaluate_surface
    assert modeconn.linear_cka is linear_cka
