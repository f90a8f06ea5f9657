"""Ensembles of points sampled in a simplex (ESPRO, Benton et al. 2021), and the baselines at
the same cost: a deep ensemble and FGE.

S points are drawn once, seeded (`sample_coefficients` with a generator seeded `seed`):
uniform over a simplex, or over a complex with each simplex chosen by volume. Every point is
evaluated as every weight point is: BatchNorm statistics recomputed at that point on the
un-augmented train data (Benton et al. share one set of running statistics for the whole
simplex; their CIFAR networks have no BatchNorm), then the test set predicted. The ensemble
averages probabilities, p(y | x) = 1/S sum_s p_s(y | x) (their notebook averages the logits
of 100 samples); regression averages predictions (`modeconn.ensembles.members`).

Scores (`ensemble_scores`): error and accuracy (%), NLL (nats) and the expected calibration
error (a fraction, Guo et al. 2017: `expected_calibration_error`); regression: mse and the
Gaussian mixture's NLL. Baselines: `deep_ensemble` of independently trained networks (as many
as the simplex has vertices: Benton et al.'s comparison), and `fge_ensemble` from the same
trained network for at most the epochs the simplex's vertices took (`fge_cycles`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from modeconn.curves.vertices import VertexSet
from modeconn.curves.weights import StateLike, WeightSpace
from modeconn.data.tasks import CLASSIFICATION, MetricColumns, check_task, task_of
from modeconn.ensembles.fge import FGEResult, fge
from modeconn.ensembles.measures import ensemble_log_probs, expected_calibration_error
from modeconn.ensembles.members import Member, alone, point_member, score_name, together
from modeconn.io.store import SavedResult


def _names(task: str) -> tuple[str, ...]:
    extra = ("ece",) if task == CLASSIFICATION else ()
    return tuple(
        f"{who}_{m}" for who in ("member", "ensemble") for m in (score_name(task), "nll", *extra)
    )


def ensemble_scores(task: str, members: Sequence[Member], y: torch.Tensor) -> dict[str, float]:
    """The equal-weight ensemble of `members` on the targets y: {"members", "error",
    "accuracy", "nll", "ece"} for classification, {"members", "mse", "nll"} for regression."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    score, nll = together(task, members, y)
    out = {"members": len(members), score_name(task): score, "nll": nll}
    if task == CLASSIFICATION:
        out["accuracy"] = 100.0 - score
        probs = ensemble_log_probs([m.outputs for m in members])
        out["ece"] = expected_calibration_error(probs, y)
    return out


@dataclass(eq=False, init=False)
class SimplexEnsembleResult(MetricColumns, SavedResult):
    """An ensemble of S points sampled in a simplex or complex, on the test split.

    coefficients (S, k): the sampled points. `member_*` (S,): each point alone; `ensemble_*`
    (S,): entry s - 1 is the ensemble of the first s points. Classification: *_error (%),
    *_nll (nats), *_ece (a fraction); regression: *_mse and *_nll. `scores()`: the whole
    ensemble as `ensemble_scores` gives it. `meta`: the settings, the BatchNorm rule, timing.
    """

    result_kind: ClassVar[str] = "SimplexEnsembleResult"

    coefficients: np.ndarray
    values: dict[str, Any]
    task: str
    meta: dict[str, Any] | None = None

    def __init__(
        self,
        coefficients: Any,
        *,
        task: str = CLASSIFICATION,
        values: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **columns: Any,
    ) -> None:
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        given = {**(values or {}), **columns}
        self._set_values(check_task(task), given, {}, names=_names(check_task(task)))
        self.meta = dict(meta or {})

    def scores(self, members: int | None = None) -> dict[str, float]:
        """The ensemble of the first `members` points (default: all): {"members", "error",
        "accuracy", "nll", "ece"} (regression: "mse", "nll"), as `ensemble_scores`."""
        n = len(self.coefficients) if members is None else int(members)
        if not 1 <= n <= len(self.coefficients):
            raise ValueError(f"members must be in 1..{len(self.coefficients)}, got {members}")
        score = score_name(self.task)
        out = {"members": n, score: float(self.values[f"ensemble_{score}"][n - 1])}
        out["nll"] = float(self.values["ensemble_nll"][n - 1])
        if self.task == CLASSIFICATION:
            out["accuracy"] = 100.0 - out[score]
            out["ece"] = float(self.values["ensemble_ece"][n - 1])
        return out


