"""Ensembles of w1 with phi(t) versus t, along the curve and the line:
`python -m modeconn.apps.ensemble curve_ckpt=checkpoints/curve.pt points=21`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    engine_settings,
    load_curve_and_data,
    out_dir,
    run_app,
)
from modeconn.apps.outputs import finish, guard_result, reported_score
from modeconn.curves.weights import fingerprint
from modeconn.ensembles.along_curve import EnsembleResult, ensembles_along_curve
from modeconn.plotting import plot_ensembles


@app_run
def run(cfg: DictConfig) -> EnsembleResult:
    curve, data, ckpt = load_curve_and_data(cfg)
    out = out_dir(cfg, cfg.curve_ckpt)
    settings = engine_settings(cfg)
    job = {
        "curve": fingerprint(curve.endpoints, curve.bends),
        "points": cfg.points,
        "line": cfg.line,
        **settings.resume_config(),
    }
    guard_result(out / "ensembles", job, cfg.get("overwrite", False))
    result = ensembles_along_curve(
        curve,
        data,
        cfg.points,
        line=cfg.line,
        bn_samples=settings.bn_samples,
        batch_size=settings.batch_size,
        progress=cfg.progress,
        autocast=settings.autocast,
        compile=settings.compile,
        layout=settings.layout,
    )
    score = reported_score(result.task)
    start, reference = getattr(result, f"start_{score}"), getattr(result, f"reference_{score}")
    if score == "error":
        line = "w1 alone %.2f %% test error; {w1, phi(0.5)} %.2f %%; {w1, w2} %.2f %%"
    else:
        line = "w1 alone %.4f test mse; {w1, phi(0.5)} %.4f; {w1, w2} %.4f"
    figure = plot_ensembles(result, model=ckpt.meta.get("model"))
    mid = start - result.ensemble_gain(0.5)
    return finish(result, job, out / "ensembles", figure, line, start, mid, reference)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="ensemble")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("ensemble", main)
