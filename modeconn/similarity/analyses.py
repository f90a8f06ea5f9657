"""Which layers learn the same thing: similarity analyses between networks, along a curve,
over training and per class, after Raghu et al. 2017 (SVCCA, and its blog post's figures)
and Kornblith et al. 2019 (CKA).

- `compare_networks(a, b, inputs)`: every layer of network a against every layer of network b
  (values[i, j] = similarity(a's layer i, b's layer j); rows a, columns b), optionally with a
  permutation baseline per cell;
- `along_curve(curve, data)`: per layer, the similarity of phi(t) to w1 and to w2 versus t,
  for the trained curve and for the straight line between the same endpoints
  (values[path, k, layer, reference], path 0 the curve, 1 the line; reference 0 w1, 1 w2);
- `over_training(model, points, fractions, data)`: every layer at each fraction of training
  against every layer at the end (values[k, i, j]; rows the layer at fraction k, columns at
  the end), the SVCCA post's x in {0, 35, 75, 100} % figure; points are weight points (state
  dicts or flat vectors) so saved checkpoints or a trajectory recorder can feed it, and
  `training_snapshots` records them from a run of `train_endpoint`;
- `class_wise(model, data)`: per class c, the similarity of each layer to the network's
  output, on the samples of class c only (values[c, layer]), through the depth.

Every network point is evaluated with BatchNorm statistics recomputed at that point. The
measure's name, options, the conv policy and the samples used are in `meta`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from modeconn.io.store import SavedResult, plain_meta
from modeconn.similarity.activations import (
    LayerSpec,
    collect_activations,
    network_at,
    stream_activations,
)
from modeconn.similarity.cka import MinibatchCKA
from modeconn.similarity.measures import measure_of, permutation_baseline

TRAINING_FRACTIONS = (0.0, 0.35, 0.75, 1.0)
CURVE_TS = tuple(np.linspace(0.0, 1.0, 11).tolist())  # t = 0, 0.1, ..., 1


@dataclass(eq=False)
class SimilarityResult(SavedResult):
    """A similarity analysis: `values` with the layout of meta["analysis"] (see the module),
    `layers` the row layers' names, `columns` the names along the last axis (b's layers,
    the end's layers, or the references w1, w2), `axis` the t values, training fractions or
    class labels, `baseline` (same shape as values) where asked for."""

    values: np.ndarray
    layers: np.ndarray
    columns: np.ndarray
    axis: np.ndarray | None = None
    baseline: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    result_kind: ClassVar[str] = "SimilarityResult"

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        self.layers = np.asarray(self.layers, dtype=str)
        self.columns = np.asarray(self.columns, dtype=str)
        self.meta = plain_meta(self.meta)

    @property
    def analysis(self) -> str:
        return self.meta.get("analysis", "")


def _inputs(data: Any, split: str, samples: int | None) -> tuple[Tensor, Tensor | None]:
    """(inputs, labels) of a Dataset's split (or a tensor of inputs), the first `samples`."""
    if isinstance(data, Tensor):
        return data[:samples], None
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    return x[:samples], y[:samples]


def _meta(analysis: str, measure: Any, options: dict, policy: str, **more: Any) -> dict:
    name = measure if isinstance(measure, str) else getattr(measure, "__name__", "custom")
    return {"analysis": analysis, "measure": name, "options": options, "policy": policy, **more}


def _matrix(
    fn: Callable, rows: dict[str, Tensor], cols: dict[str, Tensor], tag: str = ""
) -> np.ndarray:
    return np.array([[fn(rows[i], cols[j], layer=f"{tag}{i} vs {j}") for j in cols] for i in rows])


def _streamed_matrix(
    a: nn.Module,
    b: nn.Module,
    x: Tensor,
    layers_a: LayerSpec,
    layers_b: LayerSpec,
    options: dict,
    policy: str,
    tag: str = "",
) -> tuple[list[str], list[str], np.ndarray]:
    """Minibatch CKA (Nguyen et al. 2021) of every layer of `a` against every layer of `b`,
    accumulated batch by batch from `stream_activations`: no layer is ever one (n, features)
    matrix. The batches are those `minibatch_cka` would take (options' batch_size, default
    256), so the numbers equal it on the collected matrices."""
    size = int(options.get("batch_size", 256))
    kw = dict(policy=policy, batch_size=size)
    stream_a = stream_activations(a, x, layers_a, **kw)
    pairs = (
        ((batch, batch) for batch in stream_a)  # one network: one pass per batch
        if a is b and layers_a == layers_b
        else zip(stream_a, stream_activations(b, x, layers_b, **kw), strict=True)
    )
    acc: dict[tuple[str, str], MinibatchCKA] = {}
    rows: list[str] = []
    cols: list[str] = []
    for ba, bb in pairs:
        if not acc:
            rows, cols = list(ba), list(bb)
            acc = {(i, j): MinibatchCKA() for i in rows for j in cols}
        for (i, j), m in acc.items():
            m.update(ba[i], bb[j])
    values = np.array([[acc[i, j].value(layer=f"{tag}{i} vs {j}") for j in cols] for i in rows])
    return rows, cols, values


