"""Ensembles along a curve (test score and diversity vs t) and FGE (vs snapshot k)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from modeconn.plotting.common import (
    _figure,
    _finite,
    _log_axis_ok,
    _log_y,
    _suptitle,
    metric_label,
)


def _score(result: Any) -> str:
    """The task's score column suffix: "error" (classification) or "mse" (regression)."""
    return "error" if getattr(result, "task", "classification") == "classification" else "mse"


def _score_series(score: str) -> tuple[tuple[str, ...], ...]:
    return (
        (f"member_{score}", "φ(t) alone", "-", "C0"),
        (f"ensemble_{score}", "ensemble {w1, φ(t)}", "-", "C1"),
        (f"line_member_{score}", "line point alone", "--", "C0"),
        (f"line_ensemble_{score}", "ensemble {w1, line(t)}", "--", "C1"),
    )


# The first diversity measure per score: (column, its label, the axis label).
_DIVERSITY = {
    "error": ("disagreement", "disagreement", "disagreement with w1 (%)"),
    "mse": ("sq_difference", "sq. difference", "mean sq. difference from w1"),
}
_KL_SERIES = (("kl", "KL (curve)", "-", "C4"), ("line_kl", "KL (line)", "--", "C4"))


def _series(ax: Any, result: Any, ts: np.ndarray, specs: Sequence[tuple[str, ...]]) -> list:
    """Plot each (attribute, label, style, colour) the result has (not None); their values."""
    drawn = []
    for attr, label, style, colour in specs:
        values = getattr(result, attr, None)
        if values is not None:
            drawn.append(np.asarray(values, dtype=float))
            ax.plot(ts, drawn[-1], style, color=colour, label=label)
    return drawn


def plot_ensembles(
    result: Any, *, error_scale: str = "auto", title: str | None = None, model: str | None = None
) -> Figure:
    """Ensembles along the curve: test error vs t (left), diversity vs t (right); for a
    regression result (`result.task`) the test MSE, and the mean squared difference of the
    predictions from w1's instead of the disagreement.

    result: ts (T,); member_error, ensemble_error, disagreement, kl (T,) and their `line_`
    versions (dashed; optional); scalars start_error (w1 alone) and reference_error (the
    {w1, w2} ensemble), drawn as horizontal lines. Disagreement is on the left axis of the
    second panel, KL(w1 || phi(t)) on a twin right axis, so the figure has three axes.
    error_scale: "linear", "log", or "auto": log when all errors are > 0 and span more than a
    factor 5 (the line's middle points near chance would squash the few-% ensembles).
    title / model: see `figure_title`.
    """
    if error_scale not in ("auto", "linear", "log"):
        raise ValueError(f"error_scale must be 'auto', 'linear' or 'log', got {error_scale!r}")
    ts = np.asarray(result.ts, dtype=float)
    score = _score(result)
    fig, (err_ax, div_ax) = _figure(2)
    errors = _series(err_ax, result, ts, _score_series(score))
    references = [float(getattr(result, f"{who}_{score}")) for who in ("start", "reference")]
    err_ax.axhline(references[0], color="grey", linestyle=":", label="w1 alone")
    err_ax.axhline(references[1], color="black", linestyle="-.", label="ensemble {w1, w2}")
    values = np.concatenate([_finite(v) for v in [*errors, references]])
    positive = _log_axis_ok(values)
    if error_scale == "log" or (
        error_scale == "auto" and positive and values.max() > 5 * values.min()
    ):
        _log_y(err_ax)
    err_ax.set(xlabel="t", ylabel=metric_label(f"test_{score}"), title=f"test {score}")
    if score == "mse":
        err_ax.set_title("test MSE")
    err_ax.legend(fontsize=8)

    kl_ax = div_ax.twinx()
    column, label, axis_label = _DIVERSITY[score]
    diversity = (
        (column, f"{label} (curve)", "-", "C2"),
        (f"line_{column}", f"{label} (line)", "--", "C2"),
    )
    _series(div_ax, result, ts, diversity)
    _series(kl_ax, result, ts, _KL_SERIES)
    div_ax.set(xlabel="t", title="diversity")
    div_ax.set_ylabel(axis_label, color="C2")
    kl_ax.set_ylabel("KL(w1 ‖ φ(t)) (nats)", color="C4")
    handles = div_ax.get_legend_handles_labels()[0] + kl_ax.get_legend_handles_labels()[0]
    div_ax.legend(handles=handles, fontsize=8)
    for ax in (err_ax, div_ax):
        ax.set_xlim(ts.min(), ts.max())
        ax.grid(alpha=0.3)
    _suptitle(fig, result, title, model)
    return fig


def plot_fge(result: Any, *, title: str | None = None, model: str | None = None) -> Figure:
    """Fast geometric ensembling: test error (left; MSE for regression) and NLL (right) vs
    snapshot k.

    result: snapshot_epochs (S,); member_error, member_nll, ensemble_error, ensemble_nll (S,),
    entry k for snapshot k alone and for the ensemble of snapshots 1..k; start_error and
    start_nll (the network FGE started from) as horizontal lines. The x-axis is k, which is
    the snapshot for one series and the ensemble size for the other: the legend says which;
    the top axis gives the FGE epoch snapshot k was taken at. title / model: see `figure_title`.
    """
    count = np.arange(1, len(np.asarray(result.snapshot_epochs)) + 1)
    fig, axes = _figure(2)
    for ax, kind in zip(axes, (_score(result), "nll"), strict=True):
        ax.plot(
            count,
            np.asarray(getattr(result, f"member_{kind}"), dtype=float),
            "o--",
            color="C0",
            label="snapshot k alone",
        )
        ax.plot(
            count,
            np.asarray(getattr(result, f"ensemble_{kind}"), dtype=float),
            "o-",
            color="C1",
            label="ensemble of snapshots 1..k",
        )
        ax.axhline(
            float(getattr(result, f"start_{kind}")),
            color="grey",
            linestyle=":",
            label="start network",
        )
        ax.set_xlabel("snapshot k")
        ax.set_ylabel(metric_label(f"test_{kind}"))
        ax.set_xticks(count)
        epochs = ax.secondary_xaxis("top")
        epochs.set_xticks(count, labels=[f"{e:g}" for e in np.asarray(result.snapshot_epochs)])
        epochs.set_xlabel("FGE epoch of snapshot k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _suptitle(fig, result, title, model)
    return fig
