"""`modeconn align start=a.pt end=b.pt`: the aligned endpoint as a normal checkpoint, the two
lines and their REPAIRed midpoints, the report and the figure."""

import json

import pytest
import torch
from conftest import compose_app

from modeconn.align import inverse
from modeconn.apps import align, train
from modeconn.apps.common import run_app
from modeconn.io.checkpoints import load_endpoint

ARCH = ["model=mlp", "model.args.hidden=[32,32]", "dataset=digits"]
TINY = ["optim.epochs=2", "optim.batch_size=128", "progress=false"]


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("align")
    paths = [tmp / f"seed{s}.pt" for s in (1, 2)]
    for seed, path in zip((1, 2), paths, strict=True):
        train.run(compose_app("train", [*ARCH, *TINY, f"seed={seed}", f"checkpoint={path}"]))
    return tmp, paths


def app(tmp, paths, *extra):
    base = [f"start={paths[0]}", f"end={paths[1]}", f"out={tmp / 'out'}", "points=5"]
    return compose_app(
        "align", [*base, f"checkpoint={tmp / 'aligned.pt'}", "progress=false", *extra]
    )


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_align_app_writes_an_aligned_endpoint_that_computes_the_same_function(endpoints, method):
    tmp, paths = endpoints
    out = align.run(app(tmp, paths, f"method={method}", "overwrite=true"))
    aligned, ckpt = load_endpoint(out["checkpoint"])
    original, _ = load_endpoint(paths[1])
    x = torch.randn(16, 1, 8, 8)
    assert torch.allclose(aligned.eval()(x), original.eval()(x), atol=1e-5)
    assert ckpt.meta["aligned_to"] == str(paths[0]) and ckpt.meta["alignment"] == method
    report = json.loads((tmp / "out" / "align.json").read_text())
    assert set(report["lines"]) == {
        "start to end",
        "start to aligned end",
        "start to end, repair",
        "start to aligned end, repair",
    }
    assert (tmp / "out" / "path_aligned_repair.npz").exists()
    line = report["lines"]["start to aligned end"]
    assert line["length"] > 0 and line["min_test_error"] <= line["mean_test_error"]


def test_align_app_trains_a_curve_to_the_end_and_to_the_aligned_end(endpoints, tmp_path):
    tmp, paths = endpoints
    cfg = compose_app(
        "align",
        [f"start={paths[0]}", f"end={paths[1]}", f"out={tmp_path / 'o'}", "points=3"]
        + [f"checkpoint={tmp_path / 'al.pt'}", "progress=false", "repair=null", "curves=true"]
        + ["curve_optim.epochs=1", "curve_optim.batch_size=256"],
    )
    out = align.run(cfg)
    assert set(out["lines"]) == {
        "start to end",
        "start to aligned end",
        "start to end (curve)",
        "start to aligned end (curve)",
    }
    assert (tmp_path / "o" / "path_curve_aligned.npz").exists()
    assert (tmp_path / "o" / "path_curve.npz").exists()
    assert (tmp / "out" / "align.png").exists() and (tmp / "out" / "path_aligned.npz").exists()


def test_align_app_recovers_a_permuted_copy_of_start(endpoints, tmp_path):
    """end = start with its units shuffled: the aligned end is start, the line flat."""
    from modeconn.align import apply_permutation, permutation_spec
    from modeconn.io.checkpoints import save_checkpoint

    tmp, paths = endpoints
    a, ka = load_endpoint(paths[0])
    spec = permutation_spec(a, torch.randn(2, 1, 8, 8))
    p = spec.random_permutations(torch.Generator().manual_seed(5))
    shuffled = save_checkpoint(
        tmp_path / "shuffled.pt", "endpoint", apply_permutation(spec, a.state_dict(), p), ka.meta
    )
    cfg = compose_app(
        "align",
        [f"start={paths[0]}", f"end={shuffled}", f"out={tmp_path / 'o'}"]
        + [f"checkpoint={tmp_path / 'al.pt'}", "points=5", "progress=false"],
    )
    out = align.run(cfg)
    assert all(torch.equal(out["matching"].perms[g], inverse(p[g])) for g in p)
    assert out["lines"]["start to aligned end"].barrier("test_error") == 0


def test_align_app_refuses_an_unknown_method_in_one_line(endpoints):
    tmp, paths = endpoints
    with pytest.raises(SystemExit) as stop:
        run_app(align.run, app(tmp, paths, "method=magic"))
    message = str(stop.value.code)
    assert message.startswith("modeconn: error: method must be one of weight, activation")
    assert "\n" not in message
