"""Adaptive resolution: the picture of a fine grid from a fraction of its nodes.

A regular grid spends almost all of its nodes where the loss changes slowly, or far above every
contour level anyone reads. `Adaptive` evaluates a coarse regular grid (`coarse` nodes per side)
of the target grid (2^m (coarse - 1) + 1 nodes per side), then refines it in rounds, a
quadtree in 2-D (a binary tree on a line): in each round, every active cell gets its new nodes
at half its spacing evaluated (in 2-D its centre and its four edge midpoints) and compares them
with their multilinear prediction from the cell's corners, in the quantity the figure shows
(log10 of a loss, the error in %: `quantity`). A cell whose new nodes agree within `tol`
(for every refinement metric) stops; so does a cell at the target spacing, and a cell whose
every known value lies above `ceiling` (the highest contour level of interest, e.g. the worst
loss of the straight line; NaN or inf counts as above). The others' children are the next
round's active cells. A coarse cell whose four corners lie above the ceiling is never refined.

Every decision reads only the nodes of its own coarse cell, so the refinement of one coarse cell
does not depend on any other: shards take whole tiles of `TILE` x `TILE` coarse cells (tile k
of the C-ordered tiles goes to shard k mod n), run their own rounds with no exchange, and the
union of their nodes is the single process's (a node on a tile's border is evaluated by each
shard that needs it, with the same value). A round reads only the nodes requested by earlier
rounds, so a run resumed from any subset of finished nodes makes the same decisions: the mask
of finished nodes is the whole state.

The assembled grid interpolates the nodes that were not evaluated multilinearly from the
corners of their smallest finished cell (in log10 for positive losses), coarse cells first, so
that finer cells overwrite the edges they share with coarser ones; evaluated nodes keep their
values exactly. The error estimate of an interpolated node is d / 2, where d is the largest
disagreement its parent cell's new nodes showed (its own cell has half the parent's spacing:
bilinear interpolation errs as h^2 on a smooth surface, as h at a kink; `RATE`); the nodes of
a cell left out above the ceiling get the spread of its corners. Units: the quantity of the
first refinement metric.

This is the classic quadtree refinement of image and terrain rendering (refine where a
cell's midpoints miss their interpolation); the mode-connectivity blog drew its 1000 x 1000
planes on a full regular grid instead, with a data subsample (our `eval_samples`, which
composes with this).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TILE = 4  # coarse cells per side of the tiles that shards take whole
# the error of an interpolated node, from its parent cell's disagreement d: d / RATE. Halving
# the spacing quarters a smooth surface's error (h^2) but only halves it at a kink (h): the
# cautious of the two
RATE = 2.0
LOG_SUFFIXES = ("_loss", "_nll", "_mse")  # drawn on log scales: refined and filled in log10


def log_scaled(name: str) -> bool:
    """Whether metric `name` is refined and interpolated in log10 (losses, nll, mse)."""
    return name.endswith(LOG_SUFFIXES)


def quantity(name: str, values: np.ndarray) -> np.ndarray:
    """What the figure shows of `values`: log10 for a loss-like `name`, else the values (an
    error in %, a curvature). Values <= 0 of a loss-like metric become non-finite."""
    values = np.asarray(values, dtype=np.float64)
    if not log_scaled(name):
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(values)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Adaptive:
    """Adaptive resolution of a grid job (see the module); the grid's shape is the target.

    coarse: nodes per side of the first regular grid, one int or one per axis (>= 2).
    tol: the largest disagreement of a cell's new nodes with their prediction that stops its
        refinement, in the quantity of each metric (log10 of a loss: 0.05 is 12 %; the error
        in %); one number, or one per metric.
    metric: the metric (or metrics) whose agreement decides; the first is the one `ceiling`
        and the error estimate are in.
    ceiling: the highest level of interest of the first metric, in its own units (a loss):
        cells whose values all lie above it stop refining (None: no such cut).
    """

    coarse: int | tuple[int, ...] = 33
    tol: float | tuple[float, ...] = 0.05
    metric: str | tuple[str, ...] = "train_loss"
    ceiling: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        coarse = (self.coarse,) if np.ndim(self.coarse) == 0 else tuple(self.coarse)
        if not coarse or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 2 for c in coarse
        ):
            raise ValueError(f"coarse must be an int >= 2 or one per axis, got {self.coarse!r}")
        metrics = (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)
        if not metrics or not all(isinstance(m, str) and m for m in metrics):
            raise ValueError(f"metric must be a metric name or several, got {self.metric!r}")
        tols = (self.tol,) * len(metrics) if np.ndim(self.tol) == 0 else tuple(self.tol)
        if len(tols) != len(metrics) or not all(
            _number(t) and math.isfinite(t) and t > 0 for t in tols
        ):
            raise ValueError(
                f"tol must be a number > 0 (the largest disagreement with the interpolation, "
                f"in log10 of a loss or in % of an error), or one per metric {list(metrics)}; "
                f"got tol={self.tol!r}"
            )
        ceiling = self.ceiling
        if ceiling is not None and not (_number(ceiling) and math.isfinite(ceiling)):
            raise ValueError(f"ceiling must be a finite number or None, got {ceiling!r}")
        if ceiling is not None and log_scaled(metrics[0]) and ceiling <= 0:
            raise ValueError(f"ceiling is a value of {metrics[0]}, which is > 0; got {ceiling}")
        set_(self, "coarse", tuple(int(c) for c in coarse))
        set_(self, "metric", metrics)
        set_(self, "tol", tuple(float(t) for t in tols))
        set_(self, "ceiling", None if ceiling is None else float(ceiling))

    def levels(self, shape: Sequence[int]) -> int:
        """m such that every side of `shape` is 2^m (coarse - 1) + 1, or a ValueError that
        names the sides which would fit."""
        shape = tuple(int(s) for s in shape)
        coarse = self.coarse * len(shape) if len(self.coarse) == 1 else self.coarse
        if len(coarse) != len(shape):
            raise ValueError(f"coarse={list(self.coarse)} does not match a grid of {shape}")
        ratios = [(n - 1) / (c - 1) for n, c in zip(shape, coarse, strict=True)]
        m = round(math.log2(ratios[0])) if ratios[0] >= 1 else 0
        if all(r == 2**m for r in ratios):
            return m
        fits = sorted({(c - 1) * 2**k + 1 for c in coarse for k in range(max(m - 1, 0), m + 2)})
        raise ValueError(
            f"an adaptive grid of {' x '.join(map(str, shape))} nodes does not refine the coarse "
            f"grid of {' x '.join(map(str, coarse))}: every side must be 2^m (coarse - 1) + 1 "
            f"with one m, e.g. {', '.join(map(str, fits))} for coarse {coarse[0]} "
            f"(1025 = 2^5 * 32 + 1 for coarse 33); change grid (the target) or coarse"
        )

    def config(self) -> dict[str, Any]:
        """What a partial file and a result record of the refinement."""
        return {
            "resolution": "adaptive",
            "coarse": list(self.coarse),
            "tol": list(self.tol),
            "metric": list(self.metric),
            "ceiling": self.ceiling,
        }


def as_resolution(resolution: str | Adaptive | None) -> Adaptive | None:
    """None for "regular" (every node), an `Adaptive` for "adaptive" (its defaults) or one."""
    if resolution is None or resolution == "regular":
        return None
    if resolution == "adaptive":
        return Adaptive()
    if isinstance(resolution, Adaptive):
        return resolution
    raise ValueError(
        f"resolution must be 'regular', 'adaptive' or an Adaptive(...), got {resolution!r}"
    )


def _corners(dims: int) -> np.ndarray:
    return np.array(list(itertools.product((0, 1), repeat=dims)), dtype=np.int64)


def _weights(t: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(P, C) multilinear weights of the corners at the points t (P, d) of the unit cell."""
    return np.prod(np.where(corners[None, :, :] == 1, t[:, None, :], 1.0 - t[:, None, :]), -1)


