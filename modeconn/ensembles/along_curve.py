"""Ensembles along a curve and prediction diversity.

Garipov et al. 2018 ask two questions of a low-loss path phi(t) between w1 and w2 (the second
is answered by `modeconn.ensembles.fge`):

* How much does the ensemble {w1, phi(t)} gain over w1 alone, as t moves from w1 to w2?
  Points on a curve disagree with w1 more than points on the straight segment do at equal
  loss, so the curve ensemble improves faster (`ensembles_along_curve`).
* Can such diverse points be found cheaply? FGE (Sec. 5) runs SGD from one trained network
  with a cyclical learning rate and takes a snapshot every time the rate reaches its minimum
  (`fge`); the ensemble of snapshots matches independently trained networks at a fraction of
  the cost.

An ensemble averages probabilities, not logits: p_ens(y | x) = 1/n sum_i p_i(y | x). Every
weight point is evaluated the same way as everywhere else: BatchNorm statistics recomputed
on the un-augmented train data for that point, then predictions on the test set.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from modeconn.curves.family import Curve, Line, curve_args
from modeconn.data.tasks import CLASSIFICATION, MetricColumns, check_task, task_of
from modeconn.engine.execution import autocast_name
from modeconn.ensembles.measures import disagreement, ensemble_log_probs, kl_divergence  # noqa: F401
from modeconn.ensembles.members import (
    Member,
    alone,
    columns,
    compare,
    point_member,
    score_name,
    together,
)
from modeconn.io.store import SavedResult

# --------------------------------------------------------------------------- evaluation


def _as_ts(ts: int | Sequence[float] | Tensor | np.ndarray) -> np.ndarray:
    if isinstance(ts, int):
        if ts < 1:
            raise ValueError(f"ts must be >= 1 points (or a list of t values), got {ts}")
        return np.linspace(0.0, 1.0, ts)
    values = np.asarray(ts.cpu() if isinstance(ts, Tensor) else ts, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0 or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"ts must be a non-empty 1-D list of values in [0, 1], got {values}")
    return values


# --------------------------------------------------------------------------- along a curve


def _scalars(task: str) -> tuple[str, ...]:
    return tuple(
        f"{who}_{kind}"
        for who in ("start", "end", "reference")
        for kind in (score_name(task), "nll")
    )


@dataclass(eq=False, init=False)
class EnsembleResult(MetricColumns, SavedResult):
    """Ensembles {w1, phi(t)} along a curve (and the straight segment), test split.

    Columns named after the data set's task (`modeconn.ensembles.members.columns`), (T,) arrays read
    as attributes. Classification: member_error, member_nll, ensemble_error, ensemble_nll
    (errors in %, NLL in nats), disagreement (%) and kl (KL(p_w1 || p_phi(t)), nats).
    Regression: member_mse, member_nll, ensemble_mse, ensemble_nll (the ensemble's mean
    prediction and the NLL of its Gaussian mixture), sq_difference (mean squared difference
    of phi(t)'s predictions from w1's) and kl (of their Gaussians). `member_*` is phi(t)
    alone, `ensemble_*` the two-member ensemble {w1, phi(t)}. `line_*` are the same on the
    segment (1 - t) w1 + t w2 (absent if not computed). Floats `reference_*` are the ensemble
    {w1, w2}; `start_*` / `end_*` are w1 / w2 alone (`start_error` or `start_mse`, ...).
    """

    result_kind: ClassVar[str] = "EnsembleResult"

    ts: np.ndarray
    values: dict[str, Any]
    task: str
    meta: dict[str, Any] | None = None

    def __init__(
        self,
        ts: Any,
        *,
        task: str = CLASSIFICATION,
        values: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **columns_: Any,
    ) -> None:
        self.ts = np.asarray(ts, dtype=np.float64)
        given = {k: v for k, v in {**(values or {}), **columns_}.items() if v is not None}
        cols = columns(check_task(task))
        line = tuple("line_" + c for c in cols) if any(k.startswith("line_") for k in given) else ()
        self._set_values(task, given, {}, names=(*cols, *_scalars(task), *line))
        self.meta = dict(meta or {})

    def ensemble_gain(self, t: float = 0.5, *, line: bool = False) -> float:
        """start - ensemble of the task's score (error %, or mse) at the computed t nearest
        `t` (positive: better). `line=True` reads the straight segment's ensemble instead."""
        name = ("line_ensemble_" if line else "ensemble_") + score_name(self.task)
        if name not in self.values:
            raise ValueError("no line results here: run ensembles_along_curve(..., line=True)")
        i = int(np.argmin(np.abs(self.ts - t)))
        return float(self.values[f"start_{score_name(self.task)}"] - self.values[name][i])


