"""Mode-connecting volumes on the embedded digits data (Benton et al. 2021, issue 23): a
3-vertex simplex grown from one trained ConvFC (SPRO), its sampled points' train loss against
the base network's (the stated bound: `--factor`), the simplex ensemble's test error, NLL and
ECE against the base network, a deep ensemble of 3 and FGE at (at most) equal training epochs,
and a complex joining 3 independently trained networks through 2 connectors.

The ConvFC is small (widths [16, 32, 32], hidden 64, padded pools for 8 x 8 inputs); the base
networks train 20 epochs (SGD lr 0.05, batch 64, the paper's schedule), each new vertex 10
(Benton et al.'s schedule: SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine, 5 samples
per batch), once per volume weight of `--lams`; the complex's connectors 20 epochs each at lr
0.03 (Benton et al. train connectors 75 epochs at lr 0.005: from the centroid of independent
networks, where the loss is high, 10 epochs at lr 0.01 leave them at a train nll of about 1).
Checkpoints go to build/simplex_digits/ (a rerun resumes and reuses finished runs), the
triangle heat maps to build/simplex_digits/triangle.png and complex.png. Prints markdown
tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

import modeconn as mc  # noqa: E402
from modeconn.plotting import plot_simplex, save_figure  # noqa: E402
from modeconn.volumes import (  # noqa: E402
    SimplexConfig,
    deep_ensemble,
    evaluate_faces,
    evaluate_simplex,
    fge_ensemble,
    simplex_ensemble,
    train_simplex,
    vertex_names,
)

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "simplex_digits"
ARCH = {"widths": [16, 32, 32], "hidden": 64, "pool_padding": 1}
WD = 5e-4  # the train loss reported: nll + 0.5 * wd * ||w||^2, the objective of training


def base_networks(data, seeds, epochs: int) -> list:
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        net = mc.build_model("convfc", num_classes=10, input_shape=data.input_shape, **ARCH)
        config = mc.TrainConfig(epochs=epochs, lr=0.05, batch_size=64, seed=seed, progress=False)
        mc.train_endpoint(net, data, config, checkpoint=WORK / f"base-seed{seed}.pt")
        nets.append(net)
    return nets


def row(name: str, scores: dict, epochs: int | str) -> str:
    return (
        f"| {name} | {scores['members']} | {epochs} | {scores['error']:.2f} | "
        f"{scores['nll']:.4f} | {scores['ece']:.4f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lams", type=float, nargs="+", default=[0.0, 1e-3, 1e-2])
    parser.add_argument("--epochs", type=int, default=20, help="of each base network")
    parser.add_argument("--per-vertex", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20, help="points in the ensembles")
    parser.add_argument("--factor", type=float, default=2.5, help="the stated train-loss bound")
    parser.add_argument("--complex-lr", type=float, default=0.03)
    parser.add_argument("--complex-epochs", type=int, default=20, help="per connector")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    lines = [f"Machine: {machine()}\n"]

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    data = mc.load_dataset("digits")
    began = time.perf_counter()
    nets = base_networks(data, (1, 2, 3), args.epochs)
    base = nets[0]
    base_eval = mc.evaluate_point(base, None, data)
    base_loss = base_eval["train"].nll + 0.5 * WD * float(
        sum(p.detach().double().square().sum() for p in base.parameters())
    )
    base_scores = deep_ensemble(base, [base], data)
    seconds = time.perf_counter() - began
    say(f"Base networks: 3 ConvFC {ARCH}, {args.epochs} epochs each ({seconds:.0f} s)\n")

    say("### A 3-vertex simplex from one network (SPRO)\n")
    say(
        f"| volume weight lam | log area | train loss at {args.samples} sampled points: max / "
        "base (nll + wd term) | train nll: base, mean, max | test error of the points: "
        "mean, max (%) | s |"
    )
    say("|---|---|---|---|---|---|")
    spros = {}
    for lam in args.lams:
        began = time.perf_counter()
        config = SimplexConfig(
            vertices=3, epochs_per_vertex=args.per_vertex, batch_size=64, lam=lam, progress=False
        )
        run = train_simplex(base, [base], data, config, checkpoint=WORK / f"spro-lam{lam:g}.pt")
        simplex = run.simplex
        points = simplex.sample_coefficients(args.samples, torch.Generator().manual_seed(0))
        at = evaluate_simplex(simplex, data, points, wd=WD, progress=False)
        ratio = float(at.train_loss.max() / base_loss)
        spros[lam] = (run, at)
        say(
            f"| {lam:g} | {simplex.log_volume().item():.3f} | {ratio:.3f} "
            f"(bound {args.factor:g}: {'kept' if ratio <= args.factor else 'NOT kept'}) | "
            f"{base_eval['train'].nll:.5f}, {at.train_nll.mean():.5f}, {at.train_nll.max():.5f} | "
            f"{at.test_error.mean():.2f}, {at.test_error.max():.2f} | "
            f"{time.perf_counter() - began:.0f} |"
        )

    say("\n### Ensembles, test split (360 digits)\n")
    say("| ensemble | members | training epochs | test error (%) | test NLL | ECE |")
    say("|---|---|---|---|---|---|")
    say(row("base network alone", base_scores, args.epochs))
    extra = 2 * args.per_vertex
    for lam, (run, _) in spros.items():
        ens = simplex_ensemble(run.simplex, data, args.samples, seed=0, progress=False)
        label = f"simplex (3 vertices, lam {lam:g}), {args.samples} points"
        say(row(label, ens.scores(), args.epochs + run.epochs))
    say(row("deep ensemble of 3", deep_ensemble(base, nets, data), 3 * args.epochs))
    fge_run, fge_scores = fge_ensemble(
        base, data, extra, cycle=2, batch_size=64, progress=False, checkpoint=WORK / "fge-run.pt"
    )
    label = f"FGE from the base, cycle 2, {len(fge_run.snapshot_epochs)} snapshots"
    say(row(label, fge_scores, args.epochs + fge_scores["epochs"]))

    say("\n### A complex joining 3 independently trained networks (2 connectors)\n")
    began = time.perf_counter()
    lam, lr, epochs = 1e-3, args.complex_lr, args.complex_epochs
    config = SimplexConfig(
        connectors=2, epochs_per_vertex=epochs, batch_size=64, lr=lr, lam=lam, progress=False
    )
    name = f"complex-lam{lam:g}-lr{lr:g}-epochs{epochs}.pt"
    run = train_simplex(base, nets, data, config, checkpoint=WORK / name)
    complex_ = run.simplex
    points = complex_.sample_coefficients(args.samples, torch.Generator().manual_seed(0))
    at = evaluate_simplex(complex_, data, points, wd=WD, progress=False)
    ens = simplex_ensemble(complex_, data, args.samples, seed=0, progress=False)
    seconds = time.perf_counter() - began
    areas = ", ".join(f"{v:.3f}" for v in complex_.log_volume().tolist())
    chosen = ", ".join(f"{p:.2f}" for p in complex_.probabilities().tolist())
    simplexes = [list(s) for s in complex_.simplexes]
    say(f"Simplexes {simplexes} (w1, w2, w3 = 0, 1, 2; c1, c2 = 3, 4), lam {lam:g}, lr {lr:g}, "
        f"{epochs} epochs per connector, {seconds:.0f} s: log areas {areas}; chosen with "
        f"probability {chosen}.\n")  # fmt: skip
    say("| | train nll: mean, max | train loss max / base | test error: mean, max (%) |")
    say("|---|---|---|---|")
    say(
        f"| {args.samples} points of the complex | {at.train_nll.mean():.5f}, "
        f"{at.train_nll.max():.5f} | {float(at.train_loss.max() / base_loss):.3f} | "
        f"{at.test_error.mean():.2f}, {at.test_error.max():.2f} |"
    )
    say(f"\nThe complex's ensemble of {args.samples} points: test error "
        f"{ens.scores()['error']:.2f} %, NLL {ens.scores()['nll']:.4f}, ECE "
        f"{ens.scores()['ece']:.4f}.")  # fmt: skip

    run, _ = spros[1e-3 if 1e-3 in spros else args.lams[-1]]
    simplex = run.simplex
    ens = simplex_ensemble(simplex, data, args.samples, seed=0, progress=False)
    faces = evaluate_faces(
        simplex, data, resolution=12, names=vertex_names(simplex), progress=False
    )
    figure = plot_simplex(faces, points=ens.coefficients, title="a 3-vertex simplex (SPRO)")
    save_figure(figure, WORK / "triangle.png")
    faces = evaluate_faces(
        complex_, data, resolution=8, names=vertex_names(complex_), progress=False
    )
    save_figure(
        plot_simplex(faces, title="a complex of 3 networks and 2 connectors"), WORK / "complex.png"
    )
    corners = [faces.at_vertex(i, "train_loss") for i in range(5)]
    say(f"\nFigures: {WORK / 'triangle.png'}, {WORK / 'complex.png'} (complex vertices' train "
        f"nll {np.round(corners, 5).tolist()}).")  # fmt: skip
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
