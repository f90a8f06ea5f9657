"""Timing helpers shared by the benchmark scripts: workloads, the compute floor, FLOPs."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from modeconn.data import Dataset
from modeconn.models import build_model


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, {device}, torch {torch.__version__}"
    )


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of `repeat` calls (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        began = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return best, out


def matmul_peak(device: torch.device, n: int = 2048, dtype=torch.float32) -> float:
    """Measured FLOP/s of an n x n matmul on `device` (the achievable peak)."""
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    a @ b
    seconds, _ = timed(lambda: a @ b, repeat=5)
    return 2 * n**3 / seconds


def flops_per_sample(model: nn.Module, x: Tensor) -> float:
    """Forward FLOPs per sample (multiply-add = 2 FLOPs) counted by torch's FlopCounterMode."""
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / len(x)


def forward_floor(model: nn.Module, x: Tensor, samples: int):
    """Time of `samples` bare forward passes at the best batch size and memory layout.

    Returns (seconds, description of the best setting).
    """
    batch_sizes = (32, 64, 128, 256, 512, 1024, 2048)
    if x.device.type == "cuda":
        batch_sizes += (4096, 8192)
    model.eval()
    layouts = {"NCHW": x}
    if x.ndim == 4:
        layouts["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    best = (float("inf"), "")
    with torch.inference_mode():
        for name, xs in layouts.items():
            for bs in batch_sizes:
                chunk = xs[:bs]
                if len(chunk) < bs and bs != batch_sizes[0]:
                    break
                model(chunk)  # warm-up
                reps = max(1, min(samples, 4096) // len(chunk))
                seconds, _ = timed(lambda c=chunk, r=reps: [model(c) for _ in range(r)], repeat=2)
                best = min(best, (seconds * samples / (reps * len(chunk)), f"{name} batch {bs}"))
    return best


def digits_raw() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Raw digits pixels (uint8 0..16, (N, 1, 8, 8)) and labels, split 1437 / 360."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.uint8)[:, None]
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    x, y = x[order], y[order]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def cifar_shaped_raw(train: int = 10_000, test: int = 2_000, seed: int = 0):
    """Generated CIFAR-shaped data: uint8 (N, 3, 32, 32) images, 10 classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (train + test, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (train + test,), generator=g)
    return x[:train], y[:train], x[train:], y[train:]


def as_dataset(name, raw, scale: float, mean: Tensor, std: Tensor) -> Dataset:
    """Our Dataset from raw images, normalised once with the same formula as the reference."""
    xtr, ytr, xte, yte = raw
    m, s = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    norm = lambda x: (x.float() / scale - m) / s  # noqa: E731
    return Dataset(name, norm(xtr), ytr, norm(xte), yte, num_classes=10)


WORKLOADS = {
    "digits ConvFC": dict(
        points=20,
        gpu_points=64,
        raw=digits_raw,
        scale=16.0,
        mean=torch.tensor([0.3]),
        std=torch.tensor([0.4]),
        model=lambda: build_model("convfc", num_classes=10, input_shape=(1, 8, 8)),
    ),
    "CIFAR-shaped PreResNet-20": dict(
        points=4,
        gpu_points=32,
        raw=cifar_shaped_raw,
        scale=255.0,
        mean=torch.tensor([0.4914, 0.4822, 0.4465]),
        std=torch.tensor([0.2470, 0.2435, 0.2616]),
        model=lambda: build_model("preresnet", num_classes=10, input_shape=(3, 32, 32), depth=20),
    ),
}


def report(rows: list[dict], table, markdown) -> None:
    """Print the machine line and the table; write them to `markdown` if given."""
    text = f"Machine: {machine()}\n\n{table(rows)}\n"
    print(text)
    if markdown:
        markdown.write_text(text)
