"""What the evaluation subset (`engine.eval_samples`) costs in accuracy and saves in time, on
the demo's plane: digits, the demo's ConvFC endpoints and Bezier curve, a 21 x 21 plane.
BatchNorm statistics (none in ConvFC) would still see the whole train set: the subset saves
the evaluation passes only.

Every setting evaluates the same plane; the rounds run the settings in turn (full, 500, 200,
100, full, ...) so that the host's drift hits all of them alike, and the table gives the
median time of the rounds and the largest differences from the full evaluation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from modeconn.curves.family import Bezier  # noqa: E402
from modeconn.data.catalogue import load_dataset  # noqa: E402
from modeconn.engine import EvalSettings  # noqa: E402
from modeconn.models import build_model  # noqa: E402
from modeconn.plane import evaluate_plane_through_curve  # noqa: E402
from modeconn.training import TrainConfig, train_curve, train_endpoint  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def demo_curve(data):
    """The demo's endpoints and curve, trained with the demo's configuration."""
    demo = OmegaConf.load(CONF / "demo.yaml")
    (entry,) = [
        d for d in OmegaConf.to_container(demo.defaults) if isinstance(d, dict) and "model" in d
    ]
    model = OmegaConf.load(CONF / "model" / f"{entry['model']}.yaml")
    args = OmegaConf.to_container(model.args)
    sgd = OmegaConf.to_container(OmegaConf.load(CONF / "optim" / "sgd.yaml"))
    curve_optim = OmegaConf.to_container(OmegaConf.load(CONF / "optim" / "curve.yaml"))
    nets = []
    for seed in demo.seeds:
        torch.manual_seed(seed)
        net = build_model("convfc", num_classes=10, input_shape=data.input_shape, **args)
        train_endpoint(net, data, TrainConfig(**sgd, seed=seed, progress=False))
        nets.append(net)
    curve = Bezier(nets[0], nets[0], nets[-1])
    train_curve(curve, data, TrainConfig(**curve_optim, seed=1, progress=False))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset("digits")
    curve = demo_curve(data)
    sizes = [None, 500, 200, 100]
    times: dict[object, list[float]] = {n: [] for n in sizes}
    results = {}
    for _ in range(args.rounds):
        for n in sizes:
            began = time.perf_counter()
            results[n] = evaluate_plane_through_curve(
                curve,
                data,
                grid=args.grid,
                settings=EvalSettings(eval_samples=n),
                progress=False,
                wd=0.0,
            )
            times[n].append(time.perf_counter() - began)
    full = results[None]
    low = full.train_nll <= np.quantile(full.train_nll, 0.25)  # the low-loss quarter
    rows = [
        f"{args.grid}x{args.grid} plane through the demo curve, digits "
        f"({len(data.train_x)} train / {len(data.test_x)} test), {machine()}, "
        f"median of {args.rounds} interleaved rounds",
        "",
        "| eval_samples (per split) | seconds | speed-up | max relative Δ train nll | "
        "max abs Δ train nll, low-loss quarter | max abs Δ test error (points) | "
        "argmin of train nll moves |",
        "|---|---|---|---|---|---|---|",
    ]
    base = statistics.median(times[None])
    for n in sizes:
        r, t = results[n], statistics.median(times[n])
        d_nll = np.abs(r.train_nll - full.train_nll)
        rel = d_nll / np.abs(full.train_nll)
        d_err = np.abs(r.test_error - full.test_error)
        moved = np.unravel_index(np.argmin(r.train_nll), r.train_nll.shape) != np.unravel_index(
            np.argmin(full.train_nll), full.train_nll.shape
        )
        rows.append(
            f"| {n or 'all'} | {t:.1f} | {base / t:.2f}x | {rel.max():.1%} | "
            f"{d_nll[low].max():.3g} | {d_err.max():.2f} | {'yes' if moved else 'no'} |"
        )
    text = "\n".join(rows) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