@torch.no_grad()
def simplex_ensemble(
    vertex_set: VertexSet,
    data,
    samples: int = 20,
    *,
    seed: int = 0,
    bn_samples: int | None = None,
    progress: bool = True,
) -> SimplexEnsembleResult:
    """The ensemble of `samples` points of `vertex_set` (a `Simplex` or `SimplicialComplex`)
    drawn with a generator seeded `seed`, each with BatchNorm statistics recomputed on the
    train inputs (all, or `bn_samples`), then the test set predicted; probabilities averaged.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1 (points in the ensemble), got {samples!r}")
    began = time.perf_counter()
    coefficients = vertex_set.sample_coefficients(samples, torch.Generator().manual_seed(seed))
    task, y = task_of(data), data.test_y
    members: list[Member] = []
    rows = []
    for c in tqdm(coefficients, desc="simplex ensemble", disable=not progress):
        member = point_member(vertex_set.model, vertex_set.weights(c), data, bn_samples=bn_samples)
        members.append(member)
        row = list(alone(task, member, y))
        if task == CLASSIFICATION:
            row.append(expected_calibration_error(member.outputs, y))
        whole = ensemble_scores(task, members, y)
        row += [whole[k] for k in (score_name(task), "nll", "ece") if k in whole]
        rows.append(row)
    table = np.asarray(rows, dtype=np.float64)
    meta = {
        "dataset": getattr(data, "name", None),
        "type": vertex_set.kind,
        "vertices": vertex_set.num_vertices,
        "samples": samples,
        "seed": seed,
        "split": "test",
        "test_samples": len(y),
        "bn_samples": bn_samples,
        # Benton et al. share one set of running statistics across the simplex
        "bn": "recomputed at every sample (the reference shares one set)",
        "seconds": time.perf_counter() - began,
    }
    values = {name: table[:, j] for j, name in enumerate(_names(task))}
    return SimplexEnsembleResult(coefficients.numpy(), task=task, values=values, meta=meta)


def network_members(
    model: nn.Module, networks: Sequence[StateLike], data, *, bn_samples: int | None = None
) -> list[Member]:
    """The test outputs of each trained network (modules or state dicts of `model`'s
    architecture), BatchNorm statistics recomputed for each on a copy of `model`."""
    work = copy.deepcopy(model)
    space = WeightSpace.from_module(work)
    return [
        point_member(work, space.check(net, f"network {i}"), data, bn_samples=bn_samples)
        for i, net in enumerate(networks)
    ]


def deep_ensemble(
    model: nn.Module, networks: Sequence[StateLike], data, *, bn_samples: int | None = None
) -> dict[str, float]:
    """`ensemble_scores` of the deep ensemble of independently trained `networks`."""
    if isinstance(networks, (nn.Module, Mapping)) or not list(networks):
        raise ValueError("a deep ensemble needs a non-empty list of trained networks")
    members = network_members(model, networks, data, bn_samples=bn_samples)
    return ensemble_scores(task_of(data), members, data.test_y)


def fge_cycles(epochs: int, cycle: int = 2) -> int:
    """The most FGE cycles whose training, (cycles - 1) * cycle + cycle / 2 epochs (it stops
    at the last snapshot), fits in `epochs`: FGE at (at most) equal training epochs."""
    if cycle < 2 or cycle % 2:
        raise ValueError(f"cycle must be an even number of epochs >= 2, got {cycle}")
    if epochs < cycle // 2:
        raise ValueError(
            f"FGE with cycle={cycle} needs at least {cycle // 2} epochs for one snapshot, got "
            f"{epochs}: pass a shorter cycle"
        )
    return (epochs - cycle // 2) // cycle + 1


def fge_ensemble(
    start: nn.Module,
    data,
    epochs: int,
    *,
    cycle: int = 2,
    checkpoint: str | Path | None = None,
    **options: Any,
) -> tuple[FGEResult, dict[str, float]]:
    """FGE from the trained network `start` for at most `epochs` epochs (`fge_cycles`), and
    `ensemble_scores` of all its snapshots (the ECE from their test outputs). options go to
    `modeconn.ensembles.fge` (lr1, lr2, wd, momentum, batch_size, seed, augment, bn_samples,
    progress)."""
    members: list[Member] = []
    result = fge(
        start,
        data,
        cycles=fge_cycles(epochs, cycle),
        cycle=cycle,
        checkpoint=checkpoint,
        member_callbacks=[lambda k, member: members.append(member)],
        **options,
    )
    scores = ensemble_scores(task_of(data), members, data.test_y)
    scores.update(epochs=int(result.meta["epochs"]), cycle=cycle)
    return result, scores
