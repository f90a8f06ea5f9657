"""ConvFC: the small convolutional network of Garipov et al. 2018 (mode connectivity paper)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from modeconn.models.registry import image_shape, register_model


@register_model("convfc")
class ConvFC(nn.Module):
    """[Conv5x5 -> ReLU -> MaxPool(3, stride 2)] per width, then a 3-layer fully connected head.

    With the defaults, widths (32, 64, 128) and hidden width 1000 as in the paper. The flattened
    size comes from `input_shape`: each pool maps a side s to ceil(s / 2), so 32 -> 16 -> 8 -> 4
    for CIFAR and 8 -> 4 -> 2 -> 1 for 8x8 digits.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 1000,
    ) -> None:
        super().__init__()
        channels, h, w = image_shape(input_shape, "convfc")
        if not widths or any(int(c) < 1 for c in widths) or hidden < 1:
            raise ValueError(
                f"convfc: widths must be a non-empty sequence of positive ints and hidden a "
                f"positive int, got widths={tuple(widths)}, hidden={hidden}"
            )
        layers: list[nn.Module] = []
        for width in widths:
            layers += [
                nn.Conv2d(channels, int(width), kernel_size=5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ]
            channels = int(width)
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # floor((s + 2*1 - 3) / 2) + 1 = ceil(s/2)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        return self.classifier(self.features(x))
