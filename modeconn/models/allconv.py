"""All-convolutional net: 9 convolutions, no pooling layer, no fully connected layer.

Source: Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net", model
All-CNN-C (Table 2), the 9-layer network of the "can we trust these pictures" critique of
loss-landscape plots. Every layer is conv -> ReLU; stride-2 convolutions replace the pools:

    3x3 w, 3x3 w, 3x3 w stride 2, 3x3 2w, 3x3 2w, 3x3 2w stride 2,
    3x3 2w (no padding), 1x1 2w, 1x1 classes  -> global average pool -> logits

with w = 96; 32x32 inputs give 32 -> 16 -> 8 -> 6 before the global average. `norm` adds a
normalisation to every layer: "batch" as conv -> BatchNorm -> ReLU (convs then without bias),
"lrn" as conv -> ReLU -> LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1) (AlexNet's place
and constants except k = 1, PyTorch's default: AlexNet's k = 2 divides every layer's output
by about 2^0.75, 100x over nine layers, and the net does not train from this initialisation).
Weights are drawn as the 2018 code's convolutions, N(0, 2 / (k*k*out)), biases 0. Not taken
from the paper: its dropout (left out) and its initialisation (not stated there).
`conv7_padding=1` pads the seventh convolution for inputs smaller than 9x9 (8x8 digits).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from modeconn.models.init import reference_init_
from modeconn.models.registry import image_shape, register_model

NORMS = ("none", "batch", "lrn")


@register_model("allconv")
class AllConv(nn.Module):
    """`features` (9 conv layers with their norm and ReLU) -> global average pool."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        norm: str = "none",
        width: int = 96,
        conv7_padding: int = 0,
    ) -> None:
        super().__init__()
        channels, h, w = image_shape(input_shape, "allconv")
        if norm not in NORMS:
            raise ValueError(f"allconv: norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if width < 1 or conv7_padding not in (0, 1):
            raise ValueError(
                f"allconv: need width >= 1 and conv7_padding 0 or 1, "
                f"got width={width}, conv7_padding={conv7_padding}"
            )
        # (out channels, kernel, stride, padding) of the 9 convolutions
        wide = 2 * width
        plan = [
            (width, 3, 1, 1), (width, 3, 1, 1), (width, 3, 2, 1),
            (wide, 3, 1, 1), (wide, 3, 1, 1), (wide, 3, 2, 1),
            (wide, 3, 1, conv7_padding), (wide, 1, 1, 0), (num_classes, 1, 1, 0),
        ]  # fmt: skip
        layers: list[nn.Module] = []
        for out, k, stride, pad in plan:
            layers.append(nn.Conv2d(channels, out, k, stride, pad, bias=norm != "batch"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            if norm == "lrn":
                layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
            channels = out
            h, w = ((s + 2 * pad - k) // stride + 1 for s in (h, w))
        if h < 1 or w < 1:
            raise ValueError(
                f"allconv: input {tuple(input_shape)} is too small for the unpadded seventh "
                f"convolution; pass conv7_padding=1 for inputs smaller than 9x9"
            )
        self.features = nn.Sequential(*layers)
        reference_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
