"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks").

In a pre-activation block BN and ReLU come *before* each convolution, so the shortcut path is a
pure identity from the network input to the final BN-ReLU. Where a block changes shape, a 1x1
projection on the pre-activated input replaces the identity. Three stages of widths
w, 2w, 4w (w = 16), the last two starting with stride 2.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

from modeconn.models.registry import image_shape, register_model


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3 -> BN-ReLU-[dropout]-conv3x3, added to the (projected) input."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(width, width)
        self.shortcut = _projection(in_channels, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1 -> BN-ReLU-conv3x3 (stride) -> BN-ReLU-conv1x1 to 4x width, plus shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + skip


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d | None:
    """1x1 conv where the block changes shape; None means an identity shortcut."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def blocks_for_depth(depth: int) -> tuple[type[BasicBlock] | type[Bottleneck], int]:
    """Block type and blocks per stage for a PreResNet of `depth` weight layers.

    depth = 1 stem conv + 3 stages * n blocks * (convs per block) + 1 linear, so
    bottleneck (3 convs): depth = 9n + 2, used from depth 164 on (164, 1001);
    basic (2 convs): depth = 6n + 2 (20, 56, 110).
    """
    if depth >= 164 and (depth - 2) % 9 == 0:
        return Bottleneck, (depth - 2) // 9
    if depth >= 8 and (depth - 2) % 6 == 0:
        return BasicBlock, (depth - 2) // 6
    raise ValueError(
        f"preresnet depth must be 6n+2 for basic blocks (e.g. 20, 56, 110) or 9n+2 >= 164 for "
        f"bottleneck blocks (e.g. 164, 1001); got depth={depth}"
    )


class PreResNet(nn.Module):
    """Stem conv3x3 -> 3 stages of pre-activation blocks -> BN-ReLU -> global avg pool -> Linear.

    The global average pool makes it work for any image size (8x8 digits, 32x32 CIFAR).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        depth: int = 110,
        width: int = 16,
    ) -> None:
        super().__init__()
        in_channels, _, _ = image_shape(input_shape, "preresnet")
        if width < 1:
            raise ValueError(f"preresnet: width must be a positive int, got {width}")
        block, n = blocks_for_depth(depth)
        self.depth = depth
        self.stem = _conv3x3(in_channels, width)
        self.stages, channels = build_stages(
            width, [(width, 1), (2 * width, 2), (4 * width, 2)], n, block
        )
        self.head(channels, num_classes)

    def head(self, channels: int, num_classes: int) -> None:
        """Final BN + Linear and He initialisation; shared with WideResNet."""
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        out = F.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def build_stages(
    channels: int, stages: list[tuple[int, int]], n: int, make_block: Callable[..., nn.Module]
) -> tuple[nn.Sequential, int]:
    """Stages of n blocks each, given as (width, stride of the first block); returns the
    stages and the number of output channels."""
    out = []
    for stage_width, stride in stages:
        blocks = []
        for i in range(n):
            blocks.append(make_block(channels, stage_width, stride if i == 0 else 1))
            channels = stage_width * getattr(make_block, "expansion", 1)
        out.append(nn.Sequential(*blocks))
    return nn.Sequential(*out), channels


@register_model("preresnet")
def preresnet(
    num_classes: int, input_shape: tuple[int, ...], depth: int = 110, width: int = 16
) -> PreResNet:
    """PreResNet of any valid `depth` (see `blocks_for_depth`)."""
    return PreResNet(num_classes, input_shape, depth=depth, width=width)


def _fixed_depth(depth: int) -> Callable[..., PreResNet]:
    def build(num_classes: int, input_shape: tuple[int, ...], width: int = 16) -> PreResNet:
        return PreResNet(num_classes, input_shape, depth=depth, width=width)

    build.__name__ = build.__qualname__ = f"preresnet{depth}"
    build.__doc__ = f"PreResNet-{depth} ({blocks_for_depth(depth)[0].__name__} blocks)."
    return build


for _depth in (20, 56, 110, 164):
    register_model(f"preresnet{_depth}")(_fixed_depth(_depth))
