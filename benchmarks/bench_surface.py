"""Loss surfaces: our engine against loss-landscape's per-point loop, side by side.

For each workload the same 2-D grid around the same network, along the same two directions,
is evaluated by
  - the reference: a faithful re-implementation of loss-landscape's loop
    (benchmarks/reference_landscape.py: parameters replaced per point, one DataLoader pass
    per split in eval mode with the centre's BatchNorm statistics, batch 128, 2 workers);
  - ours in Li's mode, `bn="origin"` (the same statistics: equal work, and the numbers must
    agree to 1e-5);
  - ours with `bn="recompute"` (exact statistics at every point: more work, the right numbers);
  - the `loss-landscapes` package (if installed: `pip install -e '.[bench]'`) on what it
    computes: one fixed batch, its own random filter-normalised plane.
The contenders run in turn, round after round (this host drifts by 20 %), and the table gives
the median points per second over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WORKLOADS,
    as_dataset,
    compute_peak,
    flops_per_sample,
    machine,
    markdown_table,
)
from reference import PerSampleImages, loader  # noqa: E402
from reference_landscape import surface as reference_surface  # noqa: E402

from modeconn.curves.weights import WeightSpace  # noqa: E402
from modeconn.engine.point import recompute_bn  # noqa: E402
from modeconn.landscape.directions import random_direction  # noqa: E402
from modeconn.landscape.surface import evaluate_surface  # noqa: E402

GRIDS = {"digits ConvFC": 5, "CIFAR-shaped PreResNet-20": 2}


NOTES: dict[str, str] = {}


def loss_landscapes_seconds(name: str, model, data, grid: int) -> float | None:
    """Seconds of loss-landscapes' random_plane on one fixed batch of 128 (None if absent).
    Its filter normalisation divides by every filter's norm, 1-D biases included, and fails
    on a zero one (zero-initialised biases, as the 2018 networks have): then it is timed
    without normalisation, and the note says so."""
    try:
        import loss_landscapes
        from loss_landscapes.metrics import Loss
    except ImportError:
        return None
    metric = Loss(torch.nn.functional.cross_entropy, data.train_x[:128], data.train_y[:128])
    kw = dict(distance=1, steps=grid, deepcopy_model=True)
    began = time.perf_counter()
    try:
        loss_landscapes.random_plane(model, metric, normalization="filter", **kw)
    except ZeroDivisionError:
        NOTES[name] = "filter normalisation fails (ZeroDivisionError: a zero bias); unnormalised"
        began = time.perf_counter()
        loss_landscapes.random_plane(model, metric, normalization=None, **kw)
    return time.perf_counter() - began


def run(name: str, spec: dict, rounds: int) -> dict:
    torch.manual_seed(0)
    raw = spec["raw"]()
    data = as_dataset(name, raw, spec["scale"], spec["mean"], spec["std"])
    model = spec["model"]()
    recompute_bn(model, data.train_x)  # the centre's statistics, as a trained network has them
    model.eval()
    space = WeightSpace.from_module(model)
    d1, d2 = (random_direction(model, seed=s) for s in (1, 2))
    g = GRIDS[name]
    xs = np.linspace(-1.0, 1.0, g)
    coords = [(x, y) for x in xs for y in xs]
    weights = [p.detach().clone() for p in model.parameters()]
    dx = list(space.unflatten(d1).values())
    dy = list(space.unflatten(d2).values())
    norm = (spec["scale"], spec["mean"], spec["std"])
    train = loader(PerSampleImages(raw[0], raw[1], *norm), 128, 2)  # the tool's defaults
    test = loader(PerSampleImages(raw[2], raw[3], *norm), 128, 2)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    times = {"reference": [], "origin": [], "compiled": [], "recompute": [], "loss-landscapes": []}
    # torch.compile's first graph is built outside the timing (5-15 s per network)
    evaluate_surface(
        model, model, [d1, d2], data, grid=(2, 2), bn="origin", wd=0.0, progress=False,
        compile=True,
    )  # fmt: skip
    for _ in range(rounds):
        began = time.perf_counter()
        ref = reference_surface(model, weights, dx, dy, coords, train, test)
        times["reference"].append(time.perf_counter() - began)
        with torch.no_grad():  # the reference left the last point's weights in place
            for p, w in zip(model.parameters(), weights, strict=True):
                p.data = w.clone()
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        for key, bn, compiled in (
            ("origin", "origin", False),
            ("compiled", "origin", True),
            ("recompute", "recompute", False),
        ):
            began = time.perf_counter()
            ours = evaluate_surface(
                model, model, [d1, d2], data, grid=(g, g), span=((-1, 1), (-1, 1)), bn=bn,
                wd=0.0, progress=False, compile=compiled,
            )  # fmt: skip
            times[key].append(time.perf_counter() - began)
            if key == "origin":
                origin = ours
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
        seconds = loss_landscapes_seconds(name, model, data, g)
        if seconds is not None:
            times["loss-landscapes"].append(seconds)
    agreement = max(  # relative to the loss (far nodes of an untrained net reach 1e2-1e3)
        abs(r["train_nll"] - origin.train_nll[i, j]) / max(1.0, abs(r["train_nll"]))
        for (i, j), r in zip(np.ndindex(g, g), ref, strict=True)
    )
    points = g * g
    rate = {k: points / statistics.median(v) for k, v in times.items() if v}
    # the forward FLOPs of one point (train and test sets) at our eager rate, against the
    # measured dense peak: how much of the host the eager surface already uses
    flops = flops_per_sample(model, data.train_x[:64]) * (len(data.train_x) + len(data.test_x))
    utilisation = rate["origin"] * flops / compute_peak(data.train_x.device)
    return {
        "name": name,
        "points": points,
        "rate": rate,
        "agreement": agreement,
        "ratio": rate["origin"] / rate["reference"],
        "ratio_recompute": rate["recompute"] / rate["reference"],
        "ratio_compiled": rate["compiled"] / rate["reference"],
        "utilisation": utilisation,
    }


def table(rows: list[dict]) -> str:
    return markdown_table(
        [
            ("surface (2-D grid)", lambda r: r["name"]),
            ("points", lambda r: str(r["points"])),
            ("reference pts/s", lambda r: f"{r['rate']['reference']:.2f}"),
            ("ours, bn=origin pts/s", lambda r: f"{r['rate']['origin']:.2f}"),
            ("speed-up (equal work)", lambda r: f"**{r['ratio']:.2f}x**"),
            ("ours compiled, bn=origin", lambda r: f"{r['rate']['compiled']:.2f}"),
            ("compiled speed-up", lambda r: f"{r['ratio_compiled']:.2f}x"),
            ("ours eager: % of the dense peak", lambda r: f"{100 * r['utilisation']:.0f} %"),
            ("ours, bn=recompute pts/s", lambda r: f"{r['rate']['recompute']:.2f}"),
            ("recompute / reference", lambda r: f"{r['ratio_recompute']:.2f}x"),
            (
                "loss-landscapes pts/s (one batch of 128)",
                lambda r: (
                    f"{r['rate']['loss-landscapes']:.1f}"
                    if "loss-landscapes" in r["rate"]
                    else "not installed"
                ),
            ),
            ("max Δ train nll vs reference (relative above 1)", lambda r: f"{r['agreement']:.1e}"),
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=list(GRIDS))
    args = parser.parse_args()
    rows = [run(n, WORKLOADS[n], args.rounds) for n in GRIDS if args.only in (None, n)]
    text = f"Machine: {machine()}\n\n{table(rows)}\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if any(r["agreement"] > 1e-5 for r in rows):
        raise SystemExit("ours (bn=origin) and the reference disagree by more than 1e-5")


if __name__ == "__main__":
    main()
