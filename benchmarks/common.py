"""Timing helpers shared by the benchmark scripts: workloads, the compute floor, FLOPs."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from modeconn.data.sets import Dataset
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


def compute_peak(device: torch.device, n: int = 2048, dtype=torch.float32) -> float:
    """Measured FLOP/s the device reaches on dense work: the better of an n x n matmul and a
    1x1 convolution (512 -> 512 channels, 32x32, batch 64, channels_last: a matrix product
    through the convolution library, where no fast 3x3 algorithm can inflate the count). On
    this AMD host the BLAS matmul reaches 60 % of the convolution library's rate."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    matmul_s, _ = timed(lambda: a @ b, repeat=5)
    x = torch.randn(64, 512, 32, 32, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(512, 512, 1, bias=False).to(device, dtype)
    conv = conv.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        conv(x)
        conv_s, _ = timed(lambda: conv(x), repeat=5)
    return max(2 * n**3 / matmul_s, 2 * 64 * 512 * 512 * 32 * 32 / conv_s)


def flops_per_sample(model: nn.Module, x: Tensor) -> float:
    """Forward FLOPs per sample (multiply-add = 2 FLOPs) counted by torch's FlopCounterMode."""
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / len(x)


def best_forward(model: nn.Module, x: Tensor) -> tuple[Tensor, int, str]:
    """The fastest batch size and memory layout for bare forward passes of `model` on x.

    Returns (x in that layout, batch size, description of the setting).
    """
    batch_sizes = (32, 64, 128, 256, 512, 1024, 2048)
    if x.device.type == "cuda":
        batch_sizes += (4096, 8192)
    model.eval()
    layouts = {"NCHW": x}
    if x.ndim == 4:
        layouts["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    best = (float("inf"), "", 0)
    with torch.inference_mode():
        for name, xs in layouts.items():
            for bs in batch_sizes:
                chunk = xs[:bs]
                if len(chunk) < bs and bs != batch_sizes[0]:
                    break
                model(chunk)  # warm-up
                reps = max(1, 4096 // len(chunk))
                seconds, _ = timed(lambda c=chunk, r=reps: [model(c) for _ in range(r)], repeat=2)
                best = min(best, (seconds / (reps * len(chunk)), name, bs))
    _, name, bs = best
    return layouts[name], bs, f"{name} batch {bs}"


@torch.inference_mode()
def forward_passes(model: nn.Module, xs: Tensor, batch_size: int, samples: int) -> None:
    """Bare forward passes of `samples` samples of xs (cycled) in batches of `batch_size`."""
    model.eval()
    done = 0
    while done < samples:
        start = done % len(xs)
        chunk = xs[start : start + min(batch_size, samples - done)]
        model(chunk)
        done += len(chunk)


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
        model=lambda: build_model("convfc", num_classes=10, input_shape=(1, 8, 8), pool_padding=1),
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


def markdown_table(columns: list[tuple[str, Callable[[dict], str]]], rows: list[dict]) -> str:
    """A markdown table: one (header, cell formatter) pair per column, one line per row."""
    lines = [
        "| " + " | ".join(head for head, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines)


def report(rows: list[dict], table, markdown) -> None:
    """Print the machine line and the table; write them to `markdown` if given."""
    text = f"Machine: {machine()}\n\n{table(rows)}\n"
    print(text)
    if markdown:
        markdown.write_text(text)
