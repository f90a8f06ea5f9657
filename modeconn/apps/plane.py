"""Loss and error on the plane through w1, w2 and the bend:
`python -m modeconn.apps.plane curve_ckpt=checkpoints/curve.pt grid=21 margin=0.2`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    curve_wd,
    load_curve_and_data,
    log,
    out_dir,
    plain,
    run_app,
)
from modeconn.plane import PlaneResult, evaluate_plane_through_curve
from modeconn.plotting import plot_plane, save_figure


def _pair(value):
    value = plain(value)
    return tuple(value) if isinstance(value, list) else value


def run(cfg: DictConfig) -> PlaneResult:
    curve, data, ckpt = load_curve_and_data(cfg)
    out = out_dir(cfg, cfg.curve_ckpt)
    result = evaluate_plane_through_curve(
        curve,
        data,
        grid=_pair(cfg.grid),
        margin=_pair(cfg.margin),
        curve_points=cfg.curve_points,
        wd=curve_wd(cfg, ckpt),
        bn_samples=cfg.bn_samples,
        batch_size=cfg.batch_size,
        progress=cfg.progress,
        partial=out / "plane-partial",
        save_every_s=cfg.save_every_s,
    )
    result.save(out / "plane")
    save_figure(plot_plane(result), out / "plane")
    log.info(
        "plane %dx%d: train loss %.4f-%.4f; curve leaves the plane by at most %.3g",
        len(result.x),
        len(result.y),
        result.train_loss.min(),
        result.train_loss.max(),
        result.curve_distance.max() if len(result.curve_distance) else 0.0,
    )
    log.info("results in %s", out)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="plane")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    main()
