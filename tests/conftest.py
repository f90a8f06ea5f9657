import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from modeconn.apps.common import CONFIG_PATH
from modeconn.curves.family import Bezier
from modeconn.data.catalogue import load_dataset


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


def _global_state() -> dict:
    """Every process-wide torch setting a test could change and leave behind, by name."""
    return {
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "intra-op threads": torch.get_num_threads(),
        "default dtype": torch.get_default_dtype(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "anomaly detection": torch.is_anomaly_enabled(),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "mkldnn enabled": torch.backends.mkldnn.enabled,
        "cudnn benchmark": torch.backends.cudnn.benchmark,
        "cudnn deterministic": torch.backends.cudnn.deterministic,
        "autocast (cpu)": torch.is_autocast_enabled("cpu"),
    }


_STATE_AT_START = _global_state()


def _restore(state: dict) -> None:
    torch.set_grad_enabled(state["grad mode"])
    torch.set_num_threads(state["intra-op threads"])
    torch.set_default_dtype(state["default dtype"])
    torch.use_deterministic_algorithms(state["deterministic algorithms"])
    torch.set_anomaly_enabled(state["anomaly detection"])
    torch.set_float32_matmul_precision(state["float32 matmul precision"])
    torch.backends.mkldnn.enabled = state["mkldnn enabled"]
    torch.backends.cudnn.benchmark = state["cudnn benchmark"]
    torch.backends.cudnn.deterministic = state["cudnn deterministic"]


@pytest.fixture(autouse=True)
def _global_state_restored():
    """Every test leaves the process as it found it: a leaked no_grad or inference mode (say,
    from a generator suspended inside one), thread count or default dtype would silently
    change the tests that run after it (results must not depend on what ran before). A leak
    fails the test that caused it and is undone, so the next test starts clean."""
    yield
    now = _global_state()
    leaked = [f"{k}: {_STATE_AT_START[k]} -> {now[k]}" for k in now if now[k] != _STATE_AT_START[k]]
    _restore(_STATE_AT_START)
    assert not leaked, "this test left process-wide state changed: " + "; ".join(leaked)


@pytest.fixture(scope="module")
def data():
    """A small digits subset for evaluator tests."""
    return load_dataset("digits").subset(train=300, test=100)


@pytest.fixture(scope="module")
def digits():
    """The whole embedded digits set (a module may define its own)."""
    return load_dataset("digits")


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
