"""Data sets as tensors with their task: the embedded and synthetic sets, own tensor files,
torchvision-format files (MNIST, CIFAR, image folders), and what a task's metrics are."""

from modeconn.data.catalogue import dataset_names, load_dataset
from modeconn.data.sets import Dataset
from modeconn.data.tasks import CLASSIFICATION, REGRESSION, TASKS, metric_names

__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "TASKS",
    "Dataset",
    "dataset_names",
    "load_dataset",
    "metric_names",
]
