"""Apps run through Hydra's compose API on tiny settings, plus one real command line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_app

from modeconn.apps import connect, train
from modeconn.io.checkpoints import load_checkpoint, load_curve, load_endpoint, save_checkpoint

TINY = [
    "model.args.widths=[8,16,32]",
    "model.args.hidden=64",
    "optim.epochs=2",
    "optim.batch_size=128",
    "progress=false",
]


@pytest.fixture
def trained(tmp_path):
    paths = []
    for seed in (1, 2):
        p = tmp_path / f"ep{seed}.pt"
        train.run(compose_app("train", [*TINY, f"seed={seed}", f"checkpoint={p}"]))
        paths.append(p)
    return paths


def test_train_app_writes_a_finished_endpoint_checkpoint(trained):
    ckpt = load_checkpoint(trained[0], expect="endpoint")
    assert ckpt.finished and ckpt.meta["model"] == "convfc" and ckpt.meta["seed"] == 1
    assert ckpt.meta["dataset"] == "digits" and ckpt.meta["epoch"] == 2
    a, _ = load_endpoint(trained[0])
    b, _ = load_endpoint(trained[1])
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


@pytest.fixture
def curve_file(trained, tmp_path):
    out = tmp_path / "curve.pt"
    overrides = [f"start={trained[0]}", f"end={trained[1]}", "optim.epochs=1", "progress=false"]
    connect.run(compose_app("connect", [*overrides, f"checkpoint={out}"]))
    return out


def test_connect_app_trains_a_curve_that_reloads(trained, curve_file):
    curve, ckpt = load_curve(curve_file)
    assert ckpt.meta["curve"] == {"type": "bezier", "degree": 2}
    a, _ = load_endpoint(trained[0])
    assert all(torch.equal(curve.weights(0.0)[n], p) for n, p in a.named_parameters())


def test_connect_refuses_endpoints_of_different_architectures(trained, tmp_path):
    other = tmp_path / "wide.pt"
    train.run(compose_app("train", [*TINY, "model.args.hidden=32", f"checkpoint={other}"]))
    with pytest.raises(ValueError, match="model_args"):
        connect.run(
            compose_app(
                "connect",
                [
                    f"start={trained[0]}",
                    f"end={other}",
                    "progress=false",
                    f"checkpoint={tmp_path / 'c.pt'}",
                ],
            )
        )


def test_curve_checkpoint_passed_as_endpoint_is_refused(trained, curve_file, tmp_path):
    overrides = [f"start={curve_file}", f"end={trained[1]}", "progress=false"]
    with pytest.raises(ValueError, match="is a curve checkpoint, but an endpoint"):
        connect.run(compose_app("connect", [*overrides, f"checkpoint={tmp_path / 'c2.pt'}"]))


def test_unknown_model_name_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="convfc"):
        train.run(
            compose_app(
                "train",
                [*TINY, "model.name=resnet9000", "~model.args", f"checkpoint={tmp_path / 'x.pt'}"],
            )
        )


def test_unknown_dataset_name_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="digits"):
        train.run(
            compose_app(
                "train", [*TINY, "dataset.name=imagenet42", f"checkpoint={tmp_path / 'x.pt'}"]
            )
        )


def test_missing_data_root_says_where_the_files_must_be(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*download"):
        train.run(
            compose_app(
                "train",
                [
                    *TINY,
                    "dataset=cifar10",
                    f"dataset.root={tmp_path}",
                    f"checkpoint={tmp_path / 'x.pt'}",
                ],
            )
        )


def test_missing_checkpoint_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_endpoint(tmp_path / "nope.pt")


def test_corrupt_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def test_checkpoint_of_another_architecture_names_the_first_mismatched_tensor(trained, tmp_path):
    ckpt = load_checkpoint(trained[0])
    state = dict(ckpt.state)
    name = next(k for k in state if k.endswith("weight"))
    state[name] = torch.zeros(3, 3)
    forged = tmp_path / "forged.pt"
    save_checkpoint(forged, "endpoint", state, ckpt.meta)
    with pytest.raises(ValueError, match=f"'{name}' has shape \\(3, 3\\)"):
        load_endpoint(forged)


def test_unfinished_endpoint_cannot_be_connected(tmp_path):
    p = tmp_path / "partial.pt"
    train.run(compose_app("train", [*TINY, f"checkpoint={p}"]))
    ckpt = load_checkpoint(p)
    save_checkpoint(p, "endpoint", ckpt.state, {**ckpt.meta, "finished": False, "epoch": 1})
    with pytest.raises(ValueError, match="unfinished training run \\(epoch 1 of 2\\)"):
        load_endpoint(p)


def test_command_line_multirun_over_seeds(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "modeconn.apps.train",
        "-m",
        "seed=1,2",
        *TINY,
        "checkpoint=ckpt/seed${seed}.pt",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for seed in (1, 2):
        assert load_checkpoint(tmp_path / "ckpt" / f"seed{seed}.pt").meta["seed"] == seed


def test_command_line_error_is_one_message_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "modeconn.apps.connect", "start=missing.pt", "end=missing.pt"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "modeconn: error: checkpoint 'missing.pt' does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_config_key_is_refused_by_name():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="foo"):
        compose_app("train", ["foo=1"])


def test_unknown_config_group_choice_lists_the_options():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="convfc"):
        compose_app("train", ["model=resnet9000"])


@pytest.fixture
def mlp_curve(tmp_path):
    """A curve between two MLPs on moons, one epoch each: the quickest curve checkpoint."""
    small = ["dataset=moons", "model=mlp", "model.args.hidden=[8]", "optim.epochs=1"]
    ends = [tmp_path / "mlp1.pt", tmp_path / "mlp2.pt"]
    for seed in (1, 2):
        where = f"checkpoint={ends[seed - 1]}"
        train.run(compose_app("train", [*small, "progress=false", f"seed={seed}", where]))
    curve = tmp_path / "mlp-curve.pt"
    ends_args = [f"start={ends[0]}", f"end={ends[1]}", "optim.epochs=1", "progress=false"]
    connect.run(compose_app("connect", [*ends_args, f"checkpoint={curve}"]))
    return curve


@pytest.mark.parametrize("count", [-5, 0])
def test_bn_samples_below_one_is_refused(count, mlp_curve, tmp_path):
    from modeconn.apps import evaluate

    overrides = [f"curve_ckpt={mlp_curve}", "points=3", f"out={tmp_path}", "progress=false"]
    with pytest.raises(ValueError, match=f"bn_samples must be an int >= 1 .*, got {count}$"):
        evaluate.run(compose_app("evaluate", [*overrides, f"engine.bn_samples={count}"]))


def test_added_unknown_option_is_one_line_under_python_m(tmp_path):
    """Hydra's struct error advises `+point=3`, which it then accepts; the app refuses it."""
    cmd = [sys.executable, "-m", "modeconn.apps.evaluate", "curve_ckpt=c.pt", "+point=3"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == "modeconn: error: unknown option 'point' (did you mean 'points'?)\n"
