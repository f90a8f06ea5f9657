import pytest
import torch
from torch import nn


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
