import io
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from modeconn.plotting import (  # noqa: E402
    log_levels,
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


def main_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


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
    assert (len(main_axes(fig)), len(fig.axes)) == (3, 6)


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
    cbar_ax = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
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


def test_plot_fge_plots_against_number_of_snapshots():
    result = SimpleNamespace(
        snapshot_epochs=np.array([2, 4, 6]),
        member_error=np.array([5, 6, 5]),
        member_nll=np.ones(3),
        ensemble_error=np.array([5, 4, 3.5]),
        ensemble_nll=np.ones(3) * 0.8,
        start_error=5.5,
        start_nll=1.1,
    )
    fig = plot_fge(result)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[0].get_lines()[1].get_xdata(), [1, 2, 3])


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
