"""Activation matching (Ainsworth et al. 2023, Sec. 3.1; Li et al. 2016): pair b's units
with a's by how their activations correlate over the training data.

For each permutation group, the Pearson correlation between every unit of a and every unit
of b at the group's tap points (the traced graph's nodes that carry the group: after each
nonlinearity by default, after each layer with `where="pre"`), over the train inputs, with
the positions of a convolution's map as samples. A residual group has many taps; their
correlations are summed. One `linear_sum_assignment` per group maximises the matched total.
The statistics stream over batches in float64 (n, sums, sums of squares and cross-products),
so no activation is held beyond its batch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, fx, nn

from modeconn.align.spec import PermutationSpec, apply_permutation
from modeconn.align.trace import permutation_spec
from modeconn.align.weights import Matching, _cost_tensors, _distance, _objective, _state

WHERE = ("post", "pre")


class _Recorder(fx.Interpreter):
    """Runs a traced network and keeps the outputs of the nodes named in `keep`."""

    def __init__(self, module: fx.GraphModule, keep: set[str]):
        super().__init__(module)
        self.keep, self.seen = keep, {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.keep:
            self.seen[n.name] = out
        return out


def _units(x: Tensor, axis: int) -> Tensor:
    """(samples, units) float64: the channel axis last, every other axis a sample."""
    return x.detach().movedim(axis, -1).reshape(-1, x.shape[axis]).double()


class _Correlation:
    """Streaming Pearson correlation between the units of two activations (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.sa = self.sb = self.saa = self.sbb = self.sab = None

    def add(self, a: Tensor, b: Tensor) -> None:
        parts = (a.sum(0), b.sum(0), (a * a).sum(0), (b * b).sum(0), a.T @ b)
        if self.sa is None:
            self.sa, self.sb, self.saa, self.sbb, self.sab = parts
        else:
            self.sa, self.sb = self.sa + parts[0], self.sb + parts[1]
            self.saa, self.sbb, self.sab = (
                self.saa + parts[2],
                self.sbb + parts[3],
                self.sab + parts[4],
            )
        self.n += len(a)

    def value(self) -> Tensor:
        n = self.n
        mean_a, mean_b = self.sa / n, self.sb / n
        cov = self.sab / n - mean_a[:, None] * mean_b[None, :]
        std_a = (self.saa / n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sbb / n - mean_b**2).clamp_min(0).sqrt()
        return cov / (std_a[:, None] * std_b[None, :] + 1e-12)  # a dead unit correlates 0


def _inputs(data: Any, samples: int | None) -> Tensor:
    x = getattr(data, "train_x", data)
    if not isinstance(x, Tensor):
        raise ValueError("data must be a Dataset or an input tensor (N, ...)")
    return x[:samples] if samples is not None else x


def activation_matching(
    model: nn.Module | None,
    a: nn.Module | Mapping[str, Tensor],
    b: nn.Module | Mapping[str, Tensor],
    data: Any,
    *,
    spec: PermutationSpec | None = None,
    where: str = "post",
    samples: int | None = None,
    batch_size: int = 256,
) -> tuple[dict[str, Tensor], Matching]:
    """b's state dict permuted so that its units' activations correlate best with a's, and
    the `Matching` (objective: the summed correlation of the matched units, mean over the
    taps; distance: ||W_a - P(W_b)||).

    model: the architecture (a module; its structure is traced, its weights unused). a, b:
    modules or state dicts of it. data: a `Dataset` (its un-augmented train inputs) or inputs
    (N, ...); `samples` of them (None: all). where: "post" (after the nonlinearities; a group
    without one falls back to its merges, then its layers) or "pre" (after the layers).
    Networks run in eval mode."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {', '.join(WHERE)}, got {where!r}")
    if model is None:
        raise ValueError("activation_matching needs the architecture: pass model=<a module>")
    x = _inputs(data, samples)
    spec = spec or permutation_spec(model, x[:2])
    if not spec.taps:
        raise ValueError("the spec has no tap points (a hand-written spec): trace it instead")
    order = ("pre",) if where == "pre" else ("post", "stream", "pre")
    taps: dict[str, list[tuple[str, int]]] = {}
    for group, nodes in spec.taps.items():
        for kind in order:
            chosen = [(n, axis) for n, k, axis in nodes if k == kind]
            if chosen:
                taps[group] = chosen
                break
    keep = {n for nodes in taps.values() for n, _ in nodes}
    nets = []
    for state in (_state(a), _state(b)):
        net = copy.deepcopy(model)
        net.load_state_dict(state)
        nets.append(_Recorder(fx.symbolic_trace(net.eval()), keep))
    stats = {n: _Correlation() for n in keep}
    device = next(iter(_state(a).values())).device
    with torch.no_grad():
        for batch in torch.split(x, batch_size):
            batch = batch.to(device)
            for rec in nets:
                rec.seen = {}
                rec.run(batch)
            for nodes in taps.values():
                for name, axis in nodes:
                    stats[name].add(
                        _units(nets[0].seen[name], axis), _units(nets[1].seen[name], axis)
                    )
    perms, total = {}, 0.0
    for group, nodes in taps.items():
        corr = sum(stats[name].value() for name, _ in nodes)
        rows, cols = linear_sum_assignment(corr.cpu().numpy(), maximize=True)
        perms[group] = torch.as_tensor(cols, dtype=torch.int64)
        total += float(corr[rows, cols].sum()) / len(nodes)
    sa = _state(a)
    aligned = apply_permutation(spec, _state(b), perms)
    names = _cost_tensors(spec, sa)
    run = {"objective": total, "distance": _distance(sa, aligned, names), "sweeps": 1}
    matching = Matching(perms, total, run["distance"], 1, [run], [_objective(sa, aligned, names)])
    return aligned, matching
