"""Representation similarity (SVCCA, PWCCA, CKA): `modeconn similarity analysis=<kind> ...`.

- `analysis=pair a=<ep1.pt> b=<ep2.pt>`: every layer of one network against every layer of
  the other (a heat map; `baseline=5` adds permutation baselines);
- `analysis=curve ckpt=<curve.pt> points=11`: per layer, phi(t) against w1 and w2, for the
  curve and the straight line (BatchNorm statistics recomputed at every t);
- `analysis=training`: trains `model` on `dataset` with `optim` here and compares every layer
  at `fractions` of training with every layer at the end; `checkpoints=[...]` takes saved
  checkpoints of one run instead (in training order, one per fraction);
- `analysis=classes a=<ep.pt>`: per class, each layer against the output through depth.

`measure=` picks the measure (`+args.keep=0.99` etc. its options), `policy=` how conv layers
become matrices, `layers=` which modules. Results: <out>/similarity-<analysis>-<measure>.npz
+ .json, and a .png/.pdf figure.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    dataset_from,
    dataset_options,
    out_dir,
    pick_device,
    plain,
    run_app,
    train_config,
)
from modeconn.apps.outputs import finish, guard_result
from modeconn.curves.weights import fingerprint
from modeconn.io.checkpoints import load_curve, load_endpoint
from modeconn.models import build_model
from modeconn.plotting.similarity import (
    plot_along_curve,
    plot_class_wise,
    plot_layer_similarity,
    plot_over_training,
)
from modeconn.similarity.analyses import (
    along_curve,
    class_wise,
    compare_networks,
    over_training,
    training_snapshots,
)

ANALYSES = ("pair", "curve", "training", "classes")


# What a curve checkpoint passed where an endpoint is wanted is told, per analysis.
_HINTS = {
    "pair": "Pass the checkpoints of the two trained networks to compare (a=... b=...), or "
    "compare along a curve with analysis=curve ckpt=<curve.pt>.",
    "classes": "Pass the checkpoint of one trained endpoint network (a=...).",
    "training": "Pass the endpoint checkpoints saved during one training run (checkpoints=[...]).",
}


def _need(cfg: DictConfig, key: str) -> str:
    if not cfg.get(key):
        raise ValueError(f"analysis={cfg.analysis} needs {key}=<checkpoint.pt>")
    return str(cfg[key])


def _data_of(cfg: DictConfig, ckpt, device):
    root = cfg.data_root if cfg.data_root is not None else ckpt.meta.get("dataset_root")
    options = ckpt.meta.get("dataset_args") or {}
    return dataset_from(ckpt.meta["dataset"], root, False, device, **options)


def _plain(value):
    """A config value as plain Python (lists too, which `plain` leaves as ListConfig)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _weights_id(*models) -> str:
    return fingerprint(*(p.detach() for m in models for p in m.parameters()))


@app_run
def run(cfg: DictConfig):
    if cfg.analysis not in ANALYSES:
        raise ValueError(f"analysis must be one of {', '.join(ANALYSES)}, got {cfg.analysis!r}")
    device = pick_device(cfg.device)
    common = dict(
        layers=_plain(cfg.layers),
        measure=cfg.measure,
        options=plain(cfg.args) or {},
        policy=cfg.policy,
        split=cfg.split,
        samples=cfg.samples,
    )
    model_name = None
    if cfg.analysis in ("pair", "classes"):
        a, ckpt = load_endpoint(_need(cfg, "a"), hint=_HINTS[cfg.analysis])
        a, model_name = a.to(device), ckpt.meta.get("model")
        data = _data_of(cfg, ckpt, device)
        if cfg.analysis == "pair":
            b, _ = load_endpoint(_need(cfg, "b"), hint=_HINTS["pair"])
            b = b.to(device)
            source, ident = cfg.a, _weights_id(a, b)
            result = compare_networks(a, b, data, baseline=int(cfg.baseline), **common)
            names = dict(row_name=Path(cfg.a).stem, column_name=Path(cfg.b).stem)
            plot = lambda r: plot_layer_similarity(r, **names, model=model_name)  # noqa: E731
        else:
            source, ident = cfg.a, _weights_id(a)
            result = class_wise(a, data, **common)
            plot = lambda r: plot_class_wise(r, model=model_name)  # noqa: E731
    elif cfg.analysis == "curve":
        curve, ckpt = load_curve(_need(cfg, "ckpt"))
        curve, model_name = curve.to(device), ckpt.meta.get("model")
        data = _data_of(cfg, ckpt, device)
        source, ident = cfg.ckpt, _weights_id(curve)
        ts = torch.linspace(0, 1, int(cfg.points)).tolist()
        result = along_curve(curve, data, ts, line=bool(cfg.line), progress=cfg.progress, **common)
        plot = lambda r: plot_along_curve(r, model=model_name)  # noqa: E731
    else:
        result, source, ident, model_name, data = _training(cfg, device, common)
        plot = lambda r: plot_over_training(r, model=model_name)  # noqa: E731
    out = out_dir(cfg, source)
    name = f"similarity-{cfg.analysis}-{cfg.measure}"
    job = {
        "weights": ident,
        **common,
        "points": int(cfg.points),
        "line": bool(cfg.line),
        "baseline": int(cfg.baseline),
        "fractions": _plain(cfg.fractions),
    }
    guard_result(out / name, job, cfg.get("overwrite", False))
    result.meta.update({"dataset": data.name, "model": model_name})
    return finish(result, job, out / name, plot(result), "%s: %s", name, result.values.shape)


def _training(cfg: DictConfig, device, common: dict):
    """Weight points of one training run: saved checkpoints, or a run here."""
    fractions = [float(f) for f in _plain(cfg.fractions)]
    paths = [str(p) for p in _plain(cfg.checkpoints) or []]
    if paths:
        if len(paths) != len(fractions):
            raise ValueError(
                f"{len(paths)} checkpoints but {len(fractions)} fractions: give one fraction of "
                "training per checkpoint, e.g. fractions=[0,0.35,0.75,1]"
            )
        loaded = [load_endpoint(p, hint=_HINTS["training"]) for p in paths]
        model, ckpt = loaded[-1]
        model = model.to(device)
        data = _data_of(cfg, ckpt, device)
        points = [m.to(device).state_dict() for m, _ in loaded]
        source, model_name = paths[-1], ckpt.meta.get("model")
    else:
        options = dataset_options(cfg.dataset)
        root, download = cfg.dataset.root, cfg.dataset.download
        data = dataset_from(cfg.dataset.name, root, download, device, **options)
        torch.manual_seed(cfg.seed)
        args = plain(cfg.model.get("args")) or {}
        model = build_model(
            cfg.model.name, num_classes=data.num_classes, input_shape=data.input_shape, **args
        ).to(device)
        config = train_config(cfg.optim, cfg.seed, cfg.progress)
        points, fractions = training_snapshots(model, data, config, fractions)
        source, model_name = "similarity-training", cfg.model.name
    result = over_training(model, points, data, fractions, **common)
    return result, source, _weights_id(model), model_name, data


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="similarity")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("similarity", main)
