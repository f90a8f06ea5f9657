"""A curve training step versus a plain training step of the base network, same batch.

The curve step computes phi(t) from the control points, runs the network on it with
functional_call, adds the paper's regulariser 0.5 wd ||phi(t)||^2 and back-propagates to the
bends; the plain step is SGD with weight decay on the network's own weights.

The traffic floor is the least a curve step can cost, whatever its kernels: a plain step plus
the passes over the D weights that a curve step cannot avoid. It must read the three control
points and write phi(t) (4 passes), then read the network's gradient and phi and write the
bend's gradient c (g + wd phi) (3), and it is spared the plain step's weight-decay pass of
the optimizer (grad + wd w: 3). The passes that touch memory rather than cache (the network's
gradient is fresh in cache, the rest is not) cancel but for 4: reading three control points
and writing phi. Each is timed as a third of an out-of-place lerp of two D-vectors over
buffers larger than the cache. On a small network whose step is short next to its weight
count this floor can lie above 1.05.

    python benchmarks/bench_curve_step.py [--steps 20] [--markdown f]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORKLOADS, as_dataset, report  # noqa: E402

from modeconn.curves.family import Bezier  # noqa: E402
from modeconn.training import curve_step_loss  # noqa: E402

COLD_BYTES = 256 * 2**20  # more than the last-level cache of a CPU or GPU


def step_times(step, steps: int) -> float:
    """Median seconds per step after two warm-up steps."""
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        began = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run(name: str, spec: dict, steps: int, batch: int, device: torch.device, rounds: int) -> dict:
    data = as_dataset(name, spec["raw"](), spec["scale"], spec["mean"], spec["std"]).to(device)
    x, y = data.train_x[:batch], data.train_y[:batch]
    torch.manual_seed(0)
    model, a, b = (spec["model"]().to(device) for _ in range(3))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def plain():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    curve = Bezier(model, a, b).to(device)
    curve.train()
    curve_opt = torch.optim.SGD([curve.bends], lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)

    def curve_step():
        t = torch.rand((), generator=g).item()
        loss, _ = curve_step_loss(curve, x, y, t, 5e-4)
        curve_opt.zero_grad(set_to_none=True)
        loss.backward()
        curve_opt.step()

    # One pass over D weights from memory: a third of an out-of-place lerp (read, read,
    # write) over buffers that rotate through more memory than any cache holds, as the
    # control points do between two steps (the step's own work evicts them).
    dim = curve.space.size
    sets = max(2, -(-COLD_BYTES // (3 * 4 * dim)))
    buffers = [torch.randn(3, dim, device=device) for _ in range(sets)]
    turn = iter(range(10**9))

    def lerp():
        u, v, w = buffers[next(turn) % sets]
        torch.lerp(u, v, 0.3, out=w)

    # Interleave them so all see the same machine state; the ratio is the median of the
    # rounds' ratios (each round: median step times), robust to a busy shared host.
    plain_s, curve_s, floors = [], [], []
    for _ in range(rounds):
        plain_s.append(step_times(plain, steps))
        curve_s.append(step_times(curve_step, steps))
        floors.append(1 + 4 * step_times(lerp, steps) / 3 / plain_s[-1])
    ratios = [c / p for p, c in zip(plain_s, curve_s, strict=True)]
    return {
        "workload": name,
        "batch": batch,
        "plain_ms": 1e3 * statistics.median(plain_s),
        "curve_ms": 1e3 * statistics.median(curve_s),
        "ratio": statistics.median(ratios),
        "spread": f"{min(ratios):.3f}-{max(ratios):.3f}",
        "weights": curve.space.size,
        "floor": statistics.median(floors),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| workload | weights | batch | plain step (ms) | curve step (ms) | curve / plain "
        "(median of rounds) | rounds' range | traffic floor (curve / plain) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['weights']:,} | {r['batch']} | {r['plain_ms']:.1f} | "
            f"{r['curve_ms']:.1f} | {r['ratio']:.3f} | {r['spread']} | {r['floor']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS))
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [
        run(w, WORKLOADS[w], args.steps, args.batch, device, args.rounds)
        for w in (args.workload or list(WORKLOADS))
    ]
    report(rows, table, args.markdown)


if __name__ == "__main__":
    main()
