"""Figures of representation similarity (`modeconn.similarity.analyses.SimilarityResult`).

- `plot_layer_similarity`: the layer x layer heat map of two networks (rows: network a's
  layers from the input at the bottom; columns: network b's, input at the left), one cell
  per pair, values written in the cells when there are few;
- `plot_over_training`: one such heat map per fraction of training (rows: the layers at x %,
  columns: at the end), on one 0..1 colour scale with one colour bar, as the SVCCA post;
- `plot_along_curve`: per layer, similarity of phi(t) to w1 and to w2 versus t, the curve
  solid and the straight line dashed;
- `plot_class_wise`: per class, the similarity of each layer to the output, through depth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from modeconn.plotting.common import _suptitle


def _label(result: Any) -> str:
    from modeconn.similarity.measures import MEASURE_LABELS

    meta = result.meta or {}
    name = MEASURE_LABELS.get(meta.get("measure", ""), str(meta.get("measure", "similarity")))
    policy = meta.get("policy")
    return f"{name} (conv: {policy})" if policy else name


def _short(names: Any) -> list[str]:
    return [str(n) for n in names]


def _heat(ax: Any, values: np.ndarray, rows: list[str], cols: list[str], cmap: str) -> Any:
    cm = colormaps[cmap].with_extremes(bad="0.8")  # NaN cells (degenerate layers) in grey
    image = ax.imshow(
        np.ma.masked_invalid(values), origin="lower", vmin=0.0, vmax=1.0, cmap=cm, aspect="auto"
    )
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    if values.size <= 144:
        for (i, j), v in np.ndenumerate(values):
            text = "NaN" if not np.isfinite(v) else f"{v:.2f}"
            colour = "white" if np.isfinite(v) and v < 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=colour)
    return image


def plot_layer_similarity(
    result: Any,
    *,
    row_name: str = "network a (w1)",
    column_name: str = "network b (w2)",
    title: str | None = None,
    model: str | None = None,
    cmap: str = "magma",
) -> Figure:
    """Heat map values[i, j] = similarity(a's layer i, b's layer j) of a "pair" result."""
    values = np.asarray(result.values, dtype=float)
    n_rows, n_cols = values.shape
    fig = Figure(figsize=(2.2 + 0.55 * n_cols, 1.8 + 0.45 * n_rows), layout="constrained")
    ax = fig.subplots()
    image = _heat(ax, values, _short(result.layers), _short(result.columns), cmap)
    ax.set_ylabel(f"layer of {row_name} (input at the bottom)")
    ax.set_xlabel(f"layer of {column_name} (input at the left)")
    fig.colorbar(image, ax=ax, label=_label(result), shrink=0.9)
    base = getattr(result, "baseline", None)
    if base is not None and np.isfinite(base).any():
        ax.set_title(
            f"shuffled-sample baseline: {np.nanmin(base):.2f} .. {np.nanmax(base):.2f}",
            fontsize=8,
        )
    _suptitle(fig, result, title or "layer x layer similarity", model)
    return fig


def plot_over_training(
    result: Any, *, title: str | None = None, model: str | None = None, cmap: str = "magma"
) -> Figure:
    """One heat map per fraction of training: rows the layers at that point, columns the
    layers at the end; one shared 0..1 colour scale and colour bar."""
    values = np.asarray(result.values, dtype=float)
    k, n_rows, n_cols = values.shape
    width = 1.2 + 0.42 * n_cols
    fig = Figure(figsize=(width * k + 1.0, 1.9 + 0.42 * n_rows), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    fractions = np.asarray(result.axis, dtype=float)
    for i, ax in enumerate(axes):
        image = _heat(ax, values[i], _short(result.layers), _short(result.columns), cmap)
        ax.set_title(f"{fractions[i]:.0%} of training")
        ax.set_xlabel("layer at the end of training")
        if i == 0:
            ax.set_ylabel("layer at this point (input at the bottom)")
        else:
            ax.set_yticklabels([])
    fig.colorbar(image, ax=list(axes), label=_label(result), shrink=0.9)
    _suptitle(fig, result, title or "layers during training vs at its end", model)
    return fig


def plot_along_curve(
    result: Any, *, title: str | None = None, model: str | None = None, ncols: int = 4
) -> Figure:
    """Per layer, similarity of phi(t) to w1 (blue) and to w2 (orange) versus t; the curve
    solid, the straight line (if in the result) dashed."""
    values = np.asarray(result.values, dtype=float)  # (path, t, layer, reference)
    paths = (result.meta or {}).get("paths", ["curve", "line"])[: values.shape[0]]
    layers = _short(result.layers)
    ncols = min(ncols, len(layers))
    nrows = -(-len(layers) // ncols)
    fig = Figure(figsize=(3.1 * ncols, 2.5 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    t = np.asarray(result.axis, dtype=float)
    styles = {"curve": "-", "line": "--"}
    for i, ax in enumerate(axes):
        if i >= len(layers):
            ax.set_visible(False)
            continue
        for p, path in enumerate(paths):
            for r, colour in ((0, "tab:blue"), (1, "tab:orange")):
                ax.plot(
                    t, values[p, :, i, r], styles.get(path, ":"), color=colour, marker=".",
                    label=f"{path} vs w{r + 1}",
                )  # fmt: skip
        ax.set_title(layers[i], fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel(_label(result), fontsize=8)
        if i >= len(layers) - ncols:  # no panel below: this one carries the t axis
            ax.set_xlabel("t (0: w1, 1: w2)")
            ax.xaxis.set_tick_params(which="both", labelbottom=True)
            for label in ax.get_xticklabels():
                label.set_visible(True)
    axes[0].legend(fontsize=7, loc="lower center", handlelength=3.5)
    _suptitle(fig, result, title or "representations along the curve and the line", model)
    return fig


def plot_class_wise(result: Any, *, title: str | None = None, model: str | None = None) -> Figure:
    """Per class, similarity of each layer to the network's output (on that class's samples),
    layers from the input (left) to the last before the output (right)."""
    values = np.asarray(result.values, dtype=float)  # (class, layer)
    layers = _short(result.layers)
    fig = Figure(figsize=(1.6 + 0.9 * len(layers), 3.8), layout="constrained")
    ax = fig.subplots()
    palette = colormaps["tab10"] if len(values) <= 10 else colormaps["viridis"]
    for c, name in enumerate(_short(result.columns)):
        colour = palette(c) if len(values) <= 10 else palette(c / max(1, len(values) - 1))
        ax.plot(range(len(layers)), values[c], marker="o", color=colour, label=f"class {name}")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("layer (input -> output)")
    ax.set_ylabel(f"{_label(result)} with the output")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2, loc="lower right")
    _suptitle(fig, result, title or "class-wise similarity to the output through depth", model)
    return fig
