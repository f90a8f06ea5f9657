"""A faithful re-implementation of loss-landscape's per-point loop (Li et al. 2018), for
timing and agreement only.

Per grid point (tomgoldstein/loss-landscape, plot_surface.py `crunch`, net_plotter.py
`set_weights`, evaluation.py `eval_loss`):
  1. the network's parameters are replaced, tensor by tensor, by w + x * dx + y * dy (a new
     tensor per parameter, `p.data = w + d`);
  2. `eval_loss`: the network in eval mode (BatchNorm keeps the centre's running statistics),
     under `torch.no_grad()`, one pass over a DataLoader (batch 128, 2 worker processes, the
     tool's defaults), the loss summed as `loss.item() * batch_size` and the correct
     predictions counted per batch.
The tool evaluates the train loader at every point (the test loader too when asked); here
both are evaluated, as our engine does, so that the work is equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader


def eval_loss(net: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) over the loader, eval mode, no_grad."""
    correct, total_loss, total = 0, 0.0, 0
    net.eval()
    device = next(net.parameters()).device
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            batch = inputs.size(0)
            total += batch
            outputs = net(inputs)
            total_loss += F.cross_entropy(outputs, targets).item() * batch
            correct += outputs.max(1)[1].eq(targets).sum().item()
    return total_loss / total, 100.0 * correct / total


def set_weights(net: nn.Module, weights: list[Tensor], dx: list[Tensor], dy: list[Tensor], step):
    """p.data = w + step[0] * dx + step[1] * dy for every parameter, in order."""
    for p, w, a, b in zip(net.parameters(), weights, dx, dy, strict=True):
        p.data = w + (a * step[0] + b * step[1]).type(w.dtype)


def surface(net, weights, dx, dy, coords, train_loader, test_loader) -> list[dict[str, float]]:
    """The loop over coords [(x, y), ...]: per point the train and test loss and error."""
    out = []
    for step in coords:
        set_weights(net, weights, dx, dy, step)
        train_loss, train_acc = eval_loss(net, train_loader)
        test_loss, test_acc = eval_loss(net, test_loader)
        out.append(
            {
                "train_nll": train_loss,
                "train_error": 100.0 - train_acc,
                "test_nll": test_loss,
                "test_error": 100.0 - test_acc,
            }
        )
    return out
