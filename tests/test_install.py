"""A non-editable install: the wheel carries the configs and its apps run without the checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from modeconn.io.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_of_the_tree():
    tomllib = pytest.importorskip("tomllib")
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    tree = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "modeconn").rglob("__init__.py")
    }
    assert set(listed) == tree | {"modeconn.conf"}


def _run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources, installed into a bare directory."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("modeconn", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src])
    (wheel,) = (tmp / "dist").glob("modeconn-*.whl")
    _run([*pip, "install", "--no-deps", "--target", tmp / "site", wheel])
    run_dir = tmp / "elsewhere"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp / "site")}  # the install, never the checkout
    return {"src": src, "wheel": wheel, "site": tmp / "site", "cwd": run_dir, "env": env}


def test_wheel_carries_every_config_and_the_console_script(installed):
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = set(whl.namelist())
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = whl.read(entry_points).decode()
    conf = installed["src"] / "conf"
    shipped = {f"modeconn/conf/{p.relative_to(conf).as_posix()}" for p in conf.rglob("*.yaml")}
    assert "modeconn/conf/hydra/launcher/slurm.yaml" in shipped and shipped <= names
    assert "modeconn = modeconn.apps.cli:main" in scripts


def test_installed_package_and_configs_come_from_the_install_not_the_checkout(installed):
    code = "import modeconn.apps.common as c; print(c.__file__); print(c.CONFIG_PATH)"
    done = _run([sys.executable, "-c", code], cwd=installed["cwd"], env=installed["env"])
    module, configs = done.stdout.split()
    site = installed["site"].resolve()
    assert Path(module).resolve().is_relative_to(site)
    assert Path(configs) == site / "modeconn" / "conf"


def test_console_script_of_the_wheel_trains_from_another_directory(installed):
    script = installed["site"] / "bin" / "modeconn"
    args = ["dataset=moons", "model=mlp", "model.args.hidden=[8]", "optim.epochs=1"]
    cmd = [sys.executable, script, "train", *args, "progress=false", "checkpoint=ck.pt"]
    _run(cmd, cwd=installed["cwd"], env=installed["env"])
    assert load_checkpoint(installed["cwd"] / "ck.pt").finished
    assert list((installed["cwd"] / "outputs").glob("*/*/.hydra/config.yaml"))
