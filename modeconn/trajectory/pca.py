"""Optimisation trajectories on a plane: PCA or fixed directions, projections, the loss under
the path.

Li et al. 2018 (Sec. 7, code tomgoldstein/loss-landscape `projection.py`) stack the saved
weights of every epoch relative to the final ones, rows w_t - w_T, fit sklearn's PCA, and
draw the path on the top two components over the loss contours of the plane through w_T,
with the explained-variance ratios on the axes. sklearn's PCA centres the rows, so
subtracting w_T changes nothing but the origin: the components are those of the centred
trajectory, as `pca_directions` computes them here:

    Xc = X - mean_t X   (T x D),   Xc = U S V^T,   d_k = V[:, k],   ratio_k = s_k^2 / sum s^2

without a D x D matrix: the T x T Gram matrix Xc Xc^T is accumulated over column blocks
(float64), its eigenvectors give U and S, and d_k = Xc^T u_k / s_k is a second pass over the
blocks; for T > `gram_limit` rows `torch.pca_lowrank` on the rows. Points may be a tensor, a
numpy (memory-mapped) array or a `TrajectoryStore`: nothing larger than a block of columns
is ever in memory.

Where we differ, each deliberate:
- Coordinates are the least-squares projection onto span(d1, d2), c = (A A^T)^-1 A (w - w_T)
  with A = [d1; d2]: exact for any pair. Li et al. use <w - w_T, d> / ||d|| per direction,
  which is the projection only for orthonormal directions (true for PCA, false for two
  random directions, whose cosine is small but not 0).
- Every point's residual distance to the plane is reported: the drawn path is not in the
  plane, so the contour value under a point is not that point's loss. `evaluate_trajectory`
  also evaluates the true loss of every recorded point, next to the contour value at its
  projection (bilinear in the grid), to show how far the picture misleads.
- The plane is evaluated by the grid engine (`evaluate_surface`: no_grad, BatchNorm statistics
  recomputed at every node unless `bn="origin"`, resume, shards).
- Fixed directions (random filter-normalised, or two given vectors) put several runs on one
  plane, as the trajectory-animation post advises for comparing optimisers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from modeconn.curves.weights import WeightSpace
from modeconn.data.tasks import CLASSIFICATION, task_of
from modeconn.engine import EvalSettings, evaluate_grid, resolve_settings
from modeconn.io.store import PartialGrid, SavedResult, plain_meta
from modeconn.landscape.directions import random_direction
from modeconn.landscape.surface import SurfaceResult, evaluate_surface
from modeconn.trajectory.recorder import TrajectoryStore

PointsLike = Tensor | np.ndarray | TrajectoryStore
_BLOCK = 1 << 16  # columns (or rows x columns / T) per block: memory is O(T * _BLOCK)


def _matrix(points: PointsLike) -> Tensor | np.ndarray:
    """A (T, D) tensor or array; a store's memory map (a network's store, not a curve's)."""
    if isinstance(points, TrajectoryStore):
        points = points.points()
    if points.ndim != 2:
        raise ValueError(
            f"a trajectory is a (T, D) matrix of flat weight points, got shape {points.shape}; "
            "for a curve's bends pick one bend: store.points()[:, k]"
        )
    if points.shape[0] < 2:
        raise ValueError(f"a trajectory needs at least 2 points, got {points.shape[0]}")
    return points


def _block(points: Tensor | np.ndarray, cols: slice) -> Tensor:
    """Columns `cols` of all rows, as float64 (copied from a memory map block by block)."""
    part = points[:, cols]
    part = torch.from_numpy(np.array(part)) if isinstance(part, np.ndarray) else part
    return part.detach().to("cpu", torch.float64)


