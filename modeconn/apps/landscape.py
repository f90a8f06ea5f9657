"""The loss landscape around a trained network, or around phi(t) of a trained curve:
`modeconn landscape ckpt=checkpoints/<endpoint>.pt directions=filter grid=51 span=1.0`
(`ckpt=<curve.pt> t=0.5` for a surface across the low-loss tunnel; `dims=1` for a line).

Directions come from `conf/directions/` (filter, qr, zca, pca; tangent for a curve: dphi/dt
and a random direction orthogonal to it); BatchNorm statistics are
recomputed at every point unless `bn=origin` (Li et al.'s stale centre statistics).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    config_directions,
    engine_settings,
    grid_resolution,
    load_point_checkpoint,
    out_dir,
    plain,
    run_app,
)
from modeconn.apps.outputs import finish, guard_result
from modeconn.curves.weights import fingerprint
from modeconn.landscape.surface import evaluate_line, evaluate_surface
from modeconn.plotting import plot_contour, plot_line


@app_run
def run(cfg: DictConfig):
    grid, resolution, refine = grid_resolution(cfg)
    if refine and int(cfg.dims) != 2:
        raise ValueError("resolution=adaptive refines a surface: use it with dims=2")
    curve, model, ckpt, data = load_point_checkpoint(cfg)
    if curve is not None:  # the directions are scaled to the network at phi(t)
        centre = curve.network_at(float(cfg.t), data)
        model, origin = curve.model, (curve, float(cfg.t))
    else:
        centre, origin = model, model
    directions = config_directions(cfg, centre, curve)
    dims = int(cfg.dims)
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 (a line) or 2 (a surface), got {cfg.dims}")
    grid = plain(grid)
    out = out_dir(cfg, cfg.ckpt)
    at = f"-t{cfg.t:g}".replace(".", "p") if curve else ""  # no dot: it would be a suffix
    name = f"landscape{dims}d-{cfg.directions.family}{at}"
    job = {
        "ckpt": fingerprint(*(p.detach() for p in centre.parameters())),
        "directions": plain(cfg.directions),
        "grid": grid,
        "span": plain(cfg.span),
        "bn": cfg.bn,
        "wd": cfg.wd,
        **engine_settings(cfg).resume_config(),
        **refine,
    }
    guard_result(out / name, job, cfg.get("overwrite", False))
    kw = dict(
        bn=cfg.bn,
        wd=float(cfg.wd),
        settings=engine_settings(cfg),
        progress=cfg.progress,
        partial=out / f"{name}-partial",
        save_every_s=cfg.save_every_s,
    )
    if dims == 2:
        # evaluate_surface reads grid (int or pair) and span (s, a pair or one per axis)
        result = evaluate_surface(
            model, origin, directions[:2], data, grid=grid, span=plain(cfg.span), **kw,
            **({"resolution": resolution} if refine else {}),
        )  # fmt: skip
        figure = plot_contour(
            result,
            "train_loss",
            model=ckpt.meta.get("model"),
            mark_evaluated=bool(cfg.get("mark_evaluated", False)),
        )
    else:
        result = evaluate_line(
            model, origin, directions[0], data, points=grid, span=plain(cfg.span), **kw
        )
        figure = plot_line(result, model=ckpt.meta.get("model"))
    low, high = result.train_loss.min(), result.train_loss.max()
    return finish(result, job, out / name, figure, "%s: train loss %.4f .. %.4f", name, low, high)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="landscape")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("landscape", main)
