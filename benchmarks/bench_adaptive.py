"""Adaptive resolution against the full regular grid, on the demo's plane and on a
random-direction surface (digits, 1437 train / 360 test samples).

The networks are the demo's kind, slimmer: two ConvFC endpoints (widths 8-16-32, hidden 64;
the demo's 16-32-64 / 256 costs 4x as much per point) and a quadratic Bezier curve, trained
with the demo's optimiser settings (conf/optim/sgd.yaml, curve.yaml). The plane goes through
w1, w2 and theta with the demo's margin (0.2); the surface lies around w1 along two
filter-normalised random directions (Li et al., span 1). Losses include the demo's l2 term.

The reference is the full regular grid at the target resolution (129 x 129), computed once
per workload. Each other setting is compared with it on the nodes whose reference train loss
lies below the top contour level of interest, the straight line's worst train loss (above it
the figure shows one flat colour; `Adaptive(ceiling=...)` stops refining there): the largest
|log10 train loss - log10 reference|, the share of nodes evaluated and the wall time. Settings:
the evaluation subset alone (`eval_samples`, on the regular grid), adaptive resolution alone at
three tolerances, and both together. Last, a 513 x 513 adaptive picture of the plane, beside
the regular grid's time extrapolated from the reference's seconds per point.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from modeconn.curves.family import Bezier, Line  # noqa: E402
from modeconn.data.catalogue import load_dataset  # noqa: E402
from modeconn.engine import Adaptive, EvalSettings  # noqa: E402
from modeconn.landscape import SurfaceResult, evaluate_surface, random_direction  # noqa: E402
from modeconn.models import build_model  # noqa: E402
from modeconn.path import evaluate_path  # noqa: E402
from modeconn.plane import PlaneResult, evaluate_plane_through_curve  # noqa: E402
from modeconn.training import TrainConfig, train_curve, train_endpoint  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
ARCH = dict(widths=[8, 16, 32], hidden=64, pool_padding=1)
WD = 5e-4  # the demo's: the figures' train loss includes 0.5 wd ||w||^2


def demo_curve(data) -> Bezier:
    """Two endpoints (seeds 1, 2) and the Bezier curve between them, the demo's recipe."""
    sgd = OmegaConf.to_container(OmegaConf.load(CONF / "optim" / "sgd.yaml"))
    bend = OmegaConf.to_container(OmegaConf.load(CONF / "optim" / "curve.yaml"))
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = build_model("convfc", num_classes=10, input_shape=data.input_shape, **ARCH)
        train_endpoint(net, data, TrainConfig(**sgd, seed=seed, progress=False))
        nets.append(net)
    curve = Bezier(nets[0], nets[0], nets[1])
    train_curve(curve, data, TrainConfig(**bend, seed=1, progress=False))
    return curve


def timed(job):
    began = time.perf_counter()
    result = job()
    return result, time.perf_counter() - began


def compare(result, reference, ceiling: float, seconds: float, base_seconds: float) -> dict:
    """The row of one setting against the reference grid."""
    below = reference.train_loss < ceiling
    error = np.abs(np.log10(result.train_loss) - np.log10(reference.train_loss))
    evaluated = result.evaluated if result.adaptive else np.ones(error.shape, dtype=bool)
    estimate = result.interp_error if result.adaptive else np.zeros(error.shape)
    return {
        "evaluated": int(evaluated.sum()),
        "fraction": float(evaluated.mean()),
        "below": float(error[below].max()),
        "all": float(error.max()),
        "estimate": float(estimate[below].max()),
        "seconds": seconds,
        "speedup": base_seconds / seconds,
    }


