"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016).

A pre-activation ResNet made shallower and wider: three stages of widths 16k, 32k, 64k after
a 16-channel stem, n = (depth - 4) / 6 basic blocks per stage, optional dropout between the
two convolutions of a block.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from modeconn.models.preresnet import BasicBlock, PreResNet, build_stages
from modeconn.models.registry import image_shape, register_model


class WideResNet(PreResNet):
    """Stem conv3x3 -> 3 stages of wide pre-activation blocks -> BN-ReLU -> avg pool -> Linear."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ) -> None:
        nn.Module.__init__(self)
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
        widths = [(16 * widen_factor, 1), (32 * widen_factor, 2), (64 * widen_factor, 2)]
        block = partial(BasicBlock, dropout=dropout)
        self.stages, channels = build_stages(16, widths, n, block)
        self.head(channels, num_classes)


register_model("wideresnet")(WideResNet)


@register_model("wideresnet28x10")
def wideresnet28x10(
    num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0
) -> WideResNet:
    """WRN-28-10, the CIFAR model of the mode connectivity experiments."""
    return WideResNet(num_classes, input_shape, depth=28, widen_factor=10, dropout=dropout)
