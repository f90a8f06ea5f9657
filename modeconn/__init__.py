"""modeconn: mode connectivity and loss-landscape analysis for any PyTorch model."""

__version__ = "0.1.0"

from modeconn.activations import collect_activations, network_at, stream_activations  # noqa: E402
from modeconn.batched import (  # noqa: E402
    choose_points_per_pass,
    evaluate_points,
    resolve_points_per_pass,
)
from modeconn.checkpoints import (  # noqa: E402
    Checkpoint,
    endpoint_meta,
    load_checkpoint,
    load_curve,
    load_endpoint,
    save_checkpoint,
)
from modeconn.curves import CURVES, Bezier, Curve, Line, PolyChain, build_curve  # noqa: E402
from modeconn.data import Dataset, dataset_names, load_dataset  # noqa: E402
from modeconn.directions import (  # noqa: E402
    orthonormal_pair,
    principal_directions,
    qr_directions,
    random_direction,
    tangent_directions,
    target_direction,
    zca_directions,
)
from modeconn.engine import EvalSettings, evaluate_grid, merge_shards  # noqa: E402
from modeconn.ensembles import (  # noqa: E402
    EnsembleResult,
    disagreement,
    ensemble_log_probs,
    ensembles_along_curve,
    kl_divergence,
)
from modeconn.evaluation import (  # noqa: E402
    Metrics,
    evaluate,
    evaluate_point,
    predict,
    recompute_bn,
)
from modeconn.execution import eval_plan, fixed_threads  # noqa: E402
from modeconn.fge import FGEResult, fge  # noqa: E402
from modeconn.hessian import (  # noqa: E402
    HessianExtremes,
    HessianSettings,
    HessianTrace,
    directional_curvature,
    hessian_density,
    hessian_extremes,
    hessian_trace,
)
from modeconn.hessian_density import SpectralDensity  # noqa: E402
from modeconn.hessian_maps import (  # noqa: E402
    CurvaturePath,
    CurvatureSurface,
    curvature_path,
    curvature_surface,
)
from modeconn.models import build_model, model_names  # noqa: E402
from modeconn.path import PathResult, barrier, evaluate_path  # noqa: E402
from modeconn.plane import (  # noqa: E402
    Plane,
    PlaneResult,
    evaluate_plane,
    evaluate_plane_through_curve,
)
from modeconn.representations import (  # noqa: E402
    SimilarityResult,
    along_curve,
    class_wise,
    compare_networks,
    over_training,
    training_snapshots,
)
from modeconn.similarity import (  # noqa: E402
    MinibatchCKA,
    Moments,
    SimilarityWarning,
    cca,
    debiased_cka,
    linear_cka,
    minibatch_cka,
    permutation_baseline,
    pwcca,
    rbf_cka,
    svcca,
)
from modeconn.surface import (  # noqa: E402
    LineResult,
    SurfaceResult,
    evaluate_interpolation,
    evaluate_line,
    evaluate_surface,
)
from modeconn.training import TrainConfig, lr_schedule, train_curve, train_endpoint  # noqa: E402
from modeconn.trajectory import (  # noqa: E402
    TrajectoryResult,
    evaluate_trajectory,
    fixed_directions,
    pca_directions,
    project,
)
from modeconn.trajectory_store import (  # noqa: E402
    TrajectoryRecorder,
    TrajectoryStore,
    record_trajectory,
)
from modeconn.weights import WeightSpace  # noqa: E402

__all__ = [
    "MinibatchCKA",
    "Moments",
    "SimilarityResult",
    "SimilarityWarning",
    "along_curve",
    "cca",
    "class_wise",
    "collect_activations",
    "compare_networks",
    "debiased_cka",
    "linear_cka",
    "minibatch_cka",
    "network_at",
    "over_training",
    "permutation_baseline",
    "pwcca",
    "rbf_cka",
    "stream_activations",
    "svcca",
    "training_snapshots",
    "CurvaturePath",
    "CurvatureSurface",
    "HessianExtremes",
    "HessianSettings",
    "HessianTrace",
    "SpectralDensity",
    "curvature_path",
    "curvature_surface",
    "directional_curvature",
    "hessian_density",
    "hessian_extremes",
    "hessian_trace",
    "LineResult",
    "SurfaceResult",
    "evaluate_interpolation",
    "evaluate_line",
    "evaluate_surface",
    "orthonormal_pair",
    "principal_directions",
    "qr_directions",
    "random_direction",
    "tangent_directions",
    "target_direction",
    "zca_directions",
    "TrajectoryRecorder",
    "TrajectoryResult",
    "TrajectoryStore",
    "evaluate_trajectory",
    "fixed_directions",
    "pca_directions",
    "project",
    "record_trajectory",
    "CURVES",
    "Bezier",
    "Checkpoint",
    "Curve",
    "Dataset",
    "EnsembleResult",
    "EvalSettings",
    "FGEResult",
    "Line",
    "Metrics",
    "PathResult",
    "Plane",
    "PlaneResult",
    "PolyChain",
    "TrainConfig",
    "WeightSpace",
    "barrier",
    "build_curve",
    "build_model",
    "choose_points_per_pass",
    "dataset_names",
    "disagreement",
    "endpoint_meta",
    "ensemble_log_probs",
    "ensembles_along_curve",
    "evaluate",
    "evaluate_grid",
    "evaluate_path",
    "evaluate_plane",
    "evaluate_plane_through_curve",
    "evaluate_point",
    "evaluate_points",
    "eval_plan",
    "fge",
    "fixed_threads",
    "kl_divergence",
    "load_checkpoint",
    "load_curve",
    "load_dataset",
    "load_endpoint",
    "merge_shards",
    "lr_schedule",
    "model_names",
    "predict",
    "recompute_bn",
    "resolve_points_per_pass",
    "save_checkpoint",
    "train_curve",
    "train_endpoint",
]
