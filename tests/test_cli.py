"""The `modeconn` command: sub-commands, and one-line refusals of what Hydra lets through."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modeconn.apps import cli
from modeconn.io.checkpoints import load_checkpoint

TINY = ["dataset=moons", "model=mlp", "model.args.hidden=[8]", "optim.epochs=1", "progress=false"]


@pytest.mark.parametrize("argv", [[], ["--help"]], ids=["alone", "help"])
def test_modeconn_alone_or_with_help_lists_every_command(argv, capsys):
    cli.main(argv)
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.APPS)


def test_unknown_command_names_the_closest_and_the_valid_ones():
    with pytest.raises(SystemExit, match="unknown command 'trian' \\(did you mean 'train'\\?\\)"):
        cli.main(["trian"])
    with pytest.raises(SystemExit, match="the commands are: train, connect, evaluate, plane"):
        cli.main(["bogus"])


@pytest.mark.parametrize("override", ["point=3", "+point=3", "++point=3"])
def test_mistyped_option_gets_a_did_you_mean(override):
    with pytest.raises(ValueError, match="^unknown option 'point' \\(did you mean 'points'\\?\\)$"):
        cli.check_command_line("evaluate", [override, "curve_ckpt=c.pt"])


def test_mistyped_nested_option_is_named_with_its_level():
    with pytest.raises(ValueError, match="'optim.epoch' \\(did you mean 'optim.epochs'\\?\\)"):
        cli.check_command_line("train", ["+optim.epoch=3"])


def test_mistyped_option_in_a_sweep_is_refused():
    with pytest.raises(ValueError, match="did you mean 'seed'"):
        cli.check_command_line("train", ["-m", "seeds=1,2"])


def test_option_without_a_close_match_lists_the_options_of_its_level():
    with pytest.raises(ValueError, match="unknown option 'foo'; the options of train are: .*seed"):
        cli.check_command_line("train", ["foo=1"])


@pytest.mark.parametrize(
    "app, overrides",
    [
        ("train", [*TINY, "+model.args.depth=2", "dataset.root=/data", "seed=3"]),
        ("train", ["model=torchvision", "model.name=torchvision:resnet18", "~model.args"]),
        ("train", ["-m", "seed=1,2", "optim.lr=0.1,0.2", "hydra.sweep.dir=sweeps"]),
        ("connect", ["start=a.pt", "end=b.pt", "curve.args.degree=3", "optim.epochs=1"]),
        ("connect", ["start=a.pt", "end=b.pt", "curve=polychain", "+curve.args.extra=1"]),
        ("demo", ["endpoint_optim.epochs=1", "curve_optim.lr=0.1", "model.args.hidden=32"]),
        ("plane", ["curve_ckpt=c.pt", "grid=[3,4]", "hydra/launcher=slurm", "shard=0,1", "-m"]),
        ("evaluate", ["curve_ckpt=c.pt", "points=5", "hydra.run.dir=elsewhere", "--cfg", "job"]),
    ],
)
def test_legitimate_options_pass_the_check(app, overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.check_command_line(app, overrides)


def test_output_directory_under_a_file_says_how_to_move_it(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a directory; .* hydra.run.dir=/writable/dir$"):
        cli.check_command_line("train", [f"hydra.run.dir={tmp_path / 'file' / 'out'}"])


@pytest.fixture
def read_only_cwd(tmp_path, monkeypatch):
    """A working directory that cannot be written, simulated: the tests run as root, whom a
    read-only mode does not stop."""
    monkeypatch.chdir(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path and real_access(p, mode))
    return tmp_path


def test_read_only_working_directory_says_where_outputs_go(read_only_cwd):
    where = re.escape(str(read_only_cwd))
    expected = f"'outputs/.*' for .*: '{where}' is not writable; .* hydra.run.dir=/writable/dir$"
    with pytest.raises(ValueError, match=expected):
        cli.check_command_line("train", [])


def test_read_only_working_directory_in_a_sweep_names_the_sweep_option(read_only_cwd):
    with pytest.raises(ValueError, match="'multirun/.*move it with hydra.sweep.dir="):
        cli.check_command_line("train", ["-m", "seed=1,2"])


def _modeconn(args, cwd):
    cmd = [sys.executable, "-m", "modeconn.apps", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_sub_command_runs_a_hydra_multirun(tmp_path):
    done = _modeconn(["train", "-m", "seed=1,2", *TINY, "checkpoint=ck/seed${seed}.pt"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert [load_checkpoint(tmp_path / "ck" / f"seed{s}.pt").meta["seed"] for s in (1, 2)] == [1, 2]


def test_refusal_on_the_command_line_is_one_line(tmp_path):
    done = _modeconn(["evaluate", "curve_ckpt=c.pt", "point=3"], tmp_path)
    assert done.returncode == 1
    assert done.stderr == "modeconn: error: unknown option 'point' (did you mean 'points'?)\n"
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made its directory


def test_python_dash_m_route_refuses_a_mistyped_key_in_one_line_too(tmp_path):
    cmd = [sys.executable, "-m", "modeconn.apps.evaluate", "curve_ckpt=c.pt", "point=3"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr == "modeconn: error: unknown option 'point' (did you mean 'points'?)\n"
