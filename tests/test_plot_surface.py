import io
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402

from modeconn.plotting import (  # noqa: E402
    export_vts,
    plot_contour,
    plot_heatmap,
    plot_line,
    plot_panels,
    plot_surface_3d,
    surface_html,
)

METRICS = ["train_loss", "train_nll", "train_error", "test_loss", "test_nll", "test_error"]


def fake_surface(kind: str = "bowl", gx: int = 11, gy: int = 7, offset: float = 0.0):
    """A 2-D result on a non-square grid: a quadratic bowl or a saddle, [i, j] at (x[i], y[j])."""
    x, y = np.linspace(-1.0, 1.0, gx), np.linspace(-0.6, 0.6, gy)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    z = 0.05 + 3 * xx**2 + yy**2 if kind == "bowl" else 1.5 + xx**2 - yy**2
    z = z + offset
    fields = {}
    for split, k in (("train", 1.0), ("test", 1.2)):
        fields.update({f"{split}_loss": z * k, f"{split}_nll": z * k})
        fields[f"{split}_error"] = 100 * (1 - np.exp(-z * k))
    meta = {"dataset": "digits", "bn": "recompute", "directions": "filter"}
    return SimpleNamespace(
        x=x, y=y, metrics=list(METRICS), direction_scale=np.array([0.5, 0.25]), meta=meta, **fields
    )


def fake_line(task: str = "classification"):
    x = np.linspace(-0.5, 1.5, 21)
    z = 0.05 + np.sin(np.pi * x) ** 2
    kinds = ("loss", "nll", "error") if task == "classification" else ("loss", "mse", "nll")
    fields = {f"{s}_{k}": z * (1 + i) for i, s in enumerate(("train", "test")) for k in kinds}
    if task == "classification":
        fields.update(train_error=10 * z, test_error=12 * z)
    return SimpleNamespace(
        x=x, metrics=list(fields), direction_scale=np.array([0.8]), meta={"bn": "origin"}, **fields
    )


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def rendered(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def contour_sets(fig) -> list[ContourSet]:
    return [c for ax in fig.axes for c in ax.collections if isinstance(c, ContourSet)]


def colorbar_axes(fig) -> list:
    stack, found = list(fig.axes), []
    while stack:
        ax = stack.pop()
        stack += ax.child_axes
        found += [ax] if ax.get_label() == "<colorbar>" else []
    return found


def test_line_puts_loss_left_and_accuracy_on_a_twin_right_axis():
    fig = plot_line(fake_line())
    ax = fig.axes[0]
    twins = [a for a in fig.axes if a is not ax and a.get_shared_x_axes().joined(a, ax)]
    assert ax.get_ylabel() == "loss"
    assert [t.get_ylabel() for t in twins] == ["accuracy (%)"]
    assert {ln.get_label() for ln in twins[0].get_lines()} == {"train accuracy", "test accuracy"}


def test_line_accuracy_is_100_minus_the_error():
    r = fake_line()
    fig = plot_line(r)
    twin = [a for a in fig.axes if a.get_ylabel() == "accuracy (%)"][0]
    train = [ln for ln in twin.get_lines() if ln.get_label() == "train accuracy"][0]
    np.testing.assert_allclose(train.get_ydata(), 100 - r.train_error)


def test_line_top_axis_is_in_units_of_the_origin_norm():
    fig = plot_line(fake_line())
    ax = fig.axes[0]
    (top,) = [c for c in ax.child_axes if c.get_xlabel()]
    assert "origin" in top.get_xlabel()
    rendered(fig)  # a secondary axis takes its limits from its parent when drawn
    np.testing.assert_allclose(top.get_xlim(), 0.8 * np.array(ax.get_xlim()))


def test_line_log_option_makes_the_loss_axis_logarithmic():
    assert plot_line(fake_line(), log=True).axes[0].get_yscale() == "log"
    assert plot_line(fake_line()).axes[0].get_yscale() == "linear"


def test_line_of_a_regression_result_puts_mse_on_the_right_axis():
    fig = plot_line(fake_line("regression"))
    assert [a.get_ylabel() for a in fig.axes if a.get_ylabel()] == ["loss", "MSE"]


def test_log_contour_levels_are_geometric_above_the_minimum():
    r = fake_surface()
    (cs,) = contour_sets(plot_contour(r, levels=8, log=True))
    gaps = cs.levels[1:] - cs.levels[0]
    assert cs.levels[0] == pytest.approx(r.train_loss.min())
    np.testing.assert_allclose(gaps[1:] / gaps[:-1], gaps[1] / gaps[0], rtol=1e-9)


def test_linear_contour_levels_are_evenly_spaced():
    (cs,) = contour_sets(plot_contour(fake_surface(), levels=8))
    np.testing.assert_allclose(np.diff(cs.levels), np.diff(cs.levels)[0], rtol=1e-9)


def test_filled_contour_fills_and_line_contour_labels_its_lines():
    filled = [c.filled for c in contour_sets(plot_contour(fake_surface(), filled=True))]
    lines = contour_sets(plot_contour(fake_surface(), filled=False))
    assert filled == [True, False]  # bands, then thin lines over them
    assert [c.filled for c in lines] == [False] and lines[0].labelTexts


def test_contour_has_one_colorbar_labelled_with_its_metric():
    bars = colorbar_axes(plot_contour(fake_surface(), "test_error", filled=True))
    assert [b.get_ylabel() for b in bars] == ["test error (%)"]


def test_heatmap_cell_i_j_is_at_x_i_y_j():
    r = fake_surface()
    r.train_loss = np.zeros_like(r.train_loss)
    r.train_loss[8, 1] = 1.0  # one hot cell at (x[8], y[1]) = (0.6, -0.4)
    fig = plot_heatmap(r)
    ax, mesh = fig.axes[0], fig.axes[0].collections[0]
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(7, 11), r.train_loss.T)
    img = rendered(fig)

    def pixel(i: int, j: int) -> np.ndarray:
        px, py = ax.transData.transform((r.x[i], r.y[j]))
        return img[img.shape[0] - int(round(py)), int(round(px))].astype(float)

    cmap = plt.get_cmap("viridis")
    np.testing.assert_allclose(pixel(8, 1), np.round(255 * np.array(cmap(1.0)[:3])), atol=2)
    np.testing.assert_allclose(pixel(2, 5), np.round(255 * np.array(cmap(0.0)[:3])), atol=2)


