"""Training mode-connecting volumes: SPRO simplexes and complexes of connectors (Benton, Maddox,
Lotfi, Wilson 2021, "Loss Surface Simplexes for Mode Connecting Volumes and Fast Ensembling").

SPRO grows a simplex from one trained network w_0 a vertex at a time: the new vertex starts
at the centroid of the current ones, the older ones are frozen, and the new one is trained for
`epochs_per_vertex` epochs on

    L = 1/S sum_s loss(phi(c_s)) - lam * log V,   c_s ~ Dirichlet(1, ..., 1), s = 1..S

(`Simplex.sample_loss` and `volume_penalty`), before the next vertex is added. A complex
between N trained networks grows shared connectors the same way: the j-th connector joins
every simplex, which becomes (w_i, c_1, ..., c_j), and starts at the centroid of all current
vertices, as in their `complex_iterative.py`.

Each new vertex is one stage of the shared SGD loop (`modeconn.training.fit`): a fresh SGD
optimiser on that vertex (momentum, weight decay of the vertex, as theirs), torch's
CosineAnnealingLR schedule stepped once per epoch, and a checkpoint of its own,
`<checkpoint>-vertex<k>.pt`, so a rerun skips the finished stages and resumes the one it
stopped in; a stage of other settings or other fixed vertices is refused.

Deliberate differences from g-benton/loss-surface-simplexes: the loss is the mean over the S
samples (theirs sums them, which scales the learning rate by S); a complex samples its
simplexes by volume and regularises every one (theirs picks one uniformly and regularises the
first), its first connector included (theirs trains it without the volume term); the weight
lam is given explicitly and recorded, their normalisation (`reference=True`: lam =
`reference_lambda`, the term -lam * log(V^2 + 1e-4)) is an option.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modeconn.curves.simplex import Simplex, SimplicialComplex
from modeconn.curves.vertices import VertexSet
from modeconn.curves.volume import reference_lambda
from modeconn.curves.weights import StateLike, fingerprint
from modeconn.data.tasks import task_of
from modeconn.io.checkpoints import resume_checkpoint
from modeconn.training import TrainConfig, TrainResult, fit

KIND = "simplex"  # the checkpoint kind of a vertex stage


@dataclass
class SimplexConfig:
    """How a simplex or a complex is grown and trained. The defaults are Benton et al.'s
    CIFAR-10 schedule (a base and 4 added vertices, or 3 connectors, 10 epochs each, 5
    samples per batch, SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine), with an
    explicit volume weight.

    vertices: SPRO: the simplex's vertices, the trained network included (>= 2).
    connectors: a complex: the connector vertices shared by every simplex (>= 1).
    lam: the weight of -lam * log V (0: no volume term), recorded with every stage.
    reference: use Benton et al.'s normalisation instead: lam = `reference_lambda(model, m,
        lmbd)` for simplexes of m vertices, and the term -lam * log(V^2 + 1e-4).
    """

    vertices: int = 5
    connectors: int = 3
    epochs_per_vertex: int = 10
    samples: int = 5
    lam: float = 1e-3
    reference: bool = False
    lmbd: float = 1e-6
    lr: float = 0.01
    momentum: float = 0.9
    wd: float = 5e-4
    batch_size: int = 128
    seed: int = 1
    augment: bool = True
    save_every: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        least = {"vertices": 2, "connectors": 1, "epochs_per_vertex": 1, "samples": 1}
        for name, low in least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("lam", "lmbd"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        self.train_config()  # the SGD settings are checked where they are defined

    def train_config(self) -> TrainConfig:
        """The `fit` settings of one vertex stage."""
        return TrainConfig(
            epochs=self.epochs_per_vertex,
            lr=self.lr,
            momentum=self.momentum,
            wd=self.wd,
            batch_size=self.batch_size,
            seed=self.seed,
            save_every=self.save_every,
            augment=self.augment,
            progress=self.progress,
        )


def cosine_lr(epoch: float, epochs: int, lr: float) -> float:
    """The learning rate of a stage at the fractional epoch `epoch`: torch's
    CosineAnnealingLR(T_max=epochs) stepped once per epoch, as Benton et al. step it,
    lr * (1 + cos(pi * floor(epoch) / epochs)) / 2."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * math.floor(epoch) / epochs))


@dataclass
class SimplexRun:
    """What `train_simplex` returns: the trained `Simplex` or `SimplicialComplex` and, per
    vertex stage, what it did: the vertex index, its lam, its checkpoint, the epoch it resumed
    from and its history (per epoch: lr, train_loss with the volume term, data_loss without
    it, train_error of one sampled point per batch, log_volume at the epoch's end: of the
    whole complex for a complex)."""

    simplex: VertexSet
    stages: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def epochs(self) -> int:
        """The epochs of all stages, the base network's training not counted."""
        return sum(len(stage["history"]) for stage in self.stages)


class SampleStep(nn.Module):
    """`sample_loss` as a module's forward (loss, one sampled point's outputs), so that
    DistributedDataParallel can wrap it."""

    def __init__(self, vertex_set: VertexSet, samples: int, task: str):
        super().__init__()
        self.vertex_set, self.samples, self.task = vertex_set, samples, task

    def forward(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        loss, outputs = self.vertex_set.sample_loss(
            x, y, self.samples, task=self.task, generator=generator
        )
        return loss, outputs[0]


def stage_checkpoint(checkpoint: str | Path, vertex: int) -> Path:
    """The checkpoint of the stage that trains vertex `vertex`: <stem>-vertex<k><suffix>."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}-vertex{vertex}{path.suffix or '.pt'}")


def base_vertices(model: nn.Module, networks: Sequence[StateLike]) -> VertexSet:
    """The fixed vertices a run grows from: a one-vertex `Simplex` of one trained network,
    or a `SimplicialComplex` of N networks, each its own 0-simplex."""
    if isinstance(networks, (nn.Module, Mapping)) or not list(networks):
        raise ValueError(
            "networks must be a non-empty list of trained networks (modules or state dicts): "
            "[net] grows a simplex from one network (SPRO), [a, b, c] a complex between them"
        )
    networks = list(networks)
    n = len(networks)
    if n == 1:
        return Simplex(model, networks, fixed=[True])
    return SimplicialComplex(model, networks, [(i,) for i in range(n)], fixed=[True] * n)


@torch.no_grad()
def grow(vertex_set: VertexSet) -> VertexSet:
    """One more trainable vertex at the centroid of all vertices, every older one frozen:
    `Simplex.add_vertex` (in place), or for a complex a new complex whose connector joins
    every simplex (Benton et al.'s `add_vert(to_simplexes=all)`)."""
    if isinstance(vertex_set, Simplex):
        vertex_set.add_vertex()
        return vertex_set
    stacks = vertex_set.stacked()
    k = vertex_set.num_vertices
    vertices = [{n: s[i] for n, s in stacks.items()} for i in range(k)]
    vertices.append({n: s.double().mean(0).to(s.dtype) for n, s in stacks.items()})
    simplexes = [(*s, k) for s in vertex_set.simplexes]
    return SimplicialComplex(vertex_set.model, vertices, simplexes, fixed=[True] * k + [False])


def vertex_names(vertex_set: VertexSet) -> list[str]:
    """Names for figures and reports: a simplex's "w0" (the trained network), "v1", "v2", ...;
    a complex's trained networks "w1", ..., "wN" and connectors (the vertices of every simplex,
    when there are several) "c1", ..., "cm"."""
    k = vertex_set.num_vertices
    if isinstance(vertex_set, Simplex):
        return ["w0", *(f"v{i}" for i in range(1, k))]
    shared = set.intersection(*(set(s) for s in vertex_set.simplexes))
    shared = shared if len(vertex_set.simplexes) > 1 else set()
    names, counts = [], {"w": 0, "c": 0}
    for i in range(k):
        prefix = "c" if i in shared else "w"
        counts[prefix] += 1
        names.append(f"{prefix}{counts[prefix]}")
    return names


def _lam(vertex_set: VertexSet, model: nn.Module, config: SimplexConfig) -> float:
    if not config.reference:
        return float(config.lam)
    size = len(vertex_set.simplexes[0]) if isinstance(vertex_set, SimplicialComplex) else None
    return reference_lambda(model, size or vertex_set.num_vertices, config.lmbd)


def _describe(vertex_set: VertexSet, config: SimplexConfig, lam: float) -> dict[str, Any]:
    """What a stage is, beyond the SGD settings that `fit` records: compared on resume."""
    out = {
        "type": vertex_set.kind,
        "vertex": vertex_set.num_vertices - 1,
        "fixed": list(vertex_set.fixed),
        "samples": config.samples,
        "lam": lam,
        "reference": config.reference,
        "schedule": "cosine",
    }
    if config.reference:
        out["lmbd"] = config.lmbd
    if isinstance(vertex_set, SimplicialComplex):
        out["simplexes"] = [list(s) for s in vertex_set.simplexes]
    return out


def _check_stage(path: Path | None, described: Mapping[str, Any]) -> None:
    """Refuse to resume a stage checkpoint written with other simplex settings."""
    if path is None or not path.exists():
        return
    stored = resume_checkpoint(path, KIND).meta.get("simplex") or {}
    differing = sorted(k for k in set(stored) | set(described) if stored.get(k) != described.get(k))
    if differing:
        details = "; ".join(
            f"{k}: stored {stored.get(k)!r}, now {described.get(k)!r}" for k in differing
        )
        raise ValueError(
            f"cannot resume from '{path}': its simplex stage differs in {details}. Use the same "
            "settings to resume, or another checkpoint path (or delete the file) to start afresh."
        )


def _stage_state(vertex_set: VertexSet) -> tuple[Callable, Callable]:
    """(state_fn, load_fn) of a stage for `fit`: every vertex stacked per parameter
    ("vertices.<name>", (k, *shape)) and the network's buffers ("buffers.<name>")."""
    fixed_rows = [i for i, f in enumerate(vertex_set.fixed) if f]
    free_rows = [i for i, f in enumerate(vertex_set.fixed) if not f]

    def state() -> dict[str, Tensor]:
        out = {f"vertices.{n}": s for n, s in vertex_set.stacked().items()}
        out.update({f"buffers.{n}": b for n, b in vertex_set.model.named_buffers()})
        return out

    @torch.no_grad()
    def load(saved: Mapping[str, Tensor]) -> None:
        for name in vertex_set.space.names:
            stack = saved.get(f"vertices.{name}")
            if stack is None or len(stack) != vertex_set.num_vertices:
                raise ValueError(
                    f"this simplex checkpoint holds no {vertex_set.num_vertices} vertices of "
                    f"tensor '{name}': it belongs to another run; delete it to start afresh"
                )
            fixed = vertex_set.fixed_vertices[name]
            if not torch.equal(stack[fixed_rows].to(fixed), fixed):
                raise ValueError(
                    f"this simplex checkpoint grows from other fixed vertices (tensor '{name}' "
                    "differs); use another checkpoint path, or delete it to start afresh"
                )
            vertex_set.free_vertices[name].copy_(stack[free_rows])
        for name, buffer in vertex_set.model.named_buffers():
            if f"buffers.{name}" in saved:
                buffer.copy_(saved[f"buffers.{name}"])

    return state, load


def train_stage(
    vertex_set: VertexSet,
    data,
    config: SimplexConfig,
    lam: float,
    *,
    checkpoint: Path | None = None,
    meta: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
) -> TrainResult:
    """Train the trainable vertices of `vertex_set` for `config.epochs_per_vertex` epochs on
    the loss averaged over `config.samples` points per batch plus -lam * log V (resumable
    from `checkpoint`, `fit`)."""
    described = _describe(vertex_set, config, lam)
    _check_stage(checkpoint, described)
    step_module = SampleStep(vertex_set, config.samples, task_of(data))
    sums = {"data": 0.0, "seen": 0}

    def step(net: nn.Module, x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        loss, outputs = net(x, y, g)
        sums["data"] += loss.item() * len(y)
        sums["seen"] += len(y)
        if lam:
            loss = loss + vertex_set.volume_penalty(lam, config.reference)
        return loss, outputs

    def note(epoch: int, record: dict[str, float]) -> None:
        with torch.no_grad():
            log_v = vertex_set.log_volume().reshape(-1)
        record["data_loss"] = sums["data"] / max(sums["seen"], 1)
        record["log_volume"] = float(torch.logsumexp(log_v, 0))
        sums.update(data=0.0, seen=0)

    epochs = config.epochs_per_vertex
    state_fn, load_fn = _stage_state(vertex_set)
    return fit(
        step_module,
        list(vertex_set.free_vertices.parameters()),
        step,
        data,
        config.train_config(),
        meta={
            "kind": KIND,
            **(meta or {}),
            "start": fingerprint(*vertex_set.fixed_vertices.buffers()),
            "simplex": described,
        },
        state_fn=state_fn,
        load_fn=load_fn,
        checkpoint=checkpoint,
        weight_decay=config.wd,
        callbacks=[note, *callbacks],
        lr_fn=lambda e: cosine_lr(e, epochs, config.lr),
        broadcast_buffers=False,  # the fixed vertices are buffers; BatchNorm is recomputed
    )


def train_simplex(
    model: nn.Module,
    networks: Sequence[StateLike],
    data,
    config: SimplexConfig | None = None,
    *,
    checkpoint: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
) -> SimplexRun:
    """Grow and train a simplex from one trained network (SPRO), or a complex of connectors
    between several, a vertex at a time (see the module's docstring).

    model: the architecture (any `nn.Module`; deep-copied, its buffers shared by all points).
    networks: [w0] for SPRO (a `Simplex` of `config.vertices` vertices), or [w1, ..., wN]
        for a complex of N simplexes (w_i, c_1, ..., c_m), m = `config.connectors`; modules or
        state dicts of `model`'s architecture, fixed throughout.
    data: a `Dataset` (its task gives the loss); train batches augmented if `config.augment`.
    checkpoint: the base name of the stage checkpoints (`stage_checkpoint`); a rerun skips
        finished stages and resumes an unfinished one, and a larger `vertices` (or
        `connectors`) later trains only the new ones. `meta`: what goes into every stage
        checkpoint (model name, data set, ...). `callbacks(epoch, record)`: after each epoch.
    """
    config = config or SimplexConfig()
    vertex_set = base_vertices(model, networks)
    spro = isinstance(vertex_set, Simplex)
    total = config.vertices if spro else vertex_set.num_vertices + config.connectors
    stages = []
    while vertex_set.num_vertices < total:
        vertex_set = grow(vertex_set)
        vertex = vertex_set.num_vertices - 1
        lam = _lam(vertex_set, model, config)
        path = stage_checkpoint(checkpoint, vertex) if checkpoint is not None else None
        kw = dict(checkpoint=path, meta=meta, callbacks=callbacks)
        result = train_stage(vertex_set, data, config, lam, **kw)
        stages.append(
            {
                "vertex": vertex,
                "lam": lam,
                "checkpoint": str(path) if path is not None else None,
                "resumed_from_epoch": result.resumed_from_epoch,
                "history": result.history,
            }
        )
    run_meta = {
        "type": vertex_set.kind,
        "vertices": vertex_set.num_vertices,
        "networks": len(networks),
        "config": asdict(config),
        "lam": [s["lam"] for s in stages],
    }
    if not spro:
        run_meta["simplexes"] = [list(s) for s in vertex_set.simplexes]
    return SimplexRun(vertex_set, stages, run_meta)
