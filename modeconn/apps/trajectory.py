"""Train a network while recording its trajectory, then draw the path on its plane:
`modeconn trajectory net=100x1` (spiral data, an MLP of 1 hidden layer of 100 units).

Writes to `results/trajectory/<data>-<net>-seed<seed>/`: the training checkpoint (resumable),
the trajectory store (`trajectory/`), `trajectory.npz/.json` (projection, residuals, true
loss of every point and the contour value under it), `surface.npz/.json` (the plane), the
figure `trajectory.png`, the animation `trajectory.gif` (and .mp4 with ffmpeg), with the
decision regions beside the path for 2-D inputs, and `summary.json`. `compare=[{momentum:
0}]` trains more runs from the same initialisation with those optimiser settings and draws
all of them on one fixed (filter-normalised random) plane through this run's final point.

The trajectory post's grid as one multirun, then its gallery figure and table (`init=he`:
He-initialised Linear layers; with PyTorch's default the 10-layer nets never train):
    modeconn trajectory -m net=logistic,5x1,20x1,100x1,5x5,20x5,100x5,5x10,20x10,100x10
    modeconn trajectory gallery=results/trajectory

`ckpt=<checkpoint.pt>` draws a trajectory that `train` or `connect` recorded with
`trajectory.every=...` instead (a curve checkpoint: the curve-training video).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    dataset_from,
    dataset_options,
    engine_settings,
    log,
    pick_device,
    plain,
    run_app,
    slug,
    train_config,
)
from modeconn.engine.point import evaluate_point
from modeconn.io.checkpoints import load_checkpoint, load_curve, load_endpoint
from modeconn.io.store import atomic_write
from modeconn.landscape.surface import SurfaceResult
from modeconn.models import build_model
from modeconn.plotting import save_figure
from modeconn.plotting.animation import animate_curve_training, animate_trajectory
from modeconn.plotting.trajectory import plot_gallery, plot_trajectories, plot_trajectory
from modeconn.training import TrainConfig, train_endpoint
from modeconn.trajectory.curve_frames import curve_training_planes
from modeconn.trajectory.pca import (
    TrajectoryResult,
    decision_regions,
    evaluate_trajectory,
    fixed_directions,
    frame_regions,
    input_grid,
    project,
)
from modeconn.trajectory.recorder import TrajectoryStore, record_trajectory


def model_args(cfg: DictConfig) -> dict:
    """`net=WxL` (L hidden layers of W units) or `net=logistic`, else `model.args`."""
    if cfg.net is None:
        return plain(cfg.model.get("args")) or {}
    if cfg.net == "logistic":
        return {"hidden": 0, "depth": None}
    found = re.fullmatch(r"(\d+)x(\d+)", str(cfg.net))
    if not found:
        raise ValueError(
            f"net must be WxL (e.g. 100x1: 1 hidden layer of 100 units) or logistic, got {cfg.net}"
        )
    return {"hidden": int(found[1]), "depth": int(found[2])}


def net_name(args: dict) -> str:
    if args.get("hidden") in (0, []):
        return "logistic"
    if isinstance(args.get("hidden"), int):
        return f"{args['hidden']}x{args.get('depth') or 1}"
    return "x".join(str(h) for h in args.get("hidden", []))


@torch.no_grad()
def he_init_(model: torch.nn.Module) -> torch.nn.Module:
    """Every Linear weight from N(0, 2 / fan_in), biases 0 (He et al. 2015). PyTorch's default
    (variance 1 / (3 fan_in)) shrinks the signal about 2.4x per ReLU layer: a 10-layer MLP
    starts with outputs ~1e-5 and SGD leaves it at the uniform prediction (loss ln 3)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    return model


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=float)))


def _train(cfg, data, device, config: TrainConfig, args: dict, out: Path):
    """Train (or resume) one run from the seed's initialisation, recording to out/."""
    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model.name, num_classes=data.num_classes, input_shape=data.input_shape, **args
    ).to(device)
    if cfg.init == "he":
        he_init_(model)
    elif cfg.init != "default":
        raise ValueError(f"init must be 'default' (PyTorch's) or 'he', got {cfg.init!r}")
    every = cfg.every if cfg.every == "epoch" else int(cfg.every)
    recorder = record_trajectory(out / "trajectory", model, data, config, every=every)
    meta = {"model": cfg.model.name, "model_args": args, "dataset": cfg.dataset.name}
    train_endpoint(model, data, config, checkpoint=out / "model.pt", meta=meta, **recorder.hooks())
    return model, TrajectoryStore(out / "trajectory")