def test_heatmap_log_needs_positive_values():
    r = fake_surface("saddle", offset=-1.5)
    with pytest.raises(ValueError, match="log=False"):
        plot_heatmap(r, log=True)


def test_surface_3d_png_is_not_blank():
    fig = plot_surface_3d(fake_surface(gx=31, gy=25))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    img = plt.imread(io.BytesIO(buf.getvalue()))[..., :3]
    ax = [a for a in fig.axes if a.name == "3d"][0]
    box = ax.get_window_extent()
    h = img.shape[0]
    inside = img[int(h - box.y1) : int(h - box.y0), int(box.x0) : int(box.x1)]
    colours = np.unique(np.round(inside.reshape(-1, 3) * 255).astype(int), axis=0)
    assert len(colours) > 200  # a shaded surface; a blank panel has a handful (grey panes)


def test_surface_3d_axes_belong_to_the_figure():
    fig = plot_surface_3d(fake_surface())
    ax = [a for a in fig.axes if a.name == "3d"][0]
    assert len(ax.collections) == 1 and ax.figure is fig


def parse_vts(path):
    root = ET.parse(path).getroot()
    grid = root.find("StructuredGrid")
    points = root.find("StructuredGrid/Piece/Points/DataArray")
    arrays = {a.get("Name"): a for a in root.findall("StructuredGrid/Piece/PointData/DataArray")}
    values = {k: np.array(a.text.split(), dtype=float) for k, a in arrays.items()}
    return root, grid, np.array(points.text.split(), dtype=float).reshape(-1, 3), values


