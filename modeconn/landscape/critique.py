"""Can we trust loss-landscape pictures? The same networks under four families of directions.

The critique of Li et al. 2018 ("Visualizing the loss landscape of neural nets... but can we
trust them?") draws three versions of one network (no normalisation, BatchNorm,
LocalResponseNorm) under random filter-normalised, QR-orthogonalised, ZCA-whitened and
principal-component directions, and finds that the pictures disagree. `critique` computes
that 3 x 4 grid of surfaces on one data set, and `disagreement` measures how far the pictures
disagree with numbers a reader can compare:

- `centre`: the train loss at the origin (the same network in every family);
- `rise@r`: the mean train loss on the circle of radius r (direction units) minus the centre;
- `basin`: the fraction of the grid whose loss is within `tol` of the centre;
- and, per family, the order of the networks by `rise@r` (which network looks sharpest):
  a conclusion survives the choice of directions only if every family gives the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor, nn

from modeconn.engine import EvalSettings
from modeconn.landscape.directions import (
    principal_directions,
    qr_directions,
    random_direction,
    zca_directions,
)
from modeconn.landscape.surface import SurfaceResult, evaluate_surface

# family(net, seed, norm, ignore) -> two directions
FAMILIES: dict[str, Callable[..., list[Tensor]]] = {
    "filter": lambda net, seed, **rules: [
        random_direction(net, seed=seed + k, **rules) for k in range(2)
    ],
    "qr": lambda net, seed, **rules: qr_directions(net, k=2, seed=seed, **rules),
    "zca": lambda net, seed, **rules: zca_directions(net, k=2, seed=seed, **rules),
    "pca": lambda net, seed, **rules: principal_directions(net, k=2, **rules),
}
FAMILY_TITLES = {
    "filter": "random, filter-normalised",
    "qr": "QR-orthogonalised",
    "zca": "ZCA-whitened",
    "pca": "weights' principal",
}


def directions_of(
    family: str,
    net: nn.Module,
    seed: int = 0,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
) -> list[Tensor]:
    """The two directions of `family` (one of FAMILIES) around `net`, scaled by `norm` with
    `ignore`'s rule for 1-D tensors (see `random_direction`)."""
    if family not in FAMILIES:
        valid = ", ".join([*FAMILIES, "tangent (around phi(t) of a curve)"])
        raise ValueError(f"unknown direction family {family!r}; valid: {valid}")
    return FAMILIES[family](net, seed, norm=norm, ignore=ignore)


@dataclass
class Critique:
    """surfaces[(network, family)]: the SurfaceResult of that network under that family."""

    surfaces: dict[tuple[str, str], SurfaceResult]
    networks: list[str]
    families: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def critique(
    networks: Mapping[str, nn.Module],
    data,
    *,
    families: Sequence[str] = tuple(FAMILIES),
    grid: int = 21,
    span: float = 1.0,
    bn: str = "recompute",
    seed: int = 0,
    settings: EvalSettings | None = None,
    progress: bool = True,
) -> Critique:
    """Every network under every family: a (G x G) train/test surface over [-span, span]^2
    around the network, its BatchNorm statistics handled by `bn` ("recompute" at every point,
    or "origin": the network's own, as Li et al.)."""
    surfaces = {}
    for name, net in networks.items():
        for family in families:
            surfaces[(name, family)] = evaluate_surface(
                net,
                net,
                directions_of(family, net, seed),
                data,
                grid=(grid, grid),
                span=((-span, span), (-span, span)),
                bn=bn,
                settings=settings,
                progress=progress,
            )
    meta = {"grid": grid, "span": span, "bn": bn, "seed": seed}
    return Critique(surfaces, list(networks), list(families), meta)


def _circle_mean(result: SurfaceResult, values: np.ndarray, radius: float) -> float:
    """Mean of `values` (Gx, Gy) on the circle of `radius` around (0, 0), bilinearly
    interpolated at 64 angles."""
    from scipy.interpolate import RegularGridInterpolator

    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    pts = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    interp = RegularGridInterpolator((result.x, result.y), values)
    return float(interp(pts).mean())


def disagreement(
    result: Critique, *, radius: float = 0.5, tol: float = 0.1, metric: str = "train_loss"
) -> dict[str, Any]:
    """Per (network, family): centre, rise@radius and basin (see the module docstring); per
    family: the networks ordered from flattest to sharpest; and whether all families agree."""
    rows = {}
    for (name, family), surface in result.surfaces.items():
        values = np.asarray(getattr(surface, metric), dtype=float)
        i, j = np.argmin(np.abs(surface.x)), np.argmin(np.abs(surface.y))
        centre = float(values[i, j])
        rows[(name, family)] = {
            "centre": centre,
            f"rise@{radius:g}": _circle_mean(surface, values, radius) - centre,
            "basin": float(np.mean(values <= centre + tol)),
        }
    orders = {
        family: sorted(result.networks, key=lambda n, f=family: rows[(n, f)][f"rise@{radius:g}"])
        for family in result.families
    }
    agree = len({tuple(o) for o in orders.values()}) == 1
    return {"rows": rows, "orders": orders, "agree": agree, "radius": radius, "tol": tol}


def disagreement_table(table: Mapping[str, Any]) -> str:
    """`disagreement` as a markdown table plus one line per family's order."""
    rise = f"rise@{table['radius']:g}"
    lines = [
        f"| network | directions | centre | {rise} | basin (loss <= centre + {table['tol']:g}) |",
        "|---|---|---|---|---|",
    ]
    for (name, family), row in table["rows"].items():
        lines.append(
            f"| {name} | {FAMILY_TITLES.get(family, family)} | {row['centre']:.4f} | "
            f"{row[rise]:.4f} | {row['basin']:.0%} |"
        )
    lines.append("")
    for family, order in table["orders"].items():
        lines.append(f"- {FAMILY_TITLES.get(family, family)}: flattest to sharpest {order}")
    verdict = "agree" if table["agree"] else "disagree"
    lines.append(f"- the families {verdict} on which network is sharpest")
    return "\n".join(lines)