@app_run
def run(cfg: DictConfig) -> dict:
    if cfg.gallery:
        return gallery(Path(cfg.gallery))
    if cfg.ckpt:
        return _recorded(cfg)
    device = pick_device(cfg.device)
    options = dataset_options(cfg.dataset)
    data = dataset_from(cfg.dataset.name, cfg.dataset.root, cfg.dataset.download, device, **options)
    args = model_args(cfg)
    init = "" if cfg.init == "default" else f"-{cfg.init}"
    name = f"{cfg.dataset.name}-{net_name(args)}{init}-seed{cfg.seed}"
    out = Path(cfg.out) if cfg.out else Path("results") / "trajectory" / slug(name)
    config = train_config(cfg.optim, cfg.seed, cfg.progress)
    model, store = _train(cfg, data, device, config, args, out)
    title = f"{net_name(args)} MLP on {cfg.dataset.name}, seed {cfg.seed}"
    info = {"name": name, "net": net_name(args), "dataset": cfg.dataset.name, "init": cfg.init}
    return _draw(cfg, model, store, data, out, title, info, args, device)


def _draw(cfg, model, store, data, out: Path, title: str, info: dict, args, device) -> dict:
    """The plane, the figures, the animation, the comparison runs and the summary of a run."""
    settings = engine_settings(cfg)
    kw = dict(grid=plain(cfg.grid), margin=float(cfg.margin), wd=float(cfg.wd), settings=settings)
    result, surface = evaluate_trajectory(
        model, store, data, directions=cfg.directions, progress=cfg.progress,
        partial=out / "surface-partial", **kw,
    )  # fmt: skip
    result.meta.update(**info, model_args=args)
    surface.meta.update(dataset=info["dataset"])
    result.save(out / "trajectory")
    surface.save(out / "surface")
    save_figure(plot_trajectory(result, surface, title=title), out / "trajectory.png")
    two_d = tuple(data.input_shape) == (2,) and data.task == "classification"
    if two_d:
        axes = input_grid(data)
        labels, conf = decision_regions(model, torch.as_tensor(np.array(store.points()[-1])), axes)
        arrays = dict(x=axes[0], y=axes[1], labels=labels, confidence=conf)
        atomic_write(out / "regions.npz", lambda tmp: _savez(tmp, arrays))
    if cfg.animate:
        regions = frame_regions(model, store, data, cfg.frames) if two_d else None
        animate_trajectory(
            result, surface, out / "trajectory", frames=cfg.frames, regions=regions,
            data=data if two_d else None, title=title,
        )  # fmt: skip
    if cfg.compare:
        _compare(cfg, data, device, args, out, model, store, result, kw)
    scores = evaluate_point(model, None, data)
    summary = {
        **info,
        "weights": store.dim,
        "points": len(store),
        "final_train_loss": scores["train"].as_dict().get("nll", float("nan")),
        "train_accuracy": 100 - scores["train"].as_dict().get("error", float("nan")),
        "test_accuracy": 100 - scores["test"].as_dict().get("error", float("nan")),
        **result.summary(),
        "pc1": float(result.ratios[0]),
        "pc2": float(result.ratios[1]),
    }
    _write_json(out / "summary.json", summary)
    log.info(
        "%s: %.1f %% of the variance in 2 PCs, final train loss %.4f; results in %s",
        info["name"], 100 * summary["variance_2pc"], summary["final_train_loss"], out,
    )  # fmt: skip
    return summary


def _recorded(cfg: DictConfig) -> dict:
    """Figures of a trajectory recorded by `train`/`connect` with `trajectory.every=...`: the
    path of an endpoint, or the curve-training video of a curve checkpoint."""
    if cfg.compare:
        raise ValueError("compare=... trains new runs; it needs a training run, not ckpt=...")
    device = pick_device(cfg.device)
    path = Path(cfg.ckpt)
    store = TrajectoryStore(cfg.store or path.with_suffix(".trajectory"))
    kind = load_checkpoint(path).kind
    curve = None
    if kind == "curve":
        curve, ckpt = load_curve(path)
        curve = curve.to(device)
    else:
        model, ckpt = load_endpoint(path, hint="Pass an endpoint or a curve checkpoint (ckpt=...).")
        model = model.to(device)
    root = ckpt.meta.get("dataset_root")
    options = ckpt.meta.get("dataset_args") or {}
    data = dataset_from(ckpt.meta["dataset"], root, False, device, **options)
    out = Path(cfg.out) if cfg.out else Path("results") / "trajectory" / slug(path.stem)
    if curve is None:
        info = {"name": path.stem, "net": ckpt.meta.get("model"), "dataset": ckpt.meta["dataset"]}
        title = f"{ckpt.meta.get('model')} on {ckpt.meta['dataset']}"
        return _draw(cfg, model, store, data, out, title, info, ckpt.meta.get("model_args"), device)
    steps, planes = curve_training_planes(
        curve, store, data, frames=int(cfg.frames), grid=plain(cfg.grid), wd=float(cfg.wd),
        settings=engine_settings(cfg), progress=cfg.progress,
    )  # fmt: skip
    if not planes:
        raise ValueError(f"the trajectory '{store.path}' never leaves the segment w1-w2")
    files = animate_curve_training(planes, out / "curve-training", steps=steps)
    log.info("curve training: %d frames in %s", len(planes), files[0])
    return {"frames": len(planes), "steps": steps, "files": [str(f) for f in files]}


