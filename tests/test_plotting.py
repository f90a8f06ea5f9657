import io
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from modeconn.plotting import (  # noqa: E402
    figure_title,
    log_levels,
    metric_label,
    off_plane_note,
    plot_ensembles,
    plot_fge,
    plot_path,
    plot_plane,
    save_figure,
    shared_scale,
)

ANCHORS = np.array([[0.0, 0.0], [1.0, 0.0], [0.4, 0.8]])
NAMES = ["start", "end", "bend 1"]


def fake_plane(offset: float = 0.0, gx: int = 9, gy: int = 7) -> SimpleNamespace:
    x, y = np.linspace(-0.3, 1.3, gx), np.linspace(-0.3, 1.1, gy)
    xx, yy = np.meshgrid(x, y, indexing="ij")  # [i, j] at (x[i], y[j])
    bowl = (xx - 0.5) ** 2 + (yy - 0.4) ** 2 + offset
    t = np.linspace(0, 1, 11)
    curve_xy = np.stack([t, 1.6 * t * (1 - t)], axis=1)  # a Bezier-like arc through the bend
    fields = {
        f"{s}_{k}": bowl * (1 + i) for i, s in enumerate(("train", "test")) for k in ("loss", "nll")
    }
    fields.update(train_error=100 * bowl / bowl.max(), test_error=100 * bowl / bowl.max() + 2)
    return SimpleNamespace(
        x=x,
        y=y,
        anchors=ANCHORS.copy(),
        anchor_names=list(NAMES),
        curve_xy=curve_xy,
        curve_distance=np.zeros(len(t)),
        meta={},
        **fields,
    )


def fake_path(bump: float) -> SimpleNamespace:
    ts = np.linspace(0, 1, 13)
    shape = 0.05 + bump * np.sin(np.pi * ts)
    return SimpleNamespace(
        ts=ts,
        train_loss=shape,
        train_nll=shape,
        train_error=10 * shape,
        test_loss=shape,
        test_nll=shape,
        test_error=10 * shape + 1,
        arc_length=np.full(12, 0.1),
        meta={},
    )


def fake_ensembles() -> SimpleNamespace:
    ts = np.linspace(0, 1, 9)
    bump = np.sin(np.pi * ts)
    fields = dict(
        member_error=5 + bump,
        member_nll=0.2 + 0.1 * bump,
        ensemble_error=5 - bump,
        ensemble_nll=0.2 - 0.05 * bump,
        disagreement=10 * bump,
        kl=0.3 * bump,
    )
    fields.update({f"line_{k}": v * 3 for k, v in fields.items()})
    return SimpleNamespace(
        ts=ts, start_error=5.0, start_nll=0.2, reference_error=4.0, reference_nll=0.15, **fields
    )


def fake_fge() -> SimpleNamespace:
    return SimpleNamespace(
        snapshot_epochs=np.array([2, 4, 6]),
        member_error=np.array([5, 6, 5]),
        member_nll=np.ones(3),
        ensemble_error=np.array([5, 4, 3.5]),
        ensemble_nll=np.ones(3) * 0.8,
        start_error=5.5,
        start_nll=1.1,
        meta={"dataset": "digits"},
    )


def main_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def colorbars(ax) -> list:
    return [child for child in ax.child_axes if child.get_label() == "<colorbar>"]


