"""Loss and error along a trained curve and the straight line:
`python -m modeconn.apps.evaluate curve_ckpt=checkpoints/curve.pt points=61`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    curve_wd,
    engine_settings,
    load_curve_and_data,
    log,
    out_dir,
    plain,
    run_app,
)
from modeconn.apps.outputs import guard_result, job_meta
from modeconn.curves import Line
from modeconn.engine import diverged_note
from modeconn.path import PathResult, evaluate_path
from modeconn.plotting import plot_path, save_figure
from modeconn.weights import fingerprint


def run(cfg: DictConfig) -> dict[str, PathResult]:
    curve, data, ckpt = load_curve_and_data(cfg)
    out = out_dir(cfg, cfg.curve_ckpt)
    settings = engine_settings(cfg)
    kw = dict(wd=curve_wd(cfg, ckpt), settings=settings, progress=cfg.progress)
    paths = {"curve": curve}
    if cfg.line:
        start, end = (curve.space.unflatten(w) for w in (curve.start, curve.end))
        paths["line"] = Line(curve.model, start, end)
    jobs = {
        name: {
            "curve": fingerprint(path.endpoints, path.bends),
            "points": plain(cfg.points),
            "wd": kw["wd"],
            **settings.resume_config(),
        }
        for name, path in paths.items()
    }
    for name, job in jobs.items():  # before any work: a refusal costs nothing
        guard_result(out / f"path_{name}", job, cfg.get("overwrite", False))
    results = {
        name: evaluate_path(path, data, cfg.points, partial=out / f"path_{name}-partial", **kw)
        for name, path in paths.items()
    }
    for name, result in results.items():
        job_meta(result, jobs[name]).save(out / f"path_{name}")
        note = diverged_note(name, result.train_loss, [f"t={t:.3g}" for t in result.ts])
        if note:
            log.warning(note)
        summary = result.summary()
        b = result.barriers()
        log.info(
            "%s: max train nll %.4f; train nll barrier %.4f (Entezari) / %.4f (Frankle); "
            "test error barrier %.2f / %.2f points; test error %.2f-%.2f %%",
            name,
            summary["train_nll"]["max"],
            b["train_nll"]["entezari"],
            b["train_nll"]["frankle"],
            b["test_error"]["entezari"],
            b["test_error"]["frankle"],
            summary["test_error"]["min"],
            summary["test_error"]["max"],
        )
    figure = plot_path(results["curve"], results.get("line"), model=ckpt.meta.get("model"))
    save_figure(figure, out / "path")
    log.info("results in %s", out)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.cli import run_module

    run_module("evaluate", main)
