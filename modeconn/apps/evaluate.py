"""Loss and error along a trained curve and the straight line:
`python -m modeconn.apps.evaluate curve_ckpt=checkpoints/curve.pt points=61`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    curve_wd,
    engine_settings,
    load_curve_and_data,
    log,
    out_dir,
    plain,
    run_app,
)
from modeconn.apps.outputs import guard_result, job_meta
from modeconn.curves.family import Line
from modeconn.curves.weights import fingerprint
from modeconn.engine import diverged_note
from modeconn.path import PathResult, evaluate_path
from modeconn.plotting import plot_path, save_figure


@app_run
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
        # the task's data term and test score: nll and error (%), or mse and mse
        term, score = ("nll", "error") if result.task == "classification" else ("mse", "mse")
        unit, places = (" points", "%.2f") if score == "error" else ("", "%.4f")
        log.info(
            f"%s: max train {term} %.4f; train {term} barrier %.4f (Entezari) / %.4f "
            f"(Frankle); test {score} barrier {places} / {places}{unit}; test {score} "
            f"{places}-{places}{' %%' if score == 'error' else ''}",
            name,
            summary[f"train_{term}"]["max"],
            b[f"train_{term}"]["entezari"],
            b[f"train_{term}"]["frankle"],
            b[f"test_{score}"]["entezari"],
            b[f"test_{score}"]["frankle"],
            summary[f"test_{score}"]["min"],
            summary[f"test_{score}"]["max"],
        )
    figure = plot_path(results["curve"], results.get("line"), model=ckpt.meta.get("model"))
    save_figure(figure, out / "path")
    log.info("results in %s", out)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("evaluate", main)
