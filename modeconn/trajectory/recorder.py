"""Recording an optimisation trajectory to disk while a network or a curve trains.

Li et al. 2018 (Sec. 7) save the network at every epoch and fit PCA to the saved weights; the
loss-landscape-anim tool keeps the last step of each epoch in memory. Here a
`TrajectoryRecorder` is a step callback of `modeconn.training.fit`: every `every` optimizer
steps it appends the current flat weights (float32) and the batch loss computed on exactly
those weights (the callback runs after the forward pass, before the update) to a
`TrajectoryStore`, a folder a user can read without modeconn:

    points.f32   the rows, raw little-endian float32, T x R*D (R = 1 for a network, the
                 number of bends for a curve): `numpy.memmap(f, "<f4").reshape(T, -1)`
    index.bin    one record per row: step (int64: optimizer steps done), batch loss (float64)
    meta.json    D, R, the weight space (names, shapes), `every`, kind, finished

Rows go straight to the file, so memory holds one snapshot at a time, whatever T is. Rows are
written before their index record and a store opens with min(rows, records) rows, so a crash
in the middle of an append loses at most that row. Resume: the first step a resumed `fit`
reports is where its checkpoint stood; the recorder drops every row at or after it (recorded
after the checkpoint, by the run that crashed) and goes on, so the file equals that of an
uninterrupted run. The final weights are appended when the last epoch ends; they have no
batch loss (NaN).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from modeconn.curves.family import Curve
from modeconn.curves.weights import WeightSpace
from modeconn.engine.ranks import Ranks
from modeconn.io.store import atomic_write, plain_meta

INDEX_DTYPE = np.dtype([("step", "<i8"), ("loss", "<f8")])


class TrajectoryStore:
    """An appendable (T, R, D) float32 array on disk plus a step and a batch loss per row.

    path: a folder (created). dim: D; rows: R vectors per snapshot (1 for a network, the
    bends of a curve); meta: anything else to keep (the weight space, `every`, kind).
    Opening an existing store with another dim or rows raises, unless `replace=True`, which
    empties it.
    """

    def __init__(
        self,
        path: str | Path,
        dim: int | None = None,
        rows: int = 1,
        meta: Mapping[str, Any] | None = None,
        replace: bool = False,
    ):
        self.path = Path(path)
        self._meta_file = self.path / "meta.json"
        self._points_file = self.path / "points.f32"
        self._index_file = self.path / "index.bin"
        if self._meta_file.is_file():
            stored = self._read_meta()
            same = dim is None or (stored["dim"] == dim and stored["rows"] == rows)
            if not same and not replace:
                raise ValueError(
                    f"the trajectory store '{self.path}' holds snapshots of {stored['rows']} x "
                    f"{stored['dim']} weights, not {rows} x {dim}: another network. Record to "
                    "another folder, or delete it"
                )
            if same:
                self.meta = stored
                self.dim, self.rows = int(stored["dim"]), int(stored["rows"])
                self._repair()
                return
        if dim is None:
            raise FileNotFoundError(f"no trajectory store at '{self.path}' (meta.json is missing)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim, self.rows = int(dim), int(rows)
        self.meta = plain_meta({**(meta or {}), "dim": self.dim, "rows": self.rows})
        self.meta["finished"] = False
        self._points_file.write_bytes(b"")
        self._index_file.write_bytes(b"")
        self._write_meta()

    # ----------------------------------------------------------------- files

    @property
    def _row_bytes(self) -> int:
        return 4 * self.dim * self.rows

    def _repair(self) -> None:
        """Cut a half-written last row (a crash during `append`): keep complete pairs only."""
        rows = self._points_file.stat().st_size // self._row_bytes
        records = self._index_file.stat().st_size // INDEX_DTYPE.itemsize
        self._truncate_files(min(rows, records))

    def _truncate_files(self, n: int) -> None:
        os.truncate(self._points_file, n * self._row_bytes)
        os.truncate(self._index_file, n * INDEX_DTYPE.itemsize)

    def _read_meta(self) -> dict[str, Any]:
        """meta.json; a damaged one is an error naming it (the rows mean nothing without it)."""
        try:
            stored = json.loads(self._meta_file.read_text())
            if not isinstance(stored, dict) or not {"dim", "rows"} <= set(stored):
                raise ValueError("not the meta.json of a trajectory store")
        except PermissionError:
            raise
        except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError included
            raise ValueError(
                f"the trajectory store's '{self._meta_file}' is unreadable (truncated or "
                f"corrupt: {str(err).splitlines()[0] if str(err) else type(err).__name__}). "
                f"Delete the folder '{self.path}' (and the training checkpoint, to record the "
                "whole run again), or record to another folder"
            ) from None
        return stored

    def _write_meta(self) -> None:
        atomic_write(self._meta_file, lambda tmp: tmp.write_text(json.dumps(self.meta, indent=2)))

    def __len__(self) -> int:
        return self._index_file.stat().st_size // INDEX_DTYPE.itemsize

    # ----------------------------------------------------------------- writing

    def append(self, point: Tensor, step: int, loss: float) -> None:
        """Append one snapshot, (R*D,) or (R, D), as float32, with its step and batch loss."""
        row = point.detach().reshape(-1).to("cpu", torch.float32).contiguous().numpy()
        if row.size != self.dim * self.rows:
            raise ValueError(f"a snapshot has {self.rows} x {self.dim} weights, got {row.size}")
        with open(self._points_file, "ab") as f:
            f.write(row.astype("<f4", copy=False).data)  # no bytes copy: one row in memory
        record = np.array([(int(step), float(loss))], dtype=INDEX_DTYPE)
        with open(self._index_file, "ab") as f:
            f.write(record.tobytes())
        if self.meta.get("finished"):
            self.mark(finished=False)

    def truncate(self, n: int) -> None:
        """Keep the first n snapshots."""
        if n < len(self):
            self._truncate_files(n)
            if self.meta.get("finished"):
                self.mark(finished=False)

    def mark(self, **entries: Any) -> None:
        """Update the metadata (e.g. `finished=True`), atomically."""
        self.meta.update(plain_meta(entries))
        self._write_meta()

    # ----------------------------------------------------------------- reading

    @property
    def index(self) -> np.ndarray:
        """The (T,) records: `index["step"]`, `index["loss"]`."""
        return np.fromfile(self._index_file, dtype=INDEX_DTYPE, count=len(self))

    @property
    def steps(self) -> np.ndarray:
        return self.index["step"].copy()

    @property
    def losses(self) -> np.ndarray:
        return self.index["loss"].copy()

    def points(self) -> np.ndarray:
        """The snapshots as a read-only memory map, (T, D) for a network, (T, R, D) for a
        curve's R bends (R = 1 included); nothing is read until it is indexed."""
        n = len(self)
        curve = self.meta.get("kind") == "curve" or self.rows > 1
        shape = (n, self.rows, self.dim) if curve else (n, self.dim)
        if n == 0:
            return np.zeros(shape, dtype=np.float32)
        return np.memmap(self._points_file, dtype="<f4", mode="r", shape=shape)

    def space(self) -> WeightSpace:
        """The recorded network's `WeightSpace` (names and shapes kept in meta.json)."""
        return WeightSpace(
            tuple(self.meta["names"]), tuple(torch.Size(s) for s in self.meta["shapes"])
        )


