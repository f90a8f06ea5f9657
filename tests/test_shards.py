"""A plane split into shards (separate jobs, or torchrun ranks) equals one process's plane."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_app

from modeconn.apps import connect, plane, train

TINY = [
    "model.args.widths=[4,8,8]",
    "model.args.hidden=16",
    "model.args.pool_padding=1",  # 8x8 digits
    "optim.epochs=1",
    "optim.batch_size=256",
    "progress=false",
]


@pytest.fixture(scope="module")
def curve_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    for seed in (1, 2):
        train.run(
            compose_app("train", [*TINY, f"seed={seed}", f"checkpoint={tmp / f'e{seed}.pt'}"])
        )
    out = tmp / "curve.pt"
    connect.run(
        compose_app(
            "connect",
            [
                f"start={tmp / 'e1.pt'}",
                f"end={tmp / 'e2.pt'}",
                "optim.epochs=1",
                "progress=false",
                f"checkpoint={out}",
            ],
        )
    )
    return out


def _run(cmd: list[str], cwd: Path) -> None:
    """Run a command line in a subprocess (one thread per process) and require success."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _torchrun(port: str, app: str) -> list[str]:
    """The command line that starts `app` on 2 local ranks under torchrun."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        port,
        "-m",
        f"modeconn.apps.{app}",
    ]


def _plane(curve_file, out, *extra):
    return plane.run(
        compose_app(
            "plane",
            [
                f"curve_ckpt={curve_file}",
                "grid=[4,3]",
                "save_every_s=0",
                "progress=false",
                f"out={out}",
                *extra,
            ],
        )
    )


@pytest.fixture(scope="module")
def single(curve_file, tmp_path_factory):
    return _plane(curve_file, tmp_path_factory.mktemp("single"))


def test_separate_shard_jobs_merge_to_the_single_process_plane(curve_file, single, tmp_path):
    for k in range(3):
        assert _plane(curve_file, tmp_path, f"shard={k}", "num_shards=3") is None
    merged = _plane(curve_file, tmp_path, "merge=true", "num_shards=3")
    assert np.allclose(merged.train_loss, single.train_loss, rtol=1e-6)
    assert np.array_equal(merged.test_error, single.test_error)
    assert not list(tmp_path.glob("plane-shard*"))  # shard files removed after the merge


def test_plane_app_in_bfloat16_is_close_to_full_precision(curve_file, single, tmp_path):
    low = _plane(curve_file, tmp_path, "engine.autocast=bf16")
    assert low.meta["engine"]["autocast"] == "bfloat16"
    assert np.allclose(low.train_loss, single.train_loss, rtol=5e-2)


def test_merge_refuses_when_a_shard_is_missing(curve_file, tmp_path):
    _plane(curve_file, tmp_path, "shard=0", "num_shards=2")
    with pytest.raises(FileNotFoundError, match="plane-shard1of2"):
        _plane(curve_file, tmp_path, "merge=true", "num_shards=2")


def test_merge_refuses_shards_of_different_configurations(curve_file, tmp_path):
    _plane(curve_file, tmp_path, "shard=0", "num_shards=2")
    other = tmp_path / "other"
    _plane(curve_file, other, "shard=1", "num_shards=2", "margin=0.5")
    shutil.copy(other / "plane-shard1of2.npz", tmp_path)
    shutil.copy(other / "plane-shard1of2.json", tmp_path)
    with pytest.raises(ValueError, match="different jobs; differing keys: x, y"):
        _plane(curve_file, tmp_path, "merge=true", "num_shards=2")


def test_merge_with_another_grid_than_the_shards_names_the_grid(curve_file, tmp_path):
    for k in (0, 1):
        _plane(curve_file, tmp_path, f"shard={k}", "num_shards=2")
    with pytest.raises(ValueError, match=r"another job \(grid: shards \[4, 3\], now \[5, 5\]\)"):
        _plane(curve_file, tmp_path, "merge=true", "num_shards=2", "grid=5")


def test_two_gloo_ranks_under_torchrun_equal_one_process(curve_file, single, tmp_path):
    cmd = [
        *_torchrun("29517", "plane"),
        f"curve_ckpt={curve_file}",
        "grid=[4,3]",
        "save_every_s=0",
        "progress=false",
        f"out={tmp_path}",
    ]
    _run(cmd, tmp_path)
    from modeconn.plane import PlaneResult

    merged = PlaneResult.load(tmp_path / "plane")
    assert np.allclose(merged.train_loss, single.train_loss, rtol=1e-6)
    assert np.array_equal(merged.test_error, single.test_error)


@pytest.mark.parametrize(
    "app,kind,batch,port",
    [
        ("train", "endpoint", 100, "29518"),  # 1437 samples: a last batch of 37 splits 19 / 18
        ("connect", "curve", 100, "29519"),
        ("connect", "curve", 1436, "29520"),  # a last batch of 1 sample for 2 ranks
    ],
)
def test_two_gloo_ranks_train_like_one_process(app, kind, batch, port, curve_file, tmp_path):
    """Ranks split every batch and share t; the weights equal a one-process run's."""
    import torch

    from modeconn.io.checkpoints import load_checkpoint

    if app == "train":
        args = [
            "model=mlp",
            "model.args.hidden=[32]",
            "optim.epochs=2",
            f"optim.batch_size={batch}",
            "progress=false",
        ]
    else:  # connect the ConvFC endpoints of the fixture (no BatchNorm, no dropout)
        ckpts = curve_file.parent
        args = [
            f"start={ckpts / 'e1.pt'}",
            f"end={ckpts / 'e2.pt'}",
            "optim.epochs=2",
            f"optim.batch_size={batch}",
            "progress=false",
        ]
    for name, launcher in (
        ("one", [sys.executable, "-m", f"modeconn.apps.{app}"]),
        ("two", _torchrun(port, app)),
    ):
        _run([*launcher, *args, f"checkpoint={tmp_path / name}.pt"], tmp_path)
    one = load_checkpoint(tmp_path / "one.pt", expect=kind)
    two = load_checkpoint(tmp_path / "two.pt", expect=kind)
    assert two.finished and one.state.keys() == two.state.keys()
    for key, value in one.state.items():
        assert torch.allclose(value, two.state[key], rtol=1e-4, atol=1e-6), key


def test_hydra_submitit_launcher_runs_the_shards_as_separate_jobs(curve_file, single, tmp_path):
    """The SLURM route, with submitit's local executor standing in for the cluster."""
    cmd = [
        sys.executable,
        "-m",
        "modeconn.apps.plane",
        "-m",
        "hydra/launcher=submitit_local",
        f"curve_ckpt={curve_file}",
        "grid=[4,3]",
        "save_every_s=0",
        "progress=false",
        f"out={tmp_path}",
        "num_shards=2",
        "shard=0,1",
    ]
    _run(cmd, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("plane-shard*.npz")) == [
        "plane-shard0of2.npz",
        "plane-shard1of2.npz",
    ]
    merged = _plane(curve_file, tmp_path, "merge=true", "num_shards=2")
    assert np.allclose(merged.train_loss, single.train_loss, rtol=1e-6)
    assert np.array_equal(merged.test_error, single.test_error)


def test_slurm_launcher_example_composes_for_submitit():
    from hydra import compose, initialize_config_dir

    from modeconn.apps.common import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(
            config_name="plane",
            overrides=["hydra/launcher=slurm", "curve_ckpt=c.pt"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.array_parallelism == 64
