"""Files written by the store: the permission bits a normal write would give them."""

import os
import stat

import pytest
import torch

from modeconn.io.checkpoints import save_checkpoint
from modeconn.io.store import save_result


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_checkpoint_gets_the_mode_of_a_normal_write(tmp_path, umask, mask, expected):
    umask(mask)
    path = save_checkpoint(tmp_path / "a.pt", "endpoint", {"w": torch.zeros(2)}, {})
    assert mode(path) == expected


def test_result_files_get_the_mode_of_a_normal_write(tmp_path, umask):
    umask(0o002)
    npz = save_result(tmp_path / "r", {"x": [1.0, 2.0]}, {"config": {}})
    assert (mode(npz), mode(npz.with_suffix(".json"))) == (0o664, 0o664)


def test_rewriting_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = save_checkpoint(tmp_path / "a.pt", "endpoint", {"w": torch.zeros(2)}, {})
    os.chmod(path, 0o640)
    save_checkpoint(path, "endpoint", {"w": torch.ones(2)}, {})
    assert mode(path) == 0o640
