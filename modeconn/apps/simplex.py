"""Mode-connecting volumes (Benton et al. 2021): `modeconn simplex start=a.pt` grows a simplex
from one trained network (SPRO), `modeconn simplex networks=[a.pt,b.pt,c.pt]` a complex of
connectors between several; then the simplex ensemble against a deep ensemble and FGE, and
the loss over its faces.

Training goes a vertex at a time, each vertex its own checkpoint (`<checkpoint>-vertex<k>.pt`):
a rerun skips the finished vertices and resumes the one it stopped in. The results are
`ensemble` (a `SimplexEnsembleResult`), `faces` (a `SimplexPointsResult`), `simplex.png` (the
triangle heat maps) and `simplex.json` (every ensemble's accuracy, NLL and ECE, the vertices'
volume weights and training), in `out`; a finished result of another configuration there is
not replaced without overwrite=true.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    dataset_from,
    engine_settings,
    log,
    named_endpoints,
    out_dir,
    pick_device,
    plain,
    run_app,
    slug,
)
from modeconn.apps.outputs import guard_result, job_meta
from modeconn.curves.weights import fingerprint
from modeconn.engine.point import evaluate_point
from modeconn.io.atomic import atomic_write
from modeconn.io.checkpoints import IDENTITY, load_endpoint
from modeconn.plotting import plot_simplex, save_figure
from modeconn.volumes import (
    SimplexConfig,
    deep_ensemble,
    default_triples,
    evaluate_faces,
    fge_ensemble,
    simplex_ensemble,
    train_simplex,
    vertex_names,
)

HINT = "Pass checkpoints of trained endpoint networks (start=a.pt, or networks=[a.pt,b.pt])."


def _inputs(cfg: DictConfig) -> list[str]:
    """The trained networks the volume grows from: [start], or the networks of a complex."""
    start, networks = cfg.start, plain(cfg.networks)
    if (start is None) == (networks is None):
        raise ValueError(
            "pass start=<endpoint.pt> (a simplex grown from one network) or "
            "networks=[a.pt,b.pt,...] (a complex between several), "
            + ("not both" if start is not None else "got neither")
        )
    if start is not None:
        return [str(start)]
    if isinstance(networks, str) or len(networks) < 2:
        raise ValueError(
            f"networks must list two or more endpoint checkpoints, e.g. networks=[a.pt,b.pt,c.pt], "
            f"got {networks!r}; for one network use start=<endpoint.pt>"
        )
    return [str(p) for p in networks]


def _load_all(paths: list[str], named: dict, device) -> tuple[list, list]:
    """The networks and their checkpoints, refused unless all are of one kind."""
    loaded = [load_endpoint(p, meta=named, hint=HINT) for p in paths]
    first = loaded[0][1].meta
    for path, (_, ckpt) in zip(paths[1:], loaded[1:], strict=True):
        differing = [k for k in IDENTITY if ckpt.meta.get(k) != first.get(k)]
        if differing:
            details = "; ".join(f"{k}: {first.get(k)!r} vs {ckpt.meta.get(k)!r}" for k in differing)
            raise ValueError(
                f"'{paths[0]}' and '{path}' are not two networks of one kind ({details}). "
                "Join endpoints of the same architecture trained on the same data set."
            )
    return [net.to(device) for net, _ in loaded], [ckpt for _, ckpt in loaded]


def _finite(value):
    """A float for JSON: NaN and inf as None."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


