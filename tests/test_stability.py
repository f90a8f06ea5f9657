"""Exact spawning and the stability analysis (Frankle et al. 2020): a run stopped at any step
goes on bit for bit, children of one state differ only in the seeds named, the line between
two equal children has no barrier, and `modeconn stability` runs end to end and resumes."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import TinyNet, compose_app

import modeconn as mc
from modeconn.apps import stability as stability_app
from modeconn.data.catalogue import load_dataset
from modeconn.data.tasks import metric_names
from modeconn.data.torchvision_files import RandomCropFlip
from modeconn.io.checkpoints import load_checkpoint
from modeconn.io.run_state import spawn_checkpoint
from modeconn.lmc import StabilityResult, spawn_points, train_child
from modeconn.lmc.spawn import parent_config
from modeconn.training import TrainConfig, train_endpoint

# 256 samples in batches of 64: 4 steps an epoch, 8 in all
CONFIG = TrainConfig(epochs=2, lr=0.05, batch_size=64, seed=3, progress=False)
PARENT = parent_config(CONFIG)


@pytest.fixture(scope="module")
def data():
    """Digits with a random crop and flip, so the augmentation generator is drawn from."""
    digits = load_dataset("digits").subset(train=256, test=128)
    return dataclasses.replace(digits, augment=RandomCropFlip(padding=1, fill=(0.0,)))


def net() -> TinyNet:
    """BatchNorm buffers, dropout (torch's global RNG) and weights: all must carry over."""
    torch.manual_seed(0)
    return TinyNet()


def same(a, b) -> bool:
    sa, sb = (m.state_dict() if isinstance(m, torch.nn.Module) else m for m in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def snapshot(data, tmp_path_factory):
    """The parent stopped at step 3, inside its first epoch."""
    path = tmp_path_factory.mktemp("parent") / "parent.pt"
    train_endpoint(net(), data, PARENT, checkpoint=path, stop_at=3)
    return path


def child(data, snapshot, path, seed, vary="both"):
    return train_child(net(), data, PARENT, snapshot, path, step=3, vary=vary, seed=seed)


def test_a_run_stopped_inside_an_epoch_goes_on_to_the_uninterrupted_weights(data, tmp_path):
    straight = net()
    train_endpoint(straight, data, PARENT)
    stopped, path = net(), tmp_path / "run.pt"
    assert train_endpoint(stopped, data, PARENT, checkpoint=path, stop_at=5).step == 5
    assert load_checkpoint(path).meta["step"] == 5
    resumed = TinyNet()  # every weight and buffer must come from the checkpoint
    train_endpoint(resumed, data, PARENT, checkpoint=path)
    assert same(straight, resumed)


def test_a_child_starts_from_the_parents_exact_state(snapshot, tmp_path):
    spawn_checkpoint(snapshot, tmp_path / "c.pt", data_seed=7, augment_seed=7)
    parent, kid = load_checkpoint(snapshot), load_checkpoint(tmp_path / "c.pt")
    assert same(parent.state, kid.state)  # weights and BatchNorm buffers
    momentum = [s["momentum_buffer"] for s in parent.training["optimizer"]["state"].values()]
    theirs = [s["momentum_buffer"] for s in kid.training["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, theirs, strict=True))
    assert torch.equal(parent.training["rng"]["torch"], kid.training["rng"]["torch"])
    assert kid.meta["step"] == 3 and kid.meta["spawn"]["step"] == 3
    visited = parent.training["partial"]["visited"]
    order, theirs = parent.training["partial"]["order"], kid.training["partial"]["order"]
    assert torch.equal(order[:visited], theirs[:visited])  # what the parent saw, it saw
    assert sorted(order[visited:].tolist()) == sorted(theirs[visited:].tolist())


def test_children_with_equal_seeds_are_bitwise_equal(data, snapshot, tmp_path):
    a = child(data, snapshot, tmp_path / "a.pt", seed=11)
    b = child(data, snapshot, tmp_path / "b.pt", seed=11)
    assert same(a, b)


def test_children_with_other_data_order_seeds_differ(data, snapshot, tmp_path):
    a = child(data, snapshot, tmp_path / "a.pt", seed=11, vary="order")
    b = child(data, snapshot, tmp_path / "b.pt", seed=12, vary="order")
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_a_resumed_child_equals_an_uninterrupted_one(data, snapshot, tmp_path):
    straight = child(data, snapshot, tmp_path / "a.pt", seed=11)
    path = tmp_path / "b.pt"
    spawn_checkpoint(snapshot, path, data_seed=11, augment_seed=11)
    own = dataclasses.replace(PARENT, data_seed=11, augment_seed=11)
    train_endpoint(net(), data, own, checkpoint=path, stop_at=6)  # interrupted inside epoch 2
    assert same(straight, child(data, snapshot, path, seed=11))


def test_spawning_at_the_last_step_gives_one_network_and_no_barrier(data):
    result = mc.stability(net(), data, CONFIG, [1.0], pairs=1, points=3, progress=False)
    assert result.steps.tolist() == [result.total_steps] == [8]
    assert np.all(result.barriers("test_error") == 0)
    assert np.all(result.barriers("train_nll", "entezari") == 0)


def test_children_that_share_their_seeds_have_no_barrier_anywhere(data):
    result = mc.stability(
        net(), data, CONFIG, spawn_steps=[0, 3], pairs=1, vary="none", points=3, progress=False
    )
    assert all(np.all(result.barriers(m) == 0) for m in ("test_error", "train_nll"))
    assert result.stable_step() == 0


def test_a_run_with_one_seed_writes_the_checkpoint_it_always_did(data, tmp_path):
    train_endpoint(net(), data, CONFIG, checkpoint=tmp_path / "run.pt")
    ckpt = load_checkpoint(tmp_path / "run.pt")
    assert not {"step", "data_seed", "augment_seed", "spawn"} & set(ckpt.meta)
    assert set(ckpt.training) == {"optimizer", "rng", "history", "extra"}
    assert set(ckpt.training["rng"]) <= {"torch", "generator", "cuda"}


def test_the_stable_step_is_the_first_from_which_every_later_one_is_stable():
    ts = np.linspace(0, 1, 3)
    bumps = [3.0, 1.0, 2.5, 1.5, 0.5]  # the test-error barrier at each spawn step
    test_error = np.asarray([[[1.0, 1.0 + b, 1.0]] for b in bumps])  # (K=5, P=1, T=3)
    values = {n: np.zeros_like(test_error) for n in metric_names("classification")}
    values["test_error"] = test_error
    result = StabilityResult([0, 1, 2, 4, 8], [0], ts, values=values, total_steps=8, threshold=2.0)
    assert result.instability().tolist() == bumps
    assert result.stable_step() == 4 and result.stable_step(threshold=1.0) == 8
    assert result.stable_step(threshold=0.1) is None
    assert result.report()["stable"] == {"step": 4, "fraction": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spawn": [0, 1.5]}, "spawn point 1.5 is not a fraction of training in"),
        ({"spawn": ["early"]}, "spawn point 'early' is not a fraction"),
        ({"spawn": None, "spawn_steps": [3, 99]}, r"spawn_steps \[99\] are not optimizer steps"),
        ({"vary": "data"}, "unknown vary='data'; valid: both, order, augment, none"),
        ({"pairs": 0}, "pairs must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_error(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mc.stability(net(), data, CONFIG, **{"spawn": [0, 1], **kwargs}, progress=False)


def test_a_child_resumed_with_other_seeds_is_refused(data, snapshot, tmp_path):
    child(data, snapshot, tmp_path / "a.pt", seed=11)
    other = dataclasses.replace(PARENT, data_seed=12, augment_seed=11)
    with pytest.raises(ValueError, match="differs in data_seed: stored 11, now 12"):
        train_endpoint(net(), data, other, checkpoint=tmp_path / "a.pt")


def test_a_two_seed_run_resumed_with_one_seed_is_refused(data, snapshot, tmp_path):
    (tmp_path / "run.pt").write_bytes(snapshot.read_bytes())
    with pytest.raises(ValueError, match="differs in data_seed: stored 3, now None"):
        train_endpoint(net(), data, CONFIG, checkpoint=tmp_path / "run.pt")


def test_a_one_seed_run_cannot_be_spawned(data, tmp_path):
    train_endpoint(net(), data, CONFIG, checkpoint=tmp_path / "run.pt")
    with pytest.raises(ValueError, match="not a run with separate data-order and augmentation"):
        spawn_checkpoint(tmp_path / "run.pt", tmp_path / "child.pt", data_seed=1)


def test_stopping_inside_an_epoch_of_a_one_seed_run_is_refused(data):
    with pytest.raises(ValueError, match="inside an epoch .* needs data_seed or augment_seed"):
        train_endpoint(net(), data, CONFIG, stop_at=3)


def test_spawn_points_round_fractions_and_percentages_to_steps():
    assert spawn_points(200, [0, "0.5%", 0.01, 0.011, 1.0]).tolist() == [0, 1, 2, 200]


def test_stability_app_writes_its_report_and_figure_and_resumes(tmp_path):
    tiny = [
        "model=mlp", "model.args.hidden=[16]", "optim.epochs=1", "optim.batch_size=128",
        "spawn=[0,0.5,1.0]", "pairs=1", "points=3", "progress=false",
        f"out={tmp_path / 'out'}", f"checkpoints={tmp_path / 'ckpt'}",
    ]  # fmt: skip
    result = stability_app.run(compose_app("stability", tiny))
    report = json.loads((tmp_path / "out" / "stability.json").read_text())
    assert [row["step"] for row in report["spawn"]] == result.steps.tolist() == [0, 6, 12]
    assert report["spawn"][-1]["barriers"]["test_error"]["frankle"]["max"] == 0
    assert (tmp_path / "out" / "stability.png").exists()
    assert StabilityResult.load(tmp_path / "out" / "lines") == result
    children = sorted((tmp_path / "ckpt").rglob("pair*.pt"))
    stamps = [p.stat().st_mtime_ns for p in children]
    again = stability_app.run(compose_app("stability", tiny))  # every run is finished: reused
    assert again == result and [p.stat().st_mtime_ns for p in children] == stamps
    with pytest.raises(ValueError, match="another configuration .*pairs.*overwrite=true"):
        stability_app.run(compose_app("stability", [*tiny, "pairs=2"]))


def test_the_parent_network_given_is_left_unchanged(data):
    model = net()
    before = copy.deepcopy(model.state_dict())
    mc.stability(model, data, CONFIG, [0.5], pairs=1, points=2, progress=False)
    assert same(before, model)
