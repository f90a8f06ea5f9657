"""Fast Geometric Ensembling (Garipov et al. 2018, Sec. 5).

SGD from one trained network with a cyclical learning rate, one snapshot every time the rate
reaches its minimum; the ensemble of snapshots matches independently trained networks at a
fraction of the cost. Every snapshot is evaluated as every weight point is: BatchNorm
statistics recomputed on the un-augmented train data, then predictions on the test set, the
members' probabilities averaged (`modeconn.ensembles.along_curve`).
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

from modeconn.curves.weights import fingerprint
from modeconn.data.tasks import CLASSIFICATION, MetricColumns, check_task, task_loss, task_of
from modeconn.engine.point import metrics
from modeconn.ensembles.members import Member, alone, point_member, score_name, together
from modeconn.io.store import SavedResult
from modeconn.training import TrainConfig, fit


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
    member_callbacks: Sequence[Callable[[int, Member], None]] = (),
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
    refused. `callbacks(epoch, record)` run after each training epoch;
    `member_callbacks(k, member)` with each snapshot's test outputs (`Member`) as snapshot k
    is evaluated (what an ensemble measure beyond error and nll needs, e.g. calibration).
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
        for member_callback in member_callbacks:
            member_callback(k, member)
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
