"""When do digits networks become linearly connected? The stability analysis of Frankle et al.
2020 on the embedded digits data: an MLP and a ConvFC, each one parent run of 20 epochs
(SGD, the paper's schedule), two children per spawn step that differ in data order (digits
has no augmentation), the test-error barrier ("frankle": over the children's mean) on the
straight line between them, against the spawn step k; the stable k is the first from which
the barrier stays below 2 percentage points.

Checkpoints go to build/stability_digits/ (a rerun resumes and reuses finished runs); the
figures to build/stability_digits/<model>.png. Prints a markdown table per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

import modeconn as mc  # noqa: E402
from modeconn.plotting import plot_stability, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "stability_digits"
MODELS = {
    "mlp": ("mlp", {"hidden": [256, 256]}),
    "convfc": ("convfc", {"widths": [32, 64, 128], "hidden": 1000, "pool_padding": 1}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument(
        "--spawn", type=float, nargs="+", default=[0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]
    )
    parser.add_argument("--threshold", type=float, default=2.0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    lines = [f"Machine: {machine()}\n"]

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    data = mc.load_dataset("digits")
    config = mc.TrainConfig(epochs=args.epochs, lr=0.05, batch_size=64, seed=1, progress=False)
    for label in args.models:
        name, kw = MODELS[label]
        torch.manual_seed(1)
        model = mc.build_model(name, num_classes=10, input_shape=data.input_shape, **kw)
        meta = {"model": name, "model_args": kw}
        began = time.perf_counter()
        result = mc.stability(
            model, data, config, args.spawn, pairs=args.pairs, vary="order",
            threshold=args.threshold, directory=WORK / label, meta=meta, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - began
        result.save(WORK / label / "lines")
        save_figure(plot_stability(result, model=label), WORK / f"{label}.png")
        errors = result.values["test_error"][:, :, [0, -1]]  # the children's own test errors
        say(
            f"\n{label} ({sum(p.numel() for p in model.parameters())} parameters), "
            f"{result.total_steps} steps, {args.pairs} pairs, {seconds:.0f} s"
        )
        say()
        say("| k (steps) | k (% of training) | test-error barrier: mean | min | max | "
            "train-error barrier | test-nll barrier | children's test error |")  # fmt: skip
        say("|---|---|---|---|---|---|---|---|")
        test, train = result.barriers("test_error"), result.barriers("train_error")
        nll = result.barriers("test_nll")
        for i, k in enumerate(result.steps):
            say(
                f"| {int(k)} | {100 * result.fractions[i]:.1f} | {test[i].mean():.2f} | "
                f"{test[i].min():.2f} | {test[i].max():.2f} | {train[i].mean():.2f} | "
                f"{nll[i].mean():.3f} | {errors[i].mean():.2f} |"
            )
        stable = result.stable_step()
        where = "never" if stable is None else (
            f"k = {stable} steps ({100 * stable / result.total_steps:.1f} % of training)"
        )  # fmt: skip
        say(f"\nstable (test-error barrier < {args.threshold:g} points from there on): {where}")
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
