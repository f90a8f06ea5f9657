"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016).

A pre-activation ResNet made shallower and wider: three stages of widths 16k, 32k, 64k after
a 16-channel stem, n = (depth - 4) / 6 basic blocks per stage, optional dropout between the
two convolutions of a block.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from modeconn.models.preresnet import BasicBlock
from modeconn.models.registry import image_shape, register_model


class WideResNet(nn.Module):
    """Stem conv3x3 -> 3 stages of wide pre-activation blocks -> BN-ReLU -> avg pool -> Linear."""

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
        # The paper's convention: depth = 6n + 4 for n blocks of 2 convs in each of 3 stages.
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
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        channels = 16
        stages = []
        for base, stride in ((16, 1), (32, 2), (64, 2)):
            width = base * widen_factor
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(channels, width, stride if i == 0 else 1, dropout))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        out = F.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


register_model("wideresnet")(WideResNet)


@register_model("wideresnet28x10")
def wideresnet28x10(
    num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0
) -> WideResNet:
    """WRN-28-10, the CIFAR model of the mode connectivity experiments."""
    return WideResNet(num_classes, input_shape, depth=28, widen_factor=10, dropout=dropout)
