"""Researchers' own checkpoints (plain state dicts) and data (tensor files, image folders)."""

import logging

import numpy as np
import pytest
import torch
from conftest import compose_app
from torch import nn

from modeconn.apps import connect, fge, train
from modeconn.data.catalogue import dataset_names, load_dataset
from modeconn.io.checkpoints import endpoint_meta, load_checkpoint, load_curve, load_endpoint
from modeconn.models import build_model

MLP = ["model=mlp", "model.args.hidden=[16]"]
QUICK = ["optim.epochs=1", "optim.batch_size=128", "progress=false"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def mlp(digits, hidden=(16,)):
    return build_model("mlp", digits.num_classes, digits.input_shape, hidden=list(hidden))


def digits_meta(digits, hidden=(16,)):
    return endpoint_meta("mlp", digits, {"hidden": list(hidden)})


@pytest.fixture
def plain_pair(digits, tmp_path):
    """Two `torch.save(model.state_dict())` files of differently seeded MLPs for digits."""
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"net{seed}.pt")
        torch.save(mlp(digits).state_dict(), paths[-1])
    return paths


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------
# Plain state dicts as endpoints


def test_plain_state_dict_loads_when_model_and_data_are_named(digits, tmp_path):
    net = mlp(digits)
    torch.save(net.state_dict(), tmp_path / "a.pt")
    loaded, ckpt = load_endpoint(tmp_path / "a.pt", meta=digits_meta(digits))
    assert same_weights(loaded, net)
    assert ckpt.finished and ckpt.meta["source"] == "plain state dict"
    assert ckpt.meta["model"] == "mlp" and ckpt.meta["dataset"] == "digits"


def test_plain_state_dict_loads_into_a_given_module(digits, tmp_path):
    net = mlp(digits)
    torch.save(net.state_dict(), tmp_path / "a.pt")
    loaded, _ = load_endpoint(tmp_path / "a.pt", mlp(digits))
    assert same_weights(loaded, net)


def test_plain_state_dict_without_a_named_model_says_how_to_name_it(digits, tmp_path):
    torch.save(mlp(digits).state_dict(), tmp_path / "a.pt")
    with pytest.raises(ValueError, match="plain state dict; name .*model=<name> dataset=<name>"):
        load_endpoint(tmp_path / "a.pt")


def test_load_checkpoint_of_a_plain_state_dict_says_how_to_name_it(digits, tmp_path):
    torch.save(mlp(digits).state_dict(), tmp_path / "a.pt")
    with pytest.raises(ValueError, match="plain state dict, not a modeconn checkpoint: name"):
        load_checkpoint(tmp_path / "a.pt", expect="endpoint")


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_wrapper_prefix_is_stripped_with_a_note(digits, tmp_path, caplog, prefix):
    net = mlp(digits)
    torch.save({prefix + k: v for k, v in net.state_dict().items()}, tmp_path / "a.pt")
    with caplog.at_level(logging.INFO, logger="modeconn"):
        loaded, _ = load_endpoint(tmp_path / "a.pt", meta=digits_meta(digits))
    assert same_weights(loaded, net)
    assert f"removed the '{prefix}' prefix" in caplog.text


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict"])
def test_state_dict_inside_a_training_checkpoint_is_found(digits, tmp_path, key):
    net = mlp(digits)
    torch.save({"epoch": 7, key: net.state_dict(), "optimizer": {}}, tmp_path / "a.pt")
    loaded, ckpt = load_endpoint(tmp_path / "a.pt", meta=digits_meta(digits))
    assert same_weights(loaded, net) and key in ckpt.meta["source"]


def test_2018_reference_checkpoint_loads_as_an_endpoint(digits, tmp_path):
    net = mlp(digits)
    payload = {"epoch": 200, "model_state": net.state_dict(), "optimizer_state": {}}
    torch.save(payload, tmp_path / "checkpoint-200.pt")
    loaded, ckpt = load_endpoint(tmp_path / "checkpoint-200.pt", meta=digits_meta(digits))
    assert same_weights(loaded, net) and ckpt.meta["source"].startswith("2018")


