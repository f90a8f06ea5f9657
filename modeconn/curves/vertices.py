"""Networks spanned by vertices in weight space: how `Simplex` and `SimplicialComplex` store
their vertices and run the network at a point.

A point is one coefficient per vertex, c_i >= 0 with sum_i c_i = 1 (barycentric coordinates):

    phi(c) = sum_i c_i w_i,   dL/dw_i = c_i * dL/dphi(c)

Each network parameter's vertices are stacked along a first axis: the fixed ones in a buffer
(no weight decay, no optimiser state), the trainable ones in an `nn.Parameter`, both of shape
(m, *param.shape). The base network runs on phi(c) through `torch.func.functional_call`, as a
`Curve` does; no layer is rewritten (Benton et al. 2021's code rewrites every layer as a
"simplex twin" and reads vertices back by parameter order).

BatchNorm running statistics are not part of a vertex: the wrapped network's buffers are
shared by every point and recomputed at each evaluated one (`network_at(c, data)`,
`recompute_bn(c, data)`); an eval-mode call refuses statistics recomputed elsewhere.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modeconn.curves.phi import combine_terms
from modeconn.curves.volume import log_volume
from modeconn.curves.weights import StateLike, WeightSpace
from modeconn.data.tasks import CLASSIFICATION, task_loss
from modeconn.models.batchnorm import batchnorm_layers, statistics_pass

CoefficientsLike = Tensor | Sequence[float]


def dirichlet(n: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """n points uniform on the simplex of k vertices, Dirichlet(1, ..., 1): shape (n, k),
    float64, on the generator's device (the CPU without one).

    E_i = -log(1 - U_i), U_i ~ U[0, 1), are Exp(1) and E / sum(E) is Dirichlet(1, ..., 1)
    (Benton et al.'s -log U normalised; 1 - U keeps the log finite).
    """
    if n < 0 or k < 1:
        raise ValueError(f"need n >= 0 points of k >= 1 vertices, got n={n}, k={k}")
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((n, k), generator=generator, dtype=torch.float64, device=device)
    e = -torch.log1p(-u)
    total = e.sum(1, keepdim=True)
    return torch.where(total > 0, e / total, 1.0 / k)  # all U = 0: probability 2^(-53 k)


def _key(name: str) -> str:
    return name.replace(".", "-")  # a module attribute's name cannot hold a dot


class _Stacks(nn.Module):
    """One (m, *shape) tensor per network parameter: buffers, or trainable parameters."""

    def __init__(self, stacks: Mapping[str, Tensor], trainable: bool):
        super().__init__()
        for name, stack in stacks.items():
            if trainable:
                self.register_parameter(_key(name), nn.Parameter(stack))
            else:
                self.register_buffer(_key(name), stack)

    def __getitem__(self, name: str) -> Tensor:
        return getattr(self, _key(name))


class VertexSet(nn.Module):
    """Vertices in the weight space of `model`; subclasses say which points they span.

    Args:
        model: any network; deep-copied, used for its structure and its (shared) buffers.
        vertices: k state dicts or modules of that architecture, one per vertex.
        fixed: one bool per vertex (default: none fixed); fixed vertices are buffers.
    """

    kind = "vertices"

    def __init__(
        self, model: nn.Module, vertices: Sequence[StateLike], fixed: Sequence[bool] | None = None
    ):
        super().__init__()
        if isinstance(vertices, (nn.Module, Mapping)):
            raise ValueError("vertices must be a list of state dicts or modules, one per vertex")
        vertices = list(vertices)
        if not vertices:
            raise ValueError("no vertices: pass a list of state dicts or modules, one per vertex")
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.space = WeightSpace.from_module(self.model)
        if len({_key(n) for n in self.space.names}) < len(self.space.names):
            raise ValueError("parameter names that differ only by '.' and '-' are not supported")
        known = set(self.model.state_dict())
        for i, v in enumerate(vertices):
            _check_no_extra(v, known, i)
        checked = [self.space.check(v, f"vertex {i}") for i, v in enumerate(vertices)]
        stacks = {}
        for name, ref in self.model.named_parameters():
            stack = torch.stack([c[name].detach().to(ref.device, ref.dtype) for c in checked])
            _check_finite(stack, name)
            stacks[name] = stack
        self._store(stacks, _check_fixed(fixed, len(vertices)))
        self.last_coefficients: tuple[float, ...] | None = None
        # (coefficients, versions) of the last `recompute_bn`, as `Curve` keeps it
        self._bn_record: tuple[tuple[float, ...], tuple] | None = None

    def _store(self, stacks: Mapping[str, Tensor], fixed: Sequence[bool]) -> None:
        """Keep each (k, *shape) stack as its fixed rows (a buffer) and trainable rows (a
        parameter); new tensors, so an optimiser must be built again afterwards."""
        self.fixed = tuple(bool(f) for f in fixed)
        groups = {True: [], False: []}
        self._rows = []  # vertex i -> (fixed?, row in its group)
        for i, f in enumerate(self.fixed):
            self._rows.append((f, len(groups[f])))
            groups[f].append(i)
        picked: dict[bool, dict[str, Tensor]] = {True: {}, False: {}}
        for f, rows in groups.items():
            index = torch.tensor(rows, dtype=torch.long)
            for name, stack in stacks.items():
                picked[f][name] = stack.detach()[index.to(stack.device)]  # a new tensor
        self.fixed_vertices = _Stacks(picked[True], trainable=False)
        self.free_vertices = _Stacks(picked[False], trainable=True)

    @property
    def num_vertices(self) -> int:
        return len(self.fixed)

    def extra_repr(self) -> str:
        return f"vertices={self.num_vertices}, fixed={list(self.fixed)}, dim={self.space.size}"

    def _row(self, i: int, name: str) -> Tensor:
        f, row = self._rows[i]
        return (self.fixed_vertices if f else self.free_vertices)[name][row]

    def vertex(self, i: int) -> dict[str, Tensor]:
        """Vertex i's weights as a name->tensor dict (views of the stored stacks)."""
        if not 0 <= i < self.num_vertices:
            raise IndexError(f"vertex {i} out of range: there are {self.num_vertices}")
        return {n: self._row(i, n) for n in self.space.names}

    def stacked(self) -> dict[str, Tensor]:
        """Every vertex of each parameter in vertex order: name -> (k, *shape) tensor (a copy,
        differentiable with respect to the trainable vertices)."""
        k = range(self.num_vertices)
        return {n: torch.stack([self._row(i, n) for i in k]) for n in self.space.names}

    def _check_coefficients(self, coefficients: CoefficientsLike) -> tuple[float, ...]:
        c = torch.as_tensor(coefficients, dtype=torch.float64).detach().cpu()
        k = self.num_vertices
        if c.shape != (k,):
            raise ValueError(
                f"coefficients must have shape ({k},), one per vertex, got {tuple(c.shape)} "
                f"(sample_coefficients(n) gives (n, {k}): pass one row)"
            )
        if (
            not (bool(torch.isfinite(c).all()) and bool((c >= 0).all()))
            or abs(float(c.sum()) - 1.0) > 1e-5
        ):
            raise ValueError(
                f"coefficients must be a point of the simplex (each >= 0, summing to 1), "
                f"got {c.tolist()}"
            )
        return tuple(c.tolist())

    def weights(self, coefficients: CoefficientsLike) -> dict[str, Tensor]:
        """phi(c) = sum_i c_i w_i as a name->tensor dict in the wrapped network's names.

        `coefficients`: shape (k,). Vertices with c_i = 0 are skipped, so a one-hot c gives
        that vertex exactly; the sum runs as in-place lerps (`combine_terms`), so equal
        vertices give that same network exactly at every point.
        """
        c = self._check_coefficients(coefficients)
        return {
            n: combine_terms([(self._row(i, n), ci) for i, ci in enumerate(c)])
            for n in self.space.names
        }

    def point(self, coefficients: CoefficientsLike) -> Tensor:
        """phi(c) as one flat vector (D,), differentiable with respect to the trainable
        vertices (a copy of the whole network: the geometry's form, not the training's)."""
        return torch.cat([w.reshape(-1) for w in self.weights(coefficients).values()])

    def sample_coefficients(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n points, (n, k) coefficients; defined by each kind of vertex set."""
        raise NotImplementedError

    def forward(self, x: Tensor, coefficients: CoefficientsLike | None = None) -> Tensor:
        """Network output at phi(c). In training mode c=None draws one point (the torch RNG).

        In eval mode a network with BatchNorm needs statistics recomputed at this point first
        (`recompute_bn(c, data)`), or it raises: `network_at(c, data)` is the network at phi(c)
        as a module of its own.
        """
        if coefficients is None:
            if not self.training:
                raise ValueError("pass coefficients in eval mode (None samples them in training)")
            coefficients = self.sample_coefficients(1)[0]
        c = self.last_coefficients = self._check_coefficients(coefficients)
        if not self.training and batchnorm_layers(self.model):
            self._check_bn(c)
        return functional_call(self.model, self.weights(c), (x,))

    def sample_loss(
        self,
        x: Tensor,
        y: Tensor,
        samples: int = 5,
        *,
        task: str = CLASSIFICATION,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(the task loss averaged over `samples` points drawn for this batch, the outputs
        stacked as (samples, N, ...)), for a training step on the trainable vertices.

        The mean, where Benton et al.'s `train_epoch_volume` sums the 5 samples' losses (its
        `acc_loss.div(nsample)` discards its result), which scales their learning rate by 5.
        In training mode each sample's pass also updates the shared BatchNorm running
        statistics; they are recomputed per point at evaluation.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1 points per batch, got {samples}")
        points = self.sample_coefficients(samples, generator)
        outputs = torch.stack([self(x, c) for c in points])
        return torch.stack([task_loss(task, out, y) for out in outputs]).mean(), outputs

    def _log_volume(self, indices: Iterable[int]) -> Tensor:
        """log V of the simplex of the vertices `indices`, from their edges' Gram matrix
        (`modeconn.curves.volume.log_volume`, parameter by parameter in float64)."""
        indices = list(indices)
        return log_volume([self._row(i, n) for i in indices] for n in self.space.names)

    def _versions(self) -> tuple:
        stacks = (*self.fixed_vertices.buffers(), *self.free_vertices.parameters())
        buffers = [b for m in batchnorm_layers(self.model) for b in (m.running_mean, m.running_var)]
        return (*(s._version for s in stacks), *((id(b), b._version) for b in buffers))

    def _check_bn(self, c: tuple[float, ...]) -> None:
        record = self._bn_record
        if record is not None and record[0] == c and record[1] == self._versions():
            return
        why = (
            "they were never recomputed for these vertices"
            if record is None
            else f"they were recomputed at the point {list(record[0])}"
            if record[0] != c
            else "the vertices or the statistics changed since they were recomputed"
        )
        raise ValueError(
            f"the BatchNorm statistics of this network are not those of the point {list(c)}: "
            f"{why}. Call network_at(c, data) for the network at that point (a module of its "
            "own), or recompute_bn(c, data) before calling it at c"
        )

    @torch.no_grad()
    def recompute_bn(self, coefficients: CoefficientsLike, data, **kwargs) -> int:
        """Recompute the wrapped network's BatchNorm statistics at phi(c) on `data` (a
        `Dataset`: its un-augmented train inputs; or inputs (N, ...) / batches), so that an
        eval-mode call at c is the network at phi(c). kwargs go to `statistics_pass`
        (batch_size, num_samples, exact). Returns the number of samples used."""
        c = self._check_coefficients(coefficients)
        inputs = getattr(data, "train_x", data)
        samples = statistics_pass(self.model, inputs, self.weights(c), **kwargs)
        self._bn_record = (c, self._versions())
        return samples

    @torch.no_grad()
    def network_at(self, coefficients: CoefficientsLike, data=None, **kwargs) -> nn.Module:
        """The network at phi(c) as a standalone module in eval mode: a copy of the wrapped
        network with phi(c)'s weights (trainable again) and, if it has BatchNorm layers, their
        statistics recomputed on `data` (as in `recompute_bn`)."""
        weights = self.weights(coefficients)
        net = copy.deepcopy(self.model)
        for name, value in weights.items():
            param = net.get_parameter(name)
            param.copy_(value)
            param.requires_grad_(True)
        if batchnorm_layers(net):
            if data is None:
                raise ValueError(
                    "the network has BatchNorm layers: pass data (a Dataset or train inputs) "
                    "to recompute their statistics at this point, e.g. network_at(c, data)"
                )
            statistics_pass(net, getattr(data, "train_x", data), **kwargs)
        return net.eval()


def _check_fixed(fixed: Sequence[bool] | None, k: int) -> tuple[bool, ...]:
    if fixed is None:
        return (False,) * k
    fixed = tuple(bool(f) for f in fixed)
    if len(fixed) != k:
        raise ValueError(f"fixed has {len(fixed)} entries for {k} vertices: pass one per vertex")
    return fixed


def _check_no_extra(vertex: StateLike, known: set[str], i: int) -> None:
    """Refuse a vertex holding a tensor the model has not (another architecture: a missing
    tensor or another shape is caught by `WeightSpace.check`)."""
    names = [n for n, _ in vertex.named_parameters()] if isinstance(vertex, nn.Module) else vertex
    extra = [n for n in names if n not in known]
    if extra:
        raise ValueError(
            f"vertex {i} does not match the architecture: it has tensor '{extra[0]}', which the "
            "model has not. Were these weights trained with another model?"
        )


def _check_finite(stack: Tensor, name: str) -> None:
    """Refuse vertex weights with NaN or inf, naming the vertex and the tensor."""
    bad = (~torch.isfinite(stack)).reshape(len(stack), -1).sum(1)
    for i, count in enumerate(bad.tolist()):
        if count:
            raise ValueError(
                f"vertex {i} is not finite: tensor '{name}' holds {count} NaN or inf values of "
                f"{stack[i].numel()}. Check that network or checkpoint (did its training "
                "diverge?) before connecting it"
            )
