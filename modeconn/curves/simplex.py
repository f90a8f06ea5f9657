"""Simplexes and simplicial complexes of networks: mode-connecting volumes (Benton, Maddox,
Lotfi, Wilson 2021, "Loss Surface Simplexes for Mode Connecting Volumes and Fast Ensembling").

A `Simplex` is every convex combination of its k vertices; SPRO grows one from a trained
network by `add_vertex()` (each new vertex starts at the centroid, the older ones frozen) and
trains the new vertex on the loss averaged over points sampled uniformly in the simplex, with a
regulariser that rewards volume (`volume_penalty`). A `SimplicialComplex` is several simplexes
sharing vertices: "connectors" joining independently trained networks. Both wrap any
`nn.Module` (see `modeconn.curves.vertices`); their points are (k,) barycentric coefficients.

Training: build the optimiser on the trainable vertices only,

    optimizer = torch.optim.SGD(simplex.free_vertices.parameters(), lr, momentum, weight_decay)

(fixed vertices are buffers, out of its reach), and build it again after `add_vertex()`: the
vertices are new tensors then, and the old optimiser would update tensors no longer used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modeconn.curves.vertices import VertexSet, dirichlet
from modeconn.curves.volume import volume_penalty
from modeconn.curves.weights import StateLike


class Simplex(VertexSet):
    """A simplex of networks: phi(c) = sum_i c_i w_i over k vertices, c on the simplex.

    Args:
        model: any network; deep-copied, used for its structure and its (shared) buffers.
        vertices: k state dicts or modules of that architecture, one per vertex.
        fixed: one bool per vertex (default: none fixed); fixed vertices are buffers, the
            others trainable (`free_vertices`).
    """

    kind = "simplex"

    def __init__(
        self, model: nn.Module, vertices: Sequence[StateLike], fixed: Sequence[bool] | None = None
    ):
        super().__init__(model, vertices, fixed)

    def sample_coefficients(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n points uniform on the simplex, Dirichlet(1, ..., 1): (n, k) float64 coefficients,
        each row >= 0 summing to 1, drawn from `generator` (default: the torch RNG)."""
        return dirichlet(n, self.num_vertices, generator)

    def log_volume(self) -> Tensor:
        """log V of the simplex (its k - 1 dimensional volume), a float64 scalar that is
        differentiable with respect to the trainable vertices: 0.5 * logdet(G) - log((k-1)!),
        G the Gram matrix of the edges w_i - w_0, summed parameter by parameter in float64.
        -inf, with a zero gradient, for a degenerate simplex (a duplicated vertex, or one just
        added at the centroid)."""
        return self._log_volume(range(self.num_vertices))

    def volume_penalty(self, lam: float, reference: bool = False) -> Tensor:
        """The regulariser to add to the loss: -lam * log V (`reference=True`: Benton et al.'s
        -lam * log(V^2 + 1e-4)); see `modeconn.curves.volume.volume_penalty`."""
        return volume_penalty(self.log_volume(), lam, reference)

    @torch.no_grad()
    def add_vertex(self) -> int:
        """Append a trainable vertex at the centroid of the current ones and freeze every older
        vertex (SPRO's step, as in Benton et al.). Returns the new vertex's index.

        The vertices are stored anew: build the optimiser again (on `free_vertices`) after
        this call. The grown simplex is degenerate until the new vertex moves (log V = -inf).
        """
        stacks = self.stacked()
        grown = {
            name: torch.cat([stack, stack.double().mean(0).to(stack.dtype)[None]])
            for name, stack in stacks.items()
        }
        k = self.num_vertices
        self._store(grown, (True,) * k + (False,))
        self._bn_record = None
        return k