@app_run
def run(cfg: DictConfig) -> dict:
    """Train (or resume) the simplex or complex the config describes, evaluate its ensemble
    against the baselines and its faces; returns the trained run and the results."""
    paths = _inputs(cfg)
    device = pick_device(cfg.device)
    named, data = named_endpoints(cfg, device)
    nets, ckpts = _load_all(paths, named, device)
    meta = {k: ckpts[0].meta[k] for k in IDENTITY}
    source = named if data is not None else ckpts[0].meta
    root = cfg.data_root if cfg.data_root is not None else source.get("dataset_root")
    options = source.get("dataset_args") or {}
    if data is None:
        data = dataset_from(meta["dataset"], root, False, device, **options)
    meta.update(dataset_root=root, networks=paths, **({"dataset_args": options} if options else {}))
    config = SimplexConfig(**plain(cfg.simplex), progress=bool(cfg.progress))
    compare = plain(cfg.compare)
    compare = compare if compare is not None else (paths if len(paths) > 1 else [])
    settings = engine_settings(cfg)
    name = f"simplex-{slug(Path(paths[0]).stem)}" + (
        f"-and-{len(paths) - 1}" if len(paths) > 1 else ""
    )
    out = out_dir(cfg, name)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else Path("checkpoints") / f"{name}.pt"
    job = {
        "networks": [fingerprint(*n.parameters()) for n in nets],
        "simplex": {k: v for k, v in plain(cfg.simplex).items() if k != "save_every"},
        "ensemble": plain(cfg.ensemble),
        "fge": plain(cfg.fge),
        "faces": plain(cfg.faces),
        "compare": compare,
        **settings.resume_config(),
    }
    for result in ("ensemble", "faces"):
        guard_result(out / result, job, cfg.get("overwrite", False))

    trained = train_simplex(nets[0], nets, data, config, checkpoint=checkpoint, meta=meta)
    simplex, names = trained.simplex, vertex_names(trained.simplex)
    bn = settings.bn_samples
    ensemble = simplex_ensemble(
        simplex, data, int(cfg.ensemble.samples), seed=int(cfg.ensemble.seed), bn_samples=bn,
        progress=cfg.progress,
    )  # fmt: skip
    ensembles = {"simplex": ensemble.scores()}
    base = evaluate_point(nets[0], None, data, bn_samples=bn)["test"]
    if compare:
        deep_nets, _ = _load_all(compare, named, device)
        ensembles["deep ensemble"] = deep_ensemble(nets[0], deep_nets, data, bn_samples=bn)
    if cfg.fge.enabled:
        _, ensembles["fge"] = fge_ensemble(
            nets[0], data, trained.epochs, cycle=int(cfg.fge.cycle), lr1=float(cfg.fge.lr1),
            lr2=float(cfg.fge.lr2), wd=config.wd, momentum=config.momentum,
            batch_size=config.batch_size, seed=config.seed, augment=config.augment,
            bn_samples=bn, progress=cfg.progress, checkpoint=out / "fge-run.pt",
        )  # fmt: skip
    triples = plain(cfg.faces.triples)
    faces = None
    try:
        triples = default_triples(simplex) if triples is None else triples
    except ValueError as err:  # a complex of edges (one connector) has no triangle to draw
        log.info("no faces drawn: %s", err)
    else:
        faces = evaluate_faces(
            simplex, data, triples, int(cfg.faces.resolution), names=names, settings=settings,
            progress=cfg.progress, partial=out / "faces-partial",
        )  # fmt: skip
        job_meta(faces, job).save(out / "faces")
        figure = plot_simplex(faces, points=ensemble.coefficients, model=meta.get("model"))
        save_figure(figure, out / "simplex")
    job_meta(ensemble, job).save(out / "ensemble")
    report = {
        "type": simplex.kind,
        "vertices": names,
        "networks": paths,
        "epochs": trained.epochs,
        "stages": [
            {
                "vertex": names[s["vertex"]],
                "lam": s["lam"],
                "checkpoint": s["checkpoint"],
                "epochs": len(s["history"]),
                "last": {k: _finite(v) for k, v in (s["history"] or [{}])[-1].items()},
            }
            for s in trained.stages
        ],
        "base": {"error": base.error, "accuracy": 100.0 - base.error, "nll": base.nll}
        if data.task == "classification"
        else base.as_dict(),
        "ensembles": ensembles,
        "faces": faces.summary() if faces is not None else None,
        "bn": "recomputed at every evaluated point (the reference shares one set)",
        "job": job,
    }
    text = json.dumps(report, indent=1, default=str)
    atomic_write(out / "simplex.json", lambda path: path.write_text(text))
    score = "error" if data.task == "classification" else "mse"
    unit = " %" if score == "error" else ""
    summary = "; ".join(
        f"{k} of {v['members']}: {v[score]:.4g}{unit}, nll {v['nll']:.4g}"
        for k, v in ensembles.items()
    )
    log.info("%s of %d vertices, test %s: %s", simplex.kind, simplex.num_vertices, score, summary)
    log.info("results in %s", out)
    return {"run": trained, "ensemble": ensemble, "faces": faces, "report": report}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="simplex")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("simplex", main)
