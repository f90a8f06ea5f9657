"""Align one network to another and compare the straight lines:
`python -m modeconn.apps.align start=a.pt end=b.pt method=weight restarts=4`.

end's hidden units are permuted to match start's (weight or activation matching over the
permutation groups traced from the network), the aligned end is written as a normal endpoint
checkpoint, and the line from start to end and the line from start to the aligned end are
evaluated (BatchNorm statistics recomputed at every point), each also with REPAIR at every t.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from modeconn.align import (
    RepairedLine,
    activation_matching,
    permutation_spec,
    weight_matching,
)
from modeconn.align.repair import METHODS as REPAIRS
from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    engine_settings,
    log,
    named_endpoints,
    out_dir,
    pick_device,
    run_app,
    slug,
    train_config,
)
from modeconn.apps.outputs import guard_result, job_meta
from modeconn.curves.family import Bezier, Line
from modeconn.curves.weights import fingerprint
from modeconn.data.catalogue import load_dataset
from modeconn.io.atomic import atomic_write
from modeconn.io.checkpoints import IDENTITY, load_endpoint, save_checkpoint
from modeconn.path import evaluate_path
from modeconn.plotting import plot_align, save_figure
from modeconn.training import train_curve

METHODS = ("weight", "activation")


def _file_name(label: str) -> str:
    """path_line, path_aligned, path_line_repair, path_aligned_rescale, path_curve_aligned..."""
    kind = "curve" if label.endswith("(curve)") else "line"
    base = f"path_{kind}_aligned" if "aligned" in label else f"path_{kind}"
    if kind == "line":
        base = base.replace("path_line_aligned", "path_aligned")
    return base + (f"_{label.rsplit(', ', 1)[1]}" if ", " in label else "")


def _summary(path) -> dict:
    """Both barrier definitions, the test score's min and mean along the path and the path's
    length in weight space."""
    score = "test_error" if path.task == "classification" else "test_mse"
    values = getattr(path, score)
    return {
        "barriers": path.barriers(),
        f"min_{score}": float(values.min()),
        f"max_{score}": float(values.max()),
        f"mean_{score}": float(values.mean()),
        "length": float(path.arc_length.sum()),
    }


def _aligned_path(cfg: DictConfig) -> Path:
    if cfg.checkpoint:
        return Path(cfg.checkpoint)
    name = f"{slug(Path(cfg.end).stem)}-aligned-to-{slug(Path(cfg.start).stem)}.pt"
    return Path("checkpoints") / name


@app_run
def run(cfg: DictConfig) -> dict:
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.repair is not None and cfg.repair not in REPAIRS:
        raise ValueError(f"repair must be one of {', '.join(REPAIRS)} or null, got {cfg.repair!r}")
    device = pick_device(cfg.device)
    named, data = named_endpoints(cfg, device)
    hint = "Pass the checkpoints of two trained endpoint networks (start=... end=...)."
    (a, ka), (b, kb) = (load_endpoint(p, meta=named, hint=hint) for p in (cfg.start, cfg.end))
    for key in IDENTITY:
        if ka.meta.get(key) != kb.meta.get(key):
            raise ValueError(
                f"start and end differ in {key} ({ka.meta.get(key)!r} vs {kb.meta.get(key)!r}): "
                "only networks of one architecture and data set can be aligned"
            )
    a, b = a.to(device), b.to(device)
    if data is None:
        root = cfg.data_root if cfg.data_root is not None else ka.meta.get("dataset_root")
        data = load_dataset(ka.meta["dataset"], root=root, **(ka.meta.get("dataset_args") or {}))
        data = data.to(device)
    out = out_dir(cfg, f"align-{Path(cfg.start).stem}-{Path(cfg.end).stem}")
    settings = engine_settings(cfg)
    job = {
        "start": fingerprint(*a.state_dict().values()),
        "end": fingerprint(*b.state_dict().values()),
        "method": cfg.method,
        "restarts": int(cfg.restarts),
        "seed": int(cfg.seed),
        "samples": cfg.samples,
        "repair": cfg.repair,
        "points": int(cfg.points),
        **settings.resume_config(),
    }
    for name in ("path_line", "path_aligned"):  # the repair lines go with them
        guard_result(out / name, job, cfg.get("overwrite", False))
    spec = permutation_spec(a, data.train_x[:4])
    if cfg.method == "weight":
        state, match = weight_matching(
            a, a, b, spec=spec, restarts=int(cfg.restarts), seed=cfg.seed
        )
    else:
        state, match = activation_matching(a, a, b, data, spec=spec, samples=cfg.samples)
    aligned, _ = load_endpoint(cfg.end, meta=named, hint=hint)
    aligned.load_state_dict(state)
    aligned = aligned.to(device)
    meta = {**kb.meta, "aligned_to": str(cfg.start), "alignment": cfg.method}
    ckpt = save_checkpoint(_aligned_path(cfg), "endpoint", aligned.state_dict(), meta)
    kw = dict(ts=int(cfg.points), settings=settings, progress=cfg.progress)
    lines = {
        "start to end": evaluate_path(Line(a, a, b), data, **kw),
        "start to aligned end": evaluate_path(Line(a, a, aligned), data, **kw),
    }
    if cfg.repair:  # the same two lines with REPAIR at every t
        for label, end in (("start to end", b), ("start to aligned end", aligned)):
            line = RepairedLine(a, a, end, data, spec=spec, method=cfg.repair, samples=cfg.samples)
            lines[f"{label}, {cfg.repair}"] = evaluate_path(line, data, **kw)
    if cfg.curves:  # a curve to end and one to the aligned end, from one seed
        for label, end in (("start to end", b), ("start to aligned end", aligned)):
            torch.manual_seed(int(cfg.curve_seed))
            curve = Bezier(a, a, end, degree=2).to(device)
            config = train_config(cfg.curve_optim, int(cfg.curve_seed), cfg.progress)
            train_curve(curve, data, config)
            lines[f"{label} (curve)"] = evaluate_path(curve, data, **kw)
    for label, result in lines.items():
        job_meta(result, job).save(out / _file_name(label))
    report = {
        "aligned_checkpoint": str(ckpt),
        "matching": {
            "objective": match.objective,
            "distance": match.distance,
            "sweeps": match.sweeps,
            "runs": match.runs,
        },  # fmt: skip
        "groups": {g: n for g, n in spec.sizes.items()},
        "lines": {label: _summary(p) for label, p in lines.items()},
        "job": job,
    }
    text = json.dumps(report, indent=1, default=str)
    atomic_write(out / "align.json", lambda path: path.write_text(text))
    save_figure(plot_align(lines, model=ka.meta.get("model")), out / "align")
    score = "test_error" if lines["start to end"].task == "classification" else "test_mse"
    before, after = (lines[k].barrier(score) for k in ("start to end", "start to aligned end"))
    log.info(
        "aligned %s to %s (%s matching, %d groups): %s barrier %.4g -> %.4g; checkpoint %s",
        cfg.end, cfg.start, cfg.method, len(spec.groups), score, before, after, ckpt,
    )  # fmt: skip
    log.info("results in %s", out)
    return {"checkpoint": ckpt, "lines": lines, "matching": match}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="align")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("align", main)
