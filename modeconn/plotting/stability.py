"""Instability against the spawn step (`modeconn stability`, Frankle et al. 2020, Fig. 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from modeconn.plotting.common import _figure, figure_title, metric_label


def _percent_axis(ax: Any, fractions: np.ndarray) -> None:
    """x: % of training on a symmetric-log axis (linear below the first spawn step > 0), so
    0, 0.5 %, 5 % and 100 % each get room."""
    positive = fractions[fractions > 0]
    linear = 100 * (positive.min() if positive.size else 0.01)
    ax.set_xscale("symlog", linthresh=linear)
    ax.set_xlim(-0.15 * linear, 100 * fractions.max() * 1.15 if positive.size else linear)
    ax.set_xticks(100 * fractions)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    ax.set_xlabel("spawn step k (% of training)")


def plot_stability(result: Any, model: str | None = None, title: str | None = None) -> Figure:
    """The barrier ("frankle": over the children's mean) of the test and train score (left)
    and data term (right) on the line between two children, against the spawn step k: the
    mean over pairs, the band from the lowest to the highest pair; with aligned lines,
    dashed. The threshold is the dotted line, the stable k the grey bar."""
    task = result.task
    score, term = ("error", "nll") if task == "classification" else ("mse", "nll")
    fractions = np.asarray(result.fractions, dtype=float)
    x = 100 * fractions
    fig, axes = _figure(2, width=4.8, height=3.6)
    kinds = [(False, "-", "")] + ([(True, "--", ", aligned")] if result.aligned else [])
    for ax, kind in zip(axes, (score, term), strict=True):
        for split, color in (("test", "tab:red"), ("train", "tab:blue")):
            metric = f"{split}_{kind}"
            for aligned, ls, label in kinds:
                b = result.barriers(metric, "frankle", aligned)
                ax.fill_between(x, b.min(axis=1), b.max(axis=1), color=color, alpha=0.15, lw=0)
                ax.plot(
                    x, b.mean(axis=1), ls=ls, marker="o", ms=3, color=color, label=split + label
                )
        ax.axhline(0, color="black", lw=0.5)
        unit = " (percentage points)" if kind == "error" else ""
        ax.set_ylabel(f"{metric_label(f'_{kind}').split(' (')[0].strip()} barrier{unit}")
        _percent_axis(ax, fractions)
    axes[0].axhline(result.threshold, color="gray", ls=":", lw=1, label="threshold")
    stable = result.stable_step()
    if stable is not None:
        for ax in axes:
            ax.axvline(100 * stable / result.total_steps, color="gray", lw=4, alpha=0.3)
    axes[0].legend(fontsize=8)
    pairs = len(result.pairs)
    where = "stable from k = " + (
        f"{100 * stable / result.total_steps:.3g} %" if stable is not None else "never"
    )
    text = f"instability vs spawn step ({pairs} pair{'s' * (pairs > 1)}; {where})"
    fig.suptitle(figure_title(result, title or text, model))
    return fig