def _streams(measure: Any, stream: bool | None) -> bool:
    if stream is None:
        return measure == "minibatch_cka"
    if stream and measure != "minibatch_cka":
        raise ValueError(
            f"stream=True accumulates minibatch CKA batch by batch; measure={measure!r} needs "
            "whole matrices: use measure='minibatch_cka' or stream=False"
        )
    return bool(stream)


def compare_networks(
    a: nn.Module,
    b: nn.Module,
    data: Any,
    *,
    layers: LayerSpec = "blocks",
    layers_b: LayerSpec | None = None,
    measure: str | Callable = "linear_cka",
    options: dict | None = None,
    policy: str = "flatten",
    split: str = "test",
    samples: int | None = None,
    baseline: int = 0,
    seed: int = 0,
    batch_size: int = 512,
    stream: bool | None = None,
) -> SimilarityResult:
    """values[i, j] = measure(layer i of `a`, layer j of `b`) on the same inputs (a Dataset's
    `split`, its first `samples`, or a tensor of inputs). `baseline=k`: also the mean over k
    row permutations per cell (`permutation_baseline`). Networks run as they are (their own
    BatchNorm statistics); use `network_at` or `Curve.network_at` for other points.
    stream (default: for measure="minibatch_cka"): accumulate batch by batch
    (`_streamed_matrix`), never holding a layer's activations whole."""
    options = dict(options or {})
    fn = measure_of(measure, **options)
    x, _ = _inputs(data, split, samples)
    if _streams(measure, stream):
        if baseline:
            raise ValueError("a permutation baseline needs whole matrices: use stream=False")
        la = layers if layers_b is None else layers_b
        rows, cols, values = _streamed_matrix(a, b, x, layers, la, options, policy)
        meta = _meta("pair", measure, options, policy, split=split, samples=len(x), streamed=True)
        return SimilarityResult(values, rows, cols, None, None, meta)
    kw = dict(policy=policy, batch_size=batch_size)
    ra = collect_activations(a, x, layers, **kw).layers
    rb = collect_activations(b, x, layers if layers_b is None else layers_b, **kw).layers
    values = _matrix(fn, ra, rb)
    base = None
    if baseline:
        base = np.array(
            [
                [permutation_baseline(fn, ra[i], rb[j], baseline, seed, layer=i).mean() for j in rb]
                for i in ra
            ]
        )
    meta = _meta("pair", measure, options, policy, split=split, samples=len(x), baseline=baseline)
    return SimilarityResult(values, list(ra), list(rb), None, base, meta)


def along_curve(
    curve,
    data: Any,
    ts: Sequence[float] | np.ndarray = CURVE_TS,
    *,
    layers: LayerSpec = "blocks",
    measure: str | Callable = "linear_cka",
    options: dict | None = None,
    policy: str = "flatten",
    split: str = "test",
    samples: int | None = None,
    line: bool = True,
    batch_size: int = 512,
    progress: bool = False,
) -> SimilarityResult:
    """values[path, k, layer, ref]: measure(phi(t_k)'s layer, w_ref's layer), ref 0 = w1
    (t=0), 1 = w2 (t=1); path 0 is `curve`, path 1 (if `line`) the straight line between its
    endpoints. BatchNorm statistics are recomputed at every point on `data`'s train inputs."""
    from modeconn.curves.family import Line

    options = dict(options or {})
    fn = measure_of(measure, **options)
    x, _ = _inputs(data, split, samples)
    ts = np.asarray(ts, dtype=np.float64)
    paths = {"curve": curve}
    if line:
        start, end = (curve.space.unflatten(w) for w in curve.endpoints)
        paths["line"] = Line(curve.model, start, end).to(curve.endpoints.device)
    kw = dict(layers=layers, policy=policy, batch_size=batch_size)

    def acts(path, t: float) -> dict[str, Tensor]:
        return collect_activations(path.network_at(float(t), data), x, **kw).layers

    ends = [acts(curve, 0.0), acts(curve, 1.0)]
    names = list(ends[0])
    values = np.full((len(paths), len(ts), len(names), 2), np.nan)
    steps = [(p, k) for p in range(len(paths)) for k in range(len(ts))]
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="similarity along the curve")
    for p, k in steps:
        here = acts(list(paths.values())[p], ts[k])
        for i, name in enumerate(names):
            for r in (0, 1):
                tag = f"{list(paths)[p]} t={ts[k]:g} {name} vs w{r + 1}"
                values[p, k, i, r] = fn(here[name], ends[r][name], layer=tag)
    meta = _meta(
        "curve", measure, options, policy, split=split, samples=len(x), paths=list(paths),
        curve=getattr(curve, "kind", type(curve).__name__),
    )  # fmt: skip
    return SimilarityResult(values, names, ["w1", "w2"], ts, None, meta)


