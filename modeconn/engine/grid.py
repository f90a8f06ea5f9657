"""Every job over N weight points is one loop: `evaluate_grid`.

A path, a plane, a random-direction surface, a trajectory plane: each is a grid of indices
(shape (T,), (Gx, Gy), ...) and a function from an index to a flat weight point. This module
evaluates every node once and owns, in one place, what such a job needs: nodes batched for
`points_per_pass`, resume from a partial file with its explicit `done` mask (the only place a
`PartialGrid` is made), shards (k, n) and their merge, progress, NaN/inf recording (a
diverged node is a result, not a gap), Ctrl-C / SIGTERM saving, timing, and the engine part
of the result metadata and of the resume configuration. Analyses supply only the points and
their result class, and, where a node needs more than the loss (the curvature maps of
`modeconn.curvature.maps`), a per-point `measure` with its own value names.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from modeconn.curves.weights import WeightSpace
from modeconn.data.tasks import CLASSIFICATION, gaussian_nll, metric_names, noise_variance, task_of
from modeconn.engine.adaptive import Adaptive, Refinement, as_resolution
from modeconn.engine.batched import evaluate_points, resolve_points_per_pass
from modeconn.engine.execution import eval_plan
from modeconn.engine.point import Metrics, RegressionMetrics, evaluate_point
from modeconn.engine.settings import EvalSettings
from modeconn.engine.subset import eval_subset
from modeconn.io.interrupt import grid_saved, save_on_interrupt
from modeconn.io.store import PartialGrid, UnreadableResult, load_result

log = logging.getLogger("modeconn")

# The metrics of a classification node; `metric_names(task)` gives every task's.
METRICS = metric_names(CLASSIFICATION)

Index = tuple[int, ...]
# A per-point measure: (model, flat point (D,), data) -> {name: value}, beside the metrics.
Measure = Callable[[nn.Module, Tensor, Any], Mapping[str, float]]


def node_metrics(
    point: Tensor,
    res: Mapping[str, Metrics | RegressionMetrics],
    wd: float,
    noise_scale: float | None = None,
) -> dict[str, float]:
    """The metrics of a flat weight point (D,) from its train and test results, named by
    the task (`modeconn.data.tasks.metric_names`). Classification (`Metrics`): nll, error and
    loss = nll + 0.5 * wd * ||point||^2 per split. Regression (`RegressionMetrics`): mse,
    loss = mse + 0.5 * wd * ||point||^2, and the Gaussian nll 0.5 log(2 pi s2) + mse / (2 s2)
    with s2 = noise_scale^2, or (None) the maximum-likelihood fit s2 = train mse."""
    l2 = 0.5 * wd * WeightSpace.dot(point, point).item() if wd else 0.0
    node = {}
    if isinstance(res["train"], RegressionMetrics):
        sigma2 = noise_variance(res["train"].mse, noise_scale)
        for split in ("train", "test"):
            mse = res[split].mse
            node[f"{split}_loss"] = mse + l2
            node[f"{split}_mse"] = mse
            node[f"{split}_nll"] = gaussian_nll(mse, sigma2)
        return node
    for split in ("train", "test"):
        node[f"{split}_nll"] = res[split].nll
        node[f"{split}_error"] = res[split].error
        node[f"{split}_loss"] = res[split].nll + l2
    return node


def points_metrics(
    model: nn.Module,
    space: WeightSpace,
    points: Sequence[Tensor],
    data,
    wd: float,
    settings: EvalSettings,
    points_per_pass: int = 1,
    eval_data=None,
) -> list[dict[str, float]]:
    """The metrics of each flat point (D,) (`node_metrics`; the noise scale of a regression
    NLL is `data.noise_scale`): one at a time if points_per_pass is 1, else all of them in
    one vmap'd pass (`evaluate_points`; len(points) <= points_per_pass). BatchNorm
    statistics come from `data`'s train split (or, with `settings.bn == "fixed"`, the model's
    current buffers), the metrics from `eval_data` (default: data)."""
    noise = getattr(data, "noise_scale", None)
    kw = dict(
        bn_samples=settings.bn_samples,
        batch_size=settings.batch_size,
        bn_exact=settings.bn_exact,
        autocast=settings.autocast,
        eval_data=eval_data,
        bn=settings.bn,
    )
    if points_per_pass == 1:
        one = dict(compile=settings.compile, layout=settings.layout)
        return [
            node_metrics(
                p,
                evaluate_point(model, space.unflatten(p), data, **one, **kw),
                wd,
                noise,
            )
            for p in points
        ]
    results = evaluate_points(model, [space.unflatten(p) for p in points], data, **kw)
    return [node_metrics(p, res, wd, noise) for p, res in zip(points, results, strict=True)]


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


@dataclass
class GridValues:
    """What `evaluate_grid` returns: metric -> array of the grid's shape, and the engine
    metadata of the run (settings, points per pass, timing); with adaptive resolution also
    the mask of evaluated nodes and the interpolation error estimate of every node."""

    values: dict[str, np.ndarray]
    meta: dict[str, Any]
    # adaptive resolution (`modeconn.engine.adaptive`): the evaluated nodes, the error estimate
    evaluated: np.ndarray | None = None
    error: np.ndarray | None = None


def data_config(data, wd: float, settings: EvalSettings) -> dict[str, Any]:
    """The data and engine part of a job's resume configuration (a regression job adds
    its task and noise scale; classification files keep their keys)."""
    task = task_of(data)
    return {
        "dataset": getattr(data, "name", None),
        "train_samples": len(data.train_x),
        "test_samples": len(data.test_x),
        "wd": wd,
        **settings.resume_config(),
        **(
            {}
            if task == CLASSIFICATION
            else {"task": task, "noise_scale": getattr(data, "noise_scale", None)}
        ),
    }


def evaluate_grid(
    model: nn.Module,
    space: WeightSpace,
    shape: tuple[int, ...],
    point_at: Callable[[Index], Tensor],
    data,
    settings: EvalSettings,
    *,
    wd: float,
    config: Mapping[str, Any],
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    desc: str = "grid",
    measure: Measure | None = None,
    measure_names: Sequence[str] = (),
    resolution: str | Adaptive = "regular",
) -> GridValues | None:
    """Evaluate the weight point `point_at(index)` (a flat (D,) tensor) at every index of a
    grid of `shape` (C order), with BatchNorm recomputed at each (`evaluate_point`; with
    `settings.bn == "fixed"` every point keeps the model's current running statistics).

    config: what defines the points (t values, a plane's fingerprint, ...); with the data
        set, wd and the result-changing settings it is the partial file's configuration, and
        a partial file of another configuration is refused, naming the differing keys.
    partial: a file (without suffix) where finished nodes are saved atomically at most every
        `save_every_s` seconds and on Ctrl-C / SIGTERM; a rerun resumes from it. It is left
        in place: the caller removes it (`PartialGrid.remove_files`) once its result is saved.
    shard: (k, n) evaluates only the nodes whose flat index is k modulo n, into `partial`
        (required); returns None while nodes of other shards are missing (`merge_shards`).
    measure: called as measure(model, point, data) at every node after its metrics (with
        gradients enabled, e.g. Hessian-vector products), returning the values named
        `measure_names`; they are saved, resumed and sharded with the metrics. Without it
        (the default) nothing changes.
    resolution: "regular" (every node), or "adaptive" / `Adaptive(...)`: `shape` is the
        target grid, refined from a coarse one where the picture needs it
        (`modeconn.engine.adaptive`); each round's nodes go through the same batches, files
        and settings, a shard (k, n) takes the tiles k mod n and returns None (every shard
        runs to its end alone), and the result adds the evaluated mask and error estimate.
    Returns the metric arrays (named after the data set's task, `metric_names`, then the
    measure's names) and the engine metadata; a NaN or inf metric is recorded as is.
    """
    shape = tuple(int(s) for s in shape)
    extra = tuple(measure_names) if measure is not None else ()
    clash = sorted(set(extra) & set(metric_names(task_of(data))))
    if clash or len(set(extra)) != len(extra):
        raise ValueError(f"measure_names must be distinct and not metric names, got {extra}")
    names = metric_names(task_of(data)) + extra
    if shard is not None:
        k, n = shard
        if partial is None or not 0 <= k < n:
            raise ValueError(f"shard=(k, n) needs 0 <= k < n and a partial file, got {shard}")
    adaptive = as_resolution(resolution)
    plan = None if adaptive is None else Refinement(adaptive, shape, names, shard)
    total = int(np.prod(shape))
    job = None
    if partial is not None:
        full = {**dict(config), **data_config(data, wd, settings)}
        if adaptive is not None:  # a regular job's file keeps its keys
            full.update(adaptive.config())
        job = PartialGrid(partial, full, shape, names, save_every_s)
        if job.done.any():
            log.info(
                "resuming from '%s.npz': %d of %d points already done",
                partial,
                int(job.done.sum()),
                total,
            )
        values = job.values
    else:
        values = {name: np.full(shape, np.nan) for name in names}
    todo = []
    if plan is None:
        indices = [np.unravel_index(f, shape) for f in range(total)]
        todo = [
            tuple(int(i) for i in ix)
            for f, ix in enumerate(indices)
            if (job is None or not job.done[ix]) and (shard is None or f % shard[1] == shard[0])
        ]
    eval_data = eval_subset(data, settings)
    first = point_at(todo[0] if todo else (0,) * len(shape))
    per_pass = resolve_points_per_pass(
        settings.points_per_pass,
        model,
        space.unflatten(first),
        data,
        compile=settings.compile,
        autocast=settings.autocast,
    )
    begin, evaluated = time.perf_counter(), 0

    def run(nodes: Sequence[Index], what: str) -> None:
        """Evaluate `nodes` in passes of `per_pass` points; record each node's values."""
        nonlocal evaluated
        pending: list[Index] = []
        for count, index in enumerate(tqdm(nodes, desc=what, disable=not progress, leave=False)):
            pending.append(index)
            if len(pending) < per_pass and count + 1 < len(nodes):
                continue
            points = [point_at(ix).detach() for ix in pending]
            found = points_metrics(model, space, points, data, wd, settings, per_pass, eval_data)
            if measure is not None:
                with torch.enable_grad():
                    for node, point in zip(found, points, strict=True):
                        node.update(_measured(measure(model, point, data), extra))
            for ix, node in zip(pending, found, strict=True):
                if job is None:
                    for name, value in node.items():
                        values[name][ix] = value
                else:
                    job.record(ix, node)
            evaluated += len(pending)
            pending = []

    rounds = itertools.count()

    def round_of(nodes: np.ndarray) -> None:
        """One refinement round: its nodes that are not done yet, then a save."""
        left = [tuple(int(i) for i in ix) for ix in nodes]
        run([ix for ix in left if job is None or not job.done[ix]], f"{desc} r{next(rounds)}")
        if job is not None:
            job.save()

    on_stop = save_on_interrupt(lambda: grid_saved(job)) if job else contextlib.nullcontext()
    with torch.no_grad(), on_stop:
        if plan is None:
            run(todo, desc)
        else:
            refined = plan.run(values, round_of)
        if job is not None:
            if plan is not None:
                job.finished = True
            job.save()
            if (plan is None and not job.done.all()) or (
                plan is not None and shard is not None and shard[1] > 1
            ):
                return None  # a shard: the other nodes belong to other processes
    seconds = time.perf_counter() - begin
    meta = {
        "engine": settings.meta(),
        # what the engine ran: by rule from the settings and the data (`eval_plan`); a GPU's
        # points_per_pass="auto" is the one choice made by timing, recorded here to pin it
        "plan": eval_plan(
            data.train_x, batch_size=settings.batch_size, layout=settings.layout
        ).meta(),
        "points_per_pass": per_pass,
        "seconds": seconds,
        "seconds_per_point": seconds / max(evaluated, 1),
        "points": total,
        "dataset": getattr(data, "name", None),
        "train_samples": len(data.train_x),
        "test_samples": len(data.test_x),
        "wd": wd,
        **(
            {}
            if names[: len(names) - len(extra)] == METRICS
            else {"noise_scale": getattr(data, "noise_scale", None)}
        ),
    }
    if plan is None:
        return GridValues({k: np.array(v) for k, v in values.items()}, meta)
    filled, error = plan.assemble(values, refined)
    meta["resolution"] = refined.meta
    return GridValues(filled, meta, refined.evaluated, error)


def _measured(values: Mapping[str, float], names: tuple[str, ...]) -> dict[str, float]:
    """A measure's values as floats, exactly the names it declared."""
    if set(values) != set(names):
        raise ValueError(f"the measure returned {sorted(values)}, but declared {list(names)}")
    return {name: float(values[name]) for name in names}


def _shard_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A shard's partial file; a damaged one is refused naming it and how to redo it."""
    try:
        return load_result(path)
    except UnreadableResult as err:
        raise ValueError(
            f"cannot merge: {err.problem}. Rerun that shard (it sets the damaged file aside "
            "and starts it afresh), then merge again"
        ) from None


def merge_shards(paths: list[str | Path], into: str | Path) -> int:
    """Join the partial files of the shards of one job into `into`; returns points done.

    Refuses shards written for different configurations (naming the differing keys), and
    damaged shard files (naming them). A damaged `into` is set aside (`PartialGrid`). The
    merged file is `finished` when every shard is (the shards of an adaptive job leave nodes
    undone: there, that flag, not the count, says whether a shard is missing).
    """
    if not paths:
        raise ValueError("merge_shards needs at least one shard file")
    first_arrays, first_meta = _shard_file(paths[0])
    config = first_meta.get("config", {})
    names = tuple(k for k in first_arrays if k != "done")
    merged = PartialGrid(into, config, first_arrays["done"].shape, names, save_every_s=0)
    finished = []
    for path in paths:
        arrays, meta = _shard_file(path)
        other = meta.get("config", {})
        differing = sorted(k for k in set(other) | set(config) if other.get(k) != config.get(k))
        if differing:
            raise ValueError(
                f"cannot merge '{path}' with '{paths[0]}': they are shards of different jobs; "
                f"differing keys: {', '.join(differing)}"
            )
        done = arrays["done"].astype(bool)
        for name in names:
            merged.values[name][done] = arrays[name][done]
        merged.done |= done
        finished.append(bool(meta.get("finished", False)))
    merged.finished = all(finished)  # the shards of an adaptive job: each ran to its end
    merged.save()
    return int(np.count_nonzero(merged.done))
