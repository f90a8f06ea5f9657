"""The main job on the embedded default: `python -m modeconn.apps.demo` (or `make demo`).

digits -> endpoints (seeds 1, 2) -> Bezier curve -> path along the curve and the line ->
plane through w1, w2, theta -> ensembles versus t -> figures and a summary table. Every step
reuses the checkpoints and the apps' own `run` functions, so a rerun resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from modeconn.apps import connect, ensemble, evaluate, plane, train
from modeconn.apps.common import CONFIG_PATH, app_run, run_app


def _stage(cfg: dict) -> DictConfig:
    return OmegaConf.create(cfg)


def summary_table(paths: dict, ens, plane_result, timings: dict[str, float]) -> str:
    """The numbers a researcher looks at first, as a plain-text table: barriers of the train
    nll and the test error under both definitions in use (E: Entezari et al., the excess over
    the endpoints' interpolation; F: Frankle et al., the excess over their mean). For a
    regression data set the train mse and the test mse take their places."""
    c, line = paths["curve"], paths["line"]
    term, score = ("nll", "error") if c.task == "classification" else ("mse", "mse")

    def cell(value: float, width: int) -> str:  # errors in %, mse as it is
        return f"{value:{width - 1}.2f}%" if score == "error" else f"{value:{width}.4f}"

    rows = [
        f"{'':16s}{'max train':>10s}{f'train {term} barrier':>20s}"
        f"{f'test {score} barrier':>20s}{f'test {score}':>17s}",
        f"{'':16s}{term:>10s}{'E':>10s}{'F':>10s}{'E':>10s}{'F':>10s}{'min':>8s}{'max':>9s}",
    ]
    for name, r in (("straight line", line), ("Bezier curve", c)):
        b, train, test = r.barriers(), f"train_{term}", f"test_{score}"
        rows.append(
            f"{name:16s}{getattr(r, train).max():10.4f}"
            f"{b[train]['entezari']:10.4f}{b[train]['frankle']:10.4f}"
            f"{cell(b[test]['entezari'], 10)}{cell(b[test]['frankle'], 10)}"
            f"{cell(getattr(r, test).min(), 8)}{cell(getattr(r, test).max(), 9)}"
        )
    ratio = getattr(line, f"train_{term}").max() / getattr(c, f"train_{term}").max()
    start, reference = getattr(ens, f"start_{score}"), getattr(ens, f"reference_{score}")
    mid = start - ens.ensemble_gain(0.5)
    ends = getattr(c, f"test_{score}")
    gain, unit = (
        (f"{ens.ensemble_gain(0.5):+.2f} points", "%")
        if score == "error"
        else (
            f"{ens.ensemble_gain(0.5):+.4f}",
            "",
        )
    )
    fmt = ".2f" if score == "error" else ".4f"
    rows += [
        "E: max_t L(t) - ((1 - t) L(0) + t L(1))  (Entezari et al. 2022)",
        "F: max_t L(t) - (L(0) + L(1)) / 2        (Frankle et al. 2020)",
        "",
        f"line / curve max train {term}: {ratio:.1f}x; max train loss with the l2 term (the "
        f"paper's objective): line {line.train_loss.max():.4f}, curve {c.train_loss.max():.4f}",
        f"endpoint test {score}: w1 {ends[0]:{fmt}}{unit}, w2 {ends[-1]:{fmt}}{unit}",
        f"ensemble {{w1, phi(0.5)}}: {mid:{fmt}}{unit} test {score} (gain over w1: "
        f"{gain}); {{w1, w2}}: {reference:{fmt}}{unit}",
        f"plane {len(plane_result.x)}x{len(plane_result.y)}: train loss "
        f"{plane_result.train_loss.min():.4f} .. {plane_result.train_loss.max():.4f}",
        "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
    ]
    return "\n".join(rows)


@app_run
def run(cfg: DictConfig) -> dict:
    timings: dict[str, float] = {}
    ckpts, out = Path(cfg.checkpoints), Path(cfg.out)
    common = {"device": cfg.device, "progress": cfg.progress}
    began = time.perf_counter()
    endpoints = []
    for seed in cfg.seeds:
        path = ckpts / f"{cfg.dataset.name}-seed{seed}.pt"
        train.run(
            _stage(
                {
                    "dataset": cfg.dataset,
                    "model": cfg.model,
                    "optim": cfg.endpoint_optim,
                    "seed": seed,
                    "checkpoint": str(path),
                    **common,
                }
            )
        )
        endpoints.append(str(path))
    timings["endpoints"] = time.perf_counter() - began

    began = time.perf_counter()
    curve_path = ckpts / f"curve-{cfg.curve.type}-{cfg.dataset.name}.pt"  # as the endpoints'
    connect.run(
        _stage(
            {
                "curve": cfg.curve,
                "optim": cfg.curve_optim,
                "start": endpoints[0],
                "end": endpoints[-1],
                "data_root": None,
                "seed": 1,
                "checkpoint": str(curve_path),
                **common,
            }
        )
    )
    timings["curve"] = time.perf_counter() - began

    shared = {
        "curve_ckpt": str(curve_path),
        "engine": cfg.engine,
        "data_root": None,
        "out": str(out),
        **common,
    }
    began = time.perf_counter()
    paths = evaluate.run(_stage({**shared, "points": cfg.path_points, "line": True, "wd": None}))
    timings["path"] = time.perf_counter() - began
    began = time.perf_counter()
    plane_result = plane.run(
        _stage(
            {
                **shared,
                "grid": cfg.plane_grid,
                "wd": None,
                "margin": cfg.plane_margin,
                "curve_points": cfg.path_points,
                "save_every_s": 30,
                "shard": 0,
                "num_shards": 1,
                "merge": False,
            }
        )
    )
    timings["plane"] = time.perf_counter() - began
    began = time.perf_counter()
    ens = ensemble.run(_stage({**shared, "points": cfg.ensemble_points, "line": True}))
    timings["ensembles"] = time.perf_counter() - began

    table = summary_table(paths, ens, plane_result, timings)
    print(f"\nmodeconn demo: {cfg.dataset.name}, {cfg.model.name}, {cfg.curve.type} curve\n")
    print(table)
    print(f"\nfigures and results in {out}/, checkpoints in {ckpts}/")
    return {"paths": paths, "plane": plane_result, "ensembles": ens, "table": table}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="demo")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("demo", main)
