"""Ensembles along a curve, Fast Geometric Ensembling (FGE) and prediction diversity.

Garipov et al. 2018 ask two questions of a low-loss path phi(t) between w1 and w2:

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

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from modeconn.curves import Curve, Line, curve_args
from modeconn.evaluation import metrics
from modeconn.execution import autocast_name
from modeconn.members import Member, alone, columns, compare, point_member, score_name, together
from modeconn.store import SavedResult
from modeconn.tasks import CLASSIFICATION, MetricColumns, check_task, task_loss, task_of
from modeconn.training import TrainConfig, fit
from modeconn.weights import fingerprint

# --------------------------------------------------------------------------- diversity


def ensemble_log_probs(log_probs: Sequence[Tensor] | Tensor) -> Tensor:
    """Log of the mean of the members' probabilities, shape (N, C).

    `log_probs`: n tensors of log-probabilities (N, C), or one (n, N, C) tensor.
    log(1/n sum_i exp(l_i)) = logsumexp_i(l_i) - log n, stable for very confident members.
    """
    stacked = log_probs if isinstance(log_probs, Tensor) else None
    if stacked is None:
        if len(log_probs) == 0:
            raise ValueError("ensemble_log_probs needs at least one member")
        shapes = {tuple(lp.shape) for lp in log_probs}
        if len(shapes) != 1:
            raise ValueError(f"members must all have the same (N, C) shape, got {sorted(shapes)}")
        stacked = torch.stack(list(log_probs))
    if stacked.ndim != 3 or stacked.shape[0] == 0:
        raise ValueError(f"expected n >= 1 members of shape (N, C), got {tuple(stacked.shape)}")
    return torch.logsumexp(stacked, dim=0) - math.log(stacked.shape[0])


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"expected two log-probability tensors of the same shape (N, C), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def disagreement(log_probs_a: Tensor, log_probs_b: Tensor) -> float:
    """Percentage of inputs on which the two predicted classes differ; inputs (N, C) each."""
    _check_pair(log_probs_a, log_probs_b)
    differ = log_probs_a.argmax(1) != log_probs_b.argmax(1).to(log_probs_a.device)
    return 100.0 * differ.double().mean().item()


def kl_divergence(log_probs_a: Tensor, log_probs_b: Tensor) -> float:
    """Mean over inputs of KL(p_a || p_b) = sum_c p_a (log p_a - log p_b), in nats.

    Inputs are log-probabilities (N, C). Both are renormalised in float64 and each input's
    divergence is clipped at 0, so rounding never gives a (meaningless) negative value.
    Classes with p_a = 0 contribute 0.
    """
    _check_pair(log_probs_a, log_probs_b)
    a = log_probs_a.double()
    b = log_probs_b.double().to(a.device)
    a = a - torch.logsumexp(a, dim=1, keepdim=True)
    b = b - torch.logsumexp(b, dim=1, keepdim=True)
    p = a.exp()
    terms = torch.where(p > 0, p * (a - b), torch.zeros_like(p))
    return terms.sum(1).clamp_min(0).mean().item()


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

    Columns named after the data set's task (`modeconn.members.columns`), (T,) arrays read
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
) -> EnsembleResult:
    """Accuracy of the ensemble {w1, phi(t)} versus t, along `curve` and the straight segment.

    `ts`: number of equally spaced points in [0, 1], or the t values themselves. At every
    point BatchNorm statistics of `curve.model` are recomputed on `data.train_x` (all of it,
    or `bn_samples`), then the test set is predicted. w1's and w2's predictions are computed
    once and reused (also for points that equal an endpoint exactly). `autocast`
    ("bfloat16" or "float16"): forward passes in that precision; `compile`: through
    `torch.compile` (see `evaluate_point`).
    """
    began = time.perf_counter()
    ts = _as_ts(ts)
    model, space, y, task = curve.model, curve.space, data.test_y, task_of(data)
    run = dict(bn_samples=bn_samples, batch_size=batch_size, autocast=autocast, compile=compile)

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


# --------------------------------------------------------------------------- FGE


def fge_lr(epoch: float, cycle: float, lr1: float, lr2: float) -> float:
    """Cyclical FGE learning rate at the fractional epoch `epoch` (Garipov et al. 2018, Sec. 5).

    With s = (epoch mod cycle) / cycle in [0, 1): lr1 -> lr2 linearly over the first half of
    each cycle, lr2 -> lr1 over the second half; lr2 exactly at mid-cycle, lr1 at its start.
    """
    if cycle <= 0:
        raise ValueError(f"cycle must be > 0 epochs, got {cycle}")
    s = (epoch % cycle) / cycle
    w = 1 - 2 * s if s <= 0.5 else 2 * s - 1  # weight of lr1: 1 at the start, 0 at mid-cycle
    lr = w * lr1 + (1 - w) * lr2
    return min(max(lr, min(lr1, lr2)), max(lr1, lr2))  # guard against rounding


@dataclass(eq=False, init=False)
class FGEResult(MetricColumns, SavedResult):
    """Fast Geometric Ensembling on the test split.

    `snapshot_epochs` (S,): epochs (counted from the start of FGE) at which the rate reached
    lr2 and a snapshot was taken. `member_*` (S,): each snapshot alone; `ensemble_*` (S,):
    entry k-1 is the ensemble of the first k snapshots. `start_*`: the network FGE started
    from. Classification: *_error (%) and *_nll (nats); regression: *_mse and *_nll (the
    Gaussian mixture's, as in `ensembles_along_curve`). `meta` holds the settings and the
    training history. Positional columns after snapshot_epochs are the classification
    ones, in the order member_error, member_nll, ensemble_error, ensemble_nll, start_error,
    start_nll.
    """

    result_kind: ClassVar[str] = "FGEResult"

    snapshot_epochs: np.ndarray
    values: dict[str, Any]
    task: str
    meta: dict[str, Any] | None = None

    def __init__(
        self,
        snapshot_epochs: Any,
        *positional: Any,
        task: str = CLASSIFICATION,
        values: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **columns_: Any,
    ) -> None:
        self.snapshot_epochs = np.asarray(snapshot_epochs)
        names = _fge_names(check_task(task))
        if len(positional) > len(names):
            raise TypeError(f"FGEResult takes at most {len(names)} positional columns")
        given = {**dict(zip(names, positional, strict=False)), **(values or {}), **columns_}
        self._set_values(task, given, {}, names=names)
        self.meta = dict(meta or {})


def _fge_names(task: str) -> tuple[str, ...]:
    score = score_name(task)
    return (
        f"member_{score}",
        "member_nll",
        f"ensemble_{score}",
        "ensemble_nll",
        f"start_{score}",
        "start_nll",
    )


def fge(
    model: nn.Module,
    data,
    *,
    cycles: int = 4,
    cycle: int = 2,
    lr1: float = 0.05,
    lr2: float = 0.0005,
    wd: float = 5e-4,
    momentum: float = 0.9,
    batch_size: int = 128,
    seed: int = 1,
    augment: bool = True,
    bn_samples: int | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
) -> FGEResult:
    """Fast Geometric Ensembling from a trained `model` (left unchanged; a copy is trained).

    SGD with the cyclical rate `fge_lr` (cycle length `cycle` epochs, even, so that the rate
    reaches lr2 exactly at an epoch end), one snapshot at every mid-cycle: `cycles` snapshots,
    at epochs cycle/2, cycle/2 + cycle, ... Training stops at the last snapshot (the rising
    half of the last cycle would never be used). Each snapshot gets BatchNorm statistics
    recomputed on the un-augmented train data, then predicts the test set.

    `checkpoint`: a file the run saves after every epoch (weights, optimizer, RNG state and
    the snapshots so far) and resumes from, so a crashed run continues where it stopped and
    ends with the same snapshots; a run of other settings or another start network is
    refused. `callbacks(epoch, record)` run after each training epoch.
    """
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    if cycle < 2 or cycle % 2:
        raise ValueError(
            f"cycle must be an even number of epochs >= 2 (the rate reaches lr2 at mid-cycle, "
            f"where a snapshot is taken at an epoch end), got {cycle}"
        )
    if not lr1 >= lr2 >= 0:
        raise ValueError(f"need lr1 >= lr2 >= 0 (lr1 high, lr2 low), got lr1={lr1}, lr2={lr2}")
    began = time.perf_counter()
    work = copy.deepcopy(model)
    y, task = data.test_y, task_of(data)

    def params() -> dict[str, Tensor]:
        return {name: p.detach().clone() for name, p in work.named_parameters()}

    start = alone(task, point_member(work, params(), data, bn_samples=bn_samples), y)

    half = cycle // 2
    epochs = (cycles - 1) * cycle + half
    snapshots: list[tuple[int, dict[str, Tensor]]] = []

    def take_snapshot(epoch: int, record: dict[str, float]) -> None:
        if epoch % cycle == half:
            snapshots.append((epoch, params()))

    def saved_snapshots() -> list[dict[str, Any]]:
        return [{"epoch": e, "params": w} for e, w in snapshots]

    def restore_snapshots(saved: list[dict[str, Any]] | None) -> None:
        snapshots[:] = [(int(s["epoch"]), dict(s["params"])) for s in saved or []]

    def step(net: nn.Module, x: Tensor, target: Tensor, g: torch.Generator):
        logits = net(x)
        return task_loss(task, logits, target), logits

    config = TrainConfig(
        epochs=epochs,
        lr=lr1,
        momentum=momentum,
        wd=wd,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        save_every=1,
        progress=progress,
    )
    trained = fit(
        work,
        list(work.parameters()),
        step,
        data,
        config,
        meta={
            "kind": "fge",
            "dataset": getattr(data, "name", None),
            "fge": {"cycles": cycles, "cycle": cycle, "lr1": lr1, "lr2": lr2},
            "start": fingerprint(*params().values()),
        },
        state_fn=work.state_dict,
        load_fn=work.load_state_dict,
        checkpoint=checkpoint,
        weight_decay=wd,
        callbacks=[take_snapshot, *callbacks],
        lr_fn=lambda e: fge_lr(e, cycle, lr1, lr2),
        extra_state=(saved_snapshots, restore_snapshots),
    )

    rows = []
    running = None  # logsumexp of the members' log-probs so far
    members: list[Member] = []
    for k, (_, weights) in enumerate(tqdm(snapshots, desc="fge eval", disable=not progress)):
        member = point_member(work, weights, data, bn_samples=bn_samples)
        if task == CLASSIFICATION:
            lp = member.outputs
            running = lp if running is None else torch.logaddexp(running, lp)
            one, ens = metrics(lp, y), metrics(running - math.log(k + 1), y)  # first k + 1
            rows.append([one.error, one.nll, ens.error, ens.nll])
        else:
            members.append(member)
            rows.append([*alone(task, member, y), *together(task, members, y)])
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), 4)

    meta = {
        "dataset": getattr(data, "name", None),
        "cycles": cycles,
        "cycle": cycle,
        "lr1": lr1,
        "lr2": lr2,
        "wd": wd,
        "momentum": momentum,
        "batch_size": batch_size,
        "seed": seed,
        "augment": augment,
        "epochs": epochs,
        "bn_samples": bn_samples,
        "split": "test",
        "test_samples": len(y),
        "history": trained.history,
        "seconds": time.perf_counter() - began,
    }
    return FGEResult(
        snapshot_epochs=np.asarray([e for e, _ in snapshots], dtype=np.int64),
        values={
            **{name: values[:, j] for j, name in enumerate(_fge_names(task)[:4])},
            **dict(zip(_fge_names(task)[4:], start, strict=True)),
        },
        task=task,
        meta=meta,
    )