def test_plain_state_dict_of_another_architecture_names_the_mismatched_tensor(digits, tmp_path):
    torch.save(mlp(digits, hidden=(32,)).state_dict(), tmp_path / "a.pt")
    with pytest.raises(ValueError, match="read as model 'mlp'.*'net.1.weight' has shape"):
        load_endpoint(tmp_path / "a.pt", meta=digits_meta(digits))


def test_dict_without_a_state_dict_lists_its_keys(tmp_path):
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"keys: epoch, weights\) but no state dict"):
        load_endpoint(tmp_path / "a.pt")


# ---------------------------------------------------------------------------------------------
# Files that are not checkpoints: one line each, never advice to unpickle


def test_whole_pickled_model_is_reported_as_such(tmp_path):
    torch.save(nn.Sequential(nn.Linear(2, 3)), tmp_path / "a.pt")
    with pytest.raises(ValueError) as err:
        load_endpoint(tmp_path / "a.pt")
    assert str(err.value) == (
        f"'{tmp_path / 'a.pt'}' holds a whole pickled model (torch.save(model)); save its "
        "state_dict() instead: torch.save(model.state_dict(), 'a.pt')"
    )


def test_whole_pickle_of_a_custom_model_class_is_reported_as_such(tmp_path):
    torch.save(TinyModel(), tmp_path / "a.pt")
    with pytest.raises(ValueError, match="holds a whole pickled model"):
        load_endpoint(tmp_path / "a.pt")


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))


@pytest.mark.parametrize(
    "content", [b"not a checkpoint at all", b"", b"PK\x03\x04 truncated zip"], ids=str
)
def test_unreadable_bytes_are_reported_without_unpickling_advice(tmp_path, content):
    (tmp_path / "a.pt").write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_endpoint(tmp_path / "a.pt")
    message = str(err.value)
    assert "is not a readable checkpoint (corrupt, truncated or not a torch file)" in message
    assert "weights_only" not in message and "\x1b" not in message and "\n" not in message


def test_truncated_checkpoint_is_not_readable(digits, tmp_path):
    torch.save(mlp(digits).state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "a.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint") as err:
        load_endpoint(tmp_path / "a.pt", meta=digits_meta(digits))
    assert "weights_only" not in str(err.value)


def test_pickled_objects_besides_tensors_are_named(tmp_path):
    torch.save({"weights": np.zeros(3)}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"holds pickled Python objects \(numpy") as err:
        load_endpoint(tmp_path / "a.pt")
    assert "weights_only" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# The apps with plain state dicts named on the command line


def test_connect_app_connects_plain_state_dicts_named_on_the_command_line(plain_pair, tmp_path):
    out = tmp_path / "curve.pt"
    overrides = [f"start={plain_pair[0]}", f"end={plain_pair[1]}", *MLP, "dataset=digits"]
    connect.run(compose_app("connect", [*overrides, *QUICK, f"checkpoint={out}"]))
    curve, ckpt = load_curve(out)
    start, _ = load_endpoint(plain_pair[0], meta=digits_meta(load_dataset("digits")))
    assert ckpt.meta["model"] == "mlp" and ckpt.meta["model_args"]["hidden"] == [16]
    assert all(torch.equal(curve.weights(0.0)[n], p) for n, p in start.named_parameters())


def test_connect_app_without_a_named_model_asks_for_it(plain_pair, tmp_path):
    overrides = [f"start={plain_pair[0]}", f"end={plain_pair[1]}", *QUICK]
    with pytest.raises(ValueError, match="model=<name> dataset=<name>"):
        connect.run(compose_app("connect", [*overrides, f"checkpoint={tmp_path / 'c.pt'}"]))


