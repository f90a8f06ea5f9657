"""Train a curve between two endpoints:
`python -m modeconn.apps.connect start=a.pt end=b.pt curve=bezier`.

The architecture and data set come from the endpoint checkpoints, which must agree. Plain
state dicts (`torch.save(model.state_dict())`) are named on the command line instead:
`start=a.pt end=b.pt model=preresnet20 dataset=cifar10`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    dataset_from,
    finish_distributed,
    init_distributed,
    log,
    named_endpoints,
    pick_device,
    plain,
    run_app,
    scores_line,
    slug,
    train_config,
)
from modeconn.apps.outputs import args_tag
from modeconn.apps.train import trajectory_hooks
from modeconn.curves.family import build_curve
from modeconn.engine.point import evaluate_point
from modeconn.io.checkpoints import IDENTITY, load_endpoint
from modeconn.training import train_curve


def curve_path(cfg: DictConfig) -> Path:
    if cfg.checkpoint:
        return Path(cfg.checkpoint)
    tag = args_tag(plain(cfg.curve.get("args")))  # degree 3 after degree 2 is another curve
    kind = cfg.curve.type + (f"-{tag}" if tag else "")
    name = f"curve-{kind}-{slug(Path(cfg.start).stem)}-{slug(Path(cfg.end).stem)}.pt"
    return Path("checkpoints") / name


@app_run
def run(cfg: DictConfig) -> dict:
    """Train (or resume) the curve the config describes; returns its path and t=0.5 metrics.

    Under torchrun the ranks split every batch and share each step's t; rank 0 reports.
    """
    rank, _ = init_distributed()
    device = pick_device(cfg.device)
    named, data = named_endpoints(cfg, device)
    hint = "Pass the checkpoints of the two trained endpoint networks (start=... end=...)."
    start, start_ckpt = load_endpoint(cfg.start, meta=named, hint=hint)
    end, end_ckpt = load_endpoint(cfg.end, meta=named, hint=hint)
    differing = [k for k in IDENTITY if start_ckpt.meta.get(k) != end_ckpt.meta.get(k)]
    if differing:
        details = "; ".join(
            f"{k}: {start_ckpt.meta.get(k)!r} vs {end_ckpt.meta.get(k)!r}" for k in differing
        )
        raise ValueError(
            f"start '{cfg.start}' and end '{cfg.end}' are not two networks of one kind "
            f"({details}). "
            "Connect endpoints of the same architecture trained on the same data set."
        )
    meta = {k: start_ckpt.meta[k] for k in IDENTITY}
    source = named if data is not None else start_ckpt.meta  # what the data set is read from
    root = cfg.data_root if cfg.data_root is not None else source.get("dataset_root")
    options = source.get("dataset_args") or {}
    if data is None:
        data = dataset_from(meta["dataset"], root, False, device, **options)
    curve = build_curve(cfg.curve.type, start, start, end, **(plain(cfg.curve.get("args")) or {}))
    curve = curve.to(device)
    path = curve_path(cfg)
    meta.update(dataset_root=root, start=str(cfg.start), end=str(cfg.end))
    if options:
        meta["dataset_args"] = options
    config = train_config(cfg.optim, cfg.seed, cfg.progress)
    hooks = trajectory_hooks(cfg, path, curve, data, config)
    train_curve(curve, data, config, checkpoint=path, meta=meta, **hooks)
    finish_distributed()
    if rank != 0:
        return {"checkpoint": str(path)}
    middle = evaluate_point(curve.model, curve.weights(0.5), data)
    log.info("curve %s at t=0.5: %s", path, scores_line(middle, data.task))
    return {"checkpoint": str(path), "middle": {k: v.as_dict() for k, v in middle.items()}}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="connect")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("connect", main)
