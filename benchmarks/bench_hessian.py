"""Hessian eigenvalues and trace: our Lanczos and Hutchinson against PyHessian and against Li
et al.'s eigsh procedure, side by side in one run, on PreResNet-20 with CIFAR-shaped data.

Contenders, on the same network, samples and BatchNorm statistics (recomputed once at the
point; every contender then runs the network in eval mode):
  - ours: `modeconn.curvature.hessian` (Lanczos with full re-orthogonalisation; forward-over-reverse
    products averaged over batches; Hutchinson with a standard-error rule);
  - PyHessian 0.1 (`pip install pyhessian==0.1`, benchmark-only): `hessian(..., cuda=False)`
    with a data loader, its `eigenvalues` (power iteration) and `trace`;
  - Li et al.'s procedure (benchmarks/reference_hessian.py): scipy `eigsh` on products summed
    over batches, parameters with ndim > 1, lambda_min by the 0.51 lambda_max shift.
PyHessian takes every parameter, Li only ndim > 1: each is compared with our estimate on its
own parameter set, and Li's eigenvalues are divided by the number of batches (its sum).
The reference lambda_max of a parameter set is our Lanczos run converged to a residual of 1e-6
of |lambda|; "to 1e-3" is the first product after which an estimate stays within 1e-3 of it
(ours read off the Lanczos tridiagonal of each step, PyHessian's from its Rayleigh quotients).
Product timings run round after round (this host drifts), and the table gives medians.
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
from common import WORKLOADS, as_dataset, machine, timed  # noqa: E402
from reference_hessian import li_hvp, li_params, min_max_hessian_eigs  # noqa: E402

from modeconn.curvature.hvp import hessian_operator  # noqa: E402
from modeconn.curvature.lanczos import hutchinson, lanczos  # noqa: E402
from modeconn.engine.point import recompute_bn  # noqa: E402

NAME = "CIFAR-shaped PreResNet-20"


def first_within(estimates: list[float], reference: float, rel: float = 1e-3) -> int | None:
    """1-based index of the first estimate after which all stay within rel of reference."""
    ok = [abs(e - reference) <= rel * abs(reference) for e in estimates]
    for k in range(len(ok)):
        if all(ok[k:]):
            return k + 1
    return None


def ritz_max_per_step(alpha: np.ndarray, beta: np.ndarray) -> list[float]:
    out = []
    for j in range(1, len(alpha) + 1):
        t = np.diag(alpha[:j]) + np.diag(beta[: j - 1], 1) + np.diag(beta[: j - 1], -1)
        out.append(float(np.linalg.eigvalsh(t)[-1]))
    return out


def own_rule_stop(alpha: np.ndarray, beta: np.ndarray, tol: float) -> tuple[int, float] | None:
    """(step, lambda_max) where our stopping rule for the top pair alone (residual
    beta_j |s_j| <= tol * |theta_max|) would have stopped the same Lanczos run."""
    for j in range(1, min(len(alpha), len(beta)) + 1):
        t = np.diag(alpha[:j]) + np.diag(beta[: j - 1], 1) + np.diag(beta[: j - 1], -1)
        evals, evecs = np.linalg.eigh(t)
        if beta[j - 1] * abs(evecs[-1, -1]) <= tol * abs(evals[-1]):
            return j, float(evals[-1])
    return None


def pyhessian_or_none(model, loader):
    try:
        from pyhessian import hessian
    except ImportError:
        return None
    h = hessian(model, torch.nn.functional.cross_entropy, dataloader=loader, cuda=False)
    calls: list[float] = []
    product = h.dataloader_hv_product

    def counted(v):
        value, hv = product(v)
        calls.append(value)
        return value, hv

    h.dataloader_hv_product = counted
    return h, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trace-samples", type=int, default=12)
    parser.add_argument("--power-iter", type=int, default=150)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    spec = WORKLOADS[NAME]
    torch.manual_seed(0)
    raw = spec["raw"](train=args.samples, test=8)
    data = as_dataset(NAME, raw, spec["scale"], spec["mean"], spec["std"])
    model = spec["model"]()
    recompute_bn(model, data.train_x)  # the point's statistics, shared by every contender
    model.eval()
    loader = list(
        zip(
            torch.split(data.train_x, args.batch),
            torch.split(data.train_y, args.batch),
            strict=True,
        )
    )
    batches = len(loader)
    ops = {
        p: hessian_operator(model, None, data, batch_size=args.batch, bn="fixed", params=p)
        for p in ("all", "ndim>1")
    }
    ops["double"] = hessian_operator(
        model, None, data, batch_size=args.batch, bn="fixed", method="double"
    )
    lines = [
        f"Machine: {machine()}",
        f"{NAME}: {args.samples} samples, batch {args.batch}, "
        f"{batches} batches, {ops['all'].size} weights ({ops['ndim>1'].size} with ndim > 1)",
        "",
    ]

    # --- one product, round after round -----------------------------------------------
    ph = pyhessian_or_none(model, loader)
    li = li_hvp(model, loader, torch.nn.functional.cross_entropy, li_params(model))
    gen = torch.Generator().manual_seed(0)
    v_all = torch.randn(ops["all"].size, generator=gen)
    v_li = torch.randn(ops["ndim>1"].size, generator=gen).double().numpy()
    contenders = {
        "gradient (ours, reverse mode)": lambda: ops["all"].gradient(),
        "HVP ours, forward-over-reverse": lambda: ops["all"].matvec(v_all),
        "HVP ours, double backward": lambda: ops["double"].matvec(v_all),
        "HVP Li (double backward, summed)": lambda: li(v_li),
    }
    if ph is not None:
        v_ph = [t.clone() for t in torch.split(v_all, [p.numel() for p in ph[0].params])]
        v_ph = [t.view(p.shape) for t, p in zip(v_ph, ph[0].params, strict=True)]
        contenders["HVP PyHessian (double backward)"] = lambda: ph[0].dataloader_hv_product(v_ph)
    seconds = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            seconds[name].append(timed(fn)[0])
    grad_s = statistics.median(seconds["gradient (ours, reverse mode)"])
    lines += ["| one pass over the samples | seconds (median) | / gradient |", "|---|---|---|"]
    for name, s in seconds.items():
        lines.append(
            f"| {name} | {statistics.median(s):.3f} | {statistics.median(s) / grad_s:.2f} |"
        )
    lines.append("")
    print("\n".join(lines), flush=True)
    report = list(lines)

    # --- lambda_max (and lambda_min) ----------------------------------------------------
    rows = []
    for params in ("all", "ndim>1"):
        op = ops[params]
        began, count = time.perf_counter(), op.hvps
        run = lanczos(op.matvec, op.size, k=1, which="both", tol=1e-6, max_steps=120)
        secs = time.perf_counter() - began
        per = secs / (op.hvps - count)
        ref_max, ref_min = float(run.ritz[-1]), float(run.ritz[0])
        estimates = ritz_max_per_step(run.alpha, run.beta)
        reach = first_within(estimates, ref_max)
        rows.append(
            (
                f"ours Lanczos, tol=1e-6 ({params})",
                reach,
                reach * per if reach else None,
                run.steps,
                f"{ref_max:.6g}",
                f"{ref_min:.6g} (converged: {run.converged})",
            )
        )
        for tol in (1e-3, 1e-4):
            stop = own_rule_stop(run.alpha, run.beta, tol)
            if stop:
                err = abs(stop[1] - ref_max) / abs(ref_max)
                rows.append(
                    (
                        f"ours Lanczos, own rule tol={tol:g}, top only ({params})",
                        "-",
                        None,
                        stop[0],
                        f"{stop[1]:.6g} (rel. err. {err:.1e}; {stop[0] * per:.1f} s)",
                        "-",
                    )
                )
        if params == "all" and ph is not None:
            h, calls = ph
            for tol, max_iter in ((1e-3, 100), (1e-6, args.power_iter)):  # its default, tight
                calls.clear()
                began = time.perf_counter()
                (top,), _ = h.eigenvalues(maxIter=max_iter, tol=tol)
                ph_s = time.perf_counter() - began
                reach = first_within(calls, ref_max)
                rows.append(
                    (
                        f"PyHessian power iteration, tol={tol:g} (all)",
                        reach,
                        reach * ph_s / len(calls) if reach else None,
                        len(calls),
                        f"{top:.6g} (rel. err. {abs(top - ref_max) / abs(ref_max):.1e})",
                        "not computed",
                    )
                )
        if params == "ndim>1":
            began = time.perf_counter()
            mx, mn, count, for_max = min_max_hessian_eigs(
                model, loader, torch.nn.functional.cross_entropy
            )
            li_s = time.perf_counter() - began
            mx, mn = mx / batches, mn / batches  # its products are summed over batches
            rows.append(
                (
                    "Li eigsh + 0.51 shift, tol=1e-2 (ndim>1)",
                    f"<= {for_max}",
                    for_max * li_s / count,
                    count,
                    f"{mx:.6g} (rel. err. {abs(mx - ref_max) / abs(ref_max):.1e})",
                    f"{mn:.6g} (rel. err. {abs(mn - ref_min) / abs(ref_min):.1e})",
                )
            )
    lines = [
        "| estimator (parameters) | HVPs to lambda_max within 1e-3 | seconds to it | "
        "HVPs used | lambda_max | lambda_min |",
        "|---|---|---|---|---|---|",
    ]
    for name, reach, secs, used, mx, mn in rows:
        secs_text = f"{secs:.1f}" if secs else "-"
        lines.append(f"| {name} | {reach or '-'} | {secs_text} | {used} | {mx} | {mn} |")
    lines.append("")
    print("\n".join(lines), flush=True)
    report += lines

    # --- the trace ----------------------------------------------------------------------
    m = args.trace_samples
    began = time.perf_counter()
    ours = hutchinson(ops["all"].matvec, ops["all"].size, tol=0.0, min_samples=m, max_samples=m)
    ours_s = time.perf_counter() - began
    lines = [
        "| trace (Hutchinson, Rademacher) | samples | mean | stderr | seconds | "
        "stderr after 60 s |",
        "|---|---|---|---|---|---|",
    ]
    lines.append(
        f"| ours | {m} | {ours.mean:.5g} | {ours.stderr:.3g} | {ours_s:.1f} | "
        f"{ours.stderr * (ours_s / 60) ** 0.5:.3g} |"
    )
    if ph is not None:
        began = time.perf_counter()
        samples = np.asarray(ph[0].trace(maxIter=m, tol=0.0))
        ph_s = time.perf_counter() - began
        err = samples.std(ddof=1) / len(samples) ** 0.5
        lines.append(
            f"| PyHessian | {len(samples)} | {samples.mean():.5g} | {err:.3g} | "
            f"{ph_s:.1f} | {err * (ph_s / 60) ** 0.5:.3g} |"
        )
        default = ph[0].trace()  # its own stopping rule (tol=1e-3 on consecutive means)
        lines.append(
            f"| PyHessian, default rule | {len(default)} | {np.mean(default):.5g} | "
            f"(not reported) | - | - |"
        )
    print("\n".join(lines), flush=True)
    if args.markdown:
        args.markdown.write_text("\n".join(report + lines) + "\n")


if __name__ == "__main__":
    main()
