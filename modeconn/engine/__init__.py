"""The evaluation engine: every job over weight points goes through here.

- `settings`: `EvalSettings`, the options that travel together (built once per app).
- `grid`: `evaluate_grid`, the one loop over the nodes of a grid of weight points (batching,
  resume, shards, progress, NaN recording, timing), and `merge_shards`.
- `subset`: the seeded, class-stratified evaluation subset (`eval_samples`).
- the per-point engine (`modeconn.evaluation`: BatchNorm recompute, metrics), the vmap'd
  engine (`modeconn.batched`) and the execution plan (`modeconn.execution`) below them.
"""

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
from modeconn.engine.settings import EvalSettings, resolve_settings
from modeconn.engine.subset import eval_subset, stratified_indices

__all__ = [
    "METRICS",
    "EvalSettings",
    "GridValues",
    "diverged_note",
    "eval_subset",
    "evaluate_grid",
    "finite_stats",
    "merge_shards",
    "node_metrics",
    "points_metrics",
    "resolve_settings",
    "stratified_indices",
]
