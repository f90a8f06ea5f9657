"""The evaluation engine: every job over weight points goes through here.

- `settings`: `EvalSettings`, the options that travel together (built once per app).
- `grid`: `evaluate_grid`, the one loop over the nodes of a grid of weight points (batching,
  resume, shards, progress, NaN recording, timing), and `merge_shards`.
- `adaptive`: `Adaptive`, the resolution that evaluates a fine grid only where the picture
  needs it (a coarse grid refined in rounds), for `evaluate_grid(resolution=...)`.
- `subset`: the seeded, class-stratified evaluation subset (`eval_samples`).
- the per-point engine (`modeconn.engine.point`: BatchNorm recompute, metrics), the vmap'd
  engine (`modeconn.engine.batched`) and the execution plan (`modeconn.engine.execution`) below
  them.
"""

from modeconn.engine.adaptive import Adaptive, as_resolution
from modeconn.engine.batched import (
    choose_points_per_pass,
    evaluate_points,
    resolve_points_per_pass,
)
from modeconn.engine.execution import eval_plan, fixed_threads
from modeconn.engine.grid import (
    METRICS,
    GridValues,
    diverged_note,
    evaluate_grid,
    finite_stats,
    merge_shards,
    node_metrics,
    points_metrics,
)
from modeconn.engine.point import Metrics, evaluate, evaluate_point, predict, recompute_bn
from modeconn.engine.result import GridResult
from modeconn.engine.settings import EvalSettings, resolve_settings
from modeconn.engine.subset import eval_subset, stratified_indices

__all__ = [
    "METRICS",
    "Adaptive",
    "EvalSettings",
    "GridResult",
    "GridValues",
    "Metrics",
    "as_resolution",
    "choose_points_per_pass",
    "diverged_note",
    "eval_plan",
    "eval_subset",
    "evaluate",
    "evaluate_grid",
    "evaluate_point",
    "evaluate_points",
    "fixed_threads",
    "finite_stats",
    "merge_shards",
    "node_metrics",
    "points_metrics",
    "predict",
    "recompute_bn",
    "resolve_points_per_pass",
    "resolve_settings",
    "stratified_indices",
]
