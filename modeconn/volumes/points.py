"""The loss over a simplex: points given by their barycentric coefficients, and the faces
through vertex triples on a triangular lattice, evaluated by the engine (`evaluate_grid`:
BatchNorm statistics recomputed at every point, resume, progress).

A 2-simplex (3 vertices) is one triangle, drawn as a heat map in barycentric coordinates
(`modeconn.plotting.plot_simplex`); a larger simplex, or a complex, is drawn as slices: the
2-dimensional faces through vertex triples (i, j, l), the points c_i w_i + c_j w_j + c_l w_l
with c_i + c_j + c_l = 1. The loss reported is nll + 0.5 * wd * ||phi(c)||^2 with wd = 0 by
default (simplex training decays the vertices, not phi(c)).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modeconn.curves.simplex import SimplicialComplex
from modeconn.curves.vertices import VertexSet
from modeconn.curves.weights import fingerprint
from modeconn.data.tasks import task_of
from modeconn.engine import EvalSettings, GridResult, evaluate_grid, resolve_settings
from modeconn.io.store import PartialGrid


@dataclass(eq=False, init=False)
class SimplexPointsResult(GridResult):
    """Metrics at M barycentric points of a simplex or complex; each metric is an (M,) array
    (the data set's task's: train_loss, train_nll, train_error, test_*, ...).

    point (M,): 0..M-1, the grid's axis. coefficients (M, k): each point's coefficients over
    the k vertices. face (M,): for `evaluate_faces`, the index into triples (T, 3) of the face
    that holds each point (-1 for a point on no face; triples is (0, 3) then). names (k,): the
    vertices' names (figures label the corners with them).
    """

    point: np.ndarray
    values: dict[str, np.ndarray]
    coefficients: np.ndarray
    face: np.ndarray
    triples: np.ndarray
    names: np.ndarray
    task: str
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "SimplexPointsResult"
    axes: ClassVar[tuple[str, ...]] = ("point",)
    positional: ClassVar[tuple[str, ...]] = ("coefficients",)

    def _set_fields(
        self, coefficients: Any, face: Any = None, triples: Any = None, names: Any = None
    ) -> None:
        m = len(self.point)
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        if self.coefficients.ndim != 2 or len(self.coefficients) != m:
            raise ValueError(
                f"coefficients must have shape ({m}, k), got {self.coefficients.shape}"
            )
        k = self.coefficients.shape[1]
        self.face = np.full(m, -1, np.int64) if face is None else np.asarray(face, np.int64)
        self.triples = np.asarray(np.zeros((0, 3)) if triples is None else triples, np.int64)
        self.triples = self.triples.reshape(-1, 3)
        self.names = np.asarray([f"v{i}" for i in range(k)] if names is None else names, str)
        if self.face.shape != (m,) or self.face.max(initial=-1) >= len(self.triples):
            raise ValueError(f"face must be ({m},) indices into triples, got {self.face.shape}")
        if self.names.shape != (k,):
            raise ValueError(f"names must name the {k} vertices, got {self.names.shape}")

    def at_vertex(self, vertex: int, metric: str) -> float:
        """`metric` at the point that is vertex `vertex` itself (its one-hot coefficients)."""
        hits = np.flatnonzero(self.coefficients[:, vertex] == 1.0)
        if not hits.size:
            raise ValueError(f"vertex {vertex} is not one of the evaluated points")
        return float(self.values[metric][hits[0]])


def face_lattice(
    num_vertices: int, triples: Sequence[Sequence[int]], resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """The points of each face (i, j, l) on a triangular lattice of `resolution` steps per
    edge: (c_i, c_j, c_l) = (a, b, r - a - b) / r for a, b >= 0, a + b <= r, the corners
    exactly the vertices. Returns coefficients (T * P, num_vertices) float64 and the face of
    each point (T * P,), P = (r + 1)(r + 2) / 2."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(
            f"resolution must be an int >= 1 (lattice steps per edge), got {resolution}"
        )
    triples = check_triples(triples, num_vertices)
    r = resolution
    steps = [(a, b, r - a - b) for a in range(r, -1, -1) for b in range(r - a, -1, -1)]
    coefficients = np.zeros((len(triples) * len(steps), num_vertices))
    face = np.repeat(np.arange(len(triples)), len(steps))
    for t, triple in enumerate(triples):
        block = coefficients[t * len(steps) : (t + 1) * len(steps)]
        for p, step in enumerate(steps):
            block[p, list(triple)] = np.asarray(step, dtype=np.float64) / r
    return coefficients, face


