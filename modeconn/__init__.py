"""modeconn: mode connectivity and loss-landscape analysis for any PyTorch model."""

from modeconn.curves import CURVES, Bezier, Curve, Line, PolyChain, build_curve
from modeconn.data import Dataset, dataset_names, load_dataset
from modeconn.evaluation import Metrics, evaluate, evaluate_point, recompute_bn
from modeconn.models import build_model, model_names
from modeconn.store import (
    Checkpoint,
    load_checkpoint,
    load_curve,
    load_endpoint,
    save_checkpoint,
)
from modeconn.training import TrainConfig, lr_schedule, train_curve, train_endpoint
from modeconn.weights import WeightSpace

__version__ = "0.1.0"

__all__ = [
    "CURVES",
    "Bezier",
    "Checkpoint",
    "Curve",
    "Dataset",
    "Line",
    "Metrics",
    "PolyChain",
    "TrainConfig",
    "WeightSpace",
    "build_curve",
    "build_model",
    "dataset_names",
    "evaluate",
    "evaluate_point",
    "load_checkpoint",
    "load_curve",
    "load_dataset",
    "load_endpoint",
    "lr_schedule",
    "model_names",
    "recompute_bn",
    "save_checkpoint",
    "train_curve",
    "train_endpoint",
]
