"""Multi-layer perceptron: the smallest model, for toy data such as the 2-D spiral."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from modeconn.models.registry import register_model


@register_model("mlp")
class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] per hidden width -> Linear(num_classes).

    Works for any input shape: a sample of shape `input_shape` is flattened to
    `prod(input_shape)` features. `hidden=()` gives multinomial logistic regression.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        hidden: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__()
        widths = [int(h) for h in hidden]
        if any(h < 1 for h in widths):
            raise ValueError(f"mlp: hidden widths must be positive ints, got {tuple(hidden)}")
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for width in widths:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> logits (B, num_classes)."""
        return self.net(x)
