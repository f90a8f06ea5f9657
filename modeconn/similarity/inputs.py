"""What every similarity measure accepts, and what it returns when the input says nothing.

A representation is a matrix (n, features): one row per sample (input), one column per
neuron (a conv layer is first turned into such a matrix by a policy of
`modeconn.similarity.activations`). Measures take torch tensors or numpy arrays, compute in float64
on
the tensor's device, and centre the features themselves.

Degenerate inputs (a constant or dead layer, fewer samples than the measure needs, a self-
similarity of 0) give NaN and a `SimilarityWarning` that names the layer, never an exception
from deep inside linear algebra and never a number that only looks like a result.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


class SimilarityWarning(RuntimeWarning):
    """A similarity came out NaN because its input was degenerate; the message says why."""


def as_matrix(x: ArrayLike, which: str = "X") -> Tensor:
    """`x` as a float64 torch tensor (n, features); 1-D input is one feature per sample."""
    t = torch.as_tensor(x)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(
            f"{which} must be a (n, features) matrix, got shape {tuple(t.shape)}; turn a conv "
            "layer into one with a policy of modeconn.similarity.activations (flatten, "
            "positions, avgpool, dft) or x.flatten(1)"
        )
    if t.is_complex():
        raise ValueError(f"{which} is complex; pass real features (e.g. the real DFT policy)")
    return t.to(torch.float64)


def as_pair(x: ArrayLike, y: ArrayLike) -> tuple[Tensor, Tensor]:
    """Both matrices in float64 on x's device, with equal numbers of samples (rows)."""
    a = as_matrix(x, "X")
    b = as_matrix(y, "Y").to(a.device)
    if len(a) != len(b):
        raise ValueError(
            f"X and Y must hold the same samples in their rows: X has {len(a)} rows, Y has "
            f"{len(b)}; samples go in rows, features in columns"
        )
    return a, b


def centred(x: Tensor) -> Tensor:
    """x minus its column means (in float64, so a mean 50x the spread costs no digits)."""
    return x - x.mean(dim=0, keepdim=True)


def degenerate(reason: str, layer: str | None, measure: str) -> float:
    """Warn that `measure` on `layer` is NaN because of `reason`; returns NaN."""
    where = f"layer '{layer}'" if layer else "these representations"
    warnings.warn(f"{measure} of {where} is NaN: {reason}", SimilarityWarning, stacklevel=3)
    return math.nan
