"""The evaluation subset: losses of every node on a fixed, seeded, class-stratified sample.

The mode-connectivity blog's 1000x1000 planes used "a subsampled version of the dataset,
making sure the subsample preserves the structure". `eval_samples` keeps, per split, that
many samples with the class proportions of the split (largest remainders), drawn once from a
seed, so every node of a job (and a resumed job) sees the same samples. It is distinct from
`bn_samples`: BatchNorm statistics are still computed on the train set (or its first
`bn_samples` samples).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor


def stratified_indices(y: Tensor, n: int, seed: int) -> Tensor:
    """n indices into labels y (N,), sorted, with every class's share of y kept to within
    one sample (largest remainders), chosen by a seeded permutation. Float labels
    (regression) are sampled uniformly. n >= N returns every index."""
    count = len(y)
    if n >= count:
        return torch.arange(count)
    gen = np.random.default_rng(seed)
    labels = y.detach().cpu().numpy()
    if labels.dtype.kind == "f":
        return torch.from_numpy(np.sort(gen.permutation(count)[:n]))
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * n / count
    take = np.floor(quota).astype(int)
    short = n - take.sum()
    order = np.argsort(-(quota - take), kind="stable")  # largest remainders first
    take[order[:short]] += 1
    picked = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        picked.append(gen.permutation(members)[: take[c]])
    return torch.from_numpy(np.sort(np.concatenate(picked)))


def eval_subset(data, settings):
    """`data` with its splits cut to `settings.eval_samples` (None: `data` itself). The
    result is what the metrics of every node are computed on; BatchNorm statistics keep
    using `data`'s whole train split."""
    train_n, test_n = settings.eval_sizes
    if train_n is None and test_n is None:
        return None
    changes = {}
    for split, n, offset in (("train", train_n, 0), ("test", test_n, 1)):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if n is None or n >= len(y):
            continue
        keep = stratified_indices(y, n, settings.eval_seed + offset).to(y.device)
        changes[f"{split}_x"], changes[f"{split}_y"] = x[keep], y[keep]
    return dataclasses.replace(data, **changes) if changes else None
