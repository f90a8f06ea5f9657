"""What every figure shares: a bare Figure, titles, metric labels, log axes, saving.

Figures are built without pyplot (`matplotlib.figure.Figure`), so library code and Hydra
jobs never need a display, never pick a backend and never accumulate open figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

Scale = Mapping[str, tuple[float | None, float | None]]


def metric_label(metric: str) -> str:
    """Axis label of a metric name: "test_error" -> "test error (%)", "test_mse" -> "test MSE"."""
    split, _, kind = metric.partition("_")
    names = {"nll": "NLL", "error": "error (%)", "loss": "loss", "mse": "MSE"}
    kind = names.get(kind, kind.replace("_", " "))
    return f"{split} {kind}" if kind else split


def _figure(ncols: int, width: float = 4.6, height: float = 3.8) -> tuple[Figure, list[Any]]:
    # A bare Figure (no pyplot) renders with Agg anywhere and never leaks into pyplot's registry;
    # notebooks display it through the inline backend's formatter like any other figure.
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def figure_title(result: Any, title: str | None = None, model: str | None = None) -> str | None:
    """The suptitle of a figure: "<model> on <data set>", then ": <title>" if given.

    The data set comes from `result.meta["dataset"]`, the model from `model` (results do not
    record it; the apps pass the checkpoint's model name) or `meta["model"]`. A `title` that
    already names the data set is used as it is; with neither, the title alone (or None).
    """
    meta = getattr(result, "meta", None) or {}
    dataset, model = meta.get("dataset"), model or meta.get("model")
    heading = " on ".join(str(p) for p in (model, dataset) if p) or None
    if not title or not heading:
        return title or heading
    return title if dataset and str(dataset).lower() in title.lower() else f"{heading}: {title}"


def _suptitle(fig: Figure, result: Any, title: str | None, model: str | None) -> None:
    text = figure_title(result, title, model)
    if text:
        fig.suptitle(text)


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _get(result: Any, name: str) -> np.ndarray:
    """An optional array attribute; empty when missing or None."""
    value = getattr(result, name, None)
    return np.asarray([] if value is None else value, dtype=float)


def draw_evaluated(ax: Any, result: Any) -> Any:
    """Dots at the nodes an adaptive result evaluated (`result.evaluated`, [i, j] at (x[i],
    y[j])); the others are interpolated. Returns the dots, labelled with the share of nodes
    (for a legend), or None for a regular result (every node evaluated: nothing to mark)."""
    mask = getattr(result, "evaluated", None)
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    i, j = np.nonzero(mask)
    size = float(np.clip(2500.0 / max(len(i), 1), 0.15, 6.0))  # dense grids: finer dots
    return ax.scatter(
        np.asarray(result.x, dtype=float)[i],
        np.asarray(result.y, dtype=float)[j],
        s=size,
        c="black",
        marker="o",
        linewidths=0,
        alpha=0.55,
        zorder=4,
        rasterized=True,
        label=f"evaluated nodes ({mask.mean():.1%})",
    )


def _log_axis_ok(*arrays: Any) -> bool:
    vals = np.concatenate([_finite(a) for a in arrays if a is not None] or [np.empty(0)])
    return vals.size > 0 and bool(np.all(vals > 0))


def _log_y(ax: Any) -> None:
    """A log y-axis labelled in plain numbers at 1, 2, 3, 5 x 10^k (not 2 x 10^0)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> list[Path]:
    """Write `fig` to path.png or path.pdf by suffix; a path without suffix writes both.

    Parent folders are created. Returns the written paths.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".png", ".pdf"):
        targets = [path]
    elif suffix == "":
        targets = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    else:
        raise ValueError(f"cannot save a figure as '{path.suffix}': use .png, .pdf or no suffix")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
    return targets


def task_metrics(result: Any) -> tuple[str, str]:
    """The two metrics a path or plane figure shows by default: the train loss and the test
    score of the result's task (error for classification, MSE for regression)."""
    task = getattr(result, "task", "classification")
    return ("train_loss", "test_error" if task == "classification" else "test_mse")
