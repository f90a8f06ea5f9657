"""One grid result: the metric arrays of a task over named axes, written once.

Every analysis that evaluates a grid of weight points (a path, a plane, a surface, a line, a
curvature map) returns a `GridResult`: its axes (coordinate arrays, one per dimension of the
grid), the task's metric arrays over them (`values`, read as attributes), `meta`, and its own
fields. This class builds and checks all of that, saves and loads it (`.npz` + JSON sidecar,
one array per metric, as results have always been written) and summarises it; a result class
names its axes and adds only its own fields and methods (`barrier`, anchors, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar

import numpy as np

from modeconn.data.tasks import CLASSIFICATION, MetricColumns
from modeconn.engine.grid import finite_stats
from modeconn.io.store import SavedResult, plain_meta


class GridResult(MetricColumns, SavedResult):
    """Metric arrays of shape `grid_shape` over the axes named by `axes` (each a float64
    coordinate array), the task, meta, and the subclass's own fields (`_set_fields`).

    Built as Result(*axes, task=..., values={name: array} or name=array keywords, meta=...,
    own_field=...): positional arguments are the axes in order (or name them as keywords),
    then the fields named by `positional`;
    keywords that name a field of the class go to `_set_fields`, every other keyword is a
    metric. Metrics are checked against the task's (`metric_names`, or `_names`) and each
    must have the grid's shape.
    """

    axes: ClassVar[tuple[str, ...]] = ()
    # own fields that may also be passed positionally, after the axes (PathResult's arc_length)
    positional: ClassVar[tuple[str, ...]] = ()
    # fields of a class whose grids may be adaptive (`modeconn.engine.adaptive`): the mask of
    # evaluated nodes and the interpolation error estimate, None for a regular grid (and in
    # files written before they existed)
    adaptive_fields: ClassVar[tuple[str, ...]] = ("evaluated", "interp_error")

    def __init__(
        self,
        *axes: Any,
        task: str = CLASSIFICATION,
        values: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **given: Any,
    ) -> None:
        kind = type(self).__name__
        order = (*self.axes, *self.positional)
        if len(axes) > len(order):
            raise TypeError(f"{kind} takes {len(order)} positional arguments ({', '.join(order)})")
        for name, value in zip(order[len(self.axes) :], axes[len(self.axes) :], strict=False):
            given[name] = value
        axes = axes[: len(self.axes)]
        coords = dict(zip(self.axes, axes, strict=False))
        for name in self.axes[len(axes) :]:
            if name not in given:
                raise TypeError(f"{kind} needs its axis {name!r}")
            coords[name] = given.pop(name)
        own = {f.name for f in fields(self)} - {"values", "task", "meta", *self.axes}
        extra = {name: given.pop(name) for name in list(given) if name in own}
        adaptive = {name: extra.pop(name, None) for name in self.adaptive_fields if name in own}
        for name, value in coords.items():
            setattr(self, name, np.asarray(value, dtype=np.float64))
        metrics = {**(values or {}), **given}
        self._set_values(task, metrics, {}, self._names(str(task), metrics))
        shape = self.grid_shape
        for name, value in self.values.items():
            if np.shape(value) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {np.shape(value)}")
        self._set_fields(**extra)
        for name, value in adaptive.items():
            self._set_adaptive(name, value)
        self.meta = plain_meta(meta or {})

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The shape of every metric array: one length per axis."""
        return tuple(len(getattr(self, name)) for name in self.axes)

    def _set_adaptive(self, name: str, value: Any) -> None:
        """`evaluated` (bool) or `interp_error` (float64), of the grid's shape, or None."""
        if value is not None:
            value = np.asarray(value, dtype=bool if name == "evaluated" else np.float64)
            if value.shape != self.grid_shape:
                raise ValueError(f"{name} must have shape {self.grid_shape}, got {value.shape}")
        setattr(self, name, value)

    @property
    def adaptive(self) -> bool:
        """Whether the grid was refined adaptively (only the `evaluated` nodes were
        computed; the others are interpolated, with the error estimate `interp_error`)."""
        return getattr(self, "evaluated", None) is not None

    def _names(self, task: str, given: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The value names the result holds (None: the task's metrics)."""
        return None

    def _set_fields(self, **extra: Any) -> None:
        """Convert and check the subclass's own fields (here: there are none)."""
        if extra:
            raise TypeError(f"{type(self).__name__} got unexpected fields {sorted(extra)}")

    def summary(self) -> dict[str, dict[str, float]]:
        """Per metric: min, max and mean over the finite nodes and the number of NaN or inf
        nodes (`non_finite`: diverged nodes are recorded, not dropped)."""
        return {name: finite_stats(values) for name, values in self.values.items()}