def _snapshot(target: nn.Module) -> tuple[Callable[[], Tensor], WeightSpace, int, str]:
    """What to record of `target`: a function giving the current vector, its space, R, kind."""
    if isinstance(target, Curve):
        return (lambda: target.bends.detach()), target.space, target.num_bends, "curve"
    space = WeightSpace.from_module(target)
    return (lambda: space.flatten(target)), space, 1, "endpoint"


class TrajectoryRecorder:
    """Appends the weights of `target` (a network, or a `Curve`'s bends) to a store every
    `every` optimizer steps, and the final weights when training ends.

    Use: `rec = TrajectoryRecorder(path, model, every=10, epochs=cfg.epochs,
    steps_per_epoch=...)` (or `record_trajectory`) then `train_endpoint(..., **rec.hooks())`
    (`train_curve` for a curve). Rerunning a resumed training with a new recorder on the
    same path continues the same file. Only rank 0 writes under torchrun.
    """

    def __init__(
        self,
        path: str | Path,
        target: nn.Module,
        every: int,
        *,
        epochs: int,
        steps_per_epoch: int,
        meta: Mapping[str, Any] | None = None,
    ):
        if every < 1:
            raise ValueError(f"trajectory.every must be >= 1 step (or 'epoch'), got {every}")
        self.path, self.every = Path(path), int(every)
        self.epochs, self.steps_per_epoch = int(epochs), int(steps_per_epoch)
        self._current, space, rows, kind = _snapshot(target)
        self._meta = {
            **(meta or {}),
            "kind": kind,
            "every": self.every,
            "steps_per_epoch": self.steps_per_epoch,
            "names": list(space.names),
            "shapes": [list(s) for s in space.shapes],
        }
        self._space, self._rows = space, rows
        self._first: int | None = None
        self.store: TrajectoryStore | None = None
        if self._writes():
            self.store = TrajectoryStore(path, space.size, rows, self._meta, replace=True)

    @staticmethod
    def _writes() -> bool:
        return Ranks.current().main

    def hooks(self) -> dict[str, list]:
        """Keyword arguments for `train_endpoint` / `train_curve`: the step and epoch hooks."""
        return {"step_callbacks": [self.step], "callbacks": [self.epoch]}

    def _begin(self, first: int) -> None:
        """At the first step this run reports: keep the rows recorded before it, check them."""
        store = self.store
        same = all(store.meta.get(k) == v for k, v in plain_meta(self._meta).items())
        if not same and first > 0:
            raise ValueError(
                f"the trajectory in '{self.path}' was recorded with other settings "
                f"(every, network); training resumes at step {first}. Record to another folder"
            )
        if not same:
            store.truncate(0)
            store.mark(**self._meta)
        kept = int(np.searchsorted(store.steps, first, side="left"))
        expected = math.ceil(first / self.every)
        if kept < expected:
            raise ValueError(
                f"training resumes at step {first}, but the trajectory in '{self.path}' holds "
                f"only {kept} of the {expected} snapshots before it (was it deleted?). Delete "
                "the training checkpoint too to record the whole run again"
            )
        store.truncate(kept)

    def step(self, step: int, loss: float) -> None:
        """The step callback: record the weights that gave `loss`, every `every` steps."""
        if self.store is None:
            return
        if self._first is None:
            self._first = step
            self._begin(step)
        if step % self.every == 0:
            self.store.append(self._current(), step, loss)

    def epoch(self, done: int, record: Mapping[str, float]) -> None:
        """The epoch callback: after the last epoch, append the final weights (no batch loss)."""
        if self.store is None or done != self.epochs:
            return
        self.store.append(self._current(), done * self.steps_per_epoch, math.nan)
        self.store.mark(finished=True)


def steps_per_epoch(data, batch_size: int) -> int:
    """Optimizer steps in one epoch of `fit` (the last batch may be smaller)."""
    return math.ceil(len(data.train_y) / batch_size)


def record_trajectory(
    path: str | Path, target: nn.Module, data, config, every: int | str = "epoch"
) -> TrajectoryRecorder:
    """A recorder for training `target` on `data` with `config` (a `TrainConfig`): every
    `every` steps, or "epoch" (the weights at the start of every epoch, the final ones)."""
    per_epoch = steps_per_epoch(data, config.batch_size)
    if every == "epoch":
        every = per_epoch
    elif isinstance(every, str) or not isinstance(every, (int, np.integer)):
        raise ValueError(f"trajectory.every must be a number of steps or 'epoch', got {every!r}")
    return TrajectoryRecorder(
        path, target, int(every), epochs=config.epochs, steps_per_epoch=per_epoch
    )
