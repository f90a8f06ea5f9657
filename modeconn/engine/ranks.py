"""The processes of a torchrun job, seen from a training loop: the world size and this
process's rank, its share of every batch, and the collectives that keep the ranks in step.

Every rank draws the same order and the same t (same generator), takes its share
x[rank::world] of each batch, and DistributedDataParallel averages the gradients. Each rank's
loss is scaled by world * share / batch before the backward pass, so the average is the
gradient of the whole batch's mean loss: the run equals one process with the same batch size
even when the batch does not split evenly. In one process every method is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Ranks:
    world: int = 1
    rank: int = 0

    @classmethod
    def current(cls) -> Ranks:
        """The job this process belongs to (one process when torch.distributed is not set up)."""
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return cls(world, dist.get_rank() if world > 1 else 0)

    @property
    def main(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    def wrap(self, module: nn.Module, device: torch.device, broadcast_buffers: bool) -> nn.Module:
        """`module`, under torchrun its DistributedDataParallel wrapper (`broadcast_buffers`:
        rank 0's buffers, e.g. BatchNorm statistics, sent to all ranks before each step)."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            module,
            device_ids=[device] if device.type == "cuda" else None,
            broadcast_buffers=broadcast_buffers,
        )

    def share(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float, bool]:
        """(x, y, scale, counted): this rank's rows of a batch, the factor of its loss, and
        whether its numbers count in the epoch's totals. A last batch smaller than the number
        of ranks is taken whole by every rank and counted by rank 0 alone."""
        if self.world == 1:
            return x, y, 1.0, True
        if len(y) < self.world:
            return x, y, 1.0, self.main
        scale = self.world * len(y[self.rank :: self.world]) / len(y)
        return x[self.rank :: self.world], y[self.rank :: self.world], scale, True

    def largest(self, value: Tensor) -> Tensor:
        """The largest of every rank's `value` (so all ranks stop together, never one alone
        in a collective)."""
        if self.world == 1:
            return value
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value

    def sums(self, numbers: list[float], device: torch.device) -> list[float]:
        """Every rank's `numbers` added up (float64)."""
        if self.world == 1:
            return numbers
        totals = torch.tensor(numbers, dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        return totals.tolist()