def drawn(fig: Figure):
    """The figure drawn by Agg (layout and aspect applied) and its renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def visible_texts(fig: Figure) -> list:
    """Every piece of text a reader sees: tick labels in view, axis labels, titles, anchor
    names, legends and the suptitle, over panels, colour bars and insets."""
    texts = [fig._suptitle, fig._supxlabel]
    for legend in fig.legends:
        texts += [legend.get_title(), *legend.get_texts()]
    stack = list(fig.axes)
    while stack:
        ax = stack.pop()
        stack += ax.child_axes
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.get_legend():
            texts += [ax.get_legend().get_title(), *ax.get_legend().get_texts()]
        for axis in (ax.xaxis, ax.yaxis):
            texts.append(axis.label)
            lo, hi = sorted(axis.get_view_interval())
            for minor in (False, True):
                locs, labels = axis.get_ticklocs(minor=minor), axis.get_ticklabels(minor=minor)
                texts += [t for loc, t in zip(locs, labels, strict=False) if lo <= loc <= hi]
    return [t for t in texts if t is not None and t.get_visible() and t.get_text().strip()]


def overlapping_texts(fig: Figure) -> list[tuple[str, str]]:
    renderer = drawn(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer).padded(-1)) for t in visible_texts(fig)]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def marker_points(ax) -> set[tuple[float, float]]:
    return {
        (float(ln.get_xdata()[0]), float(ln.get_ydata()[0]))
        for ln in ax.get_lines()
        if ln.get_marker() not in ("None", "", None) and len(ln.get_xdata()) == 1
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_plane_has_one_panel_and_one_colorbar_per_metric():
    fig = plot_plane(fake_plane(), metrics=("train_loss", "test_error", "test_nll"))
    assert isinstance(fig, Figure)
    assert [len(colorbars(ax)) for ax in main_axes(fig)] == [1, 1, 1]


@pytest.mark.parametrize("grid", [(9, 7), (21, 5), (5, 21)])
def test_plot_plane_colorbars_are_exactly_as_tall_as_their_panels(grid):
    plane = fake_plane(gx=grid[0], gy=grid[1])
    plane.y = plane.y * grid[1] / grid[0]  # wide and tall planes: the equal aspect shrinks a side
    fig = plot_plane(plane, metrics=("train_loss", "test_error", "test_nll"))
    drawn(fig)
    for ax in main_axes(fig):
        panel, bar = ax.get_position(), colorbars(ax)[0].get_position()
        np.testing.assert_allclose([bar.y0, bar.height], [panel.y0, panel.height], atol=1e-9)
        assert panel.x1 < bar.x0


def test_plot_plane_labels_each_colorbar_with_its_own_metric():
    metrics = ("train_loss", "test_error", "test_nll")
    fig = plot_plane(fake_plane(), metrics=metrics)
    labels = [colorbars(ax)[0].get_ylabel() for ax in main_axes(fig)]
    assert labels == [metric_label(m) for m in metrics]


def test_plot_plane_colorbar_labels_stay_between_their_bar_and_the_next_panel():
    fig = plot_plane(fake_plane(), metrics=("train_loss", "test_error", "test_nll"))
    renderer = drawn(fig)
    panels = main_axes(fig)
    for ax, right in zip(panels, [*panels[1:], None], strict=True):
        bar = colorbars(ax)[0]
        label = bar.yaxis.label.get_window_extent(renderer)
        assert label.x0 > bar.get_window_extent(renderer).x1
        if right is not None:
            assert label.x1 < right.get_tightbbox(renderer).x0


@pytest.mark.parametrize("orientation", ["paper", "bend on x"])
def test_plot_plane_has_no_overlapping_text(orientation):
    plane = fake_plane()
    if orientation == "bend on x":  # the old convention: start, bend on the x-axis, end above
        plane.anchors = np.array([[0.0, 0.0], [0.4, 0.8], [1.0, 0.0]])
    plane.curve_distance = np.full(11, 0.3)  # the note under the legend must not collide either
    plane.meta = {"dataset": "digits"}
    fig = plot_plane(plane, metrics=("train_loss", "test_error", "test_nll"), model="convfc")
    assert overlapping_texts(fig) == []


def test_plot_plane_legend_names_the_solid_curve_and_the_dashed_line():
    (legend,) = plot_plane(fake_plane()).legends
    styles = {
        t.get_text(): h.get_linestyle()
        for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    assert styles == {"curve": "-", "line": "--"}


def test_plot_plane_legend_has_no_line_entry_without_the_line():
    (legend,) = plot_plane(fake_plane(), line=False).legends
    assert [t.get_text() for t in legend.get_texts()] == ["curve"]


def test_plot_plane_labels_x_along_the_anchor_on_the_x_axis():
    paper = main_axes(plot_plane(fake_plane()))[0]
    plane = fake_plane()
    plane.anchors = np.array([[0.0, 0.0], [0.4, 0.8], [1.0, 0.0]])  # the bend on the x-axis
    rotated = main_axes(plot_plane(plane))[0]
    assert [paper.get_xlabel(), rotated.get_xlabel()] == [
        "x: along end − start",
        "x: along bend 1 − start",
    ]


def test_plot_plane_labels_y_with_the_side_of_the_third_anchor():
    ax = main_axes(plot_plane(fake_plane()))[0]
    assert ax.get_ylabel() == "y: ⊥ x, bend 1 at y > 0"


def test_plot_plane_puts_anchor_names_away_from_each_other():
    fig = plot_plane(fake_plane())
    renderer = drawn(fig)
    names = [t for t in main_axes(fig)[0].texts if t.get_text() in NAMES]
    boxes = [t.get_window_extent(renderer) for t in names]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def legend_title(fig: Figure) -> str:
    return fig.legends[0].get_title().get_text() if fig.legends else ""


def test_plot_plane_notes_a_curve_off_the_plane_with_its_distance():
    plane = fake_plane()
    plane.curve_distance = 0.32 * np.sin(np.linspace(0, np.pi, 11))  # |end - start| = 1
    note = legend_title(plot_plane(plane))
    assert "leaves the plane by up to 0.32 (32 % of |end − start|)" in note


def test_plot_plane_has_no_note_for_a_curve_in_the_plane():
    plane = fake_plane()
    plane.curve_distance = np.full(11, 1e-7)  # rounding of a float32 projection
    assert legend_title(plot_plane(plane)) == ""


def test_off_plane_note_counts_control_points_off_the_plane():
    plane = fake_plane()  # the curve's sampled points in the plane, a second bend 0.5 off it
    plane.anchor_distance = np.array([0.0, 0.0, 0.0, 0.5])
    assert "up to 0.5 (50 %" in off_plane_note(plane)


def test_off_plane_note_is_relative_to_the_distance_between_the_endpoints():
    plane = fake_plane()
    plane.anchors = plane.anchors * 1000.0
    plane.curve_distance = np.full(11, 0.5)  # 0.05 % of |end - start| = 1000: in the plane
    assert off_plane_note(plane) is None


def test_plot_plane_marks_every_anchor_in_every_panel():
    fig = plot_plane(fake_plane())
    expected = {tuple(map(float, a)) for a in ANCHORS}
    assert all(marker_points(ax) == expected for ax in main_axes(fig))


def test_plot_plane_draws_curve_and_dashed_line_between_endpoints():
    ax = main_axes(plot_plane(fake_plane()))[0]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1
    np.testing.assert_allclose(dashed[0].get_xydata(), ANCHORS[:2])
    assert any(len(ln.get_xdata()) == 11 for ln in ax.get_lines())


def test_plot_plane_without_line_draws_no_dashed_segment():
    ax = main_axes(plot_plane(fake_plane(), line=False))[0]
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]


def test_plot_plane_survives_nan_and_inf():
    plane = fake_plane()
    plane.train_loss[0, :] = np.nan
    plane.train_loss[3, 2] = np.inf
    plane.test_error[:] = np.nan  # a panel with nothing to contour
    fig = plot_plane(plane)
    fig.savefig(io.BytesIO(), format="png")  # render: masked cells must not break Agg
    assert len(main_axes(fig)) == 2


def test_plot_plane_handles_zero_and_negative_minimum():
    plane = fake_plane(offset=-0.2)
    fig = plot_plane(plane)
    fig.savefig(io.BytesIO(), format="png")  # render: masked cells must not break Agg
    assert len(main_axes(fig)) == 2


def test_plot_plane_rejects_transposed_values():
    plane = fake_plane()
    plane.train_loss = plane.train_loss.T
    with pytest.raises(ValueError, match="len\\(x\\), len\\(y\\)"):
        plot_plane(plane)


def test_plot_plane_uses_the_given_scale_for_colour_levels():
    fig = plot_plane(fake_plane(), scale={"train_loss": (0.0, 10.0)}, levels=5)
    cbar_ax = colorbars(main_axes(fig)[0])[0]
    np.testing.assert_allclose(cbar_ax._colorbar.mappable.levels, log_levels(0.0, 10.0, 5))


def test_log_levels_start_a_tenth_of_the_minimum_above_it_and_span_range():
    np.testing.assert_allclose(log_levels(2.0, 202.0, n=4), [2.0, 2.2, 4.0, 22.0, 202.0])


def test_log_levels_resolve_the_valley_whatever_the_maximum():
    assert log_levels(0.05, 3000.0, n=8)[2] < 0.1  # two bands below twice the minimum


def test_log_levels_handle_a_zero_minimum():
    lv = log_levels(0.0, 90.0, n=3)
    np.testing.assert_allclose(lv, [0.0, 0.09, 2.846, 90.0], rtol=1e-3)


def test_shared_scale_gives_min_and_max_over_all_results():
    a, b = fake_plane(offset=0.0), fake_plane(offset=3.0)
    a.train_loss[0, 0] = np.nan
    scale = shared_scale(a, b, metrics=("train_loss",))
    lo = np.nanmin(a.train_loss)
    assert scale == {"train_loss": (pytest.approx(lo), pytest.approx(b.train_loss.max()))}


def test_shared_scale_clip_caps_the_maximum():
    scale = shared_scale(fake_plane(), metrics=("train_loss",), clip={"train_loss": 0.1})
    assert scale["train_loss"][1] == 0.1


def barrier_path(top: float) -> SimpleNamespace:
    """A path whose test error rises from 3 % to `top` % in the middle."""
    ts = np.linspace(0, 1, 21)
    bump = np.sin(np.pi * ts)
    error = 3 + (top - 3) * bump + 0.1 * np.cos(5 * ts)
    return SimpleNamespace(
        ts=ts,
        train_loss=0.1 + bump,
        test_error=error,
        meta={"dataset": "digits"},
    )


def test_plot_path_zooms_on_a_curve_near_3_percent_when_the_line_reaches_90():
    ax = main_axes(plot_path(barrier_path(3.6), barrier_path(90.0)))[1]
    (inset,) = ax.child_axes
    lo, hi = inset.get_ylim()
    curve = barrier_path(3.6).test_error
    assert lo <= curve.min() and curve.max() <= hi and hi - lo < 2 * np.ptp(curve)


def test_plot_path_zooms_when_line_and_curve_are_sampled_at_different_t():
    line = barrier_path(90.0)
    line.ts, line.test_error, line.train_loss = (
        line.ts[::4],
        line.test_error[::4],
        line.train_loss[::4],
    )
    ax = main_axes(plot_path(barrier_path(3.6), line))[1]
    assert len(ax.child_axes) == 1


def test_plot_path_draws_no_inset_when_the_curve_fills_its_panel():
    ax = main_axes(plot_path(barrier_path(20.0), barrier_path(90.0)))[1]
    assert ax.child_axes == []


def test_plot_path_inset_avoids_the_data_and_other_text():
    fig = plot_path(barrier_path(3.6), barrier_path(90.0), model="convfc")
    (inset,) = main_axes(fig)[1].child_axes
    box = inset.get_position()
    renderer = drawn(fig)
    x0, y0, x1, y1 = (
        main_axes(fig)[1].transAxes.inverted().transform(inset.get_tightbbox(renderer)).ravel()
    )
    ts = np.linspace(0, 1, 21)
    lo, hi = main_axes(fig)[1].get_ylim()
    for series in (barrier_path(3.6), barrier_path(90.0)):
        py = (series.test_error - lo) / (hi - lo)
        assert not np.any((ts > x0) & (ts < x1) & (py > y0) & (py < y1)), box
    assert overlapping_texts(fig) == []


def test_plot_path_has_one_panel_per_metric_with_log_loss_axis():
    fig = plot_path(fake_path(1.0), fake_path(0.1))
    axes = main_axes(fig)
    assert [ax.get_yscale() for ax in axes] == ["log", "linear"]


def test_plot_path_draws_curve_and_line():
    ax = main_axes(plot_path(fake_path(1.0), fake_path(0.1)))[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["curve", "line"]


def test_plot_ensembles_has_error_and_diversity_panels():
    fig = plot_ensembles(fake_ensembles())
    assert len(fig.axes) == 3  # error, disagreement, KL on a twin axis


def test_plot_ensembles_draws_reference_levels():
    ax = plot_ensembles(fake_ensembles()).axes[0]
    levels = {ln.get_label(): ln.get_ydata()[0] for ln in ax.get_lines()}
    assert (levels["w1 alone"], levels["ensemble {w1, w2}"]) == (5.0, 4.0)


def test_plot_ensembles_uses_log_error_axis_when_line_points_are_near_chance():
    result = fake_ensembles()
    result.line_member_error = np.full_like(result.ts, 90.0)
    assert plot_ensembles(result).axes[0].get_yscale() == "log"


def test_plot_ensembles_keeps_linear_error_axis_for_a_narrow_range():
    assert plot_ensembles(fake_ensembles()).axes[0].get_yscale() == "linear"


def test_plot_ensembles_rejects_unknown_error_scale():
    with pytest.raises(ValueError, match="error_scale"):
        plot_ensembles(fake_ensembles(), error_scale="symlog")


def test_plot_ensembles_without_line_results_draws_curve_only():
    result = fake_ensembles()
    for name in [k for k in vars(result) if k.startswith("line_")]:
        setattr(result, name, None)
    labels = [ln.get_label() for ln in plot_ensembles(result).axes[0].get_lines()]
    assert not [label for label in labels if "line" in label]


def test_plot_fge_plots_against_snapshot_index():
    fig = plot_fge(fake_fge())
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[0].get_lines()[1].get_xdata(), [1, 2, 3])


def test_plot_fge_x_label_is_true_for_the_snapshot_and_the_ensemble():
    ax = plot_fge(fake_fge()).axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()[:2]]
    # x = k is the k-th snapshot for one series and the ensemble size for the other: the axis
    # names k, the legend says what each series does with it (no "number of snapshots")
    assert (ax.get_xlabel(), labels) == (
        "snapshot k",
        ["snapshot k alone", "ensemble of snapshots 1..k"],
    )


def test_plot_fge_top_axis_gives_the_epoch_of_each_snapshot():
    (top,) = plot_fge(fake_fge()).axes[0].child_axes
    assert [t.get_text() for t in top.get_xticklabels()] == ["2", "4", "6"]


def test_plot_fge_has_no_overlapping_text():
    assert overlapping_texts(plot_fge(fake_fge(), model="convfc")) == []


def fake_meta(result, dataset="digits"):
    result.meta = {"dataset": dataset}
    return result


@pytest.mark.parametrize(
    "make",
    [
        lambda: plot_plane(fake_meta(fake_plane()), model="convfc"),
        lambda: plot_path(fake_meta(fake_path(1.0)), fake_path(0.1), model="convfc"),
        lambda: plot_ensembles(fake_meta(fake_ensembles()), model="convfc"),
        lambda: plot_fge(fake_meta(fake_fge()), model="convfc"),
    ],
    ids=["plane", "path", "ensembles", "fge"],
)
def test_every_figure_is_titled_with_model_and_data_set(make):
    assert make()._suptitle.get_text() == "convfc on digits"


def test_figure_title_falls_back_to_the_data_set_alone():
    assert figure_title(fake_meta(fake_path(1.0), "cifar10")) == "cifar10"


def test_figure_title_prefixes_a_caption_that_lacks_the_data_set():
    result = fake_meta(fake_path(1.0))
    assert figure_title(result, "curve vs line", "vgg16") == "vgg16 on digits: curve vs line"


def test_figure_title_keeps_a_caption_that_names_the_data_set():
    caption = "ConvFC on digits: plane through w1, w2 and the bend"
    assert figure_title(fake_meta(fake_plane()), caption) == caption


def test_save_figure_without_suffix_writes_png_and_pdf(tmp_path):
    written = save_figure(plot_path(fake_path(1.0)), tmp_path / "sub" / "path")
    assert sorted(p.suffix for p in written) == [".pdf", ".png"]
    assert all(p.stat().st_size > 0 for p in written)


def test_save_figure_with_suffix_writes_that_format_only(tmp_path):
    written = save_figure(plot_plane(fake_plane()), tmp_path / "plane.png")
    assert written == [tmp_path / "plane.png"] and not (tmp_path / "plane.pdf").exists()
    assert written[0].read_bytes().startswith(b"\x89PNG")


def test_save_figure_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="png"):
        save_figure(plot_path(fake_path(1.0)), tmp_path / "fig.jpg")


def _flat_plane() -> SimpleNamespace:
    """The demo's shape: w2 29 units from w1, the bend only 6 above the line."""
    plane = fake_plane()
    plane.x, plane.y = plane.x * 29, plane.y * 7.5
    plane.anchors = ANCHORS * np.array([29.0, 7.5])
    plane.curve_xy = plane.curve_xy * np.array([29.0, 7.5])
    return plane


def test_a_long_flat_plane_is_drawn_stretched_and_says_so():
    fig = plot_plane(_flat_plane())
    ax = fig.axes[0]
    fig.canvas.draw()
    box = ax.get_position()
    height_over_width = box.height * fig.get_figheight() / (box.width * fig.get_figwidth())
    assert height_over_width == pytest.approx(0.4, rel=0.05)  # not the 1:1 strip of 0.26
    assert "taller" in ax.get_ylabel()
    assert "taller" not in plot_plane(fake_plane()).axes[0].get_ylabel()  # to scale


def test_anchor_names_stay_inside_their_panel_clear_of_the_title():
    fig = plot_plane(_flat_plane())
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes[:2]:
        frame = ax.get_window_extent(renderer)
        for text in ax.texts:
            b = text.get_window_extent(renderer)
            assert frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
