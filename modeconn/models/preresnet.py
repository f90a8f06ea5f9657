"""Pre-activation ResNet for CIFAR, as in the 2018 mode connectivity code.

Source: timgaripov/dnn-mode-connectivity, models/preresnet.py (itself a port of bearpaw's
pytorch-classification PreResNet; He et al. 2016, "Identity Mappings in Deep Residual
Networks"). Same modules, names and parameter order, same forward, same initialisation:

    block(x) = branch(x) + (x  or  downsample(x))
    branch   = [BN -> ReLU -> conv] * 2 (basic) or * 3 (bottleneck, 1x1 -> 3x3 -> 1x1 to 4w)

The projection `downsample` (1x1 conv with the block's stride) is applied to the block's raw
input x, not to relu(bn1(x)). Depth picks the block as the reference does: bottleneck for
depth >= 44 (depth = 9n + 2: 56, 110, 164), basic below (depth = 6n + 2: 20, 32).

Deliberate differences, none of which changes the CIFAR network: the stem takes any number of
input channels, `width` scales the stage widths (16 in the reference), and the final pool is
a global average (the reference's AvgPool2d(8) is exactly that on 32x32 inputs, and fails on
smaller ones). Options the reference does not have: `shortcut=False` drops every skip
connection (identity and projection: ResNet "without skip connections" of Li et al. 2018),
and `block="basic"|"bottleneck"` overrides the depth rule.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

from modeconn.models.init import reference_init_
from modeconn.models.registry import image_shape, register_model


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3 (stride) -> BN-ReLU-conv3x3, plus x or downsample(x)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return _add_shortcut(self, out, x)


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1 -> BN-ReLU-conv3x3 (stride) -> BN-ReLU-conv1x1 to 4x width, plus skip."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.downsample = downsample
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return _add_shortcut(self, out, x)


def _add_shortcut(block: BasicBlock | Bottleneck, out: Tensor, x: Tensor) -> Tensor:
    if not block.shortcut:
        return out
    return out + (x if block.downsample is None else block.downsample(x))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


def blocks_for_depth(
    depth: int, block: str = "auto"
) -> tuple[type[BasicBlock] | type[Bottleneck], int]:
    """Block type and blocks per stage n for a PreResNet of `depth` weight layers.

    depth = 1 stem conv + 3 stages * n blocks * (convs per block) + 1 linear: 6n + 2 for basic
    blocks, 9n + 2 for bottlenecks. `block="auto"` is the reference's rule: bottleneck from
    depth 44 on.
    """
    if block not in ("auto", *BLOCKS):
        raise ValueError(f"preresnet block must be 'auto', 'basic' or 'bottleneck', got {block!r}")
    kind = ("bottleneck" if depth >= 44 else "basic") if block == "auto" else block
    per_block = 3 if kind == "bottleneck" else 2
    n, rest = divmod(depth - 2, 3 * per_block)
    if n < 1 or rest:
        raise ValueError(
            "preresnet depth must be 6n+2 for basic blocks (block='auto': below 44, e.g. 20, 32) "
            "or 9n+2 for bottleneck blocks (block='auto': from 44 on, e.g. 56, 110, 164); "
            f"got depth={depth} with block={block!r}"
        )
    return BLOCKS[kind], n


class PreResNet(nn.Module):
    """conv1 -> layer1..3 of pre-activation blocks -> BN-ReLU -> global avg pool -> fc."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        depth: int = 110,
        width: int = 16,
        shortcut: bool = True,
        block: str = "auto",
    ) -> None:
        super().__init__()
        in_channels, _, _ = image_shape(input_shape, "preresnet")
        if width < 1:
            raise ValueError(f"preresnet: width must be a positive int, got {width}")
        block_type, n = blocks_for_depth(depth, block)
        self.depth, self.shortcut = depth, bool(shortcut)
        self.conv1 = _conv3x3(in_channels, width)
        self.inplanes = width
        self.layer1 = self._make_layer(block_type, width, n, 1)
        self.layer2 = self._make_layer(block_type, 2 * width, n, 2)
        self.layer3 = self._make_layer(block_type, 4 * width, n, 2)
        self.bn = nn.BatchNorm2d(self.inplanes)
        self.fc = nn.Linear(self.inplanes, num_classes)
        reference_init_(self)

    def _make_layer(
        self, block_type: Callable[..., nn.Module], width: int, n: int, stride: int
    ) -> nn.Sequential:
        """n blocks; the first one strides and, where the shape changes, projects its input."""
        out_channels = width * block_type.expansion
        downsample = None
        if self.shortcut and (stride != 1 or self.inplanes != out_channels):
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False)
            )
        blocks = [block_type(self.inplanes, width, stride, downsample, self.shortcut)]
        blocks += [block_type(out_channels, width, shortcut=self.shortcut) for _ in range(1, n)]
        self.inplanes = out_channels
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("preresnet")
def preresnet(
    num_classes: int,
    input_shape: tuple[int, ...],
    depth: int = 110,
    width: int = 16,
    shortcut: bool = True,
    block: str = "auto",
) -> PreResNet:
    """PreResNet of any valid `depth` (see `blocks_for_depth`)."""
    return PreResNet(num_classes, input_shape, depth, width, shortcut, block)


def _fixed_depth(depth: int) -> Callable[..., PreResNet]:
    def build(
        num_classes: int, input_shape: tuple[int, ...], width: int = 16, shortcut: bool = True
    ) -> PreResNet:
        return PreResNet(num_classes, input_shape, depth=depth, width=width, shortcut=shortcut)

    build.__name__ = build.__qualname__ = f"preresnet{depth}"
    build.__doc__ = f"PreResNet-{depth} of the 2018 code ({blocks_for_depth(depth)[0].__name__})."
    return build


for _depth in (20, 56, 110, 164):
    register_model(f"preresnet{_depth}")(_fixed_depth(_depth))
