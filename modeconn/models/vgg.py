"""VGG-16 for CIFAR-size images, with or without batch normalization.

All 13 convolutions are in the forward pass (the 2018 reference code skipped some). On small
inputs a max-pool is left out once a side has reached 1, so 8x8 digits run through the same
13 convolutions as 32x32 CIFAR images.
"""

from __future__ import annotations

from torch import Tensor, nn

from modeconn.models.registry import image_shape, register_model

# Output channels of the 13 convolutions; "M" is a 2x2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip


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
        if width_multiplier <= 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"{name}: need width_multiplier > 0 and 0 <= dropout < 1, "
                f"got width_multiplier={width_multiplier}, dropout={dropout}"
            )

        def scaled(n: int) -> int:
            return max(1, round(n * width_multiplier))

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

        hidden = scaled(512)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * h * w, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):  # He init as in the original VGG: N(0, 2 / (k*k*out))
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

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
