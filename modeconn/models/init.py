"""The initialisation of the 2018 reference code (timgaripov/dnn-mode-connectivity, models/).

Its PreResNet, ConvFC and VGG draw every convolution's weight from N(0, 2 / n) with
n = k_h * k_w * out_channels (He et al. 2015 on the fan-out), set conv biases to 0 and
BatchNorm scales to 1, shifts to 0. Linear layers keep PyTorch's default, and so does the
whole WideResNet (the reference initialises nothing there).
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def reference_init_(module: nn.Module) -> nn.Module:
    """Initialise every Conv2d and BatchNorm2d inside `module` in place, as the 2018 code does."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.normal_(0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()
    return module
