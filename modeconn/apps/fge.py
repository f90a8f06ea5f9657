"""Fast Geometric Ensembling from a trained endpoint:
`python -m modeconn.apps.fge start=checkpoints/digits-convfc-seed1.pt cycles=4 cycle=2`.

A plain state dict as start is named on the command line: `model=preresnet20 dataset=cifar10`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    dataset_from,
    engine_settings,
    named_endpoints,
    out_dir,
    pick_device,
    run_app,
)
from modeconn.apps.outputs import finish, guard_result, reported_score
from modeconn.curves.weights import fingerprint
from modeconn.ensembles.fge import FGEResult, fge
from modeconn.io.checkpoints import load_endpoint
from modeconn.plotting import plot_fge


@app_run
def run(cfg: DictConfig) -> FGEResult:
    device = pick_device(cfg.device)
    named, data = named_endpoints(cfg, device)
    hint = "Pass the checkpoint of one trained endpoint network (start=...)."
    model, ckpt = load_endpoint(cfg.start, meta=named, hint=hint)
    if data is None:
        root = cfg.data_root if cfg.data_root is not None else ckpt.meta.get("dataset_root")
        options = ckpt.meta.get("dataset_args") or {}
        data = dataset_from(ckpt.meta["dataset"], root, False, device, **options)
    out = out_dir(cfg, cfg.start)
    options = ("cycles", "cycle", "lr1", "lr2", "wd", "momentum", "batch_size", "augment", "seed")
    job = {
        "start": fingerprint(*[p.detach() for p in model.parameters()]),
        **{k: cfg[k] for k in options},
        "bn_samples": engine_settings(cfg).bn_samples,
    }
    guard_result(out / "fge", job, cfg.get("overwrite", False))
    result = fge(
        model.to(device),
        data,
        cycles=cfg.cycles,
        cycle=cfg.cycle,
        lr1=cfg.lr1,
        lr2=cfg.lr2,
        wd=cfg.wd,
        momentum=cfg.momentum,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        augment=cfg.augment,
        bn_samples=engine_settings(cfg).bn_samples,
        progress=cfg.progress,
        checkpoint=cfg.checkpoint or out / "fge-run.pt",
    )
    score = reported_score(result.task)
    if score == "error":
        line = "FGE: start %.2f %% test error -> ensemble of %d snapshots %.2f %%"
    else:
        line = "FGE: start %.4f test mse -> ensemble of %d snapshots %.4f"
    start, members = getattr(result, f"start_{score}"), len(result.snapshot_epochs)
    ensemble = getattr(result, f"ensemble_{score}")[-1]
    figure = plot_fge(result, model=ckpt.meta.get("model"))
    return finish(result, job, out / "fge", figure, line, start, members, ensemble)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="fge")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("fge", main)