class SimplicialComplex(VertexSet):
    """Simplexes sharing vertices, e.g. trained networks (fixed) joined through trainable
    connectors: `SimplicialComplex(model, [w1, w2, w3, c], [(0, 1, 3), (1, 2, 3)], fixed=[True,
    True, True, False])`.

    A point is a (k,) coefficient vector over all k vertices, zero outside one simplex. Points
    are drawn uniformly over the complex: a simplex with probability proportional to its
    volume (Benton et al.'s code picks one uniformly), then Dirichlet(1, ..., 1) within it.
    Every simplex is regularised (their code regularises only the first).

    Args:
        model: any network; deep-copied, used for its structure and its (shared) buffers.
        vertices: k state dicts or modules of that architecture.
        simplexes: tuples of vertex indices, all of one size (volumes of one dimension).
        fixed: one bool per vertex (default: none fixed).
    """

    kind = "complex"

    def __init__(
        self,
        model: nn.Module,
        vertices: Sequence[StateLike],
        simplexes: Sequence[Sequence[int]],
        fixed: Sequence[bool] | None = None,
    ):
        super().__init__(model, vertices, fixed)
        self.simplexes = _check_simplexes(simplexes, self.num_vertices)
        self._choice: tuple[tuple, Tensor] | None = None  # (versions, probabilities)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, simplexes={list(self.simplexes)}"

    def log_volume(self, simplex: int | None = None) -> Tensor:
        """log V of simplex `simplex` (a float64 scalar), or of every simplex ((S,) tensor);
        differentiable, -inf with a zero gradient where degenerate (see `Simplex.log_volume`)."""
        if simplex is not None:
            return self._log_volume(self.simplexes[simplex])
        return torch.stack([self._log_volume(s) for s in self.simplexes])

    @torch.no_grad()
    def probabilities(self) -> Tensor:
        """The probability of choosing each simplex, proportional to its volume: (S,) float64
        on the CPU. Uniform when every simplex is degenerate (connectors not yet moved)."""
        versions = self._versions()
        if self._choice is None or self._choice[0] != versions:
            log_v = self.log_volume().cpu()
            if bool(torch.isinf(log_v).all()):
                p = torch.full_like(log_v, 1.0 / len(log_v))
            else:
                p = torch.softmax(log_v, 0)  # V_s / sum V, without overflow
            self._choice = (versions, p)
        return self._choice[1]

    def choose_simplexes(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n simplex indices (n,) drawn with probability proportional to volume."""
        p = self.probabilities()
        if generator is not None:
            p = p.to(generator.device)
        return torch.multinomial(p, n, replacement=True, generator=generator)

    def sample_coefficients(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n points uniform over the complex: (n, k) float64 coefficients, each row supported
        on one simplex (chosen by volume) and Dirichlet(1, ..., 1) within it."""
        choice = self.choose_simplexes(n, generator)
        inner = dirichlet(n, len(self.simplexes[0]), generator)
        members = torch.tensor(self.simplexes, device=choice.device)[choice]  # (n, m)
        out = torch.zeros((n, self.num_vertices), dtype=torch.float64, device=choice.device)
        return out.scatter_(1, members, inner)

    def volume_penalty(self, lam: float, reference: bool = False) -> Tensor:
        """The regulariser over every simplex: the sum of each one's -lam * log V (or the
        reference form); see `modeconn.curves.volume.volume_penalty`."""
        return volume_penalty(self.log_volume(), lam, reference)


def _check_simplexes(simplexes: Sequence[Sequence[int]], k: int) -> tuple[tuple[int, ...], ...]:
    """Vertex-index tuples, validated: in range, no vertex twice, no simplex twice, one size."""
    out = tuple(tuple(int(i) for i in s) for s in simplexes)
    if not out:
        raise ValueError("a complex needs simplexes: pass vertex-index tuples, e.g. [(0, 1, 3)]")
    sizes = sorted({len(s) for s in out})
    if len(sizes) > 1 or sizes[0] < 1:
        raise ValueError(
            f"every simplex must have the same number (>= 1) of vertices, so that their volumes "
            f"compare, got sizes {sizes}"
        )
    seen = set()
    for s in out:
        wrong = [i for i in s if not 0 <= i < k]
        if wrong:
            raise ValueError(
                f"simplex {s} names vertex {wrong[0]}, but the vertices are 0..{k - 1}"
            )
        if len(set(s)) < len(s):
            raise ValueError(f"simplex {s} names a vertex twice")
        if frozenset(s) in seen:
            raise ValueError(f"simplex {s} is listed twice")
        seen.add(frozenset(s))
    return out