def test_connect_app_with_a_model_but_no_dataset_asks_for_the_dataset(plain_pair, tmp_path):
    overrides = [f"start={plain_pair[0]}", f"end={plain_pair[1]}", *MLP, *QUICK]
    with pytest.raises(ValueError, match="name their data set too \\(dataset=<name>"):
        connect.run(compose_app("connect", [*overrides, f"checkpoint={tmp_path / 'c.pt'}"]))


def test_torchvision_model_named_on_the_command_line_reads_a_plain_state_dict(digits, tmp_path):
    net = build_model("torchvision:resnet18", digits.num_classes, digits.input_shape)
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    cfg = compose_app(
        "connect",
        [f"start={tmp_path / 'r18.pt'}", "end=x", "model=torchvision", "dataset=digits"],
    )
    named, _ = connect.named_endpoints(cfg, torch.device("cpu"))
    loaded, _ = load_endpoint(tmp_path / "r18.pt", meta=named)
    assert named["model"] == "torchvision:resnet18" and same_weights(loaded, net)


def test_fge_app_starts_from_a_plain_state_dict(plain_pair, tmp_path):
    overrides = [f"start={plain_pair[0]}", *MLP, "dataset=digits", "cycles=1", "cycle=2"]
    result = fge.run(
        compose_app("fge", [*overrides, "batch_size=128", "progress=false", f"out={tmp_path}"])
    )
    assert len(result.snapshot_epochs) == 1 and (tmp_path / "fge.npz").is_file()


@pytest.fixture
def tensor_file(tmp_path):
    """Small train/test tensors: 4 features, 3 classes, linearly separable."""
    gen = torch.Generator().manual_seed(0)
    arrays = {}
    for split, n in (("train", 120), ("test", 60)):
        y = torch.arange(n) % 3
        arrays[f"{split}_x"] = torch.randn(n, 4, generator=gen) + 3 * nn.functional.one_hot(y, 4)
        arrays[f"{split}_y"] = y
    path = tmp_path / "mine.pt"
    torch.save(arrays, path)
    return path


def test_named_model_that_disagrees_with_a_modeconn_checkpoint_says_which(tensor_file, tmp_path):
    ep = tmp_path / "ep.pt"
    train.run(compose_app("train", [*MLP, "dataset=tensors", f"dataset.path={tensor_file}",
                                    *QUICK, f"checkpoint={ep}"]))  # fmt: skip
    overrides = [f"start={ep}", f"end={ep}", "model=convfc", "dataset=tensors"]
    cfg = compose_app("connect", [*overrides, f"dataset.path={tensor_file}", *QUICK])
    with pytest.raises(ValueError, match="model: 'mlp' in the file, 'convfc' named"):
        connect.run(cfg)


# ---------------------------------------------------------------------------------------------
# Own data: a tensor file


def test_registry_lists_the_own_data_sets():
    assert {"tensors", "imagefolder"} <= set(dataset_names())


def save_arrays(path, arrays):
    if path.suffix == ".npz":
        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    else:
        torch.save({k: torch.as_tensor(v) for k, v in arrays.items()}, path)
    return path


def small_arrays(n_train=10, n_test=4):
    return {
        "train_x": np.arange(n_train * 3, dtype=np.float32).reshape(n_train, 3),
        "train_y": np.arange(n_train) % 3,
        "test_x": np.ones((n_test, 3), dtype=np.float32),
        "test_y": np.arange(n_test) % 2,
    }


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_tensor_file_round_trips_with_classes_from_the_labels(tmp_path, suffix):
    arrays = small_arrays()
    data = load_dataset("tensors", path=save_arrays(tmp_path / f"d{suffix}", arrays))
    assert torch.equal(data.train_x, torch.as_tensor(arrays["train_x"]))
    assert torch.equal(data.test_y, torch.as_tensor(arrays["test_y"]))
    assert data.num_classes == 3 and data.train_y.dtype == torch.int64