def test_vts_parses_with_one_point_per_grid_point_and_the_grid_extents(tmp_path):
    r = fake_surface(gx=11, gy=7)
    root, grid, points, _ = parse_vts(export_vts(r, tmp_path / "bowl.vts"))
    assert root.get("type") == "StructuredGrid"
    assert grid.get("WholeExtent") == "0 10 0 6 0 0"
    assert root.find("StructuredGrid/Piece").get("Extent") == "0 10 0 6 0 0"
    assert points.shape == (11 * 7, 3)


def test_vts_points_run_x_fastest_with_the_metric_as_height(tmp_path):
    r = fake_surface(gx=11, gy=7)
    _, _, points, _ = parse_vts(export_vts(r, tmp_path / "bowl.vts", z="test_loss"))
    k = 3 + 11 * 5  # VTK order: point (i, j) is i + Gx * j
    np.testing.assert_allclose(points[k], [r.x[3], r.y[5], r.test_loss[3, 5]])


def test_vts_holds_every_metric_and_a_finite_mask_as_point_data(tmp_path):
    r = fake_surface()
    r.train_loss[2, 3] = np.nan
    _, _, points, values = parse_vts(export_vts(r, tmp_path / "s"))
    assert list(values) == [*METRICS, "finite"]
    assert values["finite"].sum() == r.train_loss.size - 1
    assert np.all(np.isfinite(points)) and all(np.all(np.isfinite(v)) for v in values.values())
    np.testing.assert_allclose(values["test_error"], r.test_error.T.ravel())


def test_panels_share_one_norm_and_one_colorbar():
    rs = [fake_surface(k, offset=o) for o in (0.0, 0.5, 2.0) for k in ("bowl", "saddle") * 2]
    titles = [f"{n}, {d}" for n in ("none", "batch", "lrn") for d in ("rand", "QR", "ZCA", "PC")]
    fig = plot_panels(rs, titles=titles, nrows=3, ncols=4, log=True)
    filled = [c for c in contour_sets(fig) if c.filled]
    assert len(filled) == 12
    assert len({(c.norm.vmin, c.norm.vmax, c.norm.extend) for c in filled}) == 1
    assert len({id(c.norm) for c in filled}) == 1
    assert len(colorbar_axes(fig)) == 1


def test_panels_scale_spans_every_panel_and_clip_caps_it():
    rs = [fake_surface(offset=0.0), fake_surface(offset=3.0)]
    (cs, *_) = [c for c in contour_sets(plot_panels(rs, log=False)) if c.filled]
    top = rs[1].train_loss.max()  # the second panel's maximum, above the first panel's
    assert cs.levels[0] == pytest.approx(0.05) and cs.levels[-1] == pytest.approx(top)
    (cs, *_) = [c for c in contour_sets(plot_panels(rs, clip=2.0)) if c.filled]
    assert cs.levels[-1] == pytest.approx(2.0) and cs.norm.extend == "max"


def test_panels_reject_a_grid_too_small_for_the_results():
    with pytest.raises(ValueError, match="do not fit"):
        plot_panels([fake_surface()] * 5, nrows=2, ncols=2)


def test_surface_html_without_plotly_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ImportError) as err:
        surface_html(fake_surface(), "train_loss", tmp_path / "s.html")
    assert "pip install 'modeconn[plotly]'" in str(err.value)
    assert "\n" not in str(err.value)


def test_surface_html_writes_a_page_holding_the_surface(tmp_path):
    pytest.importorskip("plotly")
    path = surface_html(fake_surface(), "train_loss", tmp_path / "s.html", clip=3.0)
    text = path.read_text()
    assert '"type":"surface"' in text.replace(" ", "")


def test_an_unknown_metric_is_refused_with_the_metrics_present():
    with pytest.raises(ValueError, match="train_error"):
        plot_contour(fake_surface(), "test_mse")