def _compare(cfg, data, device, args, out, model, store, result, kw) -> None:
    """Runs with other optimiser settings from the same initialisation, on one fixed plane.

    compare_plane="finals": the plane through this run's final point (the origin), the shared
    start and the first comparison run's final point (d1 = start - final, d2 = other final -
    final), so both paths' ends lie in it exactly; "filter": two random filter-normalised
    directions at the final point (Li et al.'s random plane: paths are nearly orthogonal to
    it in high dimensions, so they project to short squiggles)."""
    points = store.points()
    final = torch.as_tensor(np.array(points[-1]), dtype=torch.float64)
    start = torch.as_tensor(np.array(points[0]), dtype=torch.float64)
    others, labels = [], []
    for k, change in enumerate(cfg.compare):
        change = plain(change)
        config = TrainConfig(**{**plain(cfg.optim), **change, "seed": cfg.seed, "progress": False})
        _, other = _train(cfg, data, device, config, args, out / f"compare{k + 1}")
        others.append(other)
        labels.append(", ".join(f"{key} {value}" for key, value in change.items()))
    plane = cfg.get("compare_plane", "finals")
    if plane == "finals":
        other_final = torch.as_tensor(np.array(others[0].points()[-1]), dtype=torch.float64)
        dirs, title = torch.stack([start - final, other_final - final]), "start and final points"
    elif plane == "filter":
        centre = {k: v.to(device) for k, v in model.state_dict().items()}
        dirs, title = fixed_directions(centre, norm="filter").double(), "filter-normalised"
    else:
        raise ValueError(f"compare_plane must be 'finals' or 'filter', got {plane!r}")
    opt = cfg.optim.get("optimizer", "sgd")
    labels.insert(0, f"{opt}, lr {cfg.optim.lr}, momentum {cfg.optim.momentum}")
    runs = []
    for run_store in (store, *others):
        coords, residual = project(run_store, final, dirs)
        runs.append(TrajectoryResult(run_store.steps, run_store.losses, coords, residual, None))
    # one plane for all: spanned over every run's projected path
    allxy = np.concatenate([r.coords for r in runs])
    lo, hi = allxy.min(0), allxy.max(0)
    pad = 0.2 * (hi - lo)
    span = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
    base, surface = evaluate_trajectory(
        model, store, data, directions=dirs, true_loss=False, progress=False, span=span,
        grid=kw["grid"], wd=kw["wd"], settings=kw["settings"],
    )  # fmt: skip
    for r in runs:
        r.ratios, r.meta = base.ratios, base.meta
    fig = plot_trajectories(surface, runs, labels, title=f"one fixed plane ({title})")
    save_figure(fig, out / "trajectories-fixed.png")


def gallery(root: Path) -> dict:
    """Collect every run under `root` (folders with summary.json): one figure, one table."""
    folders = sorted(p.parent for p in root.glob("*/summary.json"))
    if not folders:
        raise FileNotFoundError(f"no trajectory runs under '{root}' (folders with summary.json)")
    entries, rows = [], []
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        regions = None
        if (folder / "regions.npz").is_file():
            with np.load(folder / "regions.npz") as z:
                regions = ((z["x"], z["y"]), z["labels"], z["confidence"])
        entries.append(
            {
                "name": summary["net"],
                "result": TrajectoryResult.load(folder / "trajectory"),
                "surface": SurfaceResult.load(folder / "surface"),
                "regions": regions,
                "data": _dataset(summary.get("dataset") or summary["name"].split("-")[0]),
                "order": _order(summary["net"]),
            }
        )
        rows.append(summary)
    entries.sort(key=lambda e: e["order"])
    rows.sort(key=lambda r: _order(r["net"]))
    save_figure(plot_gallery(entries), root / "gallery.png")
    table = [
        "| net (units x layers) | weights | final train loss | train acc. | test acc. | "
        "PC1 | PC2 | 2 PCs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['net']} | {r['weights']} | {r['final_train_loss']:.4f} | "
            f"{r['train_accuracy']:.1f} % | {r['test_accuracy']:.1f} % | {100 * r['pc1']:.1f} % | "
            f"{100 * r['pc2']:.1f} % | {100 * r['variance_2pc']:.1f} % |"
        )
    atomic_write(root / "gallery.md", lambda tmp: tmp.write_text("\n".join(table) + "\n"))
    log.info("gallery of %d runs in %s\n%s", len(rows), root, "\n".join(table))
    return {"runs": rows, "table": "\n".join(table)}


def _dataset(name: str | None):
    """The run's data set for the points under its decision regions, if it is embedded."""
    from modeconn.data.catalogue import load_dataset

    try:
        return load_dataset(name) if name in ("spiral", "moons") else None
    except (ValueError, OSError):
        return None


def _order(net: str) -> tuple:
    if net == "logistic":
        return (1_000, 0)  # the last row of the gallery, after the depths
    units, _, layers = net.partition("x")
    return (int(layers or 1), int(units or 0))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="trajectory")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("trajectory", main)