def check_triples(triples: Sequence[Sequence[int]], k: int) -> list[tuple[int, int, int]]:
    """Vertex triples, validated: three distinct vertices in 0..k-1 each, at least one."""
    out = [tuple(int(i) for i in t) for t in triples]
    if not out:
        raise ValueError("no vertex triples: pass at least one, e.g. triples=[(0, 1, 2)]")
    for t in out:
        if len(t) != 3 or len(set(t)) != 3 or not all(0 <= i < k for i in t):
            raise ValueError(f"a face needs three distinct vertices of 0..{k - 1}, got {list(t)}")
    return out


def default_triples(vertex_set: VertexSet) -> list[tuple[int, int, int]]:
    """Every vertex triple of a simplex, or of each simplex of a complex (in order, once)."""
    groups = vertex_set.simplexes if isinstance(vertex_set, SimplicialComplex) else None
    groups = groups or [tuple(range(vertex_set.num_vertices))]
    triples = list(dict.fromkeys(t for g in groups for t in itertools.combinations(sorted(g), 3)))
    if not triples:
        raise ValueError(
            f"this {vertex_set.kind} has no face of three vertices (its simplexes have "
            f"{len(groups[0])}): pass triples=[(i, j, l), ...] to slice through other vertices "
            "(a complex: train 2 or more connectors)"
        )
    return triples


def evaluate_simplex(
    vertex_set: VertexSet,
    data,
    coefficients: Any,
    *,
    wd: float = 0.0,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
    save_every_s: float = 30.0,
    face: Any = None,
    triples: Any = None,
    names: Sequence[str] | None = None,
    desc: str = "simplex",
    **engine: Any,
) -> SimplexPointsResult:
    """Train/test loss, nll and error (%) (regression: loss, mse, nll) at each point
    phi(c) = sum_i c_i w_i, c a row of `coefficients` (M, k), with BatchNorm statistics
    recomputed at every point. settings / engine keywords: as `evaluate_path`; partial,
    save_every_s: resume from a partial file, removed once the result is complete."""
    settings = resolve_settings(settings, engine)
    coefficients = np.asarray(torch.as_tensor(coefficients, dtype=torch.float64).cpu())
    k = vertex_set.num_vertices
    if coefficients.ndim != 2 or coefficients.shape[1] != k or not len(coefficients):
        raise ValueError(f"coefficients must have shape (M, {k}), got {coefficients.shape}")
    bad = ~np.isfinite(coefficients).all(1) | (coefficients < 0).any(1)
    bad |= np.abs(coefficients.sum(1) - 1.0) > 1e-5
    if bad.any():
        raise ValueError(
            f"coefficients must be points of the simplex (each >= 0, summing to 1): row "
            f"{int(np.argmax(bad))} is {coefficients[np.argmax(bad)].tolist()}"
        )
    with torch.no_grad():
        stacks = vertex_set.stacked()
    config = {
        "points": fingerprint(torch.from_numpy(coefficients)),
        "vertices": fingerprint(*stacks.values()),
    }
    grid = evaluate_grid(
        vertex_set.model,
        vertex_set.space,
        (len(coefficients),),
        lambda index: vertex_set.point(coefficients[index[0]]).detach(),
        data,
        settings,
        wd=wd,
        config=config,
        partial=partial,
        save_every_s=save_every_s,
        progress=progress,
        desc=desc,
    )
    meta = {
        "type": vertex_set.kind,
        "vertices": k,
        "dim": vertex_set.space.size,
        # Benton et al. share one set of running statistics across the simplex
        "bn": "recomputed at every point (the reference shares one set)",
        **grid.meta,
    }
    result = SimplexPointsResult(
        np.arange(len(coefficients)),
        coefficients,
        values=grid.values,
        face=face,
        triples=triples,
        names=names,
        task=task_of(data),
        meta=meta,
    )
    if partial is not None:
        PartialGrid.remove_files(partial)
    return result


def evaluate_faces(
    vertex_set: VertexSet,
    data,
    triples: Sequence[Sequence[int]] | None = None,
    resolution: int = 10,
    **options: Any,
) -> SimplexPointsResult:
    """The loss over the faces through vertex `triples` (default `default_triples`: the one
    triangle of a 2-simplex, every face of a larger one), each on a lattice of `resolution`
    steps per edge (`face_lattice`); options as `evaluate_simplex` (names, settings, ...)."""
    triples = default_triples(vertex_set) if triples is None else triples
    triples = check_triples(triples, vertex_set.num_vertices)
    coefficients, face = face_lattice(vertex_set.num_vertices, triples, resolution)
    options.setdefault("desc", "faces")
    result = evaluate_simplex(vertex_set, data, coefficients, face=face, triples=triples, **options)
    result.meta["resolution"] = resolution
    return result
