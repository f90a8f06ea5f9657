"""Train one endpoint network: `python -m modeconn.apps.train dataset=digits model=convfc seed=1`.

Rerunning the same command resumes from the checkpoint (or returns at once if it is finished).
"""

from __future__ import annotations

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
    finish_distributed,
    init_distributed,
    log,
    pick_device,
    plain,
    run_app,
    scores_line,
    slug,
    train_config,
)
from modeconn.apps.outputs import args_tag, non_default_args
from modeconn.engine.point import evaluate_point
from modeconn.models import build_model
from modeconn.training import train_endpoint


def endpoint_path(cfg: DictConfig) -> Path:
    if cfg.checkpoint:
        return Path(cfg.checkpoint)
    # arguments other than the model's defaults are part of the name: another width is
    # another run (a name that hid them made a rerun fail with a resume mismatch)
    tag = args_tag(non_default_args(cfg.model.name, plain(cfg.model.get("args"))))
    model = slug(cfg.model.name) + (f"-{tag}" if tag else "")
    return Path("checkpoints") / f"{cfg.dataset.name}-{model}-seed{cfg.seed}.pt"


def trajectory_hooks(cfg: DictConfig, path: Path, target, data, config) -> dict:
    """`trajectory.every=N|epoch`: the recorder's hooks for training `target` (checkpoint
    `path`), recording to `path` with the suffix .trajectory; {} when it is off."""
    every = (cfg.get("trajectory") or {}).get("every")
    if every is None:
        return {}
    from modeconn.trajectory.recorder import record_trajectory

    every = every if every == "epoch" else int(every)
    return record_trajectory(path.with_suffix(".trajectory"), target, data, config, every).hooks()


@app_run
def run(cfg: DictConfig) -> dict:
    """Train (or resume) the endpoint the config describes; returns its path and test metrics.

    Under `torchrun --nproc-per-node N` the ranks split every batch (same result as one
    process with the same batch size); rank 0 writes the checkpoint and reports.
    """
    rank, _ = init_distributed()
    device = pick_device(cfg.device)
    options = dataset_options(cfg.dataset)  # e.g. an image folder's size
    data = dataset_from(cfg.dataset.name, cfg.dataset.root, cfg.dataset.download, device, **options)
    config = train_config(cfg.optim, cfg.seed, cfg.progress)
    torch.manual_seed(cfg.seed)  # the initialisation depends on the seed too
    model_args = plain(cfg.model.get("args")) or {}
    model = build_model(
        cfg.model.name, num_classes=data.num_classes, input_shape=data.input_shape, **model_args
    ).to(device)
    path = endpoint_path(cfg)
    meta = endpoint_meta(cfg, data, model_args, options)
    hooks = trajectory_hooks(cfg, path, model, data, config)
    result = train_endpoint(model, data, config, checkpoint=path, meta=meta, **hooks)
    finish_distributed()
    if rank != 0:
        return {"checkpoint": str(path)}
    if result.resumed_from_epoch:
        log.info("resumed %s from epoch %d", path, result.resumed_from_epoch)
    scores = evaluate_point(model, None, data)
    log.info("endpoint %s: %s", path, scores_line(scores, data.task))
    return {
        "checkpoint": str(path),
        "train": scores["train"].as_dict(),
        "test": scores["test"].as_dict(),
    }


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("train", main)
