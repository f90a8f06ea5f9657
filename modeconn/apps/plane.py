"""Loss and error on a plane in weight space, through w1, w2 and the bend of a curve:
`modeconn plane curve_ckpt=checkpoints/curve.pt grid=21 margin=0.2`, or through three
networks, with no curve: `modeconn plane points=[a.pt,b.pt,c.pt] grid=21` (a at the origin,
b on the positive x-axis, c above it, as `Plane.through`; plain state dicts with
`model=... dataset=...` named).

Spread over processes: `torchrun --nproc-per-node N -m modeconn.apps.plane ...` (each rank
evaluates its shard, rank 0 merges), or separate jobs `shard=K num_shards=N` (e.g. a Hydra
multirun on SLURM) followed by `merge=true num_shards=N`. Every shard resumes after a crash.
Both planes share this loop: they differ only in the `PlaneSource` that says what to evaluate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch.distributed as dist
from omegaconf import DictConfig, ListConfig, OmegaConf

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    curve_wd,
    dataset_from,
    engine_settings,
    grid_resolution,
    init_distributed,
    load_curve_and_data,
    log,
    named_endpoints,
    out_dir,
    pick_device,
    plain,
    run_app,
    slug,
)
from modeconn.apps.outputs import guard_result, job_meta
from modeconn.curves.weights import fingerprint
from modeconn.engine import diverged_note, merge_shards
from modeconn.io.checkpoints import Checkpoint, load_endpoint
from modeconn.io.store import PartialGrid, load_result, plain_meta
from modeconn.plane import Plane, PlaneResult, evaluate_plane, evaluate_plane_through_curve
from modeconn.plotting import plot_plane, save_figure


@dataclass(frozen=True)
class PlaneSource:
    """What a plane job goes through, and all that differs between the two kinds.

    evaluate: `evaluate_plane`'s call with the plane and data bound; takes its shared keywords
        (grid, margin, wd, settings, progress, partial, save_every_s, shard).
    job: the keys that name the source in the job record (`guard_result`): "curve" (its
        fingerprint) and "curve_points", or "points" (the three networks' fingerprints), so
        a curve plane and a 3-point plane in one directory never pass for each other.
    out, wd: the output directory and the weight decay of the losses.
    model: the architecture's name for the figure title; title: its own part, if any.
    line: draw the dashed segment start-end (a curve's straight line; not for three points).
    """

    evaluate: Callable[..., PlaneResult | None]
    job: dict[str, Any]
    out: Path
    wd: float
    model: str | None
    title: str | None = None
    line: bool = True


def _pair(value):
    value = plain(value)
    return tuple(value) if isinstance(value, list) else value


def _through(cfg: DictConfig) -> str:
    """'curve' or 'points': which of the two the command names (exactly one)."""
    curve, points = cfg.get("curve_ckpt"), cfg.get("points")
    if (curve is None) == (points is None):
        why = "not both" if curve is not None else "got neither"
        raise ValueError(
            "give exactly one of curve_ckpt=<curve.pt> (the plane through w1, w2 and the bend) "
            f"and points=[a.pt,b.pt,c.pt] (the plane through three networks); {why}"
        )
    return "curve" if curve is not None else "points"


def _curve_source(cfg: DictConfig) -> PlaneSource:
    """The paper's plane through start, end and the (middle) bend of `cfg.curve_ckpt`."""
    curve, data, ckpt = load_curve_and_data(cfg)

    def evaluate(**kw: Any) -> PlaneResult | None:
        return evaluate_plane_through_curve(curve, data, curve_points=cfg.curve_points, **kw)

    return PlaneSource(
        evaluate,
        {"curve": fingerprint(curve.endpoints, curve.bends), "curve_points": cfg.curve_points},
        out_dir(cfg, cfg.curve_ckpt),
        curve_wd(cfg, ckpt),
        ckpt.meta.get("model"),
    )


# What says which network and data an endpoint is: the three points must agree on all of it.
_ARCHITECTURE = ("model", "model_args", "num_classes", "input_shape", "dataset")


def _point_paths(cfg: DictConfig) -> list[str]:
    """`cfg.points` as three file names, or one line saying what is wrong with it."""
    points = cfg.points
    if isinstance(points, ListConfig):
        points = OmegaConf.to_container(points, resolve=True)
    if not isinstance(points, (list, tuple)):
        raise ValueError(
            f"points must be a list of three checkpoint files, points=[a.pt,b.pt,c.pt]; "
            f"got points={points!r}"
        )
    if len(points) != 3:
        raise ValueError(
            f"points must be exactly 3 checkpoint files (a at the origin, b on the x-axis, c "
            f"above it), got {len(points)}: {', '.join(map(str, points)) or 'none'}"
        )
    return [str(p) for p in points]


def _check_one_architecture(paths: list[str], ckpts: list[Checkpoint]) -> None:
    """Refuse three points that are not networks of one architecture on one data set, in
    one line naming the files and what differs (the first file is the reference)."""
    first = ckpts[0].meta
    differences = []
    for path, ckpt in zip(paths[1:], ckpts[1:], strict=True):
        for key in _ARCHITECTURE:
            ref, own = first.get(key), ckpt.meta.get(key)
            if plain_meta({key: own}) != plain_meta({key: ref}):
                differences.append(f"{key}: {ref!r} in '{paths[0]}', {own!r} in '{path}'")
    if differences:
        raise ValueError(
            "points must be three networks of one architecture and data set, but they differ ("
            + "; ".join(differences)
            + "); pass endpoints trained with the same model and dataset options"
        )


def _points_wd(cfg: DictConfig, paths: list[str], ckpts: list[Checkpoint]) -> float:
    """The weight decay of reported losses: the config's, else the one the points were
    trained with (0 for plain state dicts, which do not record it)."""
    if cfg.wd is not None:
        return float(cfg.wd)
    pairs = zip(paths, ckpts, strict=True)
    recorded = {p: float(c.meta["wd"]) for p, c in pairs if c.meta.get("wd") is not None}
    if len(set(recorded.values())) > 1:
        each = ", ".join(f"{wd:g} ('{p}')" for p, wd in recorded.items())
        raise ValueError(
            f"the points were trained with different weight decays ({each}); name the one "
            "the losses should include: wd=<value>"
        )
    return next(iter(recorded.values()), 0.0)


def _points_source(cfg: DictConfig) -> PlaneSource:
    """The plane through the three networks `cfg.points` (no curve): endpoint checkpoints of
    `modeconn train`, or plain state dicts with `model=... dataset=...` named."""
    paths = _point_paths(cfg)
    device = pick_device(cfg.device)
    named, data = named_endpoints(cfg, device)
    hint = (
        "Pass three endpoint checkpoints (points=[a.pt,b.pt,c.pt]); a plane through a curve "
        "takes curve_ckpt=... instead."
    )
    loaded = [load_endpoint(p, meta=named, hint=hint) for p in paths]
    ckpts = [ckpt for _, ckpt in loaded]
    _check_one_architecture(paths, ckpts)
    models = [model.to(device) for model, _ in loaded]
    if data is None:  # from the first checkpoint's record, as the other apps do
        meta = ckpts[0].meta
        root = cfg.data_root if cfg.data_root is not None else meta.get("dataset_root")
        options = meta.get("dataset_args") or {}  # e.g. an image folder's size
        data = dataset_from(meta["dataset"], root, False, device, **options)
    stems = [Path(p).stem for p in paths]
    names = stems if len(set(stems)) == 3 else paths  # the stems, unless two are alike
    try:
        plane = Plane.through(*models, names=tuple(names))
    except ValueError as err:  # e.g. one file given twice: the points are collinear
        raise ValueError(f"no plane through {', '.join(paths)}: {err}") from None

    def evaluate(**kw: Any) -> PlaneResult | None:
        return evaluate_plane(models[0], plane, data, **kw)

    return PlaneSource(
        evaluate,
        {"points": [fingerprint(*m.parameters()) for m in models]},
        Path(cfg.out) if cfg.out else Path("results") / slug("-".join(stems)),
        _points_wd(cfg, paths, ckpts),
        ckpts[0].meta.get("model"),
        title=f"the plane through {', '.join(names)}",
        line=False,
    )


def _shard(cfg: DictConfig) -> tuple[tuple[int, int] | None, int]:
    """(shard, rank): from torchrun's environment if launched by it, else from the config."""
    rank, world = init_distributed()
    if world > 1:
        return (rank, world), rank
    if cfg.num_shards < 1 or not 0 <= cfg.shard < cfg.num_shards:
        raise ValueError(
            f"need 0 <= shard < num_shards, got shard={cfg.shard}, num_shards={cfg.num_shards}"
        )
    return ((cfg.shard, cfg.num_shards) if cfg.num_shards > 1 else None), 0


def _merge(out: Path, num_shards: int, expected: dict) -> None:
    """Join the shard files into plane-partial; refuse shards of another job than this
    command's (naming the differing keys) and a merge with nodes still missing (with
    adaptive resolution: a shard that has not run to its end)."""
    files = [out / f"plane-shard{k}of{num_shards}" for k in range(num_shards)]
    missing = [str(f) + ".npz" for f in files if not f.with_suffix(".npz").exists()]
    if missing:
        raise FileNotFoundError(f"cannot merge: shard files missing: {', '.join(missing)}")
    adaptive = expected.get("resolution") == "adaptive"
    if adaptive:
        unfinished = [f"'{f}.npz'" for f in files if not load_result(f)[1].get("finished")]
        if unfinished:
            raise ValueError(
                f"cannot merge: {', '.join(unfinished)} did not run to the end; rerun those "
                "shards (each resumes where it stopped), then merge again"
            )
    stored = load_result(files[0])[1].get("config", {})
    differing = sorted(k for k, v in expected.items() if stored.get(k) != v)
    if differing:
        details = "; ".join(
            f"{k}: shards {stored.get(k)!r}, now {expected[k]!r}" for k in differing
        )
        raise ValueError(
            f"cannot merge: the shards in '{out}' were computed for another job ({details}). "
            "Merge with the settings the shards were run with, or rerun the shards"
        )
    points = int(np.prod(expected["grid"]))
    done = merge_shards(files, out / "plane-partial")
    if done < points and not adaptive:
        raise ValueError(
            f"cannot merge: the shards hold {done} of {points} nodes; rerun the unfinished "
            "shards (each resumes where it stopped), then merge again"
        )
    for f in files:
        PartialGrid.remove_files(f)


def _merge_keys(kw: dict, refine: dict) -> dict:
    """What a merge checks against the shards' own record before joining them (`refine`:
    the adaptive resolution's keys, empty for a regular grid)."""
    gx, gy = (kw["grid"], kw["grid"]) if isinstance(kw["grid"], int) else kw["grid"]
    return {"grid": [gx, gy], "wd": kw["wd"], **kw["settings"].resume_config(), **refine}


@app_run
def run(cfg: DictConfig) -> PlaneResult | None:
    """Evaluate the plane the config names (or this process's shard of it, then None), save
    the result and its figure in the output directory; resumes from its partial file."""
    through = _through(cfg)
    grid, resolution, refine = grid_resolution(cfg)
    shard, rank = _shard(cfg) if not cfg.merge else (None, 0)
    source = _curve_source(cfg) if through == "curve" else _points_source(cfg)
    out, launched = source.out, dist.is_initialized()
    settings = engine_settings(cfg)
    kw = dict(
        grid=_pair(grid),
        margin=_pair(cfg.margin),
        wd=source.wd,
        settings=settings,
        progress=cfg.progress and rank == 0,
        save_every_s=cfg.save_every_s,
        **({"resolution": resolution} if refine else {}),
    )
    job = {
        **source.job,
        **{k: kw[k] for k in ("grid", "margin", "wd")},
        **settings.resume_config(),
        **refine,
    }
    if rank == 0:
        guard_result(out / "plane", job, cfg.get("overwrite", False))
    if shard is not None:
        k, n = shard
        source.evaluate(partial=out / f"plane-shard{k}of{n}", shard=shard, **kw)
        if not launched:
            log.info("shard %d of %d done; merge with merge=true num_shards=%d", k, n, n)
            return None
        dist.barrier()
        if rank == 0:
            _merge(out, n, _merge_keys(kw, refine))
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return None
    elif cfg.merge:
        _merge(out, cfg.num_shards, _merge_keys(kw, refine))
    result = source.evaluate(partial=out / "plane-partial", **kw)
    job_meta(result, job).save(out / "plane")
    where = [f"(x={x:.3g}, y={y:.3g})" for x in result.x for y in result.y]
    note = diverged_note("plane", result.train_loss, where)
    if note:
        log.warning(note)
    figure = plot_plane(
        result,
        model=source.model,
        title=source.title,
        line=source.line,
        mark_evaluated=bool(cfg.get("mark_evaluated", False)),
    )
    save_figure(figure, out / "plane")
    train_loss = result.summary()["train_loss"]
    off = result.curve_distance
    log.info(
        "plane %dx%d: train loss %.4f-%.4f%s%s",
        len(result.x),
        len(result.y),
        train_loss["min"],
        train_loss["max"],
        f"; curve leaves the plane by at most {off.max():.3g}" if len(off) else "",
        f"; {result.evaluated.mean():.1%} of the nodes evaluated" if result.adaptive else "",
    )
    log.info("results in %s", out)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="plane")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("plane", main)
