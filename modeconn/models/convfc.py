"""ConvFC: the small convolutional network of Garipov et al. 2018 (mode connectivity paper).

Source: timgaripov/dnn-mode-connectivity, models/convfc.py. Same modules, names, parameter
order, forward and initialisation (convs N(0, 2 / (k*k*out)) with zero bias, linears PyTorch's
default): [Conv5x5 (pad 2) -> ReLU -> MaxPool(3, stride 2)] x 3 with 32, 64, 128 channels,
then Linear 1000 -> ReLU -> Linear 1000 -> ReLU -> Linear(num_classes). The unpadded pools map
a side s to floor((s - 3) / 2) + 1, so 32 -> 15 -> 7 -> 3 and the first linear layer takes
128 * 3 * 3 = 1152 features: 2,422,634 weights for 10 classes.

Options the reference does not have: `widths` and `hidden` resize the network, and
`pool_padding=1` pads the pools (a side s becomes ceil(s / 2)) so that small inputs such as
8x8 digits keep a non-empty map (8 -> 4 -> 2 -> 1); the reference's pools shrink them to
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from modeconn.models.init import reference_init_
from modeconn.models.registry import image_shape, register_model


@register_model("convfc")
class ConvFC(nn.Module):
    """conv_part ([conv5x5 -> ReLU -> MaxPool(3, 2)] per width) -> fc_part (3 linear layers)."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 1000,
        pool_padding: int = 0,
    ) -> None:
        super().__init__()
        channels, h, w = image_shape(input_shape, "convfc")
        if not widths or any(int(c) < 1 for c in widths) or hidden < 1:
            raise ValueError(
                f"convfc: widths must be a non-empty sequence of positive ints and hidden a "
                f"positive int, got widths={tuple(widths)}, hidden={hidden}"
            )
        if pool_padding not in (0, 1):
            raise ValueError(
                f"convfc: pool_padding must be 0 (the paper's) or 1, not {pool_padding}"
            )
        layers: list[nn.Module] = []
        for width in widths:
            layers += [
                nn.Conv2d(channels, int(width), kernel_size=5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=pool_padding),
            ]
            channels = int(width)
            h, w = ((s + 2 * pool_padding - 3) // 2 + 1 for s in (h, w))
            if h < 1 or w < 1:
                raise ValueError(
                    f"convfc: input {tuple(input_shape)} is too small for {len(widths)} unpadded "
                    f"3x3 max-pools (the paper's network, made for 32x32 images); pass "
                    f"pool_padding=1 for small inputs such as 8x8 digits"
                )
        self.conv_part = nn.Sequential(*layers)
        self.fc_part = nn.Sequential(
            nn.Linear(channels * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        reference_init_(self.conv_part)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        return self.fc_part(self.conv_part(x).flatten(1))
