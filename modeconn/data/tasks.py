"""What a data set's task means: its metrics, its training loss, its ensembles.

A `Dataset` declares its task (`Dataset.task`) and everything downstream follows it:

- "classification" (every image and 2-D toy set): outputs are logits (N, C), the training
  loss is cross-entropy, a point reports its NLL and error (%), an ensemble averages the
  members' probabilities (Garipov et al. 2018).
- "regression" (toy1d; `tensors` with task="regression"): outputs are predictions (N, K)
  of targets (N, K) or (N,) for K = 1, the training loss is the mean squared error (over
  every target value), and a point also reports a Gaussian NLL per target value,

      nll = 0.5 * log(2 pi sigma^2) + mse / (2 sigma^2),

  with sigma^2 = noise_scale^2 when the data set gives a noise scale, else the maximum-
  likelihood fit at that point, sigma^2 = train mse (then train nll = 0.5 log(2 pi e mse)).
  An ensemble averages the predictions (its MSE), and its NLL is that of the equal-weight
  mixture of the members' Gaussians (`mixture_nll`), as in the regression experiments of
  Izmailov et al. 2019 (subspace inference), whose 1-D toy the mode-connectivity blog's
  figure 7 uses.

Results name their arrays after the task (`metric_names`): there are no "error" columns for
regression. `MetricColumns` is the part of a result class that holds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

# Per split: the loss (data term + 0.5 wd ||w||^2), then the task's own metrics.
_PER_SPLIT = {CLASSIFICATION: ("loss", "nll", "error"), REGRESSION: ("loss", "mse", "nll")}
# What a path's barriers are taken on by default: the data terms, no weight decay.
_BARRIERS = {CLASSIFICATION: ("nll", "error"), REGRESSION: ("mse", "nll")}


def check_task(task: str) -> str:
    """`task` if it is one of TASKS, else a ValueError listing them."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def task_of(data: Any) -> str:
    """The task of a data set (objects without a `task` attribute are classification)."""
    return check_task(getattr(data, "task", CLASSIFICATION))


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics of a grid point, train split first: classification ("train_loss",
    "train_nll", "train_error", "test_loss", ...), regression ("train_loss", "train_mse",
    "train_nll", "test_loss", ...)."""
    kinds = _PER_SPLIT[check_task(task)]
    return tuple(f"{split}_{kind}" for split in ("train", "test") for kind in kinds)


def barrier_metrics(task: str) -> tuple[str, ...]:
    """The metrics a path's barriers report: nll and error (classification), mse and nll
    (regression), on both splits."""
    kinds = _BARRIERS[check_task(task)]
    return tuple(f"{split}_{kind}" for split in ("train", "test") for kind in kinds)


def data_term(task: str) -> str:
    """The metric that a loss adds 0.5 wd ||w||^2 to: "nll" or "mse"."""
    return {CLASSIFICATION: "nll", REGRESSION: "mse"}[check_task(task)]


# --------------------------------------------------------------------------- losses


def targets_like(out: Tensor, y: Tensor) -> Tensor:
    """Regression targets y (N,) or (N, K) shaped and typed as the predictions out (N, K)."""
    if y.numel() != out.numel():
        raise ValueError(
            f"regression targets of shape {tuple(y.shape)} do not match the network's "
            f"outputs {tuple(out.shape)}; build the model with num_classes = outputs per sample"
        )
    return y.reshape(out.shape).to(device=out.device, dtype=out.dtype)


def task_loss(task: str, out: Tensor, y: Tensor) -> Tensor:
    """The training loss of a batch: cross-entropy of logits (N, C) against labels (N,), or
    the mean squared error of predictions (N, K) against targets."""
    if task == CLASSIFICATION:
        return F.cross_entropy(out, y)
    return F.mse_loss(out, targets_like(out, y))


def batch_score(task: str, out: Tensor, y: Tensor) -> float:
    """A batch's sum for the per-epoch training record: the number of wrong predictions
    (classification), or the sum over samples of each sample's mean squared error
    (regression); divided by the samples seen it is the error fraction or the mse."""
    out = out.detach()
    if task == CLASSIFICATION:
        return float((out.argmax(1) != y).sum().item())
    per_value = (out.float() - targets_like(out, y).float()) ** 2
    return float(per_value.reshape(len(out), -1).mean(1).sum().item())


# --------------------------------------------------------------------------- Gaussian NLL


def gaussian_nll(mse: float, sigma2: float) -> float:
    """Mean NLL of N(f(x), sigma2) per target value, given the mean squared error of f:
    0.5 * log(2 pi sigma2) + mse / (2 sigma2) (NaN if sigma2 is not > 0)."""
    if not sigma2 > 0:
        return float("nan")
    return 0.5 * math.log(2 * math.pi * sigma2) + mse / (2 * sigma2)


def noise_variance(train_mse: float, noise_scale: float | None) -> float:
    """sigma^2 of the Gaussian NLL: noise_scale^2 if given, else the train mse at the point
    (the maximum-likelihood fit of a homoscedastic Gaussian)."""
    return float(noise_scale) ** 2 if noise_scale is not None else float(train_mse)


def mixture_nll(preds: Tensor, y: Tensor, sigma2: Tensor | float) -> float:
    """Mean NLL per target value of the equal-weight Gaussian mixture of n members.

    preds (n, N, K): each member's predictions; y: targets (N, K) or (N,); sigma2: each
    member's noise variance, (n,) or one float. -log (1/n sum_i N(y; f_i, sigma2_i)), in
    float64 and through logsumexp, averaged over every target value.
    """
    preds = preds.double()
    y = targets_like(preds[0], y).double()
    n = preds.shape[0]
    s2 = torch.as_tensor(sigma2, dtype=torch.float64, device=preds.device).reshape(-1)
    s2 = s2.expand(n).reshape(n, *([1] * (preds.ndim - 1)))
    log_normal = -0.5 * torch.log(2 * math.pi * s2) - (y - preds) ** 2 / (2 * s2)
    return -(torch.logsumexp(log_normal, dim=0) - math.log(n)).mean().item()


# --------------------------------------------------------------------------- result columns


class MetricColumns:
    """The metric arrays of a result, named after its task: `values` (name -> array) and
    `task`, read as attributes (`result.train_loss`, `result.test_mse`).

    For the `SavedResult` classes that hold them: each metric is one array of the .npz file
    (as before tasks existed), next to a "task" string; files without one load as
    classification.
    """

    values: dict[str, np.ndarray]
    task: str

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        other = [t for t in TASKS if t != self.__dict__.get("task") and name in metric_names(t)]
        hint = f" (a {other[0]} metric; this result's task is {self.task})" if other else ""
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}{hint}")

    def __setattr__(self, name: str, value: Any) -> None:
        values = self.__dict__.get("values")
        if values is not None and name in values:  # result.test_error = ... sets the column
            values[name] = np.asarray(value, dtype=np.float64)
        else:
            object.__setattr__(self, name, value)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The names of the metric arrays, in order."""
        return tuple(self.values)

    def _set_values(
        self,
        task: str,
        values: Mapping[str, Any] | None,
        metrics: Mapping[str, Any],
        names: tuple[str, ...] | None = None,
    ) -> None:
        """Check and store the task's metric arrays (float64; 0-d ones as floats), given as
        `values` or keywords; `names`: the ones expected (default: `metric_names(task)`)."""
        self.task = check_task(str(task))
        given = {**(values or {}), **metrics}
        names = names or metric_names(self.task)
        if set(given) != set(names):
            missing, extra = sorted(set(names) - set(given)), sorted(set(given) - set(names))
            raise ValueError(
                f"a {self.task} {type(self).__name__} holds the metrics {', '.join(names)}; "
                + (f"missing: {', '.join(missing)}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected: {', '.join(extra)}" if extra else "")
            )
        arrays = {n: np.asarray(given[n], dtype=np.float64) for n in names}
        self.values = {n: float(a) if a.ndim == 0 else a for n, a in arrays.items()}

    def _arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for f in fields(self):
            if f.name == "values":
                out.update({k: np.asarray(v) for k, v in self.values.items()})
            elif f.name != "meta" and getattr(self, f.name) is not None:
                out[f.name] = np.asarray(getattr(self, f.name))
        return out

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Any):
        arrays = dict(arrays)
        task = str(arrays.pop("task", CLASSIFICATION))  # files from before tasks existed
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("meta", "values", "task"):
                continue
            if f.name not in arrays:
                if f.default is not None:
                    raise ValueError(f"'{path}' lacks the array '{f.name}'; the file is damaged")
                continue
            value = arrays.pop(f.name)
            kwargs[f.name] = value.item() if value.ndim == 0 else value
        return cls(**kwargs, values=arrays, task=task, meta=meta)
