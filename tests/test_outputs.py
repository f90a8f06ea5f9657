"""Two configurations never share a file silently: names carry arguments, finished results
of another job are not replaced without overwrite=true."""

import pytest
from conftest import compose_app
from test_interrupt import write_curve_checkpoint

from modeconn.apps import plane
from modeconn.apps.connect import curve_path
from modeconn.apps.outputs import args_tag
from modeconn.apps.train import endpoint_path


def _plane(tmp_path, *extra):
    overrides = [
        f"curve_ckpt={tmp_path / 'curve.pt'}",
        f"out={tmp_path / 'out'}",
        "progress=false",
        "engine.bn_samples=50",
        "curve_points=5",
        *extra,
    ]
    return plane.run(compose_app("plane", overrides))


def test_a_plane_of_another_grid_does_not_replace_a_finished_one(tmp_path):
    write_curve_checkpoint(tmp_path / "curve.pt")
    first = _plane(tmp_path, "grid=4")
    with pytest.raises(ValueError, match=r"another configuration \(differing: grid\).*overwrite"):
        _plane(tmp_path, "grid=3")
    from modeconn.plane import PlaneResult

    assert PlaneResult.load(tmp_path / "out" / "plane") == first  # still the 4x4 result


def test_overwrite_true_replaces_a_finished_result_and_the_same_job_reruns(tmp_path):
    write_curve_checkpoint(tmp_path / "curve.pt")
    _plane(tmp_path, "grid=3")
    again = _plane(tmp_path, "grid=3")  # the same job: recomputed and replaced, no refusal
    assert again.train_loss.shape == (3, 3)
    assert _plane(tmp_path, "grid=2", "overwrite=true").train_loss.shape == (2, 2)


def test_endpoint_names_carry_model_arguments_other_than_the_defaults():
    default = endpoint_path(compose_app("train", ["model=convfc"]))
    wider = endpoint_path(compose_app("train", ["model=convfc", "model.args.hidden=500"]))
    assert default.name == "digits-convfc-seed1.pt"
    assert wider.name == "digits-convfc-hidden500-seed1.pt"


def test_curve_names_carry_the_degree_so_degree_3_after_degree_2_is_a_new_file():
    names = [
        curve_path(compose_app("connect", ["start=a.pt", "end=b.pt", f"curve.args.degree={d}"]))
        for d in (2, 3)
    ]
    assert names[0].name == "curve-bezier-degree2-a-b.pt" and names[0] != names[1]


def test_long_argument_lists_become_a_digest():
    args = {"widths": list(range(30))}
    assert args_tag(args).startswith("args") and len(args_tag(args)) == 12
    assert args_tag(args) != args_tag({"widths": list(range(31))})
