"""Multi-layer perceptron: the smallest model, for toy data such as the 2-D spiral.

Hidden layers are given either as a list of widths, `hidden=[256, 256]`, or as one width and a
depth, `hidden=20, depth=5` (five hidden layers of 20 units), so that a grid of depths x
widths (the 1/5/10-layer x 5/20/100-unit networks of loss-trajectory studies) is one Hydra
multirun: `-m model=mlp model.args.depth=1,5,10 model.args.hidden=5,20,100`. `hidden=0` or
`hidden=[]` is multinomial logistic regression (one Linear layer on the flattened input).

The last layer has `num_classes` outputs and no activation, so the same network is a
classifier (logits) or a regressor (`build_model("mlp", num_classes=1, input_shape=(1,),
hidden=[50, 50])`: predictions (B, 1)); the data set's task decides which loss it gets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from modeconn.models.registry import register_model


def hidden_widths(hidden: int | Sequence[int], depth: int | None) -> list[int]:
    """The hidden widths that `hidden` and `depth` describe (see the module docstring)."""
    if isinstance(hidden, int):
        if hidden < 0 or (depth is not None and depth < 0):
            raise ValueError(f"mlp: need hidden >= 0 and depth >= 0, got {hidden}, {depth}")
        return [] if hidden == 0 else [hidden] * (1 if depth is None else depth)
    widths = [int(h) for h in hidden]
    if any(h < 1 for h in widths):
        raise ValueError(f"mlp: hidden widths must be positive ints, got {tuple(hidden)}")
    if depth is not None and depth != len(widths):
        raise ValueError(
            f"mlp: depth={depth} contradicts the {len(widths)} widths hidden={tuple(widths)}; "
            f"give one width with a depth (hidden=20, depth=5) or a list with depth=null"
        )
    return widths


@register_model("mlp")
class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] per hidden width -> Linear(num_classes).

    Works for any input shape: a sample of shape `input_shape` is flattened to
    `prod(input_shape)` features. num_classes is the output size (`outputs`): classes of a
    classifier, targets per sample of a regressor.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        hidden: int | Sequence[int] = (256, 256),
        depth: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for width in hidden_widths(hidden, depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)
        self.outputs = num_classes

    def forward(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> logits or predictions (B, num_classes)."""
        return self.net(x)
