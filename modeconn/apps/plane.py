"""Loss and error on the plane through w1, w2 and the bend:
`python -m modeconn.apps.plane curve_ckpt=checkpoints/curve.pt grid=21 margin=0.2`.

Spread over processes: `torchrun --nproc-per-node N -m modeconn.apps.plane ...` (each rank
evaluates its shard, rank 0 merges), or separate jobs `shard=K num_shards=N` (e.g. a Hydra
multirun on SLURM) followed by `merge=true num_shards=N`. Every shard resumes after a crash.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch.distributed as dist
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    curve_wd,
    engine_settings,
    init_distributed,
    load_curve_and_data,
    log,
    out_dir,
    plain,
    run_app,
)
from modeconn.apps.outputs import guard_result, job_meta
from modeconn.engine import diverged_note, merge_shards
from modeconn.plane import PlaneResult, evaluate_plane_through_curve
from modeconn.plotting import plot_plane, save_figure
from modeconn.store import PartialGrid, load_result
from modeconn.weights import fingerprint


def _pair(value):
    value = plain(value)
    return tuple(value) if isinstance(value, list) else value


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
    command's (naming the differing keys) and a merge with nodes still missing."""
    files = [out / f"plane-shard{k}of{num_shards}" for k in range(num_shards)]
    missing = [str(f) + ".npz" for f in files if not f.with_suffix(".npz").exists()]
    if missing:
        raise FileNotFoundError(f"cannot merge: shard files missing: {', '.join(missing)}")
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
    if done < points:
        raise ValueError(
            f"cannot merge: the shards hold {done} of {points} nodes; rerun the unfinished "
            "shards (each resumes where it stopped), then merge again"
        )
    for f in files:
        PartialGrid.remove_files(f)


def _merge_keys(kw: dict) -> dict:
    """What a merge checks against the shards' own record before joining them."""
    gx, gy = (kw["grid"], kw["grid"]) if isinstance(kw["grid"], int) else kw["grid"]
    return {"grid": [gx, gy], "wd": kw["wd"], **kw["settings"].resume_config()}


def run(cfg: DictConfig) -> PlaneResult | None:
    shard, rank = _shard(cfg) if not cfg.merge else (None, 0)
    curve, data, ckpt = load_curve_and_data(cfg)
    out = out_dir(cfg, cfg.curve_ckpt)
    launched = dist.is_initialized()
    settings = engine_settings(cfg)
    kw = dict(
        grid=_pair(cfg.grid),
        margin=_pair(cfg.margin),
        curve_points=cfg.curve_points,
        wd=curve_wd(cfg, ckpt),
        settings=settings,
        progress=cfg.progress and rank == 0,
        save_every_s=cfg.save_every_s,
    )
    job = {
        "curve": fingerprint(curve.endpoints, curve.bends),
        **{k: kw[k] for k in ("grid", "margin", "curve_points", "wd")},
        **settings.resume_config(),
    }
    if rank == 0:
        guard_result(out / "plane", job, cfg.get("overwrite", False))
    if shard is not None:
        k, n = shard
        evaluate_plane_through_curve(
            curve, data, partial=out / f"plane-shard{k}of{n}", shard=shard, **kw
        )
        if not launched:
            log.info("shard %d of %d done; merge with merge=true num_shards=%d", k, n, n)
            return None
        dist.barrier()
        if rank == 0:
            _merge(out, n, _merge_keys(kw))
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return None
    elif cfg.merge:
        _merge(out, cfg.num_shards, _merge_keys(kw))
    result = evaluate_plane_through_curve(curve, data, partial=out / "plane-partial", **kw)
    job_meta(result, job).save(out / "plane")
    where = [f"(x={x:.3g}, y={y:.3g})" for x in result.x for y in result.y]
    note = diverged_note("plane", result.train_loss, where)
    if note:
        log.warning(note)
    save_figure(plot_plane(result, model=ckpt.meta.get("model")), out / "plane")
    train_loss = result.summary()["train_loss"]
    log.info(
        "plane %dx%d: train loss %.4f-%.4f; curve leaves the plane by at most %.3g",
        len(result.x),
        len(result.y),
        train_loss["min"],
        train_loss["max"],
        result.curve_distance.max() if len(result.curve_distance) else 0.0,
    )
    log.info("results in %s", out)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="plane")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.cli import run_module

    run_module("plane", main)
