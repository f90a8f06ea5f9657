"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), as in the 2018 mode connectivity code.

Source: timgaripov/dnn-mode-connectivity, models/wide_resnet.py (a port of meliketoy's
wide-resnet.pytorch). Same modules, names and parameter order, same forward:

    block(x) = conv2(relu(bn2(dropout(conv1(relu(bn1(x))))))) + (x  or  shortcut(x))

with every convolution carrying a bias (the 3x3 ones and the 1x1 projection `shortcut`, applied
to the raw input x), the stride on the block's *second* convolution, a 16-channel stem, stages
of widths 16k, 32k, 64k with n = (depth - 4) / 6 blocks each, and a final BatchNorm of momentum
0.9 (PyTorch's convention: the running statistics move 90 % towards each batch). PyTorch's
default initialisation everywhere, as the reference. WRN-28-10: 36,489,290 weights.

Deliberate differences that leave the CIFAR network unchanged: the stem takes any number of
input channels and the final pool is global (the reference's avg_pool2d(., 8) on 8x8 maps).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from modeconn.models.registry import image_shape, register_model


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3 -> dropout -> BN-ReLU-conv3x3 (stride), plus x or shortcut(x)."""

    def __init__(self, in_channels: int, width: int, dropout: float, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1)
        self.shortcut = nn.Sequential()  # empty: the identity
        if stride != 1 or in_channels != width:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride))

    def forward(self, x: Tensor) -> Tensor:
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """conv1 -> layer1..3 of wide blocks -> BN(momentum 0.9)-ReLU -> global avg pool -> linear."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels, _, _ = image_shape(input_shape, "wideresnet")
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"wideresnet depth must be 6n+4 with n >= 1 (e.g. 10, 16, 22, 28, 40); "
                f"got depth={depth}"
            )
        if widen_factor < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"wideresnet: need widen_factor >= 1 and 0 <= dropout < 1, "
                f"got widen_factor={widen_factor}, dropout={dropout}"
            )
        n, k = (depth - 4) // 6, widen_factor
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        channels = 16
        layers = []
        for width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
            blocks = []
            for i in range(n):
                blocks.append(WideBasic(channels, width, dropout, stride if i == 0 else 1))
                channels = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.bn1 = nn.BatchNorm2d(channels, momentum=0.9)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


register_model("wideresnet")(WideResNet)


@register_model("wideresnet28x10")
def wideresnet28x10(
    num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0
) -> WideResNet:
    """WRN-28-10, the CIFAR model of the mode connectivity experiments."""
    return WideResNet(num_classes, input_shape, depth=28, widen_factor=10, dropout=dropout)
