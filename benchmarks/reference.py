"""A faithful re-implementation of the 2018 reference evaluation algorithm, for timing only.

Per weight point (Garipov et al.'s plane.py / eval_curve.py loop):
  1. copy the point's weights into the network,
  2. `bn_update`: reset BatchNorm statistics, one DataLoader pass over the train set in train
     mode with momentum b / (n + b) (a batch-size-weighted running average),
  3. `test` on the train loader and on the test loader: eval mode, per batch the loss
     (`.item()` per batch) and the number of correct predictions,
with DataLoaders of batch size 128 and 4 workers (batches copied to the network's device,
from page-locked memory on a GPU), samples decoded and normalised one at a
time by the data set's transform, and no `torch.no_grad()` (the 2018 code predates it and
builds the autograd graph during evaluation). Evaluation data is not augmented here so the
numbers can be compared with ours; the 2018 code also evaluated on augmented train data.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset


class PerSampleImages(TorchDataset):
    """Raw uint8 images (N, C, H, W) normalised per sample on access, like ToTensor+Normalize."""

    def __init__(self, raw: Tensor, labels: Tensor, scale: float, mean: Tensor, std: Tensor):
        self.raw, self.labels, self.scale = raw, labels, scale
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.raw[i].float() / self.scale
        return (x - self.mean) / self.std, self.labels[i]


def loader(
    dataset: TorchDataset, batch_size: int = 128, workers: int = 4, pin_memory: bool = False
) -> DataLoader:
    """The 2018 loaders: batch 128, 4 workers, page-locked batches when a GPU is used."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory
    )


def _device(model: nn.Module):
    return next(model.parameters()).device


def set_weights(model: nn.Module, flat: Tensor) -> None:
    """The reference's weight copy: parameters filled in order from one flat vector."""
    offset = 0
    for p in model.parameters():
        n = p.numel()
        p.data.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def bn_update(train_loader: DataLoader, model: nn.Module) -> None:
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    model.train()
    for m in layers:
        m.reset_running_stats()
    n, device = 0, _device(model)
    for x, _ in train_loader:
        x = x.to(device, non_blocking=True)  # the 2018 code's input.cuda(async=True)
        b = x.size(0)
        for m in layers:
            m.momentum = b / (n + b)
        model(x)
        n += b
    for m in layers:
        m.momentum = 0.1


def test(data_loader: DataLoader, model: nn.Module) -> dict[str, float]:
    model.eval()
    loss_sum, correct, n, device = 0.0, 0, 0, _device(model)
    for x, y in data_loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss_sum += loss.item() * x.size(0)
        correct += out.argmax(1).eq(y).sum().item()
        n += x.size(0)
    return {"nll": loss_sum / n, "error": 100.0 * (1 - correct / n)}


def evaluate_points(model: nn.Module, points: list[Tensor], train_loader, test_loader) -> list:
    """The reference loop over weight points; returns [(train, test)] metric dicts."""
    results = []
    for flat in points:
        set_weights(model, flat)
        bn_update(train_loader, model)
        results.append((test(train_loader, model), test(test_loader, model)))
    return results
