"""Results written before the package was restructured (tests/data/results_0.1: a path, a
plane, a surface, a line and the demo's ensembles, saved by the flat-layout code) still load
into today's classes, unchanged, and save again to the same arrays."""

from pathlib import Path

import numpy as np
import pytest

import modeconn as mc

DATA = Path(__file__).parent / "data" / "results_0.1"
KINDS = {
    "path": mc.PathResult,
    "plane": mc.PlaneResult,
    "surface": mc.SurfaceResult,
    "line": mc.LineResult,
    "ensembles": mc.EnsembleResult,
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_result_saved_before_the_restructure_loads_with_its_arrays(name):
    result = KINDS[name].load(DATA / name)
    with np.load(DATA / f"{name}.npz") as stored:
        arrays = result._arrays()
        assert sorted(arrays) == sorted(stored.files)
        for key in stored.files:
            floats = stored[key].dtype.kind == "f"
            assert np.array_equal(arrays[key], stored[key], equal_nan=floats), key


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_result_saved_before_saves_again_to_an_equal_result(name, tmp_path):
    result = KINDS[name].load(DATA / name)
    result.save(tmp_path / name)
    assert KINDS[name].load(tmp_path / name) == result


def test_grid_results_keep_their_axes_and_metric_shapes():
    plane = mc.PlaneResult.load(DATA / "plane")
    assert plane.grid_shape == (len(plane.x), len(plane.y)) == plane.train_loss.shape
    assert plane.anchor_names == ["start", "end", "bend"]
    path = mc.PathResult.load(DATA / "path")
    assert path.arc_length.shape == (len(path.ts) - 1,)
    surface = mc.SurfaceResult.load(DATA / "surface")
    assert surface.direction_scale.shape == (2,) and -1 <= surface.cosine <= 1
