"""Similarity measures: ours against torch-cka and google/svcca's formulas, side by side.

One layer pair, 10,000 samples x 4,096 neurons each by default (ReLU features of a shared
512-dimensional latent, plus noise), float32 as a network gives them. The contenders run in
turn, round after round, and the table gives the median seconds and the agreement:
  - linear CKA: ours (`linear_cka`, float64, centred, exact over all samples) and ours in
    minibatches (`minibatch_cka`, batches of 1,000) against torch-cka 0.21's `CKA.compare`
    (its unbiased HSIC per batch of 1,000, float32, uncentred: the same estimator as our
    minibatch CKA; `pip install torch-cka==0.21`);
  - SVCCA at 99 % of the variance: ours (`svcca`) against google/svcca's tutorial pipeline
    re-implemented (benchmarks/reference_svcca.py), given the numbers of directions our
    squared-singular-value rule keeps, so that both compute the same quantity; its mean of the
    coefficients and its truncated `results["mean"]` are both reported;
  - PWCCA on a smaller anisotropic pair (its reference costs another full CCA): ours (the
    paper's whitened canonical variates) against the reference's unwhitened ones;
  - a ReLU layer with a mean 50x its spread (512 x 64): torch-cka's float32 HSIC against ours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table  # noqa: E402
from reference_svcca import pwcca_reference, svcca_tutorial  # noqa: E402

from modeconn.similarity.cca import Moments, principal  # noqa: E402
from modeconn.similarity.measures import linear_cka, minibatch_cka, pwcca, svcca  # noqa: E402


def layer_pair(n: int, features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ReLU layers (n, features) float32 reading one 512-d latent, each with own noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 512, generator=g)
    a, b = (torch.randn(512, features, generator=g) / 512**0.5 for _ in range(2))
    x = torch.relu(z @ a + 0.5 * torch.randn(n, features, generator=g))
    y = torch.relu(z @ b + 0.5 * torch.randn(n, features, generator=g))
    return x, y


def torch_cka_compare(x: torch.Tensor, y: torch.Tensor, batch: int) -> float | None:
    """torch-cka's CKA between two 'models' whose layer outputs are x and y (None: absent)."""
    try:
        from torch_cka import CKA
    except ImportError:
        return None
    from torch.utils.data import DataLoader, TensorDataset

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Identity()

        def forward(self, v):
            return self.out(v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cka = CKA(Layer(), Layer(), "x", "y", model1_layers=["out"], model2_layers=["out"])
        loaders = [DataLoader(TensorDataset(v), batch_size=batch) for v in (x, y)]
        import torch_cka.cka as module

        module.tqdm = lambda it, **kw: it  # silence its progress bar
        try:
            cka.compare(*loaders)
        except AssertionError:  # "HSIC computation resulted in NANs"
            return float("nan")
    return float(cka.export()["CKA"][0, 0])


def run(n: int, features: int, rounds: int) -> dict:
    x, y = layer_pair(n, features)
    xn, yn = x.double().numpy().T, y.double().numpy().T  # the reference's (neurons, samples)
    moments = Moments.of(x, y)
    kx = principal(moments.cxx, 0.99)[1].numel()
    ky = principal(moments.cyy, 0.99)[1].numel()
    s = torch.linalg.svdvals(x.double() - x.double().mean(0))
    unsquared = int((torch.cumsum(s, 0) / s.sum() < 0.99).sum()) + 1
    times: dict[str, list[float]] = {k: [] for k in ("cka", "mb", "torch_cka", "svcca", "ref")}
    values: dict[str, float] = {}
    for _ in range(rounds):
        for key, fn in (
            ("cka", lambda: linear_cka(x, y)),
            ("mb", lambda: minibatch_cka(x, y, batch_size=1000)),
            ("torch_cka", lambda: torch_cka_compare(x, y, 1000)),
            ("svcca", lambda: svcca(x, y, keep=0.99)),
            ("ref", lambda: svcca_tutorial(xn, yn, kx, ky)),
        ):
            began = time.perf_counter()
            values[key] = fn()
            times[key].append(time.perf_counter() - began)
    ref = values["ref"]
    return {
        "n": n,
        "features": features,
        "seconds": {k: statistics.median(v) for k, v in times.items()},
        "cka": values["cka"],
        "mb": values["mb"],
        "torch_cka": values["torch_cka"],
        "svcca": values["svcca"],
        "ref_mean_of_coefs": float(np.mean(ref["coefs"])),
        "ref_results_mean": ref["mean"],
        "kept": (kx, ky),
        "kept_unsquared": unsquared,
    }


def pwcca_rows(seed: int = 1) -> dict:
    """PWCCA on an anisotropic pair (5,000 x 64): ours, the reference, and the difference."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(5000, 64)) * np.geomspace(0.05, 20.0, 64)
    y = np.tanh(x @ g.normal(size=(64, 64)) / 8) + 0.3 * g.normal(size=(5000, 64))
    began = time.perf_counter()
    ours = pwcca(x, y)
    mine = time.perf_counter() - began
    began = time.perf_counter()
    reference = pwcca_reference(x.T, y.T)
    theirs = time.perf_counter() - began
    return {"ours": ours, "reference": reference, "seconds": (mine, theirs)}


def large_mean_row() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(512, 64, generator=g)
    x = torch.relu(50.0 + base)
    y = torch.relu(50.0 + base @ torch.randn(64, 64, generator=g) / 8)
    return {
        "ours": minibatch_cka(x, y, batch_size=128),
        "torch_cka": torch_cka_compare(x, y, 128),
        "centred": minibatch_cka(x - 50, y - 50, batch_size=128),
    }


def table(r: dict) -> str:
    sec = r["seconds"]
    rows = [
        dict(what="linear CKA, exact (ours, float64)", s=sec["cka"], v=r["cka"], vs="-"),
        dict(
            what="minibatch CKA, batches of 1,000 (ours, float64)",
            s=sec["mb"], v=r["mb"], vs=f"torch-cka's s / ours: {sec['torch_cka'] / sec['mb']:.2f}",
        ),
        dict(what="torch-cka 0.21 CKA.compare, batches of 1,000 (float32)", s=sec["torch_cka"],
             v=r["torch_cka"], vs=f"|Δ| vs ours minibatch {abs(r['torch_cka'] - r['mb']):.1e}"),
        dict(what=f"SVCCA 99 % (ours; keeps {r['kept'][0]}, {r['kept'][1]} directions)",
             s=sec["svcca"], v=r["svcca"],
             vs=f"reference's s / ours: {sec['ref'] / sec['svcca']:.2f}"),
        dict(what="google/svcca formulas, same directions: mean of coefficients", s=sec["ref"],
             v=r["ref_mean_of_coefs"],
             vs=f"|Δ| vs ours {abs(r['ref_mean_of_coefs'] - r['svcca']):.1e}"),
        dict(what="google/svcca results['mean'] (truncated at 98 % of the sum)", s=float("nan"),
             v=r["ref_results_mean"], vs=f"unsquared 99 % rule would keep {r['kept_unsquared']}"),
    ]  # fmt: skip
    return markdown_table(
        [
            ("measure", lambda row: row["what"]),
            ("seconds", lambda row: "-" if np.isnan(row["s"]) else f"{row['s']:.2f}"),
            ("value", lambda row: f"{row['v']:.6f}"),
            ("note", lambda row: row["vs"]),
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    result = run(args.n, args.features, args.rounds)
    pw, big = pwcca_rows(), large_mean_row()
    text = (
        f"Machine: {machine()}\n\nLayer pair {args.n} x {args.features} (x2), float32 input\n\n"
        f"{table(result)}\n\n"
        f"PWCCA, anisotropic 5,000 x 64 pair: ours (paper, whitened variates) "
        f"{pw['ours']:.4f} in {pw['seconds'][0]:.2f} s; google/svcca's pwcca.py formula "
        f"{pw['reference']:.4f} in {pw['seconds'][1]:.2f} s\n\n"
        f"ReLU layer with mean 50x its spread (512 x 64, batches of 128): torch-cka "
        f"{big['torch_cka']}, ours {big['ours']:.6f} (on the centred features "
        f"{big['centred']:.6f})\n"
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
