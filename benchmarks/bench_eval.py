"""Evaluation engine vs the 2018 reference algorithm, side by side in one run.

For each workload: the same weight points (a grid on the plane through three networks), the
same data; per point BatchNorm statistics recomputed, then train and test loss/error.
Prints points per second of both, the ratio, our time over the compute floor (bare forward
passes of the same samples at the best batch size), the achieved FLOP rate against a matmul
peak measured in the same run, and the agreement of the results; then the same points through
`torch.compile` (`compile=True`), its time to compile on a first point shown apart.

    python benchmarks/bench_eval.py [--points 6] [--workload "digits ConvFC"] [--markdown f]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402
from common import (  # noqa: E402
    WORKLOADS,
    as_dataset,
    flops_per_sample,
    forward_floor,
    matmul_peak,
    report,
    timed,
)

from modeconn.batched import evaluate_points, resolve_points_per_pass  # noqa: E402
from modeconn.evaluation import batchnorm_layers, eval_plan, evaluate_point  # noqa: E402
from modeconn.plane import Plane  # noqa: E402
from modeconn.weights import WeightSpace  # noqa: E402


def grid_points(make_model, n: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """n weight points on a grid over the plane through three independently initialised nets."""
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(make_model())
    space = WeightSpace.from_module(nets[0])
    plane = Plane.through(*(space.flatten(m) for m in nets))
    side = max(2, round(n**0.5 + 0.5))
    coords = [(i / (side - 1), j / (side - 1)) for i in range(side) for j in range(side)][:n]
    return nets[0], [plane.point(x * 10.0, y * 10.0) for x, y in coords]


def run(name: str, spec: dict, n_points: int, ours_batch: int, device: torch.device) -> dict:
    raw = spec["raw"]()
    data = as_dataset(name, raw, spec["scale"], spec["mean"], spec["std"]).to(device)
    model, points = grid_points(spec["model"], n_points)
    model = model.to(device)
    points = [p.to(device) for p in points]
    space = WeightSpace.from_module(model)
    has_bn = bool(batchnorm_layers(model))

    # Ours: the engine as every analysis calls it, after its one-time choice of layout, batch
    # size and points per pass ("auto": 1 on a CPU, timed on a GPU), timed separately: it is
    # paid once per model, not per point.
    first = space.unflatten(points[0])
    tune_s, (plan, per_pass) = timed(
        lambda: (
            eval_plan(model, data.train_x, first),
            resolve_points_per_pass("auto", model, first, data),
        )
    )

    def ours():
        out = []
        for i in range(0, len(points), per_pass):
            chunk = [space.unflatten(p) for p in points[i : i + per_pass]]
            if per_pass == 1:
                out.append(evaluate_point(model, chunk[0], data, batch_size=ours_batch))
            else:
                out.extend(evaluate_points(model, chunk, data, batch_size=ours_batch))
        return out

    ours_s, ours_res = timed(ours)

    # Ours through torch.compile (compile=True, one point per pass): the first point compiles
    # the graphs (timed apart, as it is paid once per model), then every point is timed.
    def compiled_points(chunk):
        return [
            evaluate_point(model, space.unflatten(p), data, batch_size=ours_batch, compile=True)
            for p in chunk
        ]

    compile_s, _ = timed(lambda: compiled_points(points[:1]))
    comp_s, comp_res = timed(lambda: compiled_points(points))
    comp_delta = max(
        abs(c[s].nll - o[s].nll)
        for c, o in zip(comp_res, ours_res, strict=True)
        for s in ("train", "test")
    )

    # The reference algorithm on the same points, on CPU DataLoaders as in 2018.
    xtr, ytr, xte, yte = raw
    ref_model = spec["model"]().to(device)
    make = lambda x, y: reference.PerSampleImages(x, y, spec["scale"], spec["mean"], spec["std"])  # noqa: E731
    pin = device.type == "cuda"
    train_loader = reference.loader(make(xtr, ytr), pin_memory=pin)
    test_loader = reference.loader(make(xte, yte), pin_memory=pin)
    ref_points = [p.cpu() for p in points] if device.type == "cpu" else points
    ref_s, ref_res = timed(
        lambda: reference.evaluate_points(ref_model, ref_points, train_loader, test_loader)
    )

    # Agreement: ours with the reference's BatchNorm estimator (batch 128, batch-size-weighted
    # average of per-batch variances) must match it; exact BN differs by the estimator alone.
    compat = [
        evaluate_point(model, space.unflatten(p), data, bn_batch_size=128, bn_exact=False)
        for p in points
    ]
    agree = max(
        abs(c[s].nll - r[i]["nll"])
        for c, r in zip(compat, ref_res, strict=True)
        for i, s in enumerate(("train", "test"))
    )
    estimator = max(
        abs(o[s].nll - r[i]["nll"])
        for o, r in zip(ours_res, ref_res, strict=True)
        for i, s in enumerate(("train", "test"))
    )

    # A BatchNorm sample budget: a fifth of the train set, its speed and the error it costs.
    budget = len(ytr) // 5
    budget_s, budget_res = timed(
        lambda: [evaluate_point(model, space.unflatten(p), data, bn_samples=budget) for p in points]
    )
    budget_err = max(
        abs(b[s].nll - o[s].nll)
        for b, o in zip(budget_res, ours_res, strict=True)
        for s in ("train", "test")
    )

    # Compute floor: the same number of bare forward passes at the best batch size.
    samples_per_point = len(ytr) * (2 if has_bn else 1) + len(yte)
    floor_s, floor_setting = forward_floor(model, data.train_x, samples_per_point * n_points)
    fps = flops_per_sample(model, data.train_x[:64])
    peak = matmul_peak(device)
    achieved = fps * samples_per_point * n_points / ours_s
    return {
        "workload": name,
        "points": n_points,
        "ref_pps": n_points / ref_s,
        "ours_pps": n_points / ours_s,
        "speedup": ref_s / ours_s,
        "floor_ratio": ours_s / floor_s,
        "ref_floor_ratio": ref_s / floor_s,
        "comp_pps": n_points / comp_s,
        "comp_speedup": ref_s / comp_s,
        "compile_s": compile_s,
        "comp_delta": comp_delta,
        "floor_setting": floor_setting,
        "tune_s": tune_s,
        "plan": f"{'channels_last' if plan.channels_last else 'NCHW'} batch {plan.batch_size}, "
        f"{per_pass} point{'s' if per_pass > 1 else ''} per pass",
        "gflops": achieved / 1e9,
        "peak_gflops": peak / 1e9,
        "agree": agree,
        "estimator": estimator,
        "budget": f"{budget}: {n_points / budget_s:.2f} pts/s, max abs Δ nll {budget_err:.1e}"
        if has_bn
        else "no BatchNorm",
    }


def compiled_table(rows: list[dict]) -> str:
    lines = [
        "| workload | compiled pts/s | speed-up vs reference | first point incl. compiling (s) "
        "| max abs Δ nll vs eager |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['comp_pps']:.2f} | {r['comp_speedup']:.1f}x | "
            f"{r['compile_s']:.1f} | {r['comp_delta']:.1e} |"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = (
        "| workload | points | reference pts/s | ours pts/s | speed-up | ours / floor | "
        "reference / floor | GFLOP/s (matmul peak) | max abs Δ nll vs ref (same BN estimator) | "
        "exact BN vs ref estimator | our plan (tuning s) | bn_samples budget |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['points']} | {r['ref_pps']:.2f} | {r['ours_pps']:.2f} | "
            f"{r['speedup']:.1f}x | {r['floor_ratio']:.2f} (floor: {r['floor_setting']}) | "
            f"{r['ref_floor_ratio']:.2f} | "
            f"{r['gflops']:.1f} ({r['peak_gflops']:.0f}) | {r['agree']:.1e} | "
            f"{r['estimator']:.1e} | {r['plan']} ({r['tune_s']:.1f}) | {r['budget']} |"
        )
    return "\n".join(lines)


def both_tables(rows: list[dict]) -> str:
    return f"{table(rows)}\n\nWith `compile=True`:\n\n{compiled_table(rows)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--points",
        type=int,
        default=None,
        help="weight points per workload (default: 20 digits, 4 CIFAR-shaped; 64 and 32 on a GPU)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="our evaluation batch size (default: the engine's choice)",
    )
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS))
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    points_key = "gpu_points" if device.type == "cuda" else "points"
    rows = [
        run(w, WORKLOADS[w], args.points or WORKLOADS[w][points_key], args.batch, device)
        for w in (args.workload or list(WORKLOADS))
    ]
    report(rows, both_tables, args.markdown)


if __name__ == "__main__":
    main()
