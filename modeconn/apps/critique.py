"""The critique of loss-landscape pictures as one command: `modeconn critique`.

Three all-convolutional networks (no normalisation, BatchNorm, LocalResponseNorm) are trained
on the data set (digits by default; checkpoints are reused), then each is drawn under four
direction families (random filter-normalised, QR-orthogonalised, ZCA-whitened, the weights'
principal directions): one 3 x 4 figure on one shared colour scale per direction seed, and a
table of how far the pictures disagree (`modeconn.landscape.critique.disagreement`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from modeconn.apps.common import (
    CONFIG_PATH,
    app_run,
    dataset_from,
    engine_settings,
    log,
    pick_device,
    plain,
    run_app,
)
from modeconn.landscape.critique import FAMILY_TITLES, critique, disagreement, disagreement_table
from modeconn.models import build_model
from modeconn.plotting import plot_panels, save_figure
from modeconn.training import TrainConfig, train_endpoint


def networks(cfg: DictConfig, data) -> dict[str, torch.nn.Module]:
    """The three trained networks, one per norm (resumed from their checkpoints)."""
    nets = {}
    for norm in cfg.norms:
        torch.manual_seed(0)
        net = build_model(
            "allconv",
            num_classes=data.num_classes,
            input_shape=data.input_shape,
            norm=norm,
            width=int(cfg.width),
            conv7_padding=1 if min(data.input_shape[1:]) < 9 else 0,
        ).to(data.train_x.device)
        config = TrainConfig(
            epochs=int(cfg.epochs),
            lr=float(cfg.lr),
            batch_size=int(cfg.batch_size),
            progress=cfg.progress,
        )
        path = Path(cfg.checkpoints) / f"{cfg.dataset.name}-allconv-{norm}-w{cfg.width}.pt"
        meta = {
            "model": "allconv",
            "model_args": {"norm": norm, "width": int(cfg.width)},
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "dataset": cfg.dataset.name,
        }
        train_endpoint(net, data, config, checkpoint=path, meta=meta)
        nets[f"allconv, norm={norm}"] = net
    return nets


@app_run
def run(cfg: DictConfig) -> dict:
    device = pick_device(cfg.device)
    data = dataset_from(cfg.dataset.name, cfg.dataset.root, cfg.dataset.download, device)
    nets = networks(cfg, data)
    out = Path(cfg.out)
    tables = {}
    for seed in plain(cfg.seeds):
        result = critique(
            nets,
            data,
            families=list(cfg.families),
            grid=int(cfg.grid),
            span=float(cfg.span),
            bn=cfg.bn,
            seed=int(seed),
            settings=engine_settings(cfg),
            progress=cfg.progress,
        )
        tag = f"bn-{cfg.bn}-seed{seed}"
        for (name, family), surface in result.surfaces.items():
            surface.save(out / f"{tag}-{name.split('=')[-1]}-{family}")
        panels = [result.surfaces[(n, f)] for n in result.networks for f in result.families]
        titles = [
            f"{n}\n{FAMILY_TITLES.get(f, f)}" for n in result.networks for f in result.families
        ]
        figure = plot_panels(
            panels,
            "train_loss",
            titles=titles,
            nrows=len(result.networks),
            ncols=len(result.families),
            log=True,
        )
        save_figure(figure, out / f"critique-{tag}")
        table = disagreement(result, radius=float(cfg.radius))
        tables[tag] = table
        text = disagreement_table(table)
        (out / f"critique-{tag}.md").write_text(text + "\n")
        log.info("critique (%s):\n%s", tag, text)
    log.info("results in %s", out)
    return {"tables": tables, "networks": list(nets)}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="critique")
def main(cfg: DictConfig) -> None:
    run_app(run, cfg)


if __name__ == "__main__":
    from modeconn.apps.checks import run_module

    run_module("critique", main)
