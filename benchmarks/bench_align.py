"""Weight and activation matching: time and sweeps, and how often a known permutation of a
trained residual network comes back (git-re-basin's issue #8: weight matching recovered it in
10 of 100 runs there), with 1 and with 8 restarts.

A network against a randomly permuted copy of itself: the right answer is known (the inverse
permutation), so "recovered" means every unit; the fraction of units recovered is reported too.
Trained residual nets at two widths; then the acceptance's networks at random init (mlp,
convfc, preresnet20, vgg16bn, torchvision resnet18) over 20 seeds each (the test suite runs 20
seeds of the small ones, 2 of vgg16bn and resnet18); then time and sweeps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

import modeconn as mc  # noqa: E402
from modeconn.align import apply_permutation, inverse, permutation_distance  # noqa: E402


def recovery(net, spec, seeds, restarts: int) -> tuple[int, float, float, list[int]]:
    """(runs recovering every unit, mean fraction of units right, median seconds, the seeds
    that failed) over `seeds` (an int: range(seeds))."""
    exact, right, times, failed = 0, [], [], []
    for seed in range(seeds) if isinstance(seeds, int) else seeds:
        p = spec.random_permutations(torch.Generator().manual_seed(seed))
        shuffled = apply_permutation(spec, net.state_dict(), p)
        began = time.perf_counter()
        _, m = mc.weight_matching(net, net, shuffled, spec=spec, restarts=restarts, seed=seed)
        times.append(time.perf_counter() - began)
        wrong = permutation_distance(m.perms, {g: inverse(q) for g, q in p.items()})
        exact += wrong == 0
        right.append(1 - wrong)
        if wrong:
            failed.append(seed)
    return exact, statistics.mean(right), statistics.median(times), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    lines = [f"Machine: {machine()}\n"]

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    data = mc.load_dataset("digits")
    say(
        "| trained residual net (digits, 5 epochs) | groups | restarts | all units recovered "
        "| units right | median s |"
    )
    say("|---|---|---|---|---|---|")
    for width in (16, 64):
        torch.manual_seed(1)
        res = mc.build_model(
            "preresnet", num_classes=10, input_shape=data.input_shape, depth=8, width=width
        )
        mc.train_endpoint(res, data, mc.TrainConfig(epochs=5, seed=1, progress=False))
        spec = mc.permutation_spec(res, data.train_x[:4])
        for restarts in (1, 8):
            exact, right, sec, _ = recovery(res, spec, args.seeds, restarts)
            say(
                f"| preresnet-8, width {width} | {len(spec.groups)} | {restarts} "
                f"| {exact}/{args.seeds} | {100 * right:.1f} % | {sec:.3f} |"
            )
    say(
        "\n| network (random init) vs a permuted copy | all units recovered, 1 restart "
        "| 8 restarts | median s per match (1 restart) |"
    )
    say("|---|---|---|---|")
    for name, net, shape in networks():
        spec = mc.permutation_spec(net, torch.randn(2, *shape))
        exact, right, sec, failed = recovery(net, spec, args.seeds, 1)
        # 8 restarts keep the best run, whose first is the 1-restart run: only failures rerun
        again = recovery(net, spec, failed, 8)[0] if failed else 0
        say(f"| {name} | {exact}/{args.seeds} | {exact + again}/{args.seeds} | {sec:.2f} |")
    say(
        "\n| network (random init) | weights | groups | weight matching s | sweeps "
        "| activation matching s |"
    )
    say("|---|---|---|---|---|---|")
    for name, shape in (("preresnet20", (3, 32, 32)), ("vgg16bn", (3, 32, 32))):
        torch.manual_seed(0)
        a = mc.build_model(name, num_classes=10, input_shape=shape)
        b = mc.build_model(name, num_classes=10, input_shape=shape)
        x = torch.randn(512, *shape)
        s = mc.permutation_spec(a, x[:4])
        began = time.perf_counter()
        _, m = mc.weight_matching(a, a, b, spec=s)
        wm = time.perf_counter() - began
        began = time.perf_counter()
        mc.activation_matching(a, a, b, x, spec=s, batch_size=128)
        am = time.perf_counter() - began
        n = sum(p.numel() for p in a.parameters())
        say(f"| {name} | {n:,} | {len(s.groups)} | {wm:.2f} | {m.sweeps} | {am:.2f} (512 inputs) |")
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


def networks():
    """The acceptance's networks at random init: (name, module, input shape)."""
    import torchvision

    for name, shape, kw in (
        ("mlp", (1, 8, 8), dict(hidden=[64, 64])),
        ("convfc", (1, 8, 8), dict(widths=[8, 16, 16], hidden=32, pool_padding=1)),
        ("preresnet20", (3, 32, 32), {}),
        ("vgg16bn", (3, 32, 32), {}),
    ):
        torch.manual_seed(0)
        yield name, mc.build_model(name, num_classes=10, input_shape=shape, **kw), shape
    torch.manual_seed(0)
    yield "torchvision resnet18", torchvision.models.resnet18(num_classes=10), (3, 32, 32)


if __name__ == "__main__":
    main()
