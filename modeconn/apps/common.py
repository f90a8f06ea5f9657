"""What every app needs: device choice, data from config, paths, plain dicts from DictConfig."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from modeconn.apps.checks import CONFIG_PATH, check_options  # noqa: F401  (the apps' config_path)
from modeconn.data.catalogue import dataset_names, load_dataset
from modeconn.data.sets import Dataset
from modeconn.engine.execution import fixed_threads
from modeconn.training import TrainConfig

log = logging.getLogger("modeconn")


def plain(cfg: Any) -> Any:
    """A DictConfig/ListConfig as plain Python containers (lists, dicts)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def app_run(run):
    """An app's `run(cfg)`, computing on the thread count the process started with
    (`fixed_threads`: OMP_NUM_THREADS, else torch's default for the machine) whatever an
    earlier call in the process set, and restoring that count on return: a test or notebook
    cell that changed it cannot change the app's numbers."""

    @functools.wraps(run)
    def wrapped(cfg: DictConfig) -> Any:
        with fixed_threads():
            return run(cfg)

    return wrapped


def pick_device(name: str) -> torch.device:
    """'auto' -> the first GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} was asked for, but no CUDA GPU is visible; use device=cpu")
    return device


# Keys of a dataset config that are not the builder's own options.
_DATASET_KEYS = ("name", "root", "download", "path")


def dataset_options(dataset: DictConfig) -> dict:
    """A dataset config's own settings (imagefolder's size, tensors' num_classes), those set."""
    return {k: v for k, v in plain(dataset).items() if k not in _DATASET_KEYS and v is not None}


def dataset_from(
    name: str, root: str | None, download: bool, device: torch.device, **options: Any
) -> Dataset:
    """`options`: a data set's own settings (imagefolder's size, tensors' num_classes)."""
    return load_dataset(name, root=root, download=download, **options).to(device)


def scores_line(scores: dict, task: str) -> str:
    """A point's train/test metrics for a log line: mse for regression, error and nll else."""
    train, test = scores["train"], scores["test"]
    if task == "regression":
        return f"train mse {train.mse:.4f}, test mse {test.mse:.4f}"
    return (
        f"train nll {train.nll:.4f}, train error {train.error:.2f} %, test error {test.error:.2f} %"
    )


def engine_settings(cfg: DictConfig):
    """The app's `engine` config group as one `EvalSettings` (built once per run)."""
    from modeconn.engine import EvalSettings

    return EvalSettings.from_config(plain(cfg.get("engine")) or {})


