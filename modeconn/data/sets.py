"""Data sets held as whole tensors: a `Dataset` is four tensors, its task and an optional
batch-level training augmentation.

Everything used for mode connectivity fits in memory (CIFAR-10's train set is 600 MB as
float32), so `batches()` slices the tensors. No DataLoader sits between the reader and the
data: evaluation is exact and fast, and the whole set can move to the GPU once with `.to(device)`.

The augmentation is used only by training loops (`batches(augment=True)`); evaluation and
BatchNorm statistics always see the plain train data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from modeconn.data.tasks import CLASSIFICATION, REGRESSION, check_task


@dataclass
class Dataset:
    """Train and test tensors of one data set.

    train_x / test_x: (N, *input_shape) float32, already normalised.
    train_y / test_y: classification: (N,) int64 class indices in [0, num_classes);
        regression: (N, K) float32 targets, K = num_classes (the network's output size).
    num_classes: classes, or outputs per sample for regression (`outputs` is its alias).
    augment: batch-level train-time augmentation `augment(x, generator) -> x`, or None.
    task: "classification" or "regression" (`modeconn.data.tasks`: what metrics, losses and
        ensembles mean for it).
    noise_scale: regression only: the standard deviation of the Gaussian NLL; None fits it
        at every evaluated point (sigma^2 = that point's train mse).
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: Callable[[Tensor, torch.Generator | None], Tensor] | None = None
    task: str = CLASSIFICATION
    noise_scale: float | None = None

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.noise_scale is not None and not (
            self.task == REGRESSION and float(self.noise_scale) > 0
        ):
            raise ValueError(
                f"{self.name}: noise_scale={self.noise_scale!r} needs a regression data set and "
                "a value > 0 (or None to fit it at every point)"
            )
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {split} has {len(x)} inputs but {len(y)} labels")

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_x)}, test={len(self.test_x)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"augment={self.augment!r}"
            + (
                f", task={self.task!r}, noise_scale={self.noise_scale!r})"
                if self.task != CLASSIFICATION
                else ")"
            )
        )

    @property
    def outputs(self) -> int:
        """The network's output size: classes, or targets per sample (regression)."""
        return self.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with all four tensors on `device`."""
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def subset(self, train: int | None = None, test: int | None = None) -> Dataset:
        """A copy keeping the first `train` / `test` samples (None keeps the whole split)."""
        return dataclasses.replace(
            self,
            train_x=self.train_x[:train],
            train_y=self.train_y[:train],
            test_x=self.test_x[:test],
            test_y=self.test_y[:test],
        )

    def batches(
        self,
        split: str = "train",
        batch_size: int = 256,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        order: Tensor | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of (x, y) batches, x: (B, *input_shape), y: (B,).

        shuffle: visit samples in `torch.randperm` order drawn from `generator`.
        augment: pass x through `self.augment(x, generator)` (a no-op if it is None); meant
        for training only — evaluation calls leave it False and see the plain data.
        drop_last: skip a final batch smaller than `batch_size`.
        order: (M,) int64 indices of the split to visit, in that order (M <= N: the rest of
        an epoch resumed inside it); `shuffle` is then ignored and `generator` serves only
        the augmentation (the order of a spawned run, `modeconn.training.fit`).
        """
        if split == "train":
            x, y = self.train_x, self.train_y
        elif split == "test":
            x, y = self.test_x, self.test_y
        else:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(x)
        if order is not None:
            order, n = order.to(x.device), len(order)
        elif shuffle:
            device = generator.device if generator is not None else "cpu"
            order = torch.randperm(n, generator=generator, device=device).to(x.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                xb, yb = x[idx], y[idx]
            if augment and self.augment is not None:
                xb = self.augment(xb, generator)
            yield xb, yb