def _column_blocks(points: Tensor | np.ndarray, block: int) -> Iterator[slice]:
    t, d = points.shape
    width = max(1, block * 16 // max(t, 1))
    for start in range(0, d, width):
        yield slice(start, min(start + width, d))


def pca_directions(
    points: PointsLike, *, block: int = _BLOCK, gram_limit: int = 4096
) -> tuple[Tensor, Tensor]:
    """The top-2 principal directions of a trajectory and their explained-variance ratios.

    points: (T, D) flat weight points (rows in time order): a tensor, a numpy or memory-mapped
        array, or a `TrajectoryStore` of a network. Rows are centred (as sklearn's PCA, which
        Li et al. fit to w_t - w_T: the final point only moves the origin).
    Returns directions (2, D) float64, orthonormal, and ratios (2,) float64: the share of
    the centred trajectory's total variance along each (s_k^2 / sum_j s_j^2). Signs are
    fixed so that the largest |u_k| entry of each left singular vector is positive
    (sklearn's `svd_flip`), hence deterministic. No D x D matrix is formed (module text).
    """
    x = _matrix(points)
    t, d = x.shape
    if t > gram_limit:
        return _pca_lowrank(x)
    blocks = list(_column_blocks(x, block))
    gram = torch.zeros(t, t, dtype=torch.float64)
    for cols in blocks:
        part = _block(x, cols)
        part = part - part.mean(0)
        gram += part @ part.T
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    total = evals.sum()
    if not total > 0:
        raise ValueError("the trajectory does not move: all points are equal, no direction")
    rank = int((evals > evals[0] * 1e-12 * t).sum())
    if rank < 2:
        raise ValueError("the trajectory lies on a line: one principal direction only")
    u = evecs[:, :2]
    u = u * torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
    dirs = torch.empty(2, d, dtype=torch.float64)
    for cols in blocks:
        part = _block(x, cols)
        dirs[:, cols] = u.T @ (part - part.mean(0))
    dirs /= evals[:2].sqrt()[:, None]
    for _ in range(2):  # re-orthonormalise: the Gram route squares the rounding errors
        dirs[1] -= (dirs[0] @ dirs[1]) * dirs[0]
        dirs /= dirs.norm(dim=1, keepdim=True)
    return dirs, evals[:2] / total


def _pca_lowrank(x: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """For many rows: torch.pca_lowrank (randomised; the rows are read into memory)."""
    a = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
    a = a.detach().to("cpu", torch.float64)
    a = a - a.mean(0)
    u, s, v = torch.pca_lowrank(a, q=min(8, *a.shape), center=False, niter=6)
    sign = torch.sign(u[:, :2].gather(0, u[:, :2].abs().argmax(0, keepdim=True)))
    return (v[:, :2] * sign).T.contiguous(), s[:2] ** 2 / a.pow(2).sum()


def fixed_directions(
    model: nn.Module, seeds: tuple[int, int] = (1, 2), norm: str | None = "filter", **kw: Any
) -> Tensor:
    """Two random directions (2, D) scaled to `model`'s weights (`random_direction`, filter
    normalised by default): one plane for several runs that share `model`'s final point or
    any other origin. Two given vectors are simply `torch.stack([d1, d2])`."""
    return torch.stack([random_direction(model, norm=norm, seed=s, **kw) for s in seeds])


def project(
    points: PointsLike, origin: Tensor, directions: Tensor, *, block: int = _BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares plane coordinates of every point and its distance to the plane.

    points (T, D), origin (D,), directions (2, D) (any two independent vectors). For each w:
    c = argmin ||w - origin - c^T A|| = (A A^T)^-1 A (w - origin), residual = ||w - origin -
    c^T A||, in float64. Returns coords (T, 2) in units of the directions, residual (T,).
    """
    x = _matrix(points) if not (isinstance(points, Tensor) and points.ndim == 1) else points[None]
    a = directions.detach().to("cpu", torch.float64)
    o = origin.detach().to("cpu", torch.float64).reshape(-1)
    if a.ndim != 2 or a.shape[0] != 2 or a.shape[1] != o.numel() or x.shape[1] != o.numel():
        raise ValueError(
            f"expected directions (2, D) and an origin (D,) of the points' D={x.shape[1]}, got "
            f"{tuple(a.shape)} and {tuple(o.shape)}"
        )
    gram = a @ a.T
    if torch.linalg.matrix_rank(gram).item() < 2:
        raise ValueError("the two directions are parallel: they span no plane")
    coords, residual = [], []
    rows = max(1, block * 16 // x.shape[1])
    for start in range(0, x.shape[0], rows):
        part = x[start : start + rows]
        part = torch.from_numpy(np.array(part)) if isinstance(part, np.ndarray) else part
        delta = part.detach().to("cpu", torch.float64) - o
        c = torch.linalg.solve(gram, a @ delta.T).T  # (rows, 2)
        coords.append(c)
        residual.append(torch.linalg.vector_norm(delta - c @ a, dim=1))
    return torch.cat(coords).numpy(), torch.cat(residual).numpy()


def bilinear(x: np.ndarray, y: np.ndarray, values: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """values (Gx, Gy) on the grid x (Gx,) x y (Gy,), interpolated bilinearly at xy (N, 2);
    NaN outside the grid."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    out = np.full(len(xy), np.nan)
    inside = (xy[:, 0] >= x[0]) & (xy[:, 0] <= x[-1]) & (xy[:, 1] >= y[0]) & (xy[:, 1] <= y[-1])
    px, py = xy[inside, 0], xy[inside, 1]
    i = np.clip(np.searchsorted(x, px, side="right") - 1, 0, len(x) - 2)
    j = np.clip(np.searchsorted(y, py, side="right") - 1, 0, len(y) - 2)
    fx = (px - x[i]) / (x[i + 1] - x[i])
    fy = (py - y[j]) / (y[j + 1] - y[j])
    v = values
    out[inside] = (
        v[i, j] * (1 - fx) * (1 - fy)
        + v[i + 1, j] * fx * (1 - fy)
        + v[i, j + 1] * (1 - fx) * fy
        + v[i + 1, j + 1] * fx * fy
    )
    return out


@dataclass(eq=False)
class TrajectoryResult(SavedResult):
    """A trajectory on a plane through its final point.

    steps (T,): optimizer steps done at each point; batch_loss (T,): the training batch's
    loss on those weights (NaN for the final point); coords (T, 2): least-squares plane
    coordinates in direction units; residual (T,): distance of each point to the plane;
    ratios (2,): explained-variance ratios of PCA directions (NaN for fixed ones);
    true_loss (T,) and true_error (T,): each point evaluated on the train split (same wd and
    BatchNorm policy as the surface); plane_loss (T,): the surface's train loss at the
    projection (bilinear), what the contour picture shows under the point.
    """

    steps: np.ndarray
    batch_loss: np.ndarray
    coords: np.ndarray
    residual: np.ndarray
    ratios: np.ndarray
    true_loss: np.ndarray | None = None
    true_error: np.ndarray | None = None
    plane_loss: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "TrajectoryResult"

    def summary(self) -> dict[str, float]:
        """Variance in 2 PCs, the largest residual relative to the path length, and how far
        the contour value under the path is from the true loss (max |plane - true|)."""
        steps = np.linalg.norm(np.diff(self.coords, axis=0), axis=1).sum()
        out = {
            "variance_2pc": float(np.nansum(self.ratios)),
            "max_residual": float(self.residual.max()),
            "path_length_in_plane": float(steps),
        }
        if self.true_loss is not None and self.plane_loss is not None:
            gap = np.abs(self.plane_loss - self.true_loss)
            out["max_gap_plane_vs_true"] = float(np.nanmax(gap))
            out["final_true_loss"] = float(self.true_loss[-1])
        return out


def _span(coords: np.ndarray, margin: float) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = coords.min(0), coords.max(0)
    width = np.maximum(hi - lo, 1e-3 * max(float((hi - lo).max()), 1e-12))
    lo, hi = lo - margin * width, hi + margin * width
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def evaluate_trajectory(
    model: nn.Module,
    points: PointsLike,
    data,
    *,
    directions: str | Tensor = "pca",
    origin: Tensor | None = None,
    steps: Sequence[int] | None = None,
    batch_loss: Sequence[float] | None = None,
    grid: int | tuple[int, int] = 21,
    margin: float = 0.2,
    span: tuple[tuple[float, float], tuple[float, float]] | None = None,
    true_loss: bool = True,
    bn: str = "recompute",
    wd: float = 0.0,
    settings: EvalSettings | None = None,
    progress: bool = True,
    partial: str | Path | None = None,
) -> tuple[TrajectoryResult, SurfaceResult]:
    """The trajectory on its plane and the loss surface of that plane (Li et al. 2018, Sec. 7).

    model: the network the points belong to (its structure and buffers). points (T, D) or a
    `TrajectoryStore` (then steps and batch losses come from it). directions: "pca" (this
    trajectory's), "filter" (random filter-normalised at the origin, seeds 1, 2), or a (2, D)
    tensor. origin: the plane's centre, default the final point. The grid covers the
    projected path widened by `margin` (or `span`, in direction units). wd: the reported
    loss is nll + 0.5 wd ||w||^2 (default 0: the plain loss, as the batch losses).
    `partial`: the surface's resume file (the per-point evaluation has its own, suffixed).
    """
    store = points if isinstance(points, TrajectoryStore) else None
    x = _matrix(points)
    if store is not None:
        steps, batch_loss = store.steps, store.losses
    t = x.shape[0]
    steps = np.arange(t) if steps is None else np.asarray(steps)
    batch_loss = np.full(t, np.nan) if batch_loss is None else np.asarray(batch_loss, float)
    space = WeightSpace.from_module(model)
    ref = next(model.parameters())
    given = origin is not None
    final = torch.as_tensor(np.array(x[-1])).to(torch.float64)
    origin = origin.detach().cpu().double() if given else final
    ratios = np.full(2, np.nan)
    if isinstance(directions, str):
        if directions == "pca":
            dirs, r = pca_directions(x)
            ratios = r.numpy()
        elif directions == "filter":
            centre = {k: v.to(ref) for k, v in space.unflatten(origin.to(ref.dtype)).items()}
            dirs = fixed_directions(centre).double()
        else:
            raise ValueError(f"directions must be 'pca', 'filter' or a (2, D) tensor: {directions}")
    else:
        dirs = directions.detach().cpu().double()
    coords, residual = project(x, origin, dirs)
    settings = resolve_settings(settings, {})
    surface = evaluate_surface(
        model, origin.to(ref), dirs.to(ref.device), data, grid=grid,
        span=span or _span(coords, margin), bn=bn, wd=wd, settings=settings,
        progress=progress, partial=partial,
    )  # fmt: skip
    result = TrajectoryResult(steps, batch_loss, coords, residual, ratios)
    task = task_of(data)
    if true_loss:
        true_partial = None if partial is None else Path(f"{partial}-points")
        values = evaluate_grid(
            model, space, (t,),
            lambda i: torch.as_tensor(np.array(x[i[0]])).to(ref),
            data, settings.replace(bn="fixed") if bn == "origin" else settings, wd=wd,
            config={"kind": "trajectory-points", "points": t}, partial=true_partial,
            progress=progress, desc="trajectory points",
        ).values  # fmt: skip
        if true_partial is not None:
            PartialGrid.remove_files(true_partial)
        result.true_loss = values["train_loss"]
        result.true_error = values.get("train_error" if task == CLASSIFICATION else "train_mse")
        result.plane_loss = bilinear(surface.x, surface.y, surface.train_loss, coords)
    result.meta = plain_meta(
        {
            "directions": directions if isinstance(directions, str) else "given",
            "origin": "given" if given else "final point",
            "points": t,
            "dim": space.size,
            "task": task,
            "wd": wd,
            "bn": bn,
            "span": [list(surface.x[[0, -1]]), list(surface.y[[0, -1]])],
            "direction_norms": dirs.norm(dim=1).tolist(),
        }
    )
    result.directions = dirs  # not saved: (2, D) can be large; the caller keeps it if needed
    return result, surface


# --------------------------------------------------------------------------- frames


def frame_indices(count: int, frames: int) -> np.ndarray:
    """`frames` indices spread evenly over `count` points, first and last included (fewer
    if there are fewer points)."""
    return np.unique(np.linspace(0, count - 1, min(frames, count)).round().astype(int))


def frame_regions(
    model: nn.Module, points: PointsLike, data, frames: int = 50, grid: int = 80
) -> list[tuple]:
    """Decision regions (axes, labels, confidence) at `frame_indices(T, frames)` of a
    trajectory of a 2-D classifier: what `animate_trajectory(regions=...)` draws."""
    x = _matrix(points)
    axes = input_grid(data, grid)
    return [
        (axes, *decision_regions(model, torch.as_tensor(np.array(x[i])), axes))
        for i in frame_indices(x.shape[0], frames)
    ]


# --------------------------------------------------------------------------- decision regions


def input_grid(data, grid: int = 80, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """x (G,), y (G,) covering the 2-D train inputs of `data`, widened by `margin`."""
    if tuple(data.input_shape) != (2,):
        raise ValueError(f"decision regions need 2-D inputs, got input shape {data.input_shape}")
    xs = data.train_x.detach().cpu().double().numpy()
    lo, hi = xs.min(0), xs.max(0)
    lo, hi = lo - margin * (hi - lo), hi + margin * (hi - lo)
    return np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)


@torch.inference_mode()
def decision_regions(
    model: nn.Module, point: Tensor, axes: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The class and its probability that `model` with flat weights `point` (D,) predicts at
    every node of the 2-D input grid `axes`: labels (Gx, Gy) int, confidence (Gx, Gy)."""
    ref = next(model.parameters())
    space = WeightSpace.from_module(model)
    weights = space.unflatten(point.detach().to(ref))
    xx, yy = np.meshgrid(*axes, indexing="ij")
    inputs = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1)).to(ref)
    was = model.training
    model.eval()
    try:
        probs = functional_call(model, weights, (inputs,)).softmax(-1)
    finally:
        model.train(was)
    conf, labels = probs.max(-1)
    shape = xx.shape
    return labels.cpu().numpy().reshape(shape), conf.cpu().numpy().reshape(shape)
