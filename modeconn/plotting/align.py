"""The straight line between two networks before and after alignment (`modeconn align`)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from modeconn.plotting.common import _figure


def plot_align(
    lines: dict[str, Any], repaired: dict[str, float] | None = None, model: str | None = None
) -> Figure:
    """Test score and train data term along each line (`lines`: label -> PathResult), with
    the REPAIRed midpoint's test score as a marker per line (`repaired`: label -> value)."""
    first = next(iter(lines.values()))
    term, score = ("nll", "error") if first.task == "classification" else ("mse", "mse")
    fig, axes = _figure(2, width=4.8, height=3.6)
    for label, path in lines.items():
        ls = ":" if label.endswith("(curve)") else ("--" if ", " in label else "-")
        style = dict(color="tab:blue" if "aligned" in label else "tab:gray", ls=ls)
        axes[0].plot(path.ts, getattr(path, f"train_{term}"), marker=".", label=label, **style)
        axes[1].plot(path.ts, getattr(path, f"test_{score}"), marker=".", label=label, **style)
    axes[0].set_ylabel(f"train {term}")
    axes[1].set_ylabel(f"test {score}" + (" (%)" if score == "error" else ""))
    for ax in axes:
        ax.set_xlabel("t along the straight line")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{model + ': ' if model else ''}the line before and after alignment")
    return fig
