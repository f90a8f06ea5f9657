import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from modeconn.apps.common import CONFIG_PATH
from modeconn.curves import Bezier
from modeconn.data import load_dataset


class TinyNet(nn.Module):
    """A small conv net with BatchNorm and dropout, for fast tests on 1x8x8 inputs."""

    def __init__(self, width: int = 4, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(self.drop(x.flatten(1)))


@pytest.fixture
def tiny_pair():
    torch.manual_seed(0)
    a, b = TinyNet(), TinyNet()
    return a, b


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """Every test leaves autograd as it found it: a leaked no_grad or inference mode (say, from
    a generator suspended inside one) would silently break the tests that run after it."""
    yield
    leaked = not torch.is_grad_enabled() or torch.is_inference_mode_enabled()
    torch.set_grad_enabled(True)
    assert not leaked, "this test left gradients off (a no_grad / inference_mode leaked)"


@pytest.fixture(scope="module")
def data():
    """A small digits subset for evaluator tests."""
    return load_dataset("digits").subset(train=300, test=100)


@pytest.fixture(scope="module")
def bezier():
    """An untrained Bezier curve between two TinyNets with its bend moved off the line."""
    torch.manual_seed(0)
    curve = Bezier(TinyNet(), TinyNet(), TinyNet())
    with torch.no_grad():
        curve.bends.add_(torch.randn_like(curve.bends))
    return curve


def compose_app(name: str, overrides: list[str]):
    """An app's config as Hydra composes it from conf/, with command-line overrides."""
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)
