"""Metrics along a curve phi(t), and the barrier height of a path (Garipov et al. 2018, Fig. 2).

`evaluate_path` walks t over a grid and evaluates every phi(t) with the one evaluation engine
(`evaluate_point`: BatchNorm statistics recomputed on the plain train data, then train and test
metrics). The loss reported is the paper's training objective,

    loss(t) = nll(t) + 0.5 * wd * ||phi(t)||^2,

on both splits, next to the plain nll and the error (%); for a regression data set the data
term is the mse, next to a Gaussian nll (`modeconn.data.tasks`). The Euclidean distances between
consecutive points give the arc length that weights the "integral over the curve" summaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modeconn.curves.family import Curve, curve_args
from modeconn.curves.weights import WeightSpace, fingerprint
from modeconn.data.tasks import CLASSIFICATION, barrier_metrics, task_of
from modeconn.engine import (
    METRICS,  # noqa: F401 (the classification metrics, imported from here by users)
    EvalSettings,
    GridResult,
    evaluate_grid,
    finite_stats,
    resolve_settings,
)
from modeconn.io.store import PartialGrid

# Barrier definitions in use (both on the same sampled profile L(t)):
BARRIERS = {
    # Entezari et al. 2022 (and Garipov et al.'s "barrier"): the excess over the straight
    # interpolation of the endpoint values, max_t [L(t) - ((1 - t) L(0) + t L(1))]
    "entezari": "max_t L(t) - ((1 - t) L(0) + t L(1))",
    # Frankle et al. 2020 (linear mode connectivity): max_t L(t) - (L(0) + L(1)) / 2
    "frankle": "max_t L(t) - (L(0) + L(1)) / 2",
}
# What a classification path reports by default: the data term (nll, no weight decay) and
# the error (`barrier_metrics(task)` gives every task's).
BARRIER_METRICS = barrier_metrics(CLASSIFICATION)


def barrier(
    ts: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    definition: str = "entezari",
) -> float:
    """Barrier height of values f (T,) sampled at ts (T,) along a path from t = 0 to t = 1.

    definition "entezari" (Entezari et al. 2022; Garipov et al.'s barrier):
        max_t [f(t) - ((1 - t) f(0) + t f(1))], the excess over the straight interpolation of
        the endpoint values: 0 for a linear (or convex) profile.
    definition "frankle" (Frankle et al. 2020): max_t f(t) - (f(0) + f(1)) / 2, the excess
        over the mean of the endpoint values.
    Needs ts[0] == 0 and ts[-1] == 1. NaN values give NaN.
    """
    if definition not in BARRIERS:
        raise ValueError(
            f"unknown barrier definition {definition!r}; valid definitions: {', '.join(BARRIERS)}"
        )
    ts, values = np.asarray(ts, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != values.shape or len(ts) < 2:
        raise ValueError(
            f"ts and values must be 1-D of the same length >= 2, got shapes {ts.shape} and "
            f"{values.shape}"
        )
    if ts[0] != 0 or ts[-1] != 1:
        raise ValueError(
            f"barrier needs the endpoints: ts[0] must be 0 and ts[-1] must be 1, got "
            f"{ts[0]} and {ts[-1]}; evaluate the path on a grid that includes t = 0 and t = 1"
        )
    if definition == "frankle":
        return float(np.max(values) - (values[0] + values[-1]) / 2)
    line = (1 - ts) * values[0] + ts * values[-1]
    return float(np.max(values - line))


def weighted_mean(values: np.ndarray, lengths: np.ndarray, ts: np.ndarray) -> float:
    """Arc-length weighted mean of values (T,) over segments of lengths (T-1,).

    Trapezoid rule: segment i contributes lengths[i] * (values[i] + values[i+1]) / 2, divided by
    the total length. A path of length 0 (start == end) falls back to weighting by t.
    """
    if len(values) == 1:
        return float(values[0])
    mids = (values[:-1] + values[1:]) / 2
    for w in (lengths, np.abs(np.diff(ts))):
        top = np.max(w, initial=0.0)
        if top > 0:
            w = w / top  # scaled to <= 1: subnormal lengths (1e-320) keep their ratios exactly
            return float(np.sum(w * mids) / w.sum())
    return float(np.mean(values))


@dataclass(eq=False, init=False)
class PathResult(GridResult):
    """Metrics at T points along a curve; each metric is a (T,) float64 array.

    The metrics are the data set's task's (`modeconn.data.tasks.metric_names`), read as
    attributes: classification train_loss, train_nll, train_error, test_loss, test_nll,
    test_error; regression train_loss, train_mse, train_nll, test_loss, test_mse, test_nll.
    `*_loss` add the weight-decay term 0.5 * wd * ||phi(t)||^2 to the data term (the nll, or
    the mse: the paper's train loss); errors are in percent. Barriers (`barrier`,
    `barriers`) default to the task's data terms (`barrier_metrics`).
    arc_length (T-1,): Euclidean distance in weight space between consecutive points.
    Built as PathResult(ts=..., train_loss=..., ..., arc_length=..., task=..., meta=...), or
    with the metrics as one `values` dict.
    """

    ts: np.ndarray
    values: dict[str, np.ndarray]
    arc_length: np.ndarray
    task: str
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "PathResult"
    axes: ClassVar[tuple[str, ...]] = ("ts",)
    positional: ClassVar[tuple[str, ...]] = ("arc_length",)

    def _set_fields(self, arc_length: Any) -> None:
        n = len(self.ts)
        self.arc_length = np.asarray(arc_length, dtype=np.float64)
        if self.arc_length.shape != (max(n - 1, 0),):
            raise ValueError(f"arc_length must have shape ({n - 1},), got {self.arc_length.shape}")

    def summary(self) -> dict[str, dict[str, float]]:
        """Per metric: min, max and mean over the finite values, how many points are NaN or
        inf (`non_finite`: diverged points are recorded, not dropped), and the arc-length
        weighted mean (NaN if any point is not finite)."""
        return {
            name: {
                **finite_stats(values),
                "weighted_mean": weighted_mean(values, self.arc_length, self.ts),
            }
            for name, values in self.values.items()
        }

    def barrier(self, metric: str = "train_nll", definition: str = "entezari") -> float:
        """Barrier height of `metric` along the path (see the module-level `barrier` for the
        definitions). The default is the train nll: "train_loss" adds the weight-decay term
        0.5 wd ||phi(t)||^2, which can hide a barrier of the data term (it is larger at the
        endpoints than between them), so it is there on request only."""
        if metric not in self.values:
            raise ValueError(
                f"unknown metric {metric!r}; valid metrics of this {self.task} path: "
                f"{', '.join(self.values)}"
            )
        return barrier(self.ts, self.values[metric], definition)

    def barriers(self) -> dict[str, dict[str, float]]:
        """Both barrier definitions of the task's data terms on both splits (nll and error
        for classification, mse and nll for regression: `barrier_metrics`):
        {metric: {"entezari": ..., "frankle": ...}}."""
        return {m: {d: self.barrier(m, d) for d in BARRIERS} for m in barrier_metrics(self.task)}


def t_values(ts: int | Sequence[float]) -> np.ndarray:
    if isinstance(ts, (int, np.integer)) and not isinstance(ts, bool):
        if ts < 2:
            raise ValueError(f"ts must be >= 2 points to include both endpoints, got {ts}")
        return np.linspace(0.0, 1.0, int(ts))
    arr = np.asarray(ts, dtype=np.float64)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"ts must be an int or a non-empty 1-D sequence of t values, got {ts!r}")
    if not np.all((arr >= 0) & (arr <= 1)):
        raise ValueError(f"every t must lie in [0, 1], got {arr[(arr < 0) | (arr > 1)][:5]}...")
    return arr


def path_grid(
    curve: Curve,
    ts: np.ndarray,
    data,
    settings: EvalSettings,
    *,
    wd: float,
    desc: str,
    measure: Any = None,
    measure_names: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    **job: Any,
):
    """phi(t) at every t of `ts` through the grid engine (`evaluate_grid`'s GridValues, None
    for an unfinished shard); measure / measure_names / extra as `surface.grid_around`;
    job: partial, save_every_s, shard, progress."""
    config = {"ts": ts.tolist(), "curve": fingerprint(curve.endpoints, curve.bends)}
    config.update(extra or {})
    return evaluate_grid(
        curve.model,
        curve.space,
        (len(ts),),
        lambda index: curve.point(float(ts[index[0]])).detach(),
        data,
        settings,
        wd=wd,
        config=config,
        desc=desc,
        measure=measure,
        measure_names=measure_names,
        **job,
    )


def evaluate_path(
    curve: Curve,
    data,
    ts: int | Sequence[float] = 61,
    *,
    wd: float = 5e-4,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    **engine: Any,
) -> PathResult | None:
    """Train/test loss, nll and error (%) at each t along `curve` (any `Curve`, a `Line` too);
    for a regression data set loss, mse and Gaussian nll (`modeconn.data.tasks`).

    ts: number of equally spaced points on [0, 1] (endpoints included), or the t values.
    wd: weight decay of the reported loss, nll + 0.5 * wd * ||phi(t)||^2 (5e-4 as in the paper;
        0 reports the nll).
    settings: how points are evaluated (`EvalSettings`: BatchNorm budget and estimator,
        batch, points per pass, compile, autocast, evaluation subset); keyword options
        (`bn_samples=2000`, `compile=True`, ...) build one instead. Diverged points (NaN or
        inf losses) are recorded as they are.
    partial, save_every_s, shard: resume and shards, as in `modeconn.engine.evaluate_grid`
        (the partial file is removed once the result is complete; a shard returns None).
    """
    settings = resolve_settings(settings, engine)
    ts = t_values(ts)
    grid = path_grid(
        curve, ts, data, settings, wd=wd, desc=f"path ({curve.kind})", partial=partial,
        save_every_s=save_every_s, shard=shard, progress=progress,
    )  # fmt: skip
    if grid is None:
        return None
    lengths = []
    with torch.no_grad():
        prev = None
        for t in ts:
            point = curve.point(float(t)).detach()
            if prev is not None:
                lengths.append(WeightSpace.norm(point.double() - prev.double()).item())
            prev = point
    meta = {
        "curve": {"type": curve.kind, **curve_args(curve)},
        "num_bends": curve.num_bends,
        "dim": curve.space.size,
        **grid.meta,
        "length": math.fsum(lengths),
    }
    result = PathResult(
        ts=ts, values=grid.values, arc_length=np.asarray(lengths), task=task_of(data), meta=meta
    )
    if partial is not None:
        PartialGrid.remove_files(partial)
    return result
