"""Same command, same seeds, same bits: whatever ran before in the process and however busy the
machine is. Nothing the engine runs is chosen by timing (the layout and batch size come by rule,
`eval_plan`), the batch size provably changes no number, and the apps compute on the thread
count the process started with (`fixed_threads`)."""

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyNet, compose_app

from modeconn.apps import demo
from modeconn.curves.weights import WeightSpace
from modeconn.data.catalogue import load_dataset
from modeconn.engine import EvalSettings
from modeconn.engine.execution import STARTUP_THREADS, eval_plan, fixed_threads
from modeconn.engine.point import evaluate_point, predict, recompute_bn
from modeconn.models import build_model
from modeconn.plane import Plane, PlaneResult, evaluate_plane

BATCH_SIZES = (32, 64, 128, 256, 512, 1024, 2048)


def _demo(tmp: Path) -> dict[str, np.ndarray]:
    """The demo's core (endpoints, curve, path, plane, ensembles) on its test sizes; every
    array it wrote, result files and checkpoint weights alike, by file and name."""
    cfg = compose_app(
        "demo",
        [
            f"checkpoints={tmp / 'ckpt'}",
            f"out={tmp / 'results'}",
            "path_points=11",
            "plane_grid=[4,3]",
            "ensemble_points=5",
            "endpoint_optim.epochs=10",  # enough for chaos: a last bit grows into another net
            "curve_optim.epochs=10",
            "progress=false",
        ],
    )
    demo.run(cfg)
    arrays = {}
    for npz in sorted((tmp / "results").glob("*.npz")):
        with np.load(npz) as z:
            arrays.update({f"{npz.name}:{k}": z[k] for k in z.files})
    for ckpt in sorted((tmp / "ckpt").glob("*.pt")):
        state = torch.load(ckpt, weights_only=True)["state"]
        arrays.update({f"{ckpt.name}:{k}": v.numpy() for k, v in state.items()})
    return arrays


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equal arrays (NaN where the other has NaN counts as equal)."""
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


class _Hog:
    """A thread that keeps a core busy (hashing releases the GIL) while the block runs."""

    def __enter__(self):
        self.stop = threading.Event()
        block = bytes(1 << 20)

        def spin() -> None:
            while not self.stop.is_set():
                hashlib.sha256(block).digest()

        self.thread = threading.Thread(target=spin, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def test_demo_is_bit_identical_after_a_thread_change_and_under_a_cpu_hog(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if STARTUP_THREADS > 1 else 2)  # what an earlier cell might do
        changed = _demo(tmp_path / "threads")
    finally:
        torch.set_num_threads(before)
    with _Hog():
        loaded = _demo(tmp_path / "hog")
    assert changed.keys() == loaded.keys() and len(changed) > 20
    differing = [k for k in changed if not _same(changed[k], loaded[k])]
    assert not differing, f"arrays that differ bitwise: {differing[:5]}"


def test_an_app_leaves_the_callers_thread_count_as_it_was(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if STARTUP_THREADS > 1 else 2)
        seen = []
        with fixed_threads() as inside:
            seen.append((inside, torch.get_num_threads()))
        assert seen == [(STARTUP_THREADS, STARTUP_THREADS)]
        assert torch.get_num_threads() == (1 if STARTUP_THREADS > 1 else 2)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(train=400, test=200)


@pytest.mark.parametrize("net_name", ["tinynet_bn", "convfc"])
def test_every_batch_size_gives_the_same_bits(digits, net_name):
    """Each batch size the rule could pick, forced: identical log-probabilities and metrics,
    for a BatchNorm network (statistics recomputed first) and the demo's ConvFC."""
    torch.manual_seed(0)
    if net_name == "tinynet_bn":
        net = TinyNet()
    else:
        net = build_model("convfc", num_classes=10, input_shape=(1, 8, 8), pool_padding=1)
    recompute_bn(net, digits.train_x, batch_size=128)
    outs = [predict(net, digits.test_x, batch_size=b) for b in BATCH_SIZES]
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    scores = [evaluate_point(net, None, digits, batch_size=b) for b in BATCH_SIZES]
    assert all(s == scores[0] for s in scores[1:])


def test_the_bn_pass_on_a_channels_last_resnet_depends_on_the_layout_only_by_rule():
    """A 32x32 ResNet's statistics differ in the last bits between layouts (so the layout is a
    rule, recorded, never a timing), and the rule's choice repeats exactly."""
    torch.manual_seed(0)
    net = build_model("preresnet20", num_classes=10, input_shape=(3, 32, 32))
    x = torch.randn(96, 3, 32, 32)

    def stats(plan) -> torch.Tensor:
        recompute_bn(net, plan.layout(x), batch_size=32)
        return torch.cat([b.flatten() for n, b in net.named_buffers() if "running" in n])

    auto = eval_plan(x)
    assert auto.channels_last
    first, again = stats(auto), stats(eval_plan(x))
    contiguous = stats(eval_plan(x, layout="contiguous"))
    assert torch.equal(first, again)
    assert torch.allclose(first, contiguous, rtol=1e-4, atol=1e-5)


def test_the_layout_and_batch_size_come_by_rule_not_by_timing():
    images, small, flat = torch.zeros(4, 3, 32, 32), torch.zeros(4, 1, 8, 8), torch.zeros(4, 2)
    assert eval_plan(images).meta() == {"layout": "channels_last", "batch_size": 128}
    assert eval_plan(small).meta() == {"layout": "contiguous", "batch_size": 128}
    assert eval_plan(flat).meta() == {"layout": "contiguous", "batch_size": 1024}
    pinned = eval_plan(images, batch_size=64, layout="contiguous")
    assert pinned.meta() == {"layout": "contiguous", "batch_size": 64}
    with pytest.raises(ValueError, match="layout must be one of 'auto', 'contiguous'"):
        EvalSettings(layout="nhwc")


def test_a_pinned_layout_is_part_of_the_resume_key():
    assert "layout" not in EvalSettings().resume_config()  # files from before still resume
    assert EvalSettings(layout="contiguous").resume_config()["layout"] == "contiguous"


def test_results_record_the_plan_and_the_thread_count(tmp_path, digits):
    """A result says what fixed its last bits: the plan, the thread count, the kernel set."""
    import json

    torch.manual_seed(0)
    net = TinyNet()
    space = WeightSpace.from_module(net)
    a = space.flatten(dict(net.named_parameters())).detach()
    plane = Plane.through(a, a + 0.1, a - 0.1 * torch.arange(len(a)) / len(a), space=space)
    result = evaluate_plane(net, plane, digits, grid=(2, 2), progress=False)
    assert result.meta["plan"] == {"layout": "contiguous", "batch_size": 128}
    result.save(tmp_path / "p")
    sidecar = json.loads((tmp_path / "p.json").read_text())
    assert sidecar["environment"]["threads"] == torch.get_num_threads()
    assert sidecar["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert PlaneResult.load(tmp_path / "p").meta == result.meta  # environment stays in the file
