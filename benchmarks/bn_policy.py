"""How different are the two BatchNorm pictures of one loss surface?

`evaluate_surface(bn="recompute")` recomputes the statistics at every node (our default);
`bn="origin"` keeps the centre's running statistics at every node, as Li et al.'s
loss-landscape does. This trains allconv with norm=batch on digits briefly, draws two
filter-normalised Gaussian directions (Li et al.'s rule: per output filter of every tensor
with ndim > 1, d_i * ||w_i|| / ||d_i||; 1-D tensors zeroed, their `ignore="biasbn"`), evaluates
the same G x G surface over [-span, span]^2 under both policies, and reports |delta| of the
train loss (nll + 0.5 wd ||w||^2; the weight-decay term is the same under both, so this is the
nll difference) and of the test error: over the whole surface, inside |x|, |y| <= span / 2,
and at the centre (where the two differ only by running averages vs exact statistics).

    python benchmarks/bn_policy.py [--grid 21] [--span 1.0] [--epochs 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from modeconn.curves.weights import WeightSpace  # noqa: E402
from modeconn.data.catalogue import load_dataset  # noqa: E402
from modeconn.landscape.surface import evaluate_surface  # noqa: E402
from modeconn.models import build_model  # noqa: E402
from modeconn.training import TrainConfig, train_endpoint  # noqa: E402


def filter_normalised(model: torch.nn.Module, seed: int) -> torch.Tensor:
    """A Gaussian direction (D,) rescaled per output filter to the weights' filter norms, 1-D
    tensors zeroed (a stand-in for `modeconn.landscape.directions.random_direction`)."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for _, w in model.named_parameters():
        w = w.detach().cpu().double()
        if w.ndim <= 1:
            parts.append(torch.zeros(w.numel(), dtype=torch.float64))
            continue
        d = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        dims = tuple(range(1, w.ndim))
        norm = torch.linalg.vector_norm
        d = d * (norm(w, dim=dims, keepdim=True) / (norm(d, dim=dims, keepdim=True) + 1e-10))
        parts.append(d.reshape(-1))
    ref = next(model.parameters())
    return torch.cat(parts).to(ref.device, ref.dtype)


def stats(delta: np.ndarray) -> dict[str, float]:
    return {"max": float(np.max(delta)), "median": float(np.median(delta))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--span", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=16, help="allconv width (paper: 96)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="save both surfaces here")
    args = parser.parse_args()

    data = load_dataset("digits")
    torch.manual_seed(args.seed)
    net = build_model(
        "allconv", num_classes=10, input_shape=data.input_shape, norm="batch",
        width=args.width, conv7_padding=1,
    )  # fmt: skip
    began = time.perf_counter()
    train_endpoint(net, data, TrainConfig(epochs=args.epochs, seed=args.seed, progress=False))
    trained_s = time.perf_counter() - began
    net.eval()
    directions = torch.stack(
        [filter_normalised(net, 2 * args.seed), filter_normalised(net, 2 * args.seed + 1)]
    )
    kw = dict(grid=args.grid, span=args.span, progress=False)
    surfaces, seconds = {}, {}
    for bn in ("recompute", "origin"):
        began = time.perf_counter()
        surfaces[bn] = evaluate_surface(net, net, directions, data, bn=bn, **kw)
        seconds[bn] = time.perf_counter() - began
    rec, org = surfaces["recompute"], surfaces["origin"]
    c = args.grid // 2  # the centre node (odd grids hold x = y = 0 exactly)
    inner = np.abs(rec.x)[:, None] <= args.span / 2 + 1e-12
    inner = inner & (np.abs(rec.y)[None, :] <= args.span / 2 + 1e-12)
    report: dict = {
        "machine": machine(),
        "network": f"allconv norm=batch width={args.width}, {WeightSpace.from_module(net).size}"
        f" weights, digits, {args.epochs} epochs (trained in {trained_s:.1f} s)",
        "grid": f"{args.grid} x {args.grid} over [-{args.span:g}, {args.span:g}]^2, "
        "filter-normalised Gaussian directions",
        "seconds": seconds,
    }
    for metric in ("train_loss", "test_error"):
        a, b = getattr(rec, metric), getattr(org, metric)
        delta = np.abs(a - b)
        report[metric] = {
            "surface": stats(delta),
            "inner half": stats(delta[inner]),
            "centre": {"recompute": float(a[c, c]), "origin": float(b[c, c])},
            "range": {
                "recompute": [float(a.min()), float(a.max())],
                "origin": [float(b.min()), float(b.max())],
            },
        }
    print(json.dumps(report, indent=2))
    if args.out is not None:
        for bn, surface in surfaces.items():
            surface.save(args.out / f"bn_policy-{bn}")


if __name__ == "__main__":
    main()
