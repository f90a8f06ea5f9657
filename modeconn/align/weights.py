"""Weight matching (Ainsworth et al. 2023, "Git Re-Basin", Algorithm 1): the permutation of
b's hidden units that brings its weights closest to a's.

maximise over permutations P   sum over parameters t of <W_a(t), P(W_b)(t)>

by coordinate ascent: one group at a time, the others held, the objective is linear in the
group's permutation P_g, trace(P_g^T C_g) with

    C_g = sum over the axes the group touches of W_a(axis) @ P(W_b)(axis)^T

(each tensor with that axis first, flattened, and b permuted along its other axes by their
groups' current permutations), which `scipy.optimize.linear_sum_assignment` maximises exactly.
Groups are visited in a random order per sweep; the run stops after a sweep with no gain.
As the reference: biases and normalisation affine parameters are in the cost; BatchNorm's
running statistics are permuted but never in the cost. Here the blocks C_g are accumulated in
float64 per group on the weights' device (never one flat vector), and `restarts` runs from
random initial permutations and sweep orders keep the best objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from modeconn.align.spec import PermutationSpec, apply_permutation, permute_axis
from modeconn.align.trace import permutation_spec


@dataclass
class Matching:
    """The permutation found and how: perms (group -> index tensor: unit i of the aligned b is
    unit `perms[g][i]` of b), objective (sum of <W_a, P(W_b)> over the cost's tensors), distance
    (||W_a - P(W_b)|| over them), sweeps; runs: the same three for each restart."""

    perms: dict[str, Tensor]
    objective: float
    distance: float
    sweeps: int
    runs: list[dict[str, float]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)  # the best run's objective per sweep


def _state(x: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    return dict(x.state_dict() if isinstance(x, nn.Module) else x)


def _cost_tensors(spec: PermutationSpec, state: Mapping[str, Tensor]) -> list[str]:
    """The tensors of the cost: every floating tensor of the state but the buffers."""
    skip = set(spec.buffers)
    return [t for t, v in state.items() if t not in skip and v.is_floating_point()]


def _objective(a: Mapping[str, Tensor], b: Mapping[str, Tensor], names: list[str]) -> float:
    return float(sum((a[t].double() * b[t].double()).sum() for t in names))


def _distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], names: list[str]) -> float:
    return float(sum(((a[t].double() - b[t].double()) ** 2).sum() for t in names)) ** 0.5


def _run(
    spec: PermutationSpec,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    names: list[str],
    perms: dict[str, Tensor],
    generator: torch.Generator,
    max_sweeps: int,
) -> tuple[dict[str, Tensor], int, list[float]]:
    cost = set(names)
    axes: dict[str, list[tuple[int, str, int, int]]] = {}
    for group, entries in spec.groups.items():
        for tensor, axis, repeat, offset in entries:
            axes.setdefault(tensor, []).append((axis, group, repeat, offset))
    order = list(spec.groups)
    history = [_objective(a, apply_permutation(spec, b, perms), names)]
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        changed = False
        for k in torch.randperm(len(order), generator=generator).tolist():
            group = order[k]
            n = spec.sizes[group]
            c = torch.zeros(n, n, dtype=torch.float64, device=next(iter(a.values())).device)
            for tensor, axis, repeat, offset in spec.groups[group]:
                if tensor not in cost:
                    continue
                wb = b[tensor]
                for other_axis, other, other_repeat, other_offset in axes[tensor]:
                    if other != group or other_axis != axis or other_offset != offset:
                        wb = permute_axis(wb, other_axis, perms[other], other_repeat, other_offset)
                span = n * repeat
                wa_m = a[tensor].narrow(axis, offset, span).double().movedim(axis, 0)
                wb_m = wb.narrow(axis, offset, span).double().movedim(axis, 0)
                c += wa_m.reshape(n, -1) @ wb_m.reshape(n, -1).T
            old = perms[group]
            _, new = linear_sum_assignment(c.cpu().numpy(), maximize=True)
            rows = torch.arange(n, device=c.device)
            new_t = torch.as_tensor(new, dtype=torch.int64)
            gain = (c[rows, new_t.to(c.device)].sum() - c[rows, old.to(c.device)].sum()).item()
            if gain > 1e-12 * max(1.0, abs(c[rows, old.to(c.device)].sum().item())):
                perms[group] = new_t
                changed = True
        history.append(_objective(a, apply_permutation(spec, b, perms), names))
        if not changed:
            break
    return perms, sweeps, history


def weight_matching(
    model: nn.Module | None,
    a: nn.Module | Mapping[str, Tensor],
    b: nn.Module | Mapping[str, Tensor],
    *,
    spec: PermutationSpec | None = None,
    example_input: Tensor | None = None,
    restarts: int = 1,
    max_sweeps: int = 100,
    seed: int = 0,
) -> tuple[dict[str, Tensor], Matching]:
    """b's state dict permuted to match a's weights, and the `Matching` (permutations,
    objective, distance, sweeps of each restart).

    model: the architecture, traced on `example_input` for its permutation groups (or pass
    `spec`, e.g. from `permutation_spec`). a, b: modules or state dicts of that architecture.
    restarts: runs from the identity (the first) and from random permutations with random
    sweep orders (seeded by `seed`); the best objective is kept. The aligned b computes the
    same function as b."""
    if restarts < 1 or max_sweeps < 1:
        raise ValueError(f"restarts and max_sweeps must be >= 1, got {restarts}, {max_sweeps}")
    if spec is None:
        if model is None or example_input is None:
            raise ValueError(
                "weight_matching needs the permutation groups: pass spec=permutation_spec("
                "model, example_input), or model and example_input=<a batch of inputs>"
            )
        spec = permutation_spec(model, example_input)
    sa, sb = _state(a), _state(b)
    if set(sa) != set(sb):
        raise ValueError("a and b are not of one architecture: their state dicts differ in names")
    sa = {k: v.detach() for k, v in sa.items()}
    sb = {k: v.detach().to(next(iter(sa.values())).device) for k, v in sb.items()}
    names = _cost_tensors(spec, sa)
    generator = torch.Generator().manual_seed(seed)
    best: Any = None
    runs = []
    for restart in range(restarts):
        start = spec.identity() if restart == 0 else spec.random_permutations(generator)
        perms, sweeps, history = _run(spec, sa, sb, names, start, generator, max_sweeps)
        aligned = apply_permutation(spec, sb, perms)
        run = {
            "objective": history[-1],
            "distance": _distance(sa, aligned, names),
            "sweeps": sweeps,
        }
        runs.append(run)
        if best is None or run["objective"] > best[0]["objective"]:
            best = (run, perms, aligned, history)
    run, perms, aligned, history = best
    matching = Matching(perms, run["objective"], run["distance"], int(run["sweeps"]), runs, history)
    return aligned, matching


def permutation_distance(p: Mapping[str, Tensor], q: Mapping[str, Tensor]) -> float:
    """The fraction of units on which two sets of permutations disagree (0: the same)."""
    total = sum(len(v) for v in p.values())
    wrong = sum(int((p[g].cpu() != q[g].cpu()).sum()) for g in p)
    return wrong / max(total, 1)


def merge_many(
    model: nn.Module | None,
    networks: list[nn.Module | Mapping[str, Tensor]],
    *,
    spec: PermutationSpec | None = None,
    example_input: Tensor | None = None,
    max_rounds: int = 50,
    seed: int = 0,
) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
    """MergeMany (Ainsworth et al. 2023, Algorithm 3): align N networks to each other.

    In each round, in a random order, every network is weight-matched to the mean of the
    others (as they are aligned so far); rounds stop when no network's permutation changes.
    Returns the N aligned state dicts (each the same function as its network) and their mean
    (floating tensors averaged; others taken from the first)."""
    if len(networks) < 2:
        raise ValueError(f"merge_many needs two or more networks, got {len(networks)}")
    if spec is None:
        if model is None or example_input is None:
            raise ValueError("merge_many needs spec=... or model and example_input=...")
        spec = permutation_spec(model, example_input)
    states = [{k: v.detach() for k, v in _state(n).items()} for n in networks]
    aligned = [dict(s) for s in states]
    perms: list[dict[str, Tensor] | None] = [None] * len(states)
    generator = torch.Generator().manual_seed(seed)

    def mean_of(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {
            k: torch.stack([s[k] for s in items]).mean(0) if v.is_floating_point() else v
            for k, v in items[0].items()
        }

    for _ in range(max_rounds):
        changed = False
        for i in torch.randperm(len(states), generator=generator).tolist():
            target = mean_of([s for j, s in enumerate(aligned) if j != i])
            new, match = weight_matching(None, target, states[i], spec=spec)
            if perms[i] is None or any(
                not torch.equal(match.perms[g], perms[i][g]) for g in match.perms
            ):
                changed = True
            perms[i], aligned[i] = match.perms, new
        if not changed:
            break
    return aligned, mean_of(aligned)
