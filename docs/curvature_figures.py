"""The curvature page's figures: `python docs/curvature_figures.py` (about a minute on 2 cores).

Two MLPs (32 hidden units) trained 15 epochs on digits, a Bezier curve between them; the
Hessian's extremes and trace along the curve and the straight line (11 points each, 600
samples), and the |lambda_min / lambda_max| and lambda_max maps on a 7 x 7 filter-normalised
plane around the first endpoint. Writes docs/figures/curvature_path.png and
docs/figures/curvature_surface.png.
"""

from pathlib import Path

import torch

from modeconn import (
    Bezier,
    Line,
    TrainConfig,
    build_model,
    load_dataset,
    train_curve,
    train_endpoint,
)
from modeconn.curvature import HessianSettings, curvature_path, curvature_surface
from modeconn.landscape import random_direction
from modeconn.plotting import plot_curvature_map, plot_curvature_path, save_figure

HERE = Path(__file__).resolve().parent


def mlp():
    return build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=[32])


def main() -> None:
    data = load_dataset("digits")
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = mlp()
        train_endpoint(net, data, TrainConfig(epochs=15, seed=seed, progress=False))
        nets.append(net)
    torch.manual_seed(0)
    curve = Bezier(mlp(), nets[0], nets[1])
    train_curve(curve, data, TrainConfig(epochs=15, seed=3, progress=False))
    h = HessianSettings(
        samples=600, tol=1e-4, trace=True, trace_min=10, trace_max=40, trace_tol=0.05
    )
    paths = {
        "curve": curvature_path(curve, data, 11, hessian=h, progress=False),
        "line": curvature_path(
            Line(curve.model, nets[0], nets[1]), data, 11, hessian=h, progress=False
        ),
    }
    for name, p in paths.items():
        print(name, "lambda_max", p.lambda_max.round(2), "lambda_min", p.lambda_min.round(3))
    save_figure(plot_curvature_path(paths, model="mlp"), HERE / "figures" / "curvature_path.png")
    d = (random_direction(nets[0], seed=1), random_direction(nets[0], seed=2))
    surface = curvature_surface(
        nets[0], nets[0], d, data, grid=7, span=1.0,
        hessian=HessianSettings(samples=600, tol=1e-3), progress=False,
    )  # fmt: skip
    save_figure(
        plot_curvature_map(surface, model="mlp"), HERE / "figures" / "curvature_surface.png"
    )


if __name__ == "__main__":
    main()