def over_training(
    model: nn.Module,
    points: Sequence[Tensor | dict[str, Tensor]],
    data: Any,
    fractions: Sequence[float] | None = None,
    *,
    layers: LayerSpec = "blocks",
    measure: str | Callable = "linear_cka",
    options: dict | None = None,
    policy: str = "flatten",
    split: str = "test",
    samples: int | None = None,
    batch_size: int = 512,
    stream: bool | None = None,
) -> SimilarityResult:
    """values[k, i, j] = measure(layer i at `points[k]`, layer j at `points[-1]`, the end of
    training). points: weight points of `model` (state dicts or flat vectors), in training
    order; fractions: how far into training each was taken (the axis; default k/(K-1)).
    stream: as in `compare_networks`."""
    if len(points) < 2:
        raise ValueError("over_training needs at least two weight points: some and the end")
    fractions = np.linspace(0, 1, len(points)) if fractions is None else np.asarray(fractions)
    if len(fractions) != len(points):
        raise ValueError(f"{len(points)} points but {len(fractions)} fractions")
    options = dict(options or {})
    fn = measure_of(measure, **options)
    x, _ = _inputs(data, split, samples)
    if _streams(measure, stream):
        end = network_at(model, points[-1], data)
        mats = [
            _streamed_matrix(network_at(model, p, data), end, x, layers, layers, options, policy,
                             f"{f:.0%}: ")
            for f, p in zip(fractions, points, strict=True)
        ]  # fmt: skip
        meta = _meta("training", measure, options, policy, split=split, samples=len(x))
        meta["streamed"] = True
        names = mats[-1][1]
        return SimilarityResult(np.stack([m[2] for m in mats]), names, names, fractions, None, meta)
    kw = dict(policy=policy, batch_size=batch_size)
    reps = [collect_activations(network_at(model, p, data), x, layers, **kw).layers for p in points]
    values = np.stack(
        [_matrix(fn, r, reps[-1], f"{f:.0%}: ") for f, r in zip(fractions, reps, strict=True)]
    )
    meta = _meta("training", measure, options, policy, split=split, samples=len(x))
    return SimilarityResult(values, list(reps[-1]), list(reps[-1]), fractions, None, meta)


def training_snapshots(
    model: nn.Module, data: Any, config, fractions: Sequence[float] = TRAINING_FRACTIONS
) -> tuple[list[dict[str, Tensor]], list[float]]:
    """Train `model` in place with `train_endpoint(model, data, config)` and keep its state
    dict at each fraction of training (epoch round(f * epochs); 0 is the initialisation).
    Returns (states, the fractions actually taken, epoch / epochs)."""
    from modeconn.training import train_endpoint

    epochs = {int(round(f * config.epochs)) for f in fractions}
    states: dict[int, dict[str, Tensor]] = {}
    if 0 in epochs:
        states[0] = copy.deepcopy(model.state_dict())

    def keep(epoch: int, record: dict) -> None:
        if epoch in epochs:
            states[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    train_endpoint(model, data, config, callbacks=[keep])
    done = sorted(states)
    return [states[e] for e in done], [e / config.epochs for e in done]


def class_wise(
    model: nn.Module,
    data: Any,
    *,
    layers: LayerSpec = "blocks",
    measure: str | Callable = "linear_cka",
    options: dict | None = None,
    policy: str = "flatten",
    split: str = "train",
    samples: int | None = None,
    batch_size: int = 512,
) -> SimilarityResult:
    """values[c, i] = measure(layer i, the output), both on the samples of class c only: how
    far through the depth each class's representation already resembles the output's."""
    options = dict(options or {})
    fn = measure_of(measure, **options)
    x, y = _inputs(data, split, samples)
    if y is None or y.dtype not in (torch.int64, torch.int32):
        raise ValueError("class_wise needs a classification Dataset (integer labels)")
    if policy == "positions":
        raise ValueError(
            "class_wise compares with the output, which has no positions: use another policy"
        )
    spec = [layers] if isinstance(layers, (str, type)) else list(layers)
    reps = collect_activations(model, x, [*spec, "output"], policy=policy, batch_size=batch_size)
    out = reps.layers["output"]
    names = [n for n in reps.layers if n != "output"]
    classes = torch.unique(y).tolist()
    values = np.array(
        [
            [fn(reps.layers[n][y == c], out[y == c], layer=f"class {c}: {n}") for n in names]
            for c in classes
        ]
    )
    meta = _meta("classes", measure, options, policy, split=split, samples=len(x))
    return SimilarityResult(
        values, names, [str(c) for c in classes], np.asarray(classes), None, meta
    )