# Per-point columns of a classification study, in this order (FGE uses the first four).
_COLUMNS = columns(CLASSIFICATION)


@torch.no_grad()
def ensembles_along_curve(
    curve: Curve,
    data,
    ts: int | Sequence[float] | Tensor | np.ndarray = 21,
    *,
    line: bool = True,
    bn_samples: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    autocast: str | None = None,
    compile: bool = False,
    layout: str = "auto",
) -> EnsembleResult:
    """Accuracy of the ensemble {w1, phi(t)} versus t, along `curve` and the straight segment.

    `ts`: number of equally spaced points in [0, 1], or the t values themselves. At every
    point BatchNorm statistics of `curve.model` are recomputed on `data.train_x` (all of it,
    or `bn_samples`), then the test set is predicted. w1's and w2's predictions are computed
    once and reused (also for points that equal an endpoint exactly). `autocast`
    ("bfloat16" or "float16"): forward passes in that precision; `compile`: through
    `torch.compile`; `layout`: the inputs' memory layout (see `evaluate_point`).
    """
    began = time.perf_counter()
    ts = _as_ts(ts)
    model, space, y, task = curve.model, curve.space, data.test_y, task_of(data)
    run = dict(bn_samples=bn_samples, batch_size=batch_size, autocast=autocast, compile=compile)
    run["layout"] = layout

    def log_probs(weights: Mapping[str, Tensor]) -> Member:
        return point_member(model, weights, data, **run)

    lp_start = log_probs(space.unflatten(curve.start))
    lp_end = log_probs(space.unflatten(curve.end))

    def point_log_probs(point: Tensor) -> Member:
        if torch.equal(point, curve.start):
            return lp_start
        if torch.equal(point, curve.end):
            return lp_end
        return log_probs(space.unflatten(point))

    paths: dict[str, Curve] = {"": curve}
    if line:
        w1, w2 = space.unflatten(curve.start), space.unflatten(curve.end)
        paths["line_"] = curve if isinstance(curve, Line) else Line(model, w1, w2)
    rows: dict[str, list[list[float]]] = {prefix: [] for prefix in paths}
    bar = tqdm(ts, desc="ensembles", disable=not progress)
    for t in bar:
        for prefix, path in paths.items():
            if prefix and path is curve:  # the curve is the line already
                rows[prefix].append(rows[""][-1])
                continue
            member = point_log_probs(path.point(float(t)))
            rows[prefix].append(compare(task, lp_start, member, y))
        bar.set_postfix(ens=f"{rows[''][-1][2]:.4g}")

    names, score = columns(task), score_name(task)
    table_columns = {}
    for prefix, table in rows.items():
        values = np.asarray(table, dtype=np.float64).reshape(len(ts), len(names))
        table_columns.update({prefix + name: values[:, j] for j, name in enumerate(names)})
    scalars = {}
    for who, value in (
        ("start", alone(task, lp_start, y)),
        ("end", alone(task, lp_end, y)),
        ("reference", together(task, [lp_start, lp_end], y)),
    ):
        scalars[f"{who}_{score}"], scalars[f"{who}_nll"] = value
    meta = {
        "dataset": getattr(data, "name", None),
        "curve": {"type": curve.kind, **curve_args(curve)},
        "split": "test",
        "test_samples": len(y),
        "bn_samples": bn_samples,
        "autocast": autocast_name(autocast),
        "compile": compile,
        "line": line,
        "seconds": time.perf_counter() - began,
    }
    return EnsembleResult(ts=ts, task=task, **table_columns, **scalars, meta=meta)
