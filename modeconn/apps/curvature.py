"""Curvature of the training loss: `modeconn curvature ckpt=<endpoint.pt | curve.pt> where=...`

- where=point: lambda_max, lambda_min and the top / bottom `top_k` eigenvalues (Lanczos), the
  trace (Hutchinson, with its standard error), the directional curvatures along the
  `directions` family, and the SLQ spectral density with its figure; at an endpoint, or at
  phi(t) of a curve (`t=0.5`).
- where=path (a curve checkpoint): lambda_max(t), lambda_min(t) and trace(t) beside the loss
  along the curve and (`line=true`) along the straight line between its endpoints.
- where=surface: Li et al.'s |lambda_min / lambda_max| map over the surface spanned by the
  `directions` around the point, with the loss contours.

The Hessian's options are the `hessian` block (`modeconn.curvature.hessian.HessianSettings`); maps
go
through the grid engine, so they resume from their partial files and honour `engine.*`.
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
    log,
    out_dir,
    plain,
    run_app,
)
from modeconn.apps.outputs import finish, guard_result, job_meta
from modeconn.curvature.density import slq
from modeconn.curvature.hessian import (
    HessianSettings,
    curvature_along,
    extremes_of,
    trace_of,
)
from modeconn.curvature.hvp import hessian_operator
from modeconn.curvature.maps import curvature_path, curvature_surface
from modeconn.curves.family import Line
from modeconn.curves.weights import fingerprint
from modeconn.plotting import plot_curvature_map, plot_curvature_path, plot_density, save_figure

WHERE = ("point", "path", "surface")


def _point(cfg, hessian, net, curve, data, out, name, job, model_name):
    options = hessian.operator_options()
    op = hessian_operator(net, None, data, method=options.pop("hvp"), **options)
    ext = extremes_of(
        op, k=int(cfg.top_k), tol=hessian.tol, max_steps=hessian.max_steps, seed=hessian.seed
    )
    directions = config_directions(cfg, net, curve)
    ext.meta["directional"] = curvature_along(op, net, directions[:2]).tolist()
    ext.meta["directions"] = plain(cfg.directions)
    results = {"extremes": ext}
    if hessian.trace:
        results["trace"] = trace_of(
            op,
            tol=hessian.trace_tol,
            min_samples=hessian.trace_min,
            max_samples=hessian.trace_max,
            seed=hessian.seed,
        )
    if cfg.density:
        results["density"] = slq(
            op.matvec,
            op.size,
            steps=int(cfg.density_steps),
            runs=int(cfg.density_runs),
            seed=hessian.seed,
            device=op.vector.device,
            meta={"dataset": data.name},
        )
    for kind, result in results.items():
        result.meta.update(dataset=data.name, hessian=hessian.meta())
        job_meta(result, job).save(out / f"{name}-{kind}")
    if cfg.density:
        save_figure(plot_density(results["density"], model=model_name), out / f"{name}-density")
    log.info(
        "%s: lambda_max %.5g, lambda_min %.5g (|ratio| %.3g), top %s, %d products",
        name,
        ext.lambda_max,
        ext.lambda_min,
        ext.ratio,
        [f"{v:.4g}" for v in ext.top],
        op.hvps,
    )
    if "trace" in results:
        tr = results["trace"]
        log.info("%s: trace %.5g ± %.2g (%d samples)", name, tr.mean, tr.stderr, len(tr.values))
    return results


@app_run
def run(cfg: DictConfig):
    if cfg.where not in WHERE:
        raise ValueError(f"where must be one of {', '.join(WHERE)}, got {cfg.where!r}")
    hessian = HessianSettings.from_config(plain(cfg.hessian))
    grid, resolution, refine = grid_resolution(cfg) if cfg.where == "surface" else (0, 0, {})
    curve, model, ckpt, data = load_point_checkpoint(cfg)
    if cfg.where == "path" and curve is None:
        raise ValueError("where=path needs a curve checkpoint (ckpt=<curve.pt>); got an endpoint")
    out = out_dir(cfg, cfg.ckpt)
    settings = engine_settings(cfg)
    at = f"-t{cfg.t:g}".replace(".", "p") if curve is not None and cfg.where != "path" else ""
    name = f"curvature-{cfg.where}{at}"
    job = {"hessian": hessian.meta(), "wd": cfg.wd, **settings.resume_config()}
    model_name = ckpt.meta.get("model")
    if cfg.where == "path":
        paths = {"curve": curve}
        if cfg.line:
            start, end = (curve.space.unflatten(w) for w in (curve.start, curve.end))
            paths["line"] = Line(curve.model, start, end)
        jobs = {
            k: {**job, "curve": fingerprint(p.endpoints, p.bends), "points": plain(cfg.points)}
            for k, p in paths.items()
        }
        for k, j in jobs.items():
            guard_result(out / f"{name}_{k}", j, cfg.get("overwrite", False))
        results = {
            k: curvature_path(
                p,
                data,
                plain(cfg.points),
                hessian=hessian,
                wd=float(cfg.wd),
                settings=settings,
                progress=cfg.progress,
                partial=out / f"{name}_{k}-partial",
                save_every_s=cfg.save_every_s,
            )
            for k, p in paths.items()
        }
        for k, result in results.items():
            job_meta(result, jobs[k]).save(out / f"{name}_{k}")
            log.info(
                "%s: lambda_max %.4g .. %.4g, lambda_min %.4g .. %.4g",
                k,
                result.lambda_max.min(),
                result.lambda_max.max(),
                result.lambda_min.min(),
                result.lambda_min.max(),
            )
        save_figure(plot_curvature_path(results, model=model_name), out / name)
        log.info("results in %s", out)
        return results
    net = curve.network_at(float(cfg.t), data) if curve is not None else model
    job["ckpt"] = fingerprint(*(p.detach() for p in net.parameters()))
    if cfg.where == "point":
        job.update(
            top_k=int(cfg.top_k), density=bool(cfg.density), directions=plain(cfg.directions)
        )
        guard_result(out / f"{name}-extremes", job, cfg.get("overwrite", False))
        out.mkdir(parents=True, exist_ok=True)
        return _point(cfg, hessian, net, curve, data, out, name, job, model_name)
    job.update(directions=plain(cfg.directions), grid=plain(grid), span=plain(cfg.span), **refine)
    guard_result(out / name, job, cfg.get("overwrite", False))
    directions = config_directions(cfg, net, curve)
    origin = (curve, float(cfg.t)) if curve is not None else net
    result = curvature_surface(
        curve.model if curve is not None else net,
        origin,
        directions[:2],
        data,
        grid=plain(grid),
        span=plain(cfg.span),
        hessian=hessian,
        wd=float(cfg.wd),
        settings=settings,
        progress=cfg.progress,
        partial=out / f"{name}-partial",
        save_every_s=cfg.save_every_s,
        **({"resolution": resolution} if refine else {}),
    )
    result.meta["directions"] = cfg.directions.family
    return finish(
        result,
        job,
        out / name,
        plot_curvature_map(
            result, model=model_name, mark_evaluated=bool(cfg.get("mark_evaluated", False))
        ),
        "%s: |lambda_min/lambda_max| %.3g .. %.3g",
        name,
        result.ratio.min(),
        result.ratio.max(),
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="curvature")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("curvature", main)
