"""Metrics along a curve phi(t), and the barrier height of a path (Garipov et al. 2018, Fig. 2).

`evaluate_path` walks t over a grid and evaluates every phi(t) with the one evaluation engine
(`evaluate_point`: BatchNorm statistics recomputed on the plain train data, then train and test
metrics). The loss reported is the paper's training objective,

    loss(t) = nll(t) + 0.5 * wd * ||phi(t)||^2,

on both splits, next to the plain nll and the error (%). The Euclidean distances between
consecutive points give the arc length that weights the "integral over the curve" summaries.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from modeconn.batched import evaluate_points, resolve_points_per_pass
from modeconn.curves import Curve, curve_args
from modeconn.evaluation import Metrics, evaluate_point
from modeconn.execution import autocast_name
from modeconn.interrupt import grid_saved, save_on_interrupt
from modeconn.store import PartialGrid, SavedResult, plain_meta
from modeconn.weights import WeightSpace, fingerprint

log = logging.getLogger("modeconn")

METRICS = ("train_loss", "train_nll", "train_error", "test_loss", "test_nll", "test_error")


# Barrier definitions in use (both on the same sampled profile L(t)):
BARRIERS = {
    # Entezari et al. 2022 (and Garipov et al.'s "barrier"): the excess over the straight
    # interpolation of the endpoint values, max_t [L(t) - ((1 - t) L(0) + t L(1))]
    "entezari": "max_t L(t) - ((1 - t) L(0) + t L(1))",
    # Frankle et al. 2020 (linear mode connectivity): max_t L(t) - (L(0) + L(1)) / 2
    "frankle": "max_t L(t) - (L(0) + L(1)) / 2",
}
# What a path reports by default: the data term (nll, no weight decay) and the error.
BARRIER_METRICS = ("train_nll", "train_error", "test_nll", "test_error")


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


@dataclass(eq=False)
class PathResult(SavedResult):
    """Metrics at T points along a curve; each metric is a (T,) float64 array.

    `*_loss` include the weight-decay term 0.5 * wd * ||phi(t)||^2 (the paper's train loss),
    `*_nll` are the data term alone; errors are in percent. Barriers (`barrier`, `barriers`)
    default to the nll and the error.
    arc_length (T-1,): Euclidean distance in weight space between consecutive points.
    """

    ts: np.ndarray
    train_loss: np.ndarray
    train_nll: np.ndarray
    train_error: np.ndarray
    test_loss: np.ndarray
    test_nll: np.ndarray
    test_error: np.ndarray
    arc_length: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "PathResult"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "meta":
                setattr(self, f.name, np.asarray(getattr(self, f.name), dtype=np.float64))
        n = len(self.ts)
        for name in METRICS:
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if self.arc_length.shape != (max(n - 1, 0),):
            raise ValueError(f"arc_length must have shape ({n - 1},), got {self.arc_length.shape}")
        self.meta = plain_meta(self.meta)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per metric: min, max and mean over the finite values, how many points are NaN or
        inf (`non_finite`: diverged points are recorded, not dropped), and the arc-length
        weighted mean (NaN if any point is not finite)."""
        return {
            name: {
                **finite_stats(getattr(self, name)),
                "weighted_mean": weighted_mean(getattr(self, name), self.arc_length, self.ts),
            }
            for name in METRICS
        }

    def barrier(self, metric: str = "train_nll", definition: str = "entezari") -> float:
        """Barrier height of `metric` along the path (see the module-level `barrier` for the
        definitions). The default is the train nll: "train_loss" adds the weight-decay term
        0.5 wd ||phi(t)||^2, which can hide a barrier of the data term (it is larger at the
        endpoints than between them), so it is there on request only."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
        return barrier(self.ts, getattr(self, metric), definition)

    def barriers(self) -> dict[str, dict[str, float]]:
        """Both barrier definitions of the nll and the error on both splits:
        {metric: {"entezari": ..., "frankle": ...}} for metric in BARRIER_METRICS."""
        return {m: {d: self.barrier(m, d) for d in BARRIERS} for m in BARRIER_METRICS}


def finite_stats(values: np.ndarray) -> dict[str, float]:
    """min, max and mean of the finite entries (NaN when there are none), and the number of
    NaN or inf entries as `non_finite`."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    stats = {"min": np.nan, "max": np.nan, "mean": np.nan}
    if finite.size:
        stats = {"min": finite.min(), "max": finite.max(), "mean": finite.mean()}
    return {**{k: float(v) for k, v in stats.items()}, "non_finite": int(values.size - finite.size)}


def diverged_note(what: str, values: np.ndarray, where: list[str]) -> str | None:
    """A one-line report of the non-finite entries of `values` (None when all are finite);
    `where[k]` names the position of flat entry k (e.g. 't=0.45')."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    if not bad.size:
        return None
    places = ", ".join(where[k] for k in bad[:5]) + (", ..." if bad.size > 5 else "")
    return (
        f"{what}: {bad.size} of {np.size(values)} points have a NaN or inf train loss "
        f"(diverged; recorded as such): {places}"
    )


def node_metrics(point: Tensor, res: Mapping[str, Metrics], wd: float) -> dict[str, float]:
    """The six METRICS of a flat weight point (D,) from its train and test `Metrics`:
    nll, error and loss = nll + 0.5 * wd * ||point||^2 per split."""
    l2 = 0.5 * wd * WeightSpace.dot(point, point).item() if wd else 0.0
    node = {}
    for split in ("train", "test"):
        node[f"{split}_nll"] = res[split].nll
        node[f"{split}_error"] = res[split].error
        node[f"{split}_loss"] = res[split].nll + l2
    return node


def point_metrics(model, space: WeightSpace, point, data, wd: float, **engine) -> dict[str, float]:
    """The six METRICS of one flat weight point (loss = nll + 0.5 * wd * ||point||^2);
    `engine`: evaluate_point's options (bn_samples, batch_size, compile, autocast)."""
    return node_metrics(point, evaluate_point(model, space.unflatten(point), data, **engine), wd)


def points_metrics(
    model,
    space: WeightSpace,
    points: Sequence[Tensor],
    data,
    wd: float,
    points_per_pass: int = 1,
    *,
    compile: bool = False,
    **engine,
) -> list[dict[str, float]]:
    """`point_metrics` of each flat point (D,): one at a time if points_per_pass is 1 (through
    `torch.compile` if `compile`), else all of them in one vmap'd pass (`evaluate_points`;
    len(points) <= points_per_pass). `engine`: bn_samples, batch_size, autocast."""
    if points_per_pass == 1:
        return [point_metrics(model, space, p, data, wd, compile=compile, **engine) for p in points]
    results = evaluate_points(model, [space.unflatten(p) for p in points], data, **engine)
    return [node_metrics(p, res, wd) for p, res in zip(points, results, strict=True)]


def engine_config(bn_samples: int | None, autocast) -> dict:
    """The engine options that change results, as a partial file's config records them
    (autocast only when set, so files written before the option existed still resume)."""
    name = autocast_name(autocast)
    return {"bn_samples": bn_samples, **({"autocast": name} if name else {})}


def points_done(job: PartialGrid) -> tuple[int, int]:
    """(points done, points in all) of a partial file."""
    return int(job.done.sum()), job.done.size


def _as_ts(ts: int | Sequence[float]) -> np.ndarray:
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


def evaluate_path(
    curve: Curve,
    data,
    ts: int | Sequence[float] = 61,
    *,
    wd: float = 5e-4,
    bn_samples: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    points_per_pass: int | str = "auto",
    compile: bool = False,
    autocast: str | None = None,
) -> PathResult:
    """Train/test loss, nll and error (%) at each t along `curve` (any `Curve`, a `Line` too).

    ts: number of equally spaced points on [0, 1] (endpoints included), or the t values.
    wd: weight decay of the reported loss, nll + 0.5 * wd * ||phi(t)||^2 (5e-4 as in the paper;
        0 reports the nll).
    bn_samples: train samples used to recompute BatchNorm statistics at each t (None: all).
    Diverged points (NaN or inf losses) are recorded as they are.
    partial: a file (without suffix) where finished points are saved atomically at most every
    `save_every_s` seconds; a rerun resumes from it (see `PartialGrid`), and it is removed
    once the result is complete.
    points_per_pass: points evaluated together in one vmap'd pass (`evaluate_points`); faster
    for small networks on a GPU, slower on a CPU. 1: one point at a time; "auto" (default):
    chosen per device and network (`resolve_points_per_pass`).
    compile: run the network through `torch.compile` (one point per pass): compiling takes
    seconds to a minute on the first point and pays off on long paths.
    autocast: "bfloat16" or "float16" runs the forward passes in that precision (faster,
    less accurate: see `evaluate_point`); None (default): full precision.
    """
    ts = _as_ts(ts)
    engine = dict(bn_samples=bn_samples, batch_size=batch_size, autocast=autocast)
    points_per_pass = resolve_points_per_pass(
        points_per_pass,
        curve.model,
        curve.space.unflatten(curve.point(0.0).detach()),
        data,
        compile=compile,
        autocast=autocast,
    )
    config = {
        "ts": ts.tolist(),
        "curve": fingerprint(curve.endpoints, curve.bends),
        "dataset": getattr(data, "name", None),
        "train_samples": len(data.train_x),
        "test_samples": len(data.test_x),
        "wd": wd,
        **engine_config(bn_samples, autocast),
    }
    job = PartialGrid(partial, config, (len(ts),), METRICS, save_every_s) if partial else None
    values = job.values if job else {name: np.empty(len(ts)) for name in METRICS}
    lengths: list[float] = []
    prev = None
    begin = time.perf_counter()
    pending: list[tuple[int, Tensor]] = []  # (k, point) waiting for a full pass
    if job is not None and job.done.any():
        log.info("resuming from '%s.npz': %d of %d points already done", partial, *points_done(job))
    on_stop = save_on_interrupt(lambda: grid_saved(job)) if job else contextlib.nullcontext()
    with torch.no_grad(), on_stop:
        for k, t in enumerate(
            tqdm(ts, desc=f"path ({curve.kind})", disable=not progress, leave=False)
        ):
            point = curve.point(float(t)).detach()
            if prev is not None:
                lengths.append(WeightSpace.norm(point.double() - prev.double()).item())
            prev = point
            if job is None or not job.done[k]:
                pending.append((k, point))
            if not pending or (len(pending) < points_per_pass and k + 1 < len(ts)):
                continue
            nodes = points_metrics(
                curve.model,
                curve.space,
                [p for _, p in pending],
                data,
                wd,
                points_per_pass,
                compile=compile,
                **engine,
            )
            for (j, _), node in zip(pending, nodes, strict=True):
                if job is None:
                    for name, value in node.items():
                        values[name][j] = value
                else:
                    job.record((j,), node)
            pending = []
    seconds = time.perf_counter() - begin
    meta = {
        "curve": {"type": curve.kind, **curve_args(curve)},
        "num_bends": curve.num_bends,
        "dim": curve.space.size,
        "dataset": getattr(data, "name", None),
        "train_samples": len(data.train_x),
        "test_samples": len(data.test_x),
        "points": len(ts),
        "wd": wd,
        "bn_samples": bn_samples,
        "batch_size": batch_size,
        "points_per_pass": points_per_pass,
        "compile": compile,
        "autocast": autocast_name(autocast),
        "seconds": seconds,
        "seconds_per_point": seconds / len(ts),
        "length": math.fsum(lengths),
    }
    result = PathResult(ts=ts, **values, arc_length=np.asarray(lengths), meta=meta)
    if job is not None:
        job.remove()
    return result
