"""Linear mode connectivity and the stability of SGD (Frankle et al. 2020):
`python -m modeconn.apps.stability dataset=digits model=mlp spawn=[0,0.01,0.1,1.0] pairs=2`.

One parent run is trained to the end, its exact state kept at every spawn step k; two children
per pair continue from it with their own data order and augmentation, each a resumable
training run; the line between them is evaluated (BatchNorm recomputed at every t). Writes
lines.npz/.json (every metric along every line), stability.json (barriers per k, spread over
pairs, the stable k) and stability.png/.pdf (instability against k).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    dataset_from,
    dataset_options,
    endpoint_meta,
    engine_settings,
    log,
    pick_device,
    plain,
    run_app,
    slug,
    train_config,
)
from modeconn.apps.outputs import args_tag, guard_result, job_meta, non_default_args
from modeconn.io.atomic import atomic_write
from modeconn.lmc import stability
from modeconn.lmc.spawn import check_vary, spawn_points, total_steps
from modeconn.models import build_model
from modeconn.plotting import plot_stability, save_figure


def run_name(cfg: DictConfig) -> str:
    """stability-<dataset>-<model>[-<non-default args>]-seed<seed>."""
    tag = args_tag(non_default_args(cfg.model.name, plain(cfg.model.get("args"))))
    model = slug(cfg.model.name) + (f"-{tag}" if tag else "")
    return f"stability-{cfg.dataset.name}-{model}-seed{cfg.seed}"


@app_run
def run(cfg: DictConfig):
    check_vary(cfg.vary)
    device = pick_device(cfg.device)
    options = dataset_options(cfg.dataset)
    data = dataset_from(cfg.dataset.name, cfg.dataset.root, cfg.dataset.download, device, **options)
    config = train_config(cfg.optim, cfg.seed, cfg.progress)
    model_args = plain(cfg.model.get("args")) or {}
    torch.manual_seed(cfg.seed)  # the parent's initialisation
    model = build_model(
        cfg.model.name, num_classes=data.num_classes, input_shape=data.input_shape, **model_args
    ).to(device)
    name = run_name(cfg)
    out = Path(cfg.out) if cfg.out else Path("results") / name
    folder = Path(cfg.checkpoints) if cfg.checkpoints else Path("checkpoints") / name
    settings = engine_settings(cfg)
    spawn = None if cfg.spawn_steps is not None else plain(cfg.spawn)
    spawn_points(total_steps(data, config), spawn, plain(cfg.spawn_steps))  # bad input: now
    job = {
        "model": cfg.model.name,
        "model_args": model_args,
        "dataset": cfg.dataset.name,
        "seed": int(cfg.seed),
        "optim": plain(cfg.optim),
        **{k: plain(cfg[k]) for k in ("spawn", "spawn_steps", "pairs", "vary", "child_seed")},
        **{k: plain(cfg[k]) for k in ("points", "threshold", "align")},
        **settings.resume_config(),
    }
    guard_result(out / "lines", job, cfg.get("overwrite", False))
    meta = endpoint_meta(cfg, data, model_args, options)
    result = stability(
        model, data, config, spawn,
        spawn_steps=plain(cfg.spawn_steps), pairs=int(cfg.pairs), vary=cfg.vary,
        child_seed=int(cfg.child_seed), points=int(cfg.points), threshold=float(cfg.threshold),
        align=bool(cfg.align), directory=folder, meta=meta, settings=settings,
        progress=cfg.progress,
    )  # fmt: skip
    job_meta(result, job).save(out / "lines")
    report = {**result.report(), "checkpoints": str(folder), "job": job}
    text = json.dumps(report, indent=1, default=str)
    atomic_write(out / "stability.json", lambda path: path.write_text(text))
    save_figure(plot_stability(result, model=cfg.model.name), out / "stability")
    for k, f, b in zip(result.steps, result.fractions, result.barriers(), strict=True):
        log.info("k = %6d (%6.2f %%): %s barrier %s", k, 100 * f, result.score, b.round(3))
    stable = report["stable"]["step"]
    log.info(
        "stable (%s barrier < %g) from k = %s of %d steps; results in %s",
        result.score, result.threshold, stable, result.total_steps, out,
    )  # fmt: skip
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="stability")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("stability", main)
