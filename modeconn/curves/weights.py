"""Weights as named tensors, and one flat vector where geometry needs it.

A `WeightSpace` records the names and shapes of a module's parameters (not its buffers:
BatchNorm running statistics are recomputed, never treated as weights). It converts between
a name->tensor dict and a single 1-D vector, which is what planes, projections, PCA and
distances work on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

StateLike = Mapping[str, Tensor] | nn.Module


@dataclass(frozen=True)
class WeightSpace:
    """Names and shapes of a network's parameters, in the module's own order."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> WeightSpace:
        params = list(module.named_parameters())
        if not params:
            raise ValueError(f"{type(module).__name__} has no parameters: nothing to connect")
        return cls(tuple(n for n, _ in params), tuple(p.shape for _, p in params))

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(s.numel() for s in self.shapes)

    @property
    def size(self) -> int:
        """Total number of scalar weights D."""
        return sum(self.numels)

    def check(self, state: StateLike, what: str = "state") -> dict[str, Tensor]:
        """Return the parameters of `state` in this space's order, validating names and shapes.

        Extra entries (e.g. BatchNorm buffers in a state dict) are ignored; a missing name or a
        different shape raises a ValueError naming the first mismatched tensor.
        """
        sd = dict(state.named_parameters()) if isinstance(state, nn.Module) else dict(state)
        out = {}
        for name, shape in zip(self.names, self.shapes, strict=True):
            if name not in sd:
                raise ValueError(
                    f"{what} does not match the architecture: tensor '{name}' (shape "
                    f"{tuple(shape)}) is missing. Were these weights trained with another model?"
                )
            if sd[name].shape != shape:
                raise ValueError(
                    f"{what} does not match the architecture: tensor '{name}' has shape "
                    f"{tuple(sd[name].shape)}, expected {tuple(shape)}. "
                    "Were these weights trained with another model or other model arguments?"
                )
            out[name] = sd[name]
        return out

    def flatten(self, state: StateLike, what: str = "state") -> Tensor:
        """Concatenate the parameters of `state` into one vector of shape (D,)."""
        tensors = self.check(state, what)
        return torch.cat([t.detach().reshape(-1) for t in tensors.values()])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a (D,) vector into a name->tensor dict of views (gradients flow through)."""
        if vector.ndim != 1 or vector.numel() != self.size:
            raise ValueError(
                f"expected a vector of shape ({self.size},), got {tuple(vector.shape)}"
            )
        parts = torch.split(vector, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    @staticmethod
    def dot(a: Tensor, b: Tensor) -> Tensor:
        """Inner product of two flat weight vectors, accumulated in float64."""
        return torch.dot(a.double(), b.double())

    @staticmethod
    def norm(a: Tensor) -> Tensor:
        """Euclidean norm of a flat weight vector, accumulated in float64."""
        return torch.linalg.vector_norm(a.double())


def fingerprint(*tensors: Tensor) -> str:
    """A SHA-1 digest of the tensors' values (as float64): equal only for equal weights.

    Resumable jobs store it to refuse partial results computed for other weights.
    """
    import hashlib

    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().double().contiguous().numpy().tobytes())
    return digest.hexdigest()
