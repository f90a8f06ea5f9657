"""VGG-16 for CIFAR-size images, with or without batch normalization, and the 2018 VGG16BN.

Source: timgaripov/dnn-mode-connectivity, models/vgg.py (itself after torchvision's VGG): 13
3x3 convolutions in 5 blocks with 2x2 max-pools, a dropout MLP head 512 -> 512 -> 512 ->
classes, convs drawn from N(0, 2 / (k*k*out)) with zero bias. `vgg16` is the reference's VGG16
(same forward; all 13 convolutions run there too). `vgg16bn` is a correct VGG-16-BN: BatchNorm
after every convolution, all 13 run. The reference's VGG16BN is not that network: its forward
pairs each block's list [conv, bn, conv, bn, ...] with one ReLU per convolution, so it runs
only the first half of each list and 8 of the 13 convolutions (`vgg16bn_2018` below reproduces
it, for comparisons with the published VGG16BN numbers). BatchNorm scales start at 1 here; the
reference left them at the PyTorch 0.4 default, U(0, 1).

Deliberate differences from the reference, none on 32x32 inputs: on smaller inputs a max-pool
is left out once a side has reached 1 (so 8x8 digits run through the same convolutions), and
`width_multiplier` scales every width for tiny test and width-study networks.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

from modeconn.models.init import reference_init_
from modeconn.models.registry import image_shape, register_model

# Output channels of the 13 convolutions; "M" is a 2x2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip


def _scaler(name: str, width_multiplier: float, dropout: float) -> Callable[[int], int]:
    """Checks the options; returns the function scaling a width (at least 1 channel)."""
    if width_multiplier <= 0 or not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"{name}: need width_multiplier > 0 and 0 <= dropout < 1, "
            f"got width_multiplier={width_multiplier}, dropout={dropout}"
        )
    return lambda n: max(1, round(n * width_multiplier))


def _head(features: int, hidden: int, num_classes: int, dropout: float) -> list[nn.Module]:
    """The classifier: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear."""
    return [
        nn.Dropout(dropout),
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    ]


class VGG(nn.Module):
    """VGG features (3x3 convs, ReLU, max-pools) and a dropout MLP classifier.

    `width_multiplier` scales every conv and the classifier width (at least 1 channel), which
    gives tiny networks for tests and width studies.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        batch_norm: bool = False,
        width_multiplier: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        name = "vgg16bn" if batch_norm else "vgg16"
        channels, h, w = image_shape(input_shape, name)
        scaled = _scaler(name, width_multiplier, dropout)

        layers: list[nn.Module] = []
        for item in VGG16_LAYOUT:
            if item == "M":
                if h >= 2 and w >= 2:  # a side of 1 cannot be pooled further
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    h, w = h // 2, w // 2
                continue
            out = scaled(int(item))
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)

        self.classifier = nn.Sequential(
            nn.Flatten(), *_head(channels * h * w, scaled(512), num_classes, dropout)
        )
        reference_init_(self.features)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        return self.classifier(self.features(x))


@register_model("vgg16")
def vgg16(
    num_classes: int,
    input_shape: tuple[int, ...],
    width_multiplier: float = 1.0,
    dropout: float = 0.5,
) -> VGG:
    """VGG-16 without batch normalization."""
    return VGG(num_classes, input_shape, False, width_multiplier, dropout)


@register_model("vgg16bn")
def vgg16bn(
    num_classes: int,
    input_shape: tuple[int, ...],
    width_multiplier: float = 1.0,
    dropout: float = 0.5,
) -> VGG:
    """VGG-16 with BatchNorm2d after every convolution."""
    return VGG(num_classes, input_shape, True, width_multiplier, dropout)


class VGG16BN2018(nn.Module):
    """The reference's VGG16BN, forward included: 8 of its 13 convolutions run.

    `layer_blocks[i]` is block i's list [conv, bn, conv, bn, ...] and the forward applies
    ReLU after each of its first (number of convs) entries, then the block's max-pool, as
    the reference's `zip(layers, activations)` does: conv, bn in the 2-conv blocks; conv, bn,
    conv in the 3-conv blocks. The other convolutions and BatchNorms hold weights (counted,
    saved, loaded: 15,253,578 for 10 classes, as `vgg16bn`) that never affect the output.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width_multiplier: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        channels, h, w = image_shape(input_shape, "vgg16bn_2018")
        scaled = _scaler("vgg16bn_2018", width_multiplier, dropout)
        self.layer_blocks = nn.ModuleList()
        self.poolings = nn.ModuleList()
        block: list[nn.Module] = []
        for item in VGG16_LAYOUT:
            if item != "M":
                out = scaled(int(item))
                block += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.BatchNorm2d(out)]
                channels = out
                continue
            self.layer_blocks.append(nn.ModuleList(block))
            block = []
            if h >= 2 and w >= 2:  # as in `VGG`: a side of 1 is not pooled further
                self.poolings.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
            else:
                self.poolings.append(nn.Identity())
        self.classifier = nn.Sequential(*_head(channels * h * w, scaled(512), num_classes, dropout))
        reference_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        for layers, pool in zip(self.layer_blocks, self.poolings, strict=True):
            for layer in list(layers)[: len(layers) // 2]:  # one ReLU per conv, zipped
                x = F.relu(layer(x))
            x = pool(x)
        return self.classifier(x.flatten(1))


register_model("vgg16bn_2018")(VGG16BN2018)