def test_tensor_file_keeps_a_given_number_of_classes(tmp_path):
    path = save_arrays(tmp_path / "d.npz", small_arrays())
    assert load_dataset("tensors", path=path, num_classes=5).num_classes == 5


def test_missing_tensor_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="tensor file '.*nope.npz' does not exist"):
        load_dataset("tensors", path=tmp_path / "nope.npz")


def test_tensor_data_set_without_a_path_asks_for_one():
    with pytest.raises(ValueError, match="dataset.path=my.pt or my.npz"):
        load_dataset("tensors")


def test_tensor_file_missing_keys_are_named(tmp_path):
    arrays = small_arrays()
    del arrays["test_x"], arrays["test_y"]
    with pytest.raises(ValueError, match="lacks test_x, test_y; "):
        load_dataset("tensors", path=save_arrays(tmp_path / "d.pt", arrays))


def test_tensor_file_of_unpaired_inputs_and_labels_is_refused(tmp_path):
    arrays = {**small_arrays(), "train_y": np.zeros(7, dtype=np.int64)}
    with pytest.raises(ValueError, match="train_x has 10 samples but train_y has 7 labels"):
        load_dataset("tensors", path=save_arrays(tmp_path / "d.npz", arrays))


def test_tensor_file_with_float_labels_is_refused(tmp_path):
    arrays = {**small_arrays(), "train_y": np.linspace(0, 1, 10)}
    with pytest.raises(ValueError, match="train_y holds float64 values; class labels must be"):
        load_dataset("tensors", path=save_arrays(tmp_path / "d.npz", arrays))


def test_tensor_file_labels_beyond_a_given_number_of_classes_are_refused(tmp_path):
    path = save_arrays(tmp_path / "d.npz", small_arrays())
    with pytest.raises(ValueError, match="label 2 does not fit num_classes=2"):
        load_dataset("tensors", path=path, num_classes=2)


