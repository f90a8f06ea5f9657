"""Exact spawning (Frankle, Dziugaite, Roy, Carbin 2020, Sec. 3): one parent run trained to the
end, its exact state kept at every spawn step k, and children continued from it that differ
only in the SGD noise named (data order, augmentation).

The parent trains with two generators (`TrainConfig.data_seed`, `augment_seed`), so it can stop
at any step, inside an epoch too, and go on bit for bit (`fit(..., stop_at=k)`). At each k its
checkpoint (weights, BatchNorm buffers, optimizer momentum, the schedule's position, every RNG
state, the epoch's order) is copied to `parent-step<k>.pt`; a child is that copy with its
generators seeded anew (`modeconn.io.run_state.spawn_checkpoint`), trained to the end as an
ordinary resumable run. Every file lives in one directory, so a rerun goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from modeconn.io.atomic import atomic_write
from modeconn.io.run_state import spawn_checkpoint
from modeconn.training import TrainConfig, train_endpoint

# Frankle et al.'s spawn points, as fractions of training (their Fig. 3 reaches 0 to 100 %)
SPAWN = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)
# What children differ in: the data order, the augmentation, both, or nothing (a control: the
# two children of a pair are then one network and every barrier is 0)
VARY = {
    "both": ("data_seed", "augment_seed"),
    "order": ("data_seed",),
    "augment": ("augment_seed",),
    "none": (),
}


def total_steps(data, config: TrainConfig) -> int:
    """Optimizer steps of a whole run: epochs x ceil(N / batch size)."""
    return config.epochs * math.ceil(len(data.train_y) / config.batch_size)


def _fraction(value: Any) -> float:
    """0.05, "0.05" or "5%" -> 0.05; anything else is an error naming the value."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not 0 <= number <= 1:
        shown = repr(value) if isinstance(value, str) else str(value)
        raise ValueError(
            f"spawn point {shown} is not a fraction of training in [0, 1] (or a percentage "
            "such as '0.5%'); give optimizer steps as spawn_steps=[...] instead"
        )
    return number


def spawn_points(
    total: int, spawn: Sequence[Any] | None = SPAWN, spawn_steps: Sequence[int] | None = None
) -> np.ndarray:
    """The spawn steps (K,) int64, sorted and unique, of a run of `total` optimizer steps:
    `spawn` as fractions of training (rounded to the nearest step), or `spawn_steps` as steps
    in [0, total]. Fractions that round to one step give that step once."""
    if spawn_steps is not None:
        steps = list(spawn_steps)
        bad = [s for s in steps if isinstance(s, bool) or int(s) != s or not 0 <= s <= total]
        if bad:
            raise ValueError(
                f"spawn_steps {bad} are not optimizer steps in [0, {total}] (this run has "
                f"{total} steps); give fractions of training as spawn=[...] instead"
            )
        steps = [int(s) for s in steps]
    else:
        steps = [round(_fraction(f) * total) for f in (() if spawn is None else spawn)]
    if not steps:
        raise ValueError("no spawn points: give spawn=[0, 0.01, ...] or spawn_steps=[0, 10, ...]")
    return np.unique(np.asarray(steps, dtype=np.int64))


def check_vary(vary: str) -> tuple[str, ...]:
    if vary not in VARY:
        raise ValueError(f"unknown vary={vary!r}; valid: {', '.join(VARY)}")
    return VARY[vary]


def parent_config(config: TrainConfig) -> TrainConfig:
    """The parent's settings: `config` with a data-order and an augmentation seed (from
    `config.seed` where unset), so that it runs with two generators and can stop anywhere."""
    return dataclasses.replace(
        config,
        data_seed=config.seed if config.data_seed is None else config.data_seed,
        augment_seed=config.seed if config.augment_seed is None else config.augment_seed,
    )


def child_seeds(config: TrainConfig, vary: str, seed: int) -> TrainConfig:
    """A child's settings: the parent's with the seeds that `vary` names set to `seed`."""
    return dataclasses.replace(config, **{name: seed for name in check_vary(vary)})


def spawn_meta(config: TrainConfig, step: int) -> dict[str, Any]:
    """What a child's checkpoint records of where it came from (`spawn_checkpoint`)."""
    return {"step": int(step), "data_seed": config.data_seed, "augment_seed": config.augment_seed}


def train_parent(
    model: nn.Module,
    data,
    config: TrainConfig,
    steps: Sequence[int],
    directory: Path,
    meta: Mapping[str, Any] | None = None,
) -> dict[int, Path]:
    """Train `model` (in place, from its weights) to the end with `config` (a parent's: two
    generators), keeping its exact state at each of `steps` as directory/parent-step<k>.pt;
    the run itself is directory/parent.pt. Returns {k: snapshot path}. A rerun skips the
    snapshots on disk and resumes the run."""
    directory.mkdir(parents=True, exist_ok=True)
    run, snapshots = directory / "parent.pt", {}
    for k in sorted(int(s) for s in steps):
        snapshots[k] = directory / f"parent-step{k}.pt"
        if snapshots[k].exists():
            continue
        train_endpoint(model, data, config, checkpoint=run, meta=meta, stop_at=k)
        atomic_write(snapshots[k], lambda tmp: shutil.copyfile(run, tmp))  # noqa: B023
    train_endpoint(model, data, config, checkpoint=run, meta=meta)
    return snapshots


def train_child(
    model: nn.Module,
    data,
    config: TrainConfig,
    snapshot: Path,
    path: Path,
    *,
    step: int,
    vary: str,
    seed: int,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Spawn a child of the parent state `snapshot` (at `step`) at `path` (seeds: `vary`,
    `seed`), train it to the end (resuming `path` if it exists) and return its state dict.
    `model`: a network of the parent's architecture, overwritten; `config`: the parent's."""
    own = child_seeds(config, vary, seed)
    named = {name: seed for name in check_vary(vary)}
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        spawn_checkpoint(snapshot, path, **named)
    info = {**(meta or {}), "spawn": spawn_meta(config, step)}
    train_endpoint(model, data, own, checkpoint=path, meta=info)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