def grid_resolution(cfg: DictConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(grid, resolution, job keys) from an app's grid and resolution options: the regular
    grid `cfg.grid`, or with resolution=adaptive the target (`cfg.target`, else `cfg.grid`)
    refined from `cfg.coarse` until `cfg.tol` in `cfg.refine_on` (`Adaptive`; `cfg.ceiling`:
    no refinement above it). The job keys name the refinement for `guard_result` (none for
    a regular grid, so its records stay as they were)."""
    from modeconn.engine import Adaptive

    def listed(value: Any) -> Any:  # a ListConfig as a tuple
        return tuple(OmegaConf.to_container(value)) if OmegaConf.is_list(value) else value

    kind, target = cfg.get("resolution", "regular"), cfg.get("target")
    if kind not in ("regular", "adaptive"):
        raise ValueError(f"resolution must be regular or adaptive, got {kind!r}")
    if kind == "regular":
        if target is not None:
            raise ValueError(
                f"target={target} is the final grid of resolution=adaptive; pass "
                "resolution=adaptive, or grid=... for a regular grid"
            )
        return cfg.grid, "regular", {}  # as the apps always read it
    adaptive = Adaptive(
        coarse=listed(cfg.coarse),
        tol=listed(cfg.tol),
        metric=listed(cfg.refine_on),
        ceiling=cfg.ceiling,
    )
    return listed(target if target is not None else cfg.grid), adaptive, adaptive.config()


def endpoint_meta(cfg: DictConfig, data, model_args: dict, options: dict) -> dict[str, Any]:
    """What an endpoint checkpoint records of its network and data (`load_endpoint` rebuilds
    the model from it): the registry name and arguments, the data set, its root and options."""
    return {
        "model": cfg.model.name,
        "model_args": model_args,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "dataset": cfg.dataset.name,
        "dataset_root": cfg.dataset.root,
        **({"dataset_args": options} if options else {}),
    }


def train_config(optim: DictConfig, seed: int, progress: bool) -> TrainConfig:
    return TrainConfig(**plain(optim), seed=seed, progress=progress)


def slug(text: str) -> str:
    """A file-name-safe version of a model or path name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# Errors that mean "your input is wrong": shown as one message, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, FloatingPointError, OSError)


def run_app(run, cfg: DictConfig) -> Any:
    """Call an app's `run(cfg)`; a user error exits with its message (status 2), not a traceback.

    Ctrl-C and SIGTERM stop a job with one line (what was saved, how to resume) and the exit
    status 130 / 143 (`modeconn.io.interrupt`)."""
    from modeconn.io.interrupt import interrupted_exit, signals_as_interrupts

    try:
        check_options(cfg)  # `+point=3`: an option the app does not have
        with signals_as_interrupts():
            return run(cfg)
    except USER_ERRORS as err:
        raise SystemExit(f"modeconn: error: {err}") from None
    except KeyboardInterrupt as err:
        raise interrupted_exit(err) from None


def named_endpoints(cfg: DictConfig, device) -> tuple[dict, Any]:
    """What `model=...` and `dataset=...` on the command line say the checkpoints are.

    Returns the `meta` for `load_endpoint` / `load_curve` (reads plain state dicts and 2018
    curve checkpoints, and is checked against modeconn checkpoints) and the data set it
    loaded, or ({}, None) when neither is named.
    """
    named, data = {}, None
    if cfg.get("dataset") is not None:
        options = dataset_options(cfg.dataset)
        root = cfg.data_root if cfg.data_root is not None else cfg.dataset.root
        data = dataset_from(cfg.dataset.name, root, cfg.dataset.download, device, **options)
        named = {
            "dataset": cfg.dataset.name,
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "dataset_root": root,
            "dataset_args": options,
        }
    if cfg.get("model") is not None:
        if data is None:
            raise ValueError(
                f"model={cfg.model.name} names the architecture of plain state dicts; name "
                f"their data set too (dataset=<name>, one of {', '.join(dataset_names())}), "
                "which gives the number of classes and the input shape"
            )
        named.update(model=cfg.model.name, model_args=plain(cfg.model.get("args")) or {})
    return named, data


def load_point_checkpoint(cfg: DictConfig):
    """`cfg.ckpt` on the chosen device: (curve, None, ckpt, data) for a curve checkpoint,
    (None, model, ckpt, data) for an endpoint; plain state dicts and 2018 curve checkpoints
    with `model=... dataset=...` named."""
    from modeconn.io.checkpoints import checkpoint_kind, load_curve, load_endpoint

    device = pick_device(cfg.device)
    named, data = named_endpoints(cfg, device)
    curve = model = None
    if checkpoint_kind(cfg.ckpt) == "curve":
        curve, ckpt = load_curve(cfg.ckpt, meta=named)
        curve = curve.to(device)
    else:
        hint = "Pass an endpoint or a curve checkpoint (ckpt=...)."
        model, ckpt = load_endpoint(cfg.ckpt, meta=named, hint=hint)
        model = model.to(device)
    if data is None:
        root = cfg.data_root if cfg.data_root is not None else ckpt.meta.get("dataset_root")
        options = ckpt.meta.get("dataset_args") or {}  # e.g. an image folder's size
        data = dataset_from(ckpt.meta["dataset"], root, False, device, **options)
    return curve, model, ckpt, data


def config_directions(cfg: DictConfig, net, curve=None) -> list:
    """The directions `cfg.directions` names around `net` (its family, seed, norm and
    ignore rules); `directions=tangent`: dphi/dt at phi(cfg.t) of `curve` and a random
    direction orthogonal to it (a curve checkpoint only)."""
    from modeconn.landscape.critique import directions_of
    from modeconn.landscape.directions import tangent_directions

    rules = dict(
        seed=int(cfg.directions.seed),
        norm=cfg.directions.get("norm", "filter"),
        ignore=cfg.directions.get("ignore", "biasbn"),
    )
    if cfg.directions.family != "tangent":
        return directions_of(cfg.directions.family, net, **rules)
    if curve is None:
        raise ValueError(
            f"directions=tangent needs a curve checkpoint (ckpt=<curve.pt> t=0.5): "
            f"'{cfg.ckpt}' is an endpoint, which has no tangent"
        )
    return tangent_directions(curve, float(cfg.t), **rules)


def load_curve_and_data(cfg: DictConfig):
    """The curve checkpoint `cfg.curve_ckpt` on the chosen device, its data set and checkpoint
    (a 2018 curve checkpoint with `model=... dataset=...` named)."""
    from modeconn.io.checkpoints import load_curve

    device = pick_device(cfg.device)
    named, data = named_endpoints(cfg, device)
    curve, ckpt = load_curve(cfg.curve_ckpt, meta=named)
    if data is None:
        root = cfg.data_root if cfg.data_root is not None else ckpt.meta.get("dataset_root")
        options = ckpt.meta.get("dataset_args") or {}  # e.g. an image folder's size
        data = dataset_from(ckpt.meta["dataset"], root, False, device, **options)
    return curve.to(device), data, ckpt


def out_dir(cfg: DictConfig, source: str) -> Path:
    """Where an app writes results: `cfg.out`, else results/<checkpoint name>/."""
    return Path(cfg.out) if cfg.out else Path("results") / slug(Path(source).stem)


def curve_wd(cfg: DictConfig, ckpt) -> float:
    """The weight decay of reported losses: the config's, else the curve's training wd."""
    return float(cfg.wd) if cfg.wd is not None else float(ckpt.meta.get("wd", 0.0))


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins torchrun's process group (NCCL on GPU, gloo on CPU)."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
