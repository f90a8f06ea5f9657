"""Points per pass: the sequential engine vs several points in one vmap'd pass, in one run.

For each workload: the same weight points (a grid on the plane through three networks), the
same data; each point gets BatchNorm statistics recomputed, then train and test loss/error.
Times `evaluate_point` one point at a time against `evaluate_points` with P points per pass
(P in 2, 4, 8), and prints points per second, the ratio, the agreement of the results (max
abs Δ NLL, and the number of points whose error differs), and what points_per_pass="auto"
picks (1 on a CPU; on a GPU `choose_points_per_pass` times it). On a CPU the PreResNet
workload uses a train/test subset and fewer points so that the script stays short; on a GPU
it takes the whole workload. The default evaluation batch of `evaluate_points` is the
sequential engine's fastest batch size divided by P, so peak activation memory stays that of
a sequential pass (the GPU column shows it).

    python benchmarks/bench_batched.py [--points 8] [--pps 2 4 8] [--train 1000]
        [--workload "digits ConvFC"] [--markdown f]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval import grid_points  # noqa: E402
from common import WORKLOADS, as_dataset, report, timed  # noqa: E402

from modeconn.curves.weights import WeightSpace  # noqa: E402
from modeconn.engine.batched import evaluate_points, resolve_points_per_pass  # noqa: E402
from modeconn.engine.execution import eval_plan  # noqa: E402
from modeconn.engine.point import evaluate_point  # noqa: E402

# (points, train samples, test samples) where the CPU would take too long on the full workload
CPU_SIZES = {"CIFAR-shaped PreResNet-20": (8, 1000, 500), "digits ConvFC": (24, None, None)}
GPU_SIZES = {"CIFAR-shaped PreResNet-20": (32, None, None), "digits ConvFC": (64, None, None)}


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def run(
    name: str,
    spec: dict,
    n_points: int | None,
    train: int | None,
    pps: list[int],
    device: torch.device,
) -> list[dict]:
    sizes = (CPU_SIZES if device.type == "cpu" else GPU_SIZES)[name]
    n_points = n_points or sizes[0]
    data = as_dataset(name, spec["raw"](), spec["scale"], spec["mean"], spec["std"])
    data = data.subset(train=train or sizes[1], test=sizes[2]).to(device)
    model, points = grid_points(spec["model"], n_points)
    model = model.to(device)
    space = WeightSpace.from_module(model)
    weights = [space.unflatten(p.to(device)) for p in points]

    plan = eval_plan(data.train_x)  # the sequential engine's layout and batch size, by rule
    auto = resolve_points_per_pass("auto", model, weights[0], data)  # what the analyses pick
    _reset_peak(device)
    seq_s, seq = timed(lambda: [evaluate_point(model, w, data) for w in weights])
    seq_mib = _peak_mib(device)

    rows = []
    for p in pps:
        evaluate_points(model, weights[:p], data.subset(train=128, test=128))  # warm-up
        _reset_peak(device)

        def batched(p=p):
            out = []
            for start in range(0, len(weights), p):
                out += evaluate_points(model, weights[start : start + p], data)
            return out

        bat_s, bat = timed(batched)
        delta = max(
            abs(b[s].nll - q[s].nll)
            for b, q in zip(bat, seq, strict=True)
            for s in ("train", "test")
        )
        mismatches = sum(
            any(b[s].error != q[s].error for s in ("train", "test"))
            for b, q in zip(bat, seq, strict=True)
        )
        mib = _peak_mib(device)
        rows.append(
            {
                "workload": name,
                "points": n_points,
                "samples": f"{len(data.train_x)} / {len(data.test_x)}",
                "seq_pps": n_points / seq_s,
                "p": p,
                "batch": max(1, plan.batch_size // p),
                "bat_pps": n_points / bat_s,
                "ratio": seq_s / bat_s,
                "delta": delta,
                "mismatches": mismatches,
                "memory": "-" if mib is None else f"{seq_mib:.0f} / {mib:.0f}",
                "auto": auto,
            }
        )
        print(
            f"{name}: P={p}: {n_points / bat_s:.2f} pts/s vs sequential {n_points / seq_s:.2f} "
            f"({seq_s / bat_s:.2f}x), max abs Δ nll {delta:.1e}",
            file=sys.stderr,
        )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| workload | points | train / test samples | sequential pts/s | points per pass | "
        "eval batch | batched pts/s | batched / sequential | max abs Δ nll | error mismatches | "
        "peak GPU MiB (seq / batched) | points_per_pass=auto picks |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['points']} | {r['samples']} | {r['seq_pps']:.2f} | {r['p']} | "
            f"{r['batch']} | {r['bat_pps']:.2f} | {r['ratio']:.2f}x | {r['delta']:.1e} | "
            f"{r['mismatches']} | {r['memory']} | {r['auto']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=None, help="weight points per workload")
    parser.add_argument(
        "--train",
        type=int,
        default=None,
        help="train samples (default: all, 1000 for PreResNet on a CPU)",
    )
    parser.add_argument("--pps", type=int, nargs="+", default=[2, 4, 8], help="points per pass")
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS))
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for w in args.workload or list(WORKLOADS):
        rows += run(w, WORKLOADS[w], args.points, args.train, args.pps, device)
    report(rows, table, args.markdown)


if __name__ == "__main__":
    main()
