"""What autocast costs in accuracy on trained networks, and what it gains in speed.

bench_eval.py measures autocast on untrained weight points, where every prediction is a near
tie and the loss barely moves. Here two endpoints per network are trained on digits (a few
seconds each), then the straight line between them (11 points, BatchNorm recomputed at each)
is evaluated in float32 and under each autocast precision, point by point in turns. Reports
the largest change in NLL and in error (percentage points) over the line, and the speed-up.

    python benchmarks/bench_precision.py [--epochs 8] [--markdown f]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, report, timed  # noqa: E402

from modeconn.curves.family import Line  # noqa: E402
from modeconn.data.catalogue import load_dataset  # noqa: E402
from modeconn.engine.point import evaluate_point  # noqa: E402
from modeconn.models import build_model  # noqa: E402
from modeconn.training import TrainConfig, train_endpoint  # noqa: E402

NETWORKS = {
    "digits ConvFC": dict(name="convfc", pool_padding=1),
    "digits PreResNet-8 (BatchNorm)": dict(name="preresnet", depth=8),
}


def run(label: str, spec: dict, data, epochs: int, precisions: list[str]) -> list[dict]:
    def make(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        net = build_model(num_classes=10, input_shape=data.input_shape, **spec)
        net = net.to(data.train_x.device)
        config = TrainConfig(epochs=epochs, lr=0.05, batch_size=64, seed=seed, progress=False)
        train_endpoint(net, data, config)
        return net

    start, end = make(1), make(2)
    line = Line(start, start, end)
    points = [line.weights(t) for t in torch.linspace(0, 1, 11).tolist()]
    model = line.model
    seconds = {p: [] for p in [None, *precisions]}
    results = {p: [] for p in [None, *precisions]}
    for k, w in enumerate(points):
        order = [None, *precisions]
        for precision in order[k % len(order) :] + order[: k % len(order)]:
            took, out = timed(lambda w=w, p=precision: evaluate_point(model, w, data, autocast=p))
            seconds[precision].append(took)
            results[precision].append(out)
    rows = []
    for precision in precisions:
        pairs = list(zip(results[precision], results[None], strict=True))
        rows.append(
            {
                "network": label,
                "precision": precision,
                "fp32_error": max(r[s].error for _, r in pairs for s in r),
                "nll": max(abs(a[s].nll - b[s].nll) for a, b in pairs for s in a),
                "rel_nll": max(abs(a[s].nll - b[s].nll) / b[s].nll for a, b in pairs for s in a),
                "error": max(abs(a[s].error - b[s].error) for a, b in pairs for s in a),
                "speedup": statistics.median(
                    f / p for f, p in zip(seconds[None], seconds[precision], strict=True)
                ),
            }
        )
    return rows


COLUMNS = [
    ("network (trained on digits)", lambda r: r["network"]),
    ("autocast", lambda r: r["precision"]),
    ("worst float32 error on the line (%)", lambda r: f"{r['fp32_error']:.1f}"),
    ("max abs Δ nll", lambda r: f"{r['nll']:.1e}"),
    ("max relative Δ nll", lambda r: f"{r['rel_nll']:.1e}"),
    ("max abs Δ error (points)", lambda r: f"{r['error']:.2f}"),
    ("speed-up vs float32 (median of points)", lambda r: f"{r['speedup']:.2f}x"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--precision", action="append", choices=["bfloat16", "float16"])
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset("digits").to(device)
    precisions = args.precision or ["bfloat16", "float16"]
    rows = [
        row
        for label, spec in NETWORKS.items()
        for row in run(label, spec, data, args.epochs, precisions)
    ]
    report(rows, lambda r: markdown_table(COLUMNS, r), args.markdown)


if __name__ == "__main__":
    main()
