"""A permutation spec: which axes of which state-dict tensors move together when hidden
units are reordered (`modeconn.align.trace` derives one from the graph), how to apply one,
and the check that a spec keeps the network's function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

FIXED = 0  # the group of axes that are never permuted


class SpecError(ValueError):
    """A network whose permutation groups cannot be traced; the message names the op."""


@dataclass
class PermutationSpec:
    """Which axes of which tensors move together.

    groups: group name -> [(tensor name, axis, repeat, offset)]: the state-dict tensor's
        `axis` is permuted by the group's permutation, each unit owning `repeat` consecutive
        entries (repeat > 1 for a Linear after flattening a (C, H, W) map: H*W per channel),
        the group's units * repeat entries starting at `offset` (> 0, or shorter than the
        axis, for a slice: a layer reading a concatenation of several groups).
    sizes: group name -> number of units.
    fixed: (tensor name, axis) of every axis of size > 1 that no permutation touches (kernel
        axes, the input's and the logits' axes, what a grouped convolution constrains).
    buffers: tensors that are permuted but are not weights (BatchNorm's running statistics):
        never in a matching cost.
    taps: group -> [(node, kind, channel axis)]: the nodes of the traced graph whose outputs
        carry the group (kind "post": after a nonlinearity, "pre": after a layer, "stream":
        after a merge), where activation matching reads the units; empty for a hand-written spec.
    """

    groups: dict[str, list[tuple[str, int, int, int]]]
    sizes: dict[str, int]
    fixed: list[tuple[str, int]] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    taps: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls, groups: Mapping[str, Sequence[Sequence]], state: Mapping[str, Tensor]
    ) -> PermutationSpec:
        """A hand-written spec: {group: [(tensor name, axis), (tensor name, axis, repeat) or
        (tensor name, axis, repeat, offset)]}, checked against `state` (a state dict): a whole
        axis (two or three fields) has size units * repeat; a slice (four fields: the group's
        units * repeat entries from `offset` on) must fit in its axis, and its group needs
        one whole-axis entry to give its size."""
        out: dict[str, list[tuple[str, int, int, int]]] = {}
        sizes: dict[str, int] = {}
        for name, entries in groups.items():
            out[name] = []
            for entry in entries:
                if len(entry) not in (2, 3, 4):
                    raise SpecError(
                        f"group {name!r}: entry {tuple(entry)} is not (tensor, axis[, repeat[, "
                        "offset]])"
                    )
                tensor, axis, repeat, offset = (
                    (*entry, 1, 0)[:4] if len(entry) == 2 else (*entry, 0)[:4]
                )
                if tensor not in state:
                    raise SpecError(f"group {name!r}: {tensor!r} is not in the state dict")
                out[name].append((tensor, int(axis), int(repeat), int(offset)))
                if len(entry) == 4:
                    continue
                length = state[tensor].shape[axis]
                if length % repeat:
                    raise SpecError(f"group {name!r}: {tensor} axis {axis} ({length}) / {repeat}")
                units = length // repeat
                if sizes.setdefault(name, units) != units:
                    raise SpecError(
                        f"group {name!r}: {tensor} axis {axis} has {units} units, "
                        f"the group {sizes[name]}"
                    )
            for tensor, axis, repeat, offset in out[name]:
                if name not in sizes:
                    raise SpecError(
                        f"group {name!r} has only slices: give one whole axis for its size"
                    )
                if offset < 0 or offset + sizes[name] * repeat > state[tensor].shape[axis]:
                    raise SpecError(
                        f"group {name!r}: the slice of {tensor} axis {axis} from {offset} "
                        f"({sizes[name]} x {repeat}) does not fit its {state[tensor].shape[axis]}"
                    )
        touched = {(t, a) for entries in out.values() for t, a, _, _ in entries}
        fixed = [
            (t, a)
            for t, v in state.items()
            for a in range(v.ndim)
            if v.shape[a] > 1 and (t, a) not in touched and not t.endswith("num_batches_tracked")
        ]
        buffers = [t for t in state if t.endswith(("running_mean", "running_var"))]
        return cls(out, sizes, fixed, buffers)

    def random_permutations(self, generator: torch.Generator) -> dict[str, Tensor]:
        """One uniformly random permutation per group (int64 index tensors)."""
        return {g: torch.randperm(n, generator=generator) for g, n in self.sizes.items()}

    def identity(self) -> dict[str, Tensor]:
        return {g: torch.arange(n) for g, n in self.sizes.items()}


def permute_axis(
    value: Tensor, axis: int, perm: Tensor, repeat: int = 1, offset: int = 0
) -> Tensor:
    """`value` with its `axis` reordered so that unit i becomes unit perm[i] of the input
    (each unit `repeat` consecutive entries; the units from entry `offset` on, the rest of
    the axis unchanged)."""
    perm = perm.to(value.device)
    if repeat > 1:
        perm = (perm[:, None] * repeat + torch.arange(repeat, device=value.device)).reshape(-1)
    if offset or len(perm) != value.shape[axis]:
        index = torch.arange(value.shape[axis], device=value.device)
        index[offset : offset + len(perm)] = perm + offset
        perm = index
    return value.index_select(axis, perm)


def apply_permutation(
    spec: PermutationSpec, state: Mapping[str, Tensor], perms: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """A copy of the state dict `state` with every group's axes permuted by `perms` (group
    -> index tensor; a group missing from `perms` keeps its order). The network it loads into
    computes the same function (the spec's check)."""
    out = dict(state)
    for group, entries in spec.groups.items():
        if group not in perms:
            continue
        for tensor, axis, repeat, offset in entries:
            out[tensor] = permute_axis(out[tensor], axis, perms[group], repeat, offset)
    return out


def inverse(perm: Tensor) -> Tensor:
    """The permutation q with q[perm[i]] = i."""
    out = torch.empty_like(perm)
    out[perm] = torch.arange(len(perm), device=perm.device)
    return out


def check_spec(spec: PermutationSpec, model: nn.Module, example_input: Tensor, *, seed: int = 0):
    """Raise SpecError if permuting `model` by random permutations of `spec` changes its
    outputs on `example_input` (eval mode, and train mode with dropout off). The model runs
    on float64 copies of its state (`functional_call`); its own tensors are not touched."""
    perms = spec.random_permutations(torch.Generator().manual_seed(seed))
    state = {
        k: v.detach().to(torch.float64, copy=True) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }
    permuted = apply_permutation(spec, state, perms)
    like = next(iter(state.values()), example_input)
    x = example_input.to(like.device, torch.float64)
    modes = {m: m.training for m in model.modules()}
    try:
        for mode in ("eval", "train"):
            model.train(mode == "train")
            for m in model.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.eval()
            with torch.no_grad():
                a, b = (functional_call(model, s, (x,)) for s in (state, permuted))
            scale = a.abs().max().item() or 1.0
            worst = (a - b).abs().max().item()
            if worst > 1e-5 * scale:
                raise SpecError(
                    f"the traced permutation groups change {type(model).__name__}'s outputs in "
                    f"{mode} mode (by {worst:.3g}, outputs up to {scale:.3g}): an op was not "
                    "understood; write the groups with PermutationSpec.from_dict"
                )
    finally:
        for m, training in modes.items():
            m.training = training
