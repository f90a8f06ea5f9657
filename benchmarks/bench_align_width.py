"""Barriers after alignment on digits: how they depend on the network's width, and how they
fall with weight matching's restarts.

For each network (MLP, ConvFC, PreResNet-8) at a narrow and a wide width, two endpoints are
trained from seeds 1 and 2 (20 epochs, the digits defaults); then the straight line from w1 to
w2, to w2 aligned by weight matching (4 restarts) and to w2 aligned by activation matching are
evaluated at 11 points, BatchNorm statistics recomputed at every point, each aligned line also
with REPAIR at every t (networks without BatchNorm). Reported: the test-error barrier (points,
Entezari's definition: the excess over the interpolated ends), the train-nll barrier and the
lowest test accuracy along the line (Tatro et al.'s measure). Then, for the wide MLP pair,
weight matching with 1, 2, 4, 8 and 16 restarts: the best objective and the aligned line's
barriers. This measures barriers, not time, so it does not need a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table  # noqa: E402

import modeconn as mc  # noqa: E402
from modeconn.align import RepairedLine  # noqa: E402

NETWORKS = [  # (label, registry name, narrow kwargs, wide kwargs, width factor)
    ("MLP 3 x w", "mlp", dict(hidden=[64] * 3), dict(hidden=[512] * 3), "w = 64 / 512"),
    (
        "ConvFC",
        "convfc",
        dict(widths=[8, 16, 32], hidden=64, pool_padding=1),
        dict(widths=[32, 64, 128], hidden=256, pool_padding=1),
        "x1 / x4",
    ),
    ("PreResNet-8 (BN)", "preresnet", dict(depth=8, width=8), dict(depth=8, width=32), "8 / 32"),
]


def build(name: str, data, kw: dict, seed: int | None = None):
    if seed is not None:
        torch.manual_seed(seed)
    return mc.build_model(name, num_classes=10, input_shape=data.input_shape, **kw)


def line_row(model, a, end, data, repair: bool) -> dict:
    line = RepairedLine(model, a, end, data) if repair else mc.Line(model, a, end)
    path = mc.evaluate_path(line, data, ts=11, progress=False)
    return dict(
        err=path.barrier("test_error"),
        nll=path.barrier("train_nll"),
        min_acc=100 - max(path.test_error),
    )


def width_rows(data, epochs: int) -> list[dict]:
    rows = []
    for label, name, narrow, wide, factor in NETWORKS:
        for which, kw in (("narrow", narrow), ("wide", wide)):
            began = time.perf_counter()
            nets = []
            for seed in (1, 2):
                net = build(name, data, kw, seed)
                mc.train_endpoint(
                    net, data, mc.TrainConfig(epochs=epochs, seed=seed, progress=False)
                )
                nets.append(net.eval())
            a, b = nets
            spec = mc.permutation_spec(a, data.train_x[:4])
            by_w, _ = mc.weight_matching(a, a, b, spec=spec, restarts=4)
            by_a, _ = mc.activation_matching(a, a, b, data, spec=spec)
            has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
            row = dict(
                net=f"{label} {which} ({factor})", params=sum(p.numel() for p in a.parameters())
            )
            row["none"] = line_row(a, a, b, data, False)
            for key, state in (("weight", by_w), ("activation", by_a)):
                end = build(name, data, kw)
                end.load_state_dict(state)
                row[key] = line_row(a, a, end, data, False)
                row[key + "_repair"] = None if has_bn else line_row(a, a, end, data, True)
            row["seconds"] = time.perf_counter() - began
            rows.append(row)
            print(f"  {row['net']}: {row['seconds']:.0f} s", file=sys.stderr)
    return rows


def restart_rows(data, epochs: int) -> list[dict]:
    _, name, _, wide, _ = NETWORKS[0]
    nets = []
    for seed in (1, 2):
        net = build(name, data, wide, seed)
        mc.train_endpoint(net, data, mc.TrainConfig(epochs=epochs, seed=seed, progress=False))
        nets.append(net.eval())
    a, b = nets
    spec = mc.permutation_spec(a, data.train_x[:4])
    rows = []
    for restarts in (1, 2, 4, 8, 16):
        began = time.perf_counter()
        state, m = mc.weight_matching(a, a, b, spec=spec, restarts=restarts, seed=0)
        seconds = time.perf_counter() - began
        end = build(name, data, wide)
        end.load_state_dict(state)
        rows.append(
            dict(
                restarts=restarts,
                objective=m.objective,
                seconds=seconds,
                sweeps=[r["sweeps"] for r in m.runs],
                **line_row(a, a, end, data, False),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    data = mc.load_dataset("digits")
    widths = width_rows(data, args.epochs)
    restarts = restart_rows(data, args.epochs)
    columns = [("network", lambda r: r["net"]), ("weights", lambda r: f"{r['params']:,}")]
    for key, head in (
        ("none", "w2"),
        ("weight", "weight m."),
        ("weight_repair", "weight m. + REPAIR"),
        ("activation", "act. m."),
        ("activation_repair", "act. m. + REPAIR"),
    ):
        columns.append(
            (
                f"{head}: test err barrier / train nll barrier / min acc",
                lambda r, k=key: (
                    "-"
                    if r[k] is None
                    else f"{r[k]['err']:.2f} / {r[k]['nll']:.3f} / {r[k]['min_acc']:.1f}"
                ),
            )
        )
    text = [
        f"Machine: {machine()}\n",
        f"Two endpoints per network (seeds 1, 2; {args.epochs} epochs on digits), the line at 11 "
        "points; cells: test-error barrier (points) / train-nll barrier / lowest test accuracy "
        "along the line (%).\n",
        markdown_table(columns, widths),
        "\nWeight matching's restarts, wide MLP pair (3 x 512):\n",
        markdown_table(
            [
                ("restarts", lambda r: str(r["restarts"])),
                ("best objective", lambda r: f"{r['objective']:.6g}"),
                ("sweeps per run", lambda r: ",".join(map(str, r["sweeps"]))),
                ("s", lambda r: f"{r['seconds']:.2f}"),
                ("test err barrier", lambda r: f"{r['err']:.2f}"),
                ("train nll barrier", lambda r: f"{r['nll']:.4f}"),
                ("min test acc", lambda r: f"{r['min_acc']:.1f}"),
            ],
            restarts,
        ),
    ]
    out = "\n".join(text) + "\n"
    print(out)
    if args.markdown:
        args.markdown.write_text(out)


if __name__ == "__main__":
    main()
