"""Paper-style figures for path, plane and ensemble results (matplotlib, Agg-safe, no LaTeX).

Every function takes a result object and only reads its attributes (numpy arrays and floats), so
`PathResult`, `PlaneResult`, `EnsembleResult` and `FGEResult` work, and so does anything with the
same fields. Every function returns a `matplotlib.figure.Figure`; `save_figure` writes it.
Errors are in percent, as `modeconn.engine.point` reports them. Labels and default metrics
follow a result's task (`result.task`: classification error, regression MSE).

One module per figure family: `plane`, `path`, `ensembles`, `functions` (the predictive
functions along a curve), `simplex` (triangle heat maps of a simplex's faces), `stability`
(instability against the spawn step), and `common` (titles, labels, saving); every public
name is importable from `modeconn.plotting`.

Figures are built without pyplot (`matplotlib.figure.Figure`), so library code and Hydra jobs
never need a display, never pick a backend and never accumulate open figures. In a notebook a
returned figure shows as a cell's value (`%matplotlib inline`); elsewhere, `save_figure` it.
"""

from modeconn.plotting.align import plot_align
from modeconn.plotting.common import Scale, figure_title, metric_label, save_figure, task_metrics
from modeconn.plotting.curvature import plot_curvature_map, plot_curvature_path, plot_density
from modeconn.plotting.ensembles import plot_ensembles, plot_fge
from modeconn.plotting.functions import plot_functions
from modeconn.plotting.line import plot_line
from modeconn.plotting.path import ZOOM_BELOW, plot_path
from modeconn.plotting.plane import (
    PLANE_METRICS,
    log_levels,
    off_plane_note,
    plot_plane,
    shared_scale,
)
from modeconn.plotting.similarity import (
    plot_along_curve,
    plot_class_wise,
    plot_layer_similarity,
    plot_over_training,
)
from modeconn.plotting.simplex import plot_simplex, triangle_xy
from modeconn.plotting.stability import plot_stability
from modeconn.plotting.surface import (
    plot_contour,
    plot_heatmap,
    plot_panels,
    plot_surface_3d,
)
from modeconn.plotting.surface_export import export_vts, surface_html
from modeconn.plotting.trajectory import (
    plot_gallery,
    plot_trajectories,
    plot_trajectory,
)

__all__ = [
    "plot_align",
    "PLANE_METRICS",
    "ZOOM_BELOW",
    "Scale",
    "export_vts",
    "figure_title",
    "log_levels",
    "metric_label",
    "off_plane_note",
    "plot_curvature_map",
    "plot_curvature_path",
    "plot_density",
    "plot_contour",
    "plot_ensembles",
    "plot_fge",
    "plot_functions",
    "plot_heatmap",
    "plot_along_curve",
    "plot_class_wise",
    "plot_layer_similarity",
    "plot_over_training",
    "plot_line",
    "plot_panels",
    "plot_path",
    "plot_plane",
    "plot_simplex",
    "plot_stability",
    "plot_surface_3d",
    "plot_gallery",
    "plot_trajectories",
    "plot_trajectory",
    "save_figure",
    "shared_scale",
    "surface_html",
    "task_metrics",
    "triangle_xy",
]