def test_unreadable_tensor_file_is_reported(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable npz file of tensors"):
        load_dataset("tensors", path=tmp_path / "d.npz")


def test_train_app_trains_on_a_tensor_file(tensor_file, tmp_path):
    ep = tmp_path / "ep.pt"
    overrides = [*MLP, "dataset=tensors", f"dataset.path={tensor_file}", *QUICK]
    train.run(compose_app("train", [*overrides, "optim.epochs=5", f"checkpoint={ep}"]))
    ckpt = load_checkpoint(ep, expect="endpoint")
    assert ckpt.meta["dataset"] == "tensors" and ckpt.meta["dataset_root"] == str(tensor_file)
    assert ckpt.meta["num_classes"] == 3 and ckpt.meta["input_shape"] == [4]


# ---------------------------------------------------------------------------------------------
# Own data: an image folder


def write_images(root, split, counts, size=(8, 8), mode="RGB", seed=0):
    """`counts[class]` random PNGs of `size` (W, H) under root/split/class/."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                folder / f"{i}.png"
            )


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "pics"
    write_images(root, "train", {"cat": 4, "dog": 3})
    write_images(root, "test", {"cat": 2, "dog": 2}, seed=1)
    return root


def test_image_folder_labels_follow_the_sorted_class_folders(image_root):
    data = load_dataset("imagefolder", root=image_root)
    assert data.train_x.shape == (7, 3, 8, 8) and data.test_x.shape == (4, 3, 8, 8)
    assert data.train_y.tolist() == [0, 0, 0, 0, 1, 1, 1] and data.num_classes == 2


def test_image_folder_is_normalised_per_channel_with_train_statistics(image_root):
    x = load_dataset("imagefolder", root=image_root).train_x
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)


def test_grey_images_give_one_channel(tmp_path):
    write_images(tmp_path, "train", {"a": 2, "b": 2}, mode="L")
    write_images(tmp_path, "test", {"a": 1}, mode="L")
    assert load_dataset("imagefolder", root=tmp_path).input_shape == (1, 8, 8)


def test_image_folder_reads_val_as_the_test_split(tmp_path):
    write_images(tmp_path, "train", {"a": 2, "b": 2})
    write_images(tmp_path, "val", {"b": 3})
    data = load_dataset("imagefolder", root=tmp_path)
    assert data.test_y.tolist() == [1, 1, 1]


def test_image_folder_resizes_to_a_given_size(tmp_path):
    write_images(tmp_path, "train", {"a": 2}, size=(12, 10))
    write_images(tmp_path, "train", {"b": 2}, size=(6, 6))
    write_images(tmp_path, "test", {"a": 1}, size=(9, 9))
    assert load_dataset("imagefolder", root=tmp_path, size=[5, 7]).input_shape == (3, 5, 7)


def test_images_of_mixed_sizes_without_a_size_say_how_to_resize(tmp_path):
    write_images(tmp_path, "train", {"a": 2}, size=(8, 8))
    write_images(tmp_path, "test", {"a": 1}, size=(6, 4))
    with pytest.raises(ValueError, match=r"images differ in size .* is 4x6\); resize them all"):
        load_dataset("imagefolder", root=tmp_path)


def test_empty_class_folder_is_named(image_root):
    (image_root / "train" / "emu").mkdir()
    with pytest.raises(ValueError, match="class folder '.*train/emu' holds no images"):
        load_dataset("imagefolder", root=image_root)


def test_image_folder_without_a_test_split_shows_the_layout(tmp_path):
    write_images(tmp_path, "train", {"a": 2})
    with pytest.raises(FileNotFoundError, match="has no test/ \\(or val/\\) folder: the layout"):
        load_dataset("imagefolder", root=tmp_path)


def test_test_class_missing_from_train_is_refused(image_root):
    write_images(image_root, "test", {"emu": 1})
    with pytest.raises(ValueError, match="class folders that train/ lacks: emu"):
        load_dataset("imagefolder", root=image_root)


def test_missing_image_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder '.*nope' does not exist"):
        load_dataset("imagefolder", root=tmp_path / "nope")


def test_train_app_trains_on_an_image_folder(image_root, tmp_path):
    ep = tmp_path / "ep.pt"
    overrides = [*MLP, "dataset=imagefolder", f"dataset.root={image_root}", *QUICK]
    train.run(compose_app("train", [*overrides, f"checkpoint={ep}"]))
    ckpt = load_checkpoint(ep, expect="endpoint")
    assert ckpt.meta["dataset"] == "imagefolder" and ckpt.meta["input_shape"] == [3, 8, 8]


def test_an_image_folder_resized_for_training_is_reloaded_at_that_size(image_root, tmp_path):
    """dataset.size reaches the data set in train and is recorded, so a curve's evaluators
    rebuild the same inputs."""
    from modeconn.apps.common import load_curve_and_data

    eps = [tmp_path / f"ep{s}.pt" for s in (1, 2)]
    for seed, ep in zip((1, 2), eps, strict=True):
        overrides = [*MLP, "dataset=imagefolder", f"dataset.root={image_root}", *QUICK]
        extra = ["dataset.size=[4,4]", f"seed={seed}", f"checkpoint={ep}"]
        train.run(compose_app("train", [*overrides, *extra]))
    ckpt = load_checkpoint(eps[0], expect="endpoint")
    assert ckpt.meta["input_shape"] == [3, 4, 4] and ckpt.meta["dataset_args"]["size"] == [4, 4]
    curve_file = tmp_path / "c.pt"
    ends = [f"start={eps[0]}", f"end={eps[1]}", f"checkpoint={curve_file}"]
    connect.run(compose_app("connect", [*ends, *QUICK]))
    _, data, _ = load_curve_and_data(compose_app("evaluate", [f"curve_ckpt={curve_file}"]))
    assert tuple(data.input_shape) == (3, 4, 4)
