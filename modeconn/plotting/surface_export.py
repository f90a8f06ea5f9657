"""A 2-D surface as files for other tools: an interactive HTML 3-D plot (plotly, an optional
extra) and a VTK XML StructuredGrid (.vts) that ParaView opens, as Li et al. 2018 render their
3-D figures (their `h52vtp.py` writes PolyData .vtp; a structured grid keeps the (i, j) topology,
so ParaView needs no triangulation filter). Neither needs matplotlib nor the vtk package.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from modeconn.plotting.common import _finite, metric_label
from modeconn.plotting.surface import surface_note, surface_values

PLOTLY_HINT = "pip install 'modeconn[plotly]'"


def surface_html(
    result: Any,
    metric: str = "train_loss",
    path: str | Path = "surface.html",
    *,
    log: bool = False,
    clip: float | None = None,
    colorscale: str = "Viridis",
    title: str | None = None,
    include_plotlyjs: bool | str = True,
) -> Path:
    """An interactive 3-D surface of `metric` (rotate, zoom, hover values) as one HTML file.

    result: x (Gx,), y (Gy,), metric (Gx, Gy) with [i, j] at (x[i], y[j]). Heights are capped at
    `clip` (None: not capped); log: height log10(metric). include_plotlyjs=True embeds plotly.js
    (a page that works offline, about 4 MB); "cdn" links it instead. Returns the written path.
    Needs plotly: pip install 'modeconn[plotly]'.
    """
    try:
        import plotly.graph_objects as go  # optional: only this function needs it
    except ImportError:
        raise ImportError(f"surface_html needs plotly: {PLOTLY_HINT}") from None
    values = surface_values(result, metric)
    z = np.minimum(values, clip) if clip is not None else values
    label = metric_label(metric)
    if log:
        if not np.all(_finite(z) > 0):
            raise ValueError(f"log=True needs {metric} > 0 everywhere; use log=False")
        z, label = np.log10(z), f"log10 {label}"
    z = np.where(np.isfinite(z), z, np.nan).T  # plotly wants [row=y, col=x]; NaN is left blank
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    meta = getattr(result, "meta", None) or {}
    heading = title or ", ".join(p for p in (meta.get("dataset"), label, surface_note(result)) if p)
    fig = go.Figure(go.Surface(x=x, y=y, z=z, colorscale=colorscale, colorbar={"title": label}))
    fig.update_layout(
        title=heading,
        scene={"xaxis_title": "alpha", "yaxis_title": "beta", "zaxis_title": label},
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=include_plotlyjs)
    return path


def _ascii(values: np.ndarray, per_line: int) -> str:
    """Numbers for an ASCII DataArray, `per_line` to a line, in full float64 precision."""
    flat = np.asarray(values, dtype=float).ravel()
    rows = [
        " ".join(f"{v:.17g}" for v in flat[k : k + per_line]) for k in range(0, flat.size, per_line)
    ]
    return "\n".join(rows)


def _readable(values: np.ndarray) -> np.ndarray:
    """NaN / inf replaced by the largest finite value (VTK's ASCII reader cannot parse "nan")."""
    finite = _finite(values)
    fill = float(finite.max()) if finite.size else 0.0
    return np.where(np.isfinite(values), values, fill)


def export_vts(
    result: Any,
    path: str | Path,
    metrics: Sequence[str] | None = None,
    *,
    z: str | None = None,
    log: bool = False,
    clip: float | None = None,
) -> Path:
    """Write a 2-D surface as a VTK XML StructuredGrid (.vts, ASCII) that ParaView opens.

    Points are (x[i], y[j], height) for the Gx * Gy grid points, i fastest (VTK's order), with
    WholeExtent "0 Gx-1 0 Gy-1 0 0". The height is metric `z` (default the first of metrics),
    capped at `clip`, log10 of it if log (Li et al.'s `h52vtp.py` has the same zmax and log
    options). metrics: the point-data arrays, default every metric of the result (its `metrics`),
    each written as it is. NaN / inf points (not computed, diverged) take the largest finite
    value and 0 in the UInt8 point array "finite". Returns the path (suffix .vts added if absent).
    """
    metrics = list(metrics or getattr(result, "metrics", None) or ["train_loss"])
    z = z or metrics[0]
    arrays = {m: surface_values(result, m) for m in dict.fromkeys([*metrics, z])}
    x, y = np.asarray(result.x, dtype=float), np.asarray(result.y, dtype=float)
    height = arrays[z] if clip is None else np.minimum(arrays[z], clip)
    if log:
        if not np.all(_finite(height) > 0):
            raise ValueError(f"log=True needs {z} > 0 everywhere; use log=False")
        height = np.log10(np.where(np.isfinite(height), height, np.nan))
    xx, yy = np.meshgrid(x, y, indexing="ij")
    # VTK orders structured points with i (x) fastest: transpose [i, j] to [j, i], then ravel.
    points = np.stack([xx.T, yy.T, _readable(height).T], axis=-1).reshape(-1, 3)
    extent = f"0 {len(x) - 1} 0 {len(y) - 1} 0 0"
    finite = np.isfinite(arrays[z]).T.astype(np.uint8)
    data = [
        f'<DataArray type="Float64" Name={quoteattr(m)} format="ascii">\n'
        f"{_ascii(_readable(arrays[m]).T, 6)}\n</DataArray>"
        for m in metrics
    ]
    data.append(
        '<DataArray type="UInt8" Name="finite" format="ascii">\n'
        + "\n".join(" ".join(str(int(v)) for v in row) for row in finite)
        + "\n</DataArray>"
    )
    xml = "\n".join(
        [
            '<?xml version="1.0"?>',
            '<VTKFile type="StructuredGrid" version="0.1" byte_order="LittleEndian">',
            f'<StructuredGrid WholeExtent="{extent}">',
            f'<Piece Extent="{extent}">',
            f"<PointData Scalars={quoteattr(metrics[0])}>",
            *data,
            "</PointData>",
            "<Points>",
            '<DataArray type="Float64" NumberOfComponents="3" format="ascii">',
            _ascii(points, 3),
            "</DataArray>",
            "</Points>",
            "</Piece>",
            "</StructuredGrid>",
            "</VTKFile>",
            "",
        ]
    )
    path = Path(path)
    path = path if path.suffix else path.with_suffix(".vts")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(xml, encoding="ascii")
    tmp.replace(path)
    return path
