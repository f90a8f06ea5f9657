"""Representation similarity between two layers: the measures by name, and a baseline.

Each measure takes two (n, features) tensors or arrays holding the same n samples in their
rows, centres them and computes in float64:

    cca(X, Y) -> canonical correlations     svcca(X, Y, keep=0.99)     pwcca(X, Y, side="x")
    linear_cka(X, Y)    rbf_cka(X, Y, threshold=1.0)    debiased_cka(X, Y)
    minibatch_cka(X, Y, batch_size=256)

Definitions and their sources: `modeconn.similarity.cca` (CCA, SVCCA, PWCCA, and `Moments`
to stream them over batches) and `modeconn.similarity.cka` (the CKA family, and
`MinibatchCKA` to stream it). Degenerate inputs give NaN with a `SimilarityWarning` naming
the layer (`modeconn.similarity.inputs`).

`MEASURES` maps a name to a function (X, Y, layer=None, **options) -> float, the form the
analyses of `modeconn.similarity.analyses` take; `permutation_baseline` says what "similar"
means for a layer: the measure between X and Y with the rows of Y shuffled (pairs of
unrelated samples), which for few samples and wide layers is far from 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from modeconn.similarity.cca import Moments, cca, pwcca, svcca
from modeconn.similarity.cka import (
    MinibatchCKA,
    debiased_cka,
    linear_cka,
    minibatch_cka,
    rbf_cka,
)
from modeconn.similarity.inputs import ArrayLike, SimilarityWarning, as_pair

Measure = Callable[..., float]


def mean_cca(x: ArrayLike, y: ArrayLike, *, layer: str | None = None) -> float:
    """The mean of all canonical correlations (SVCCA with everything kept)."""
    return float(np.mean(cca(x, y, layer=layer)))


MEASURES: dict[str, Measure] = {
    "linear_cka": linear_cka,
    "debiased_cka": debiased_cka,
    "rbf_cka": rbf_cka,
    "minibatch_cka": minibatch_cka,
    "svcca": svcca,
    "pwcca": pwcca,
    "cca": mean_cca,
}

# What a figure calls each measure.
MEASURE_LABELS = {
    "linear_cka": "linear CKA",
    "debiased_cka": "debiased linear CKA",
    "rbf_cka": "RBF CKA",
    "minibatch_cka": "minibatch CKA",
    "svcca": "SVCCA",
    "pwcca": "PWCCA",
    "cca": "mean CCA",
}


def measure_of(name: str | Measure, **options) -> Measure:
    """The measure called `name` (or a callable as it is), with `options` bound
    (svcca's keep, rbf_cka's threshold, pwcca's side, minibatch_cka's batch_size)."""
    if callable(name):
        fn = name
    elif name in MEASURES:
        fn = MEASURES[name]
    else:
        raise ValueError(f"unknown similarity measure '{name}'; valid: {', '.join(MEASURES)}")
    if not options:
        return fn
    return lambda x, y, layer=None: fn(x, y, **options, layer=layer)


def similarity(
    measure: str | Measure, x: ArrayLike, y: ArrayLike, *, layer: str | None = None, **options
) -> float:
    """`measure` (a name of `MEASURES` or a callable) of X (n, p) and Y (n, q)."""
    return measure_of(measure, **options)(x, y, layer=layer)


def permutation_baseline(
    measure: str | Measure,
    x: ArrayLike,
    y: ArrayLike,
    permutations: int = 10,
    seed: int = 0,
    *,
    layer: str | None = None,
    **options,
) -> np.ndarray:
    """`measure` of X and Y with Y's rows shuffled, once per permutation: (permutations,).

    The similarity two unrelated representations of these shapes reach by chance (the
    samples no longer correspond): compare a result with its baseline, not with 0."""
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    a, b = as_pair(x, y)
    fn = measure_of(measure, **options)
    g = torch.Generator().manual_seed(seed)
    out = [
        fn(a, b[torch.randperm(len(b), generator=g).to(b.device)], layer=layer)
        for _ in range(permutations)
    ]
    return np.asarray(out, dtype=np.float64)


__all__ = [
    "MEASURES",
    "MEASURE_LABELS",
    "MinibatchCKA",
    "Moments",
    "SimilarityWarning",
    "cca",
    "debiased_cka",
    "linear_cka",
    "mean_cca",
    "measure_of",
    "minibatch_cka",
    "permutation_baseline",
    "pwcca",
    "rbf_cka",
    "similarity",
    "svcca",
]
