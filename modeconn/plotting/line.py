"""A 1-D loss surface: loss and accuracy along one direction on twin axes, train and test, with
the coordinate also in units of the origin's norm (Li et al. 2018, Fig. 2; Goodfellow et al.
2015's linear interpolation when the direction is b - a and the origin a)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from modeconn.plotting.common import _figure, _log_axis_ok, _log_y, _suptitle, metric_label
from modeconn.plotting.surface import direction_scales, surface_note


def plot_line(
    result: Any,
    *,
    metrics: Sequence[str] | None = None,
    log: bool = False,
    accuracy: bool = True,
    title: str | None = None,
    model: str | None = None,
) -> Figure:
    """A 1-D surface: losses on the left axis, the error as accuracy (100 - error, or the error
    itself with accuracy=False) on a twin right axis; train solid, test dashed (Li et al. 2018,
    Fig. 2; Goodfellow et al. 2015's interpolation when the direction is b - a).

    result: x (T,), each metric (T,), direction_scale (1,). metrics: default the train and test
    loss (left) and error (right); for regression, loss (left) and MSE (right). Metrics ending in
    "_error" (and "_mse", unless first) go to the right axis, the rest to the left.
    log: the loss axis (and an MSE axis) on a log scale; accuracy stays linear.
    The top axis is the same coordinate in units of ||origin|| (x * direction_scale).
    """
    present = list(getattr(result, "metrics", None) or [])
    if metrics is None:
        metrics = [f"{s}_{k}" for k in ("loss", "error") for s in ("train", "test")]
        if not any(m.endswith("_error") for m in present):
            metrics = [f"{s}_{k}" for k in ("loss", "mse") for s in ("train", "test")]
        metrics = [m for m in metrics if m in present] or present[:2]
    right = [m for m in metrics if m.endswith("_error") or (m.endswith("_mse") and m != metrics[0])]
    left = [m for m in metrics if m not in right]
    x = np.asarray(result.x, dtype=float)
    series = {}
    for m in metrics:
        if m not in present and not hasattr(result, m):
            raise ValueError(f"no metric {m!r} in this result; it has {present}")
        series[m] = np.asarray(getattr(result, m), dtype=float)
        if series[m].shape != x.shape:
            raise ValueError(f"{m} has shape {series[m].shape}, expected (len(x),) = {x.shape}")
    fig, (ax,) = _figure(1, width=5.6, height=4.0)
    handles = []
    style = {"train": ("-", "o"), "test": ("--", "s")}

    def draw(axis: Any, names: list[str], colour: str, as_accuracy: bool) -> None:
        for m in names:
            split = m.partition("_")[0]
            line, marker = style.get(split, (":", "."))
            vals = 100 - series[m] if as_accuracy else series[m]
            label = f"{split} accuracy" if as_accuracy else metric_label(m)
            handles.extend(axis.plot(x, vals, line, color=colour, marker=marker, ms=3, label=label))

    draw(ax, left, "C0", False)
    if log:
        if not _log_axis_ok(*(series[m] for m in left)):
            raise ValueError(f"log=True needs {left} > 0 everywhere; use log=False")
        _log_y(ax)
    ax.set_ylabel(
        " / ".join(dict.fromkeys(metric_label(m).partition(" ")[2] for m in left)), color="C0"
    )
    ax.tick_params(axis="y", colors="C0")
    if right:
        twin = ax.twinx()
        errors = accuracy and all(m.endswith("_error") for m in right)
        draw(twin, right, "C3", errors)
        kind = "accuracy (%)" if errors else metric_label(right[0]).partition(" ")[2]
        twin.set_ylabel(kind, color="C3")
        twin.tick_params(axis="y", colors="C3")
        if log and not any(m.endswith("_error") for m in right):  # an MSE axis is a loss too
            if not _log_axis_ok(*(series[m] for m in right)):
                raise ValueError(f"log=True needs {right} > 0 everywhere; use log=False")
            _log_y(twin)
    (s,) = direction_scales(result, 1)
    ax.set_xlabel("α along $d$ (direction units)")
    if s:
        top = ax.secondary_xaxis("top", functions=(lambda a: a * s, lambda b: b / s))
        top.set_xlabel(r"distance α$\|d\|$ / $\|$origin$\|$")
    ax.set_xlim(x.min(), x.max())
    ax.grid(alpha=0.3)
    note = surface_note(result)
    if note:
        ax.set_title(note, fontsize=9)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4))
    _suptitle(fig, result, title, model)
    return fig