def _interpolate(qc: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(K, P) from corner values qc (K, C): a non-finite corner spoils only the points it
    weighs on (a weight of 0 ignores it)."""
    finite = np.isfinite(qc)
    out = np.where(finite, qc, 0.0) @ weights.T
    out[(~finite).astype(np.float64) @ (weights > 0).T > 0] = np.nan
    return out


@dataclass
class Refined:
    """The refinement's outcome: the nodes it asked for (`evaluated`, the target's shape),
    the finished cells the rest is interpolated in (`leaves`: spacing, lower corners (K, d),
    error estimate (K,)), and its record (`meta`)."""

    evaluated: np.ndarray
    leaves: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class Refinement:
    """The rounds of one adaptive job over a grid of `shape` (the target) with value names
    `names`; shard (k, n) keeps the coarse cells of every tile k mod n (`TILE`)."""

    def __init__(
        self,
        adaptive: Adaptive,
        shape: Sequence[int],
        names: Sequence[str],
        shard: tuple[int, int] | None = None,
    ) -> None:
        unknown = [m for m in adaptive.metric if m not in names]
        if unknown:
            raise ValueError(
                f"cannot refine on {', '.join(unknown)}: the job's values are {', '.join(names)}"
            )
        self.adaptive, self.shape = adaptive, tuple(int(s) for s in shape)
        self.dims = len(self.shape)
        self.step = 2 ** adaptive.levels(self.shape)  # the coarse spacing, in target nodes
        counts = [(n - 1) // self.step for n in self.shape]  # coarse cells per axis
        cells = np.array(list(np.ndindex(*counts)), dtype=np.int64).reshape(-1, self.dims)
        if shard is not None and shard[1] > 1:
            tiles = [-(-c // TILE) for c in counts]
            owner = np.ravel_multi_index(tuple((cells // TILE).T), tiles) % shard[1]
            cells = cells[owner == shard[0]]
        self.cells = cells * self.step
        self.corners = _corners(self.dims)
        offsets = np.array(list(itertools.product((0, 1, 2), repeat=self.dims)), dtype=np.int64)
        self.new = offsets[(offsets % 2).any(1)]  # in half spacings: not a corner
        self.predict = _weights(self.new / 2.0, self.corners)
        top = adaptive.ceiling
        self.top = -np.inf if top is None else float(quantity(adaptive.metric[0], np.array(top)))

    def _at(self, cells: np.ndarray, spacing: int, offsets: np.ndarray) -> np.ndarray:
        """Flat node indices (K, P) of the cells' points lower corner + spacing * offsets."""
        points = cells[:, None, :] + spacing * offsets[None, :, :]
        return np.ravel_multi_index(tuple(np.moveaxis(points, -1, 0)), self.shape)

    def _children(self, cells: np.ndarray, half: int) -> np.ndarray:
        """The lower corners of the 2^d children (spacing `half`) of each cell."""
        return (cells[:, None, :] + half * self.corners[None]).reshape(-1, self.dims)

    def _nodes(self, flat: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(np.unique(flat), self.shape), axis=1)

    def _above(self, q: np.ndarray) -> np.ndarray:
        """Per row: every value above the ceiling (NaN or inf counts as above)."""
        if self.adaptive.ceiling is None:
            return np.zeros(len(q), dtype=bool)
        return ~(q <= self.top).any(1)

    def _disagreement(
        self, values: Mapping[str, np.ndarray], cells: np.ndarray, spacing: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per cell: the largest disagreement of its new nodes over the metrics, in units
        of each metric's tol; that of the first metric in its own units; whether every
        value of the first metric lies above the ceiling."""
        corner = self._at(cells, spacing, self.corners)
        new = self._at(cells, spacing // 2, self.new)
        worst, first, above = np.zeros(len(cells)), None, None
        for name, tol in zip(self.adaptive.metric, self.adaptive.tol, strict=True):
            q = quantity(name, values[name].reshape(-1))
            qc, qn = q[corner], q[new]
            pred = _interpolate(qc, self.predict)
            diff = np.abs(qn - pred)
            diff[~np.isfinite(qn) & ~np.isfinite(pred)] = 0.0  # both diverged: they agree
            diff[np.isnan(diff)] = np.inf
            largest = diff.max(1)
            worst = np.maximum(worst, largest / tol)
            if first is None:
                first, above = largest, self._above(np.concatenate([qc, qn], 1))
        return worst, first, above

    def run(
        self, values: Mapping[str, np.ndarray], evaluate: Callable[[np.ndarray], None]
    ) -> Refined:
        """The rounds: `evaluate(nodes)` fills `values[name][node]` for the (N, d) nodes it
        is given (sorted by flat index; it may skip those already done). Each round reads
        only the nodes asked for before it."""
        out = Refined(np.zeros(self.shape, dtype=bool))
        metric = self.adaptive.metric[0]
        counts = []

        def ask(flat: np.ndarray) -> None:
            nodes = self._nodes(flat)
            evaluate(nodes)
            out.evaluated[tuple(nodes.T)] = True
            counts.append(len(nodes))

        corner = self._at(self.cells, self.step, self.corners)
        ask(corner)
        if len(self.cells):
            q = quantity(metric, values[metric].reshape(-1))[corner]
            high = self._above(q)
            with np.errstate(invalid="ignore"):
                spread = np.where(np.isfinite(q).all(1), np.ptp(q, 1), np.inf)
            out.leaves.append((self.step, self.cells[high], spread[high]))
            active, spacing = self.cells[~high], self.step
        else:
            active, spacing = self.cells, self.step
        while len(active) and spacing >= 2:
            half = spacing // 2
            ask(self._at(active, half, self.new).reshape(-1))
            worst, first, above = self._disagreement(values, active, spacing)
            more = (worst > 1.0) & ~above & (half >= 2)
            if half >= 2:  # children with nodes inside them: the finished ones are leaves
                estimate = np.repeat(first[~more] / RATE, len(self.corners))
                out.leaves.append((half, self._children(active[~more], half), estimate))
            active, spacing = self._children(active[more], half), half
        evaluated = int(out.evaluated.sum())
        out.meta = {
            **self.adaptive.config(),
            "evaluated": evaluated,
            "fraction": evaluated / out.evaluated.size,
            "rounds": len(counts),
            "per_round": counts,
        }
        return out

    def assemble(
        self, values: Mapping[str, np.ndarray], refined: Refined
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every value on the whole target grid (evaluated nodes exactly, the others
        interpolated in their finished cell) and the error estimate of each node (0 where
        evaluated; module docstring)."""
        evaluated = refined.evaluated
        leaves = sorted(refined.leaves, key=lambda leaf: -leaf[0])  # coarse cells first
        plans = []
        for spacing, cells, _ in leaves:
            offsets = np.array(list(np.ndindex(*(spacing + 1,) * self.dims)), dtype=np.int64)
            corner, points = self._at(cells, spacing, self.corners), self._at(cells, 1, offsets)
            plans.append((corner, points, _weights(offsets / spacing, self.corners)))
        out = {}
        for name, raw in values.items():
            raw = np.asarray(raw, dtype=np.float64)
            known = raw[evaluated]
            log = log_scaled(name) and bool(np.all(known[np.isfinite(known)] > 0))
            q = quantity(name, raw) if log else raw
            filled = np.full(self.shape, np.nan).reshape(-1)
            for corner, points, fill in plans:
                filled[points.reshape(-1)] = _interpolate(q.reshape(-1)[corner], fill).reshape(-1)
            filled = filled.reshape(self.shape)
            if log:
                filled = 10.0**filled
            filled[evaluated] = raw[evaluated]
            out[name] = filled
        error = np.full(self.shape, np.nan).reshape(-1)
        for (_, points, _), (_, _, estimate) in zip(plans, leaves, strict=True):
            error[points.reshape(-1)] = np.repeat(estimate, points.shape[1])
        error = error.reshape(self.shape)
        error[evaluated] = 0.0
        return out, error


def refine(
    fn: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    shape: Sequence[int],
    adaptive: Adaptive,
    shard: tuple[int, int] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, Any]]:
    """Adaptive resolution of a plain function of the grid's indices: fn(nodes (N, d) int)
    -> {name: (N,) values}. Returns the values on the whole grid, the evaluated mask, the
    error estimate and the refinement's record (a shard's values cover its own cells)."""
    values: dict[str, np.ndarray] = {}

    def evaluate(nodes: np.ndarray) -> None:
        if not len(nodes):
            return
        got = fn(nodes)
        unknown = [m for m in adaptive.metric if m not in got]
        if unknown:
            raise ValueError(
                f"cannot refine on {', '.join(unknown)}: the function returns {', '.join(got)}"
            )
        for name, new in got.items():
            values.setdefault(name, np.full(tuple(shape), np.nan))[tuple(nodes.T)] = new

    plan = Refinement(adaptive, shape, adaptive.metric, shard)
    refined = plan.run(values, evaluate)
    filled, error = plan.assemble(values, refined)
    return filled, refined.evaluated, error, refined.meta