def workload(name, kind, evaluate, target, coarse, tols, samples, ceiling, log, cache):
    """The reference and every setting of one workload; `evaluate(grid, resolution, settings)`.
    The reference is read from `cache` (a result file) when it is there, else computed and
    written to it, with its wall time."""
    full = EvalSettings(batch_size=2048)  # changes no number; 1.4x faster than 128 here
    subset = full.replace(eval_samples=samples)
    if cache is not None and cache.with_suffix(".npz").exists():
        reference = kind.load(cache)
        log(f"{name}: the regular grid from {cache}.npz (delete it to recompute)")
    else:
        reference, wall = timed(lambda: evaluate(target, "regular", full))
        reference.meta["wall_s"] = wall
        if cache is not None:
            reference.save(cache)
    base = reference.meta["wall_s"]
    log(f"{name}: regular {target}x{target} in {base:.0f} s")
    settings = [("regular grid (reference)", "regular", full)]
    settings.append((f"eval_samples={samples} alone", "regular", subset))
    for tol in tols:
        adaptive = Adaptive(coarse=coarse, tol=tol, ceiling=ceiling)
        settings.append((f"adaptive, tol={tol:g}", adaptive, full))
    both = Adaptive(coarse=coarse, tol=tols[len(tols) // 2], ceiling=ceiling)
    settings.append((f"adaptive tol={both.tol[0]:g} + eval_samples={samples}", both, subset))
    rows = []
    for label, resolution, engine in settings:
        if resolution == "regular" and engine is full:
            result, seconds = reference, base
        else:
            result, seconds = timed(lambda r=resolution, e=engine: evaluate(target, r, e))
        row = compare(result, reference, ceiling, seconds, base)
        rows.append({"workload": name, "setting": label, **row})
        log(f"{name}: {label}: {rows[-1]}")
    return rows, reference


def draw(regular, picture, ceiling: float, out: Path) -> None:
    """The figure pair: the regular reference and the adaptive picture with its evaluated
    nodes, on one colour scale."""
    from modeconn.plotting import plot_plane, save_figure, shared_scale

    scale = shared_scale(regular, picture, metrics=["train_loss"], clip={"train_loss": ceiling})
    for result, name, marked in ((regular, "adaptive_regular", False),
                                 (picture, "adaptive_plane", True)):  # fmt: skip
        kind = f"{len(result.x)} x {len(result.y)}"
        share = f"adaptive, {result.evaluated.mean():.1%} evaluated" if marked else "regular"
        figure = plot_plane(
            result, metrics=["train_loss"], scale=scale, mark_evaluated=marked,
            title=f"{kind} nodes, {share}",
        )  # fmt: skip
        save_figure(figure, out / f"{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--target", type=int, default=129, help="nodes per side of the grids")
    parser.add_argument("--coarse", type=int, default=17)
    parser.add_argument("--tols", type=float, nargs=3, default=(0.1, 0.05, 0.02))
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--big", type=int, default=513, help="the large adaptive picture")
    parser.add_argument("--big-coarse", type=int, default=33)
    parser.add_argument("--figures", type=Path, help="folder for the figure pair (png)")
    parser.add_argument(
        "--cache", type=Path, help="folder for the reference grids, reused when present"
    )
    args = parser.parse_args()
    began = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {line}", file=sys.stderr, flush=True)

    data = load_dataset("digits")
    curve, train_s = timed(lambda: demo_curve(data))
    ends = [curve.space.unflatten(w) for w in (curve.start, curve.end)]
    line = evaluate_path(Line(curve.model, *ends), data, ts=61, wd=WD, progress=False)
    ceiling = float(line.train_loss.max())
    log(f"trained in {train_s:.0f} s; the line's worst train loss {ceiling:.3f}")

    def plane(grid, resolution, settings):
        return evaluate_plane_through_curve(
            curve, data, grid=grid, margin=0.2, wd=WD, settings=settings,
            resolution=resolution, progress=False,
        )  # fmt: skip

    directions = [random_direction(ends[0], seed=seed) for seed in (1, 2)]

    def surface(grid, resolution, settings):
        return evaluate_surface(
            curve.model, curve.start, directions, data, grid=grid, span=1.0, wd=WD,
            settings=settings, resolution=resolution, progress=False,
        )  # fmt: skip

    common = (args.target, args.coarse, args.tols, args.eval_samples, ceiling, log)
    cache = {
        k: args.cache / f"{k}-{args.target}" if args.cache else None for k in ("plane", "surface")
    }
    rows, regular = workload(
        "demo plane (w1, w2, theta)", PlaneResult, plane, *common, cache["plane"]
    )
    rows += workload(
        "random-direction surface around w1", SurfaceResult, surface, *common, cache["surface"]
    )[0]
    per_point = rows[0]["seconds"] / args.target**2
    big_adaptive = Adaptive(coarse=args.big_coarse, tol=args.tols[1], ceiling=ceiling)
    picture, big_s = timed(lambda: plane(args.big, big_adaptive, EvalSettings(batch_size=2048)))
    log(f"plane {args.big}x{args.big}: {picture.evaluated.mean():.2%} in {big_s:.0f} s")
    if args.figures:
        draw(regular, picture, ceiling, args.figures)

    head = (
        f"Machine: {machine()}. Networks: ConvFC {ARCH['widths']} / {ARCH['hidden']} on "
        f"digits ({len(data.train_x)} train / {len(data.test_x)} test), trained in "
        f"{train_s:.0f} s; top contour level: the straight line's worst train loss "
        f"{ceiling:.3f}. Reference: the regular {args.target} x {args.target} grid; "
        f"adaptive: coarse {args.coarse} x {args.coarse}, refined on log10(train loss) with "
        f"that ceiling. Errors: max |Δ log10 train loss| against the reference.\n"
    )
    table = [
        "| workload | setting | nodes evaluated | share | max error below the top level | "
        "max error, all nodes | estimated (max, below) | seconds | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['workload']} | {r['setting']} | {r['evaluated']} | {r['fraction']:.1%} | "
            f"{r['below']:.3f} | {r['all']:.3f} | {r['estimate']:.3f} | {r['seconds']:.0f} | "
            f"{r['speedup']:.1f}x |"
        )
    extrapolated = per_point * args.big**2
    shared = ""
    step, rest = divmod(args.big - 1, args.target - 1)
    if rest == 0:  # every step-th node of the picture is a node of the reference
        error = np.abs(np.log10(picture.train_loss[::step, ::step] / regular.train_loss))
        shared = (
            f" At the {args.target} x {args.target} reference's nodes: max |Δ log10 train "
            f"loss| {error[regular.train_loss < ceiling].max():.3f} below the top level."
        )
    tail = (
        f"\n{args.big} x {args.big} adaptive picture of the plane (coarse {args.big_coarse}, "
        f"tol {args.tols[1]:g}, the same ceiling): {int(picture.evaluated.sum())} of "
        f"{picture.evaluated.size} nodes evaluated ({picture.evaluated.mean():.2%}) in "
        f"{big_s:.0f} s; the regular grid would take about {extrapolated:.0f} s "
        f"({extrapolated / 60:.0f} min, {per_point * 1e3:.1f} ms per node as in the reference): "
        f"{extrapolated / big_s:.0f}x.{shared}\n"
    )
    text = head + "\n" + "\n".join(table) + "\n" + tail
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    log("done")


if __name__ == "__main__":
    main()
