"""Linear mode connectivity and the stability of SGD (Frankle, Dziugaite, Roy, Carbin 2020).

Train a parent to step k, spawn two children that differ only in their SGD noise (data order,
augmentation), train both to the end and walk the straight line between them: the network is
*stable* at k when the line has no error barrier. Their instability is the error barrier
max_t err((1 - t) w1 + t w2) - (err(w1) + err(w2)) / 2 (their Definition 2: our "frankle"
barrier, `modeconn.path.BARRIERS`); the paper evaluates 30 points on the line, we take
`points` (11 by default) and report the Entezari definition beside it. Differences from the
paper, on purpose: BatchNorm statistics are recomputed on the plain train data at every t
(the engine's rule; the paper does not say), and `align=True` also weight-matches the second
child to the first (Ainsworth et al. 2023) before walking the line.

`stability` returns a `StabilityResult`: every metric of the task along every pair's line,
(K spawn steps, P pairs, T points), with the barriers, the instability against k, its spread
over pairs and the first k from which the network stays stable.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from modeconn.align import permutation_spec, weight_matching
from modeconn.curves import Line
from modeconn.data.tasks import CLASSIFICATION, barrier_metrics, metric_names, task_of
from modeconn.engine import EvalSettings, GridResult
from modeconn.lmc.spawn import (
    SPAWN,
    check_vary,
    parent_config,
    spawn_points,
    total_steps,
    train_child,
    train_parent,
)
from modeconn.path import BARRIERS, barrier, evaluate_path, t_values
from modeconn.training import TrainConfig

log = logging.getLogger("modeconn")

ALIGNED = "aligned_"  # the prefix of the metrics along the lines to the aligned second child


@dataclass(eq=False, init=False)
class StabilityResult(GridResult):
    """The task's metrics along the line between the two children of every pair.

    steps (K,): the spawn steps k (optimizer steps of the parent; `fractions` = k / total).
    pairs (P,): 0 .. P-1. ts (T,): t along each line, 0 (the first child) to 1 (the second).
    values: each metric of the task (`metric_names`: train_loss, ..., test_error), (K, P, T),
    BatchNorm statistics recomputed at every t; with align, also "aligned_<metric>" along
    the line to the second child weight-matched to the first. Errors in percent.
    total_steps: the run's optimizer steps. threshold: the barrier (percentage points for an
    error) below which a spawn step counts as stable (`stable_step`).
    """

    steps: np.ndarray
    pairs: np.ndarray
    ts: np.ndarray
    values: dict[str, np.ndarray]
    task: str
    total_steps: int
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "StabilityResult"
    axes: ClassVar[tuple[str, ...]] = ("steps", "pairs", "ts")

    def _names(self, task: str, given: Mapping[str, Any]) -> tuple[str, ...]:
        base = metric_names(str(task))
        if any(k.startswith(ALIGNED) for k in given):
            return base + tuple(ALIGNED + n for n in base)
        return base

    def _set_fields(self, total_steps: Any, threshold: Any) -> None:
        self.total_steps, self.threshold = int(total_steps), float(threshold)

    @property
    def fractions(self) -> np.ndarray:
        """(K,) the spawn steps as fractions of training, k / total_steps."""
        return self.steps / max(self.total_steps, 1)

    @property
    def aligned(self) -> bool:
        """Whether the lines to the weight-matched second children are held too."""
        return any(k.startswith(ALIGNED) for k in self.values)

    @property
    def score(self) -> str:
        """The metric instability is measured in: test_error (classification), test_mse."""
        return "test_error" if self.task == CLASSIFICATION else "test_mse"

    def barriers(
        self, metric: str | None = None, definition: str = "frankle", aligned: bool = False
    ) -> np.ndarray:
        """(K, P) barrier of `metric` (default `score`) on each pair's line, by `definition`
        ("frankle": over the mean of the two children; "entezari": over the chord)."""
        name = (ALIGNED if aligned else "") + (metric or self.score)
        if name not in self.values:
            raise ValueError(f"unknown metric {name!r}; valid: {', '.join(self.values)}")
        values = self.values[name]
        rows = [[barrier(self.ts, v, definition) for v in pair] for pair in values]
        return np.asarray(rows, dtype=np.float64).reshape(values.shape[:2])

    def instability(self, metric: str | None = None, **kw: Any) -> np.ndarray:
        """(K,) the mean barrier over pairs at each spawn step (Frankle et al.'s instability for
        the default test error and "frankle" definition); options as `barriers`."""
        return self.barriers(metric, **kw).mean(axis=1)

    def stable_step(
        self, threshold: float | None = None, metric: str | None = None, **kw: Any
    ) -> int | None:
        """The first spawn step from which the instability stays below `threshold` (default
        the result's) at every later spawn step; None if the last one is not stable."""
        limit = self.threshold if threshold is None else float(threshold)
        below = self.instability(metric, **kw) < limit  # NaN counts as unstable
        unstable = np.flatnonzero(~below)
        first = 0 if len(unstable) == 0 else int(unstable[-1]) + 1
        return int(self.steps[first]) if first < len(self.steps) else None

    def report(self) -> dict[str, Any]:
        """A plain summary (stability.json): per spawn step, both barrier definitions of the
        task's data term and score on both splits, as mean, min, max over pairs and each
        pair's; the stable step of the score (and of the aligned lines)."""
        kinds = [False, True] if self.aligned else [False]
        rows = []
        for i, k in enumerate(self.steps):
            row: dict[str, Any] = {"step": int(k), "fraction": float(self.fractions[i])}
            for aligned in kinds:
                table = {}
                for metric in barrier_metrics(self.task):
                    table[metric] = {}
                    for definition in BARRIERS:
                        b = self.barriers(metric, definition, aligned)[i]
                        table[metric][definition] = _spread(b)
                row["aligned" if aligned else "barriers"] = table
            rows.append(row)
        out = {"total_steps": self.total_steps, "threshold": self.threshold}
        out.update(metric=self.score, definition="frankle", spawn=rows)
        for aligned in kinds:
            step = self.stable_step(aligned=aligned)
            key = "aligned_stable" if aligned else "stable"
            out[key] = {"step": step, "fraction": None if step is None else step / self.total_steps}
        return out


def _spread(values: np.ndarray) -> dict[str, Any]:
    return {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "pairs": [float(v) for v in values],
    }


@contextlib.contextmanager
def _folder(directory: str | Path | None) -> Iterator[Path]:
    if directory is not None:
        yield Path(directory)
        return
    with tempfile.TemporaryDirectory(prefix="modeconn-stability-") as tmp:
        yield Path(tmp)


def stability(
    model: nn.Module,
    data,
    config: TrainConfig,
    spawn: Sequence[Any] | None = SPAWN,
    *,
    spawn_steps: Sequence[int] | None = None,
    pairs: int = 2,
    vary: str = "both",
    child_seed: int = 1000,
    points: int = 11,
    threshold: float = 2.0,
    align: bool = False,
    directory: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    settings: EvalSettings | None = None,
    progress: bool = True,
) -> StabilityResult:
    """Instability against the spawn step k (Frankle et al. 2020, Sec. 3).

    model: the parent's initial network (left unchanged; copies are trained). data: a
    Dataset. config: the training run (epochs, lr, batch size, seed...); the parent draws
    its data order and augmentation from `config.data_seed` / `augment_seed`, `config.seed`
    where unset. spawn: spawn points as fractions of training in [0, 1] (or "5%"), or
    spawn_steps: as optimizer steps. pairs: children pairs per spawn step; child c of pair
    p gets the seed child_seed + 2p + c for what `vary` names ("both": data order and
    augmentation; "order"; "augment"; "none": the pair is one network, a control).
    points: t values on each line (BatchNorm recomputed at each; `settings` as in
    `evaluate_path`). threshold: the stable barrier (percentage points of test error).
    align: also weight-match the second child of each pair to the first (`weight_matching`)
    and walk that line. directory: where the parent, its snapshots and the children are
    checkpointed (a rerun resumes each run and skips finished ones); None: a temporary one.
    meta: what the checkpoints record (model name and arguments, data set).
    """
    check_vary(vary)
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    ts = t_values(points)
    parent = parent_config(config)
    total = total_steps(data, parent)
    steps = spawn_points(total, spawn, spawn_steps)
    given = len(spawn_steps if spawn_steps is not None else () if spawn is None else spawn)
    if len(steps) < given:
        log.info("%d spawn points fall on %d distinct steps of %d", given, len(steps), total)
    if vary == "augment" and (data.augment is None or not config.augment):
        name = getattr(data, "name", "the data set")
        log.warning("%s has no training augmentation: vary=augment gives equal children", name)
    task = task_of(data)
    names = metric_names(task)
    keys = names + (tuple(ALIGNED + n for n in names) if align else ())
    values = {n: np.full((len(steps), pairs, len(ts)), np.nan) for n in keys}
    work = copy.deepcopy(model)
    spec = permutation_spec(work, data.train_x[:4]) if align else None
    with _folder(directory) as folder:
        snapshots = train_parent(copy.deepcopy(model), data, parent, steps, folder, meta)
        jobs = [(i, int(k), p) for i, k in enumerate(steps) for p in range(pairs)]
        for i, k, p in tqdm(jobs, desc="stability", disable=not progress):
            a, b = (
                train_child(
                    work,
                    data,
                    parent,
                    snapshots[k],
                    folder / f"step{k}" / f"pair{p}-{c}.pt",
                    step=k,
                    vary=vary,
                    seed=child_seed + 2 * p + c,
                    meta=meta,
                )
                for c in (0, 1)
            )
            kw = dict(ts=ts, wd=config.wd, settings=settings, progress=False)
            line = evaluate_path(Line(work, a, b), data, **kw)
            for n in names:
                values[n][i, p] = line.values[n]
            if align:
                matched, _ = weight_matching(work, a, b, spec=spec)
                line = evaluate_path(Line(work, a, matched), data, **kw)
                for n in names:
                    values[ALIGNED + n][i, p] = line.values[n]
    info = {
        "dataset": getattr(data, "name", None),
        **{k: v for k, v in (meta or {}).items() if k in ("model", "model_args")},
        "config": {k: v for k, v in dataclasses.asdict(parent).items() if k != "progress"},
        "spawn": None if spawn_steps is not None or spawn is None else [str(s) for s in spawn],
        "spawn_steps": [int(k) for k in steps],
        "vary": vary,
        "child_seed": child_seed,
        "align": align,
        "engine": line.meta.get("engine"),
    }
    return StabilityResult(
        steps, np.arange(pairs), ts, values=values, task=task, total_steps=total,
        threshold=threshold, meta=info,
    )  # fmt: skip
