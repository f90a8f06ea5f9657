"""What a training run checks and saves to resume exactly: the keys of its description that
must match, the RNG states, and that the weights to train are finite before the first step;
and spawning: a copy of a run's exact state at one step whose SGD noise is seeded anew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Keys of the run description that must match to resume from a checkpoint.
RESUME_KEYS = (
    "kind",
    "model",
    "model_args",
    "dataset",
    "seed",
    "epochs",
    "lr",
    "momentum",
    "wd",
    "batch_size",
    "augment",
    "curve",
    "fge",
    "start",
    "optimizer",
    "data_seed",
    "augment_seed",
    "spawn",
)
# Keys a run records only when set: a checkpoint that has one resumes only under the same.
_WHEN_SET = ("data_seed", "augment_seed")
# The augmentation generator's seed is augment_seed + this: with data_seed == augment_seed
# the two generators still draw different streams.
AUGMENT_STREAM = 2**32


def check_resumable(path: Path, stored: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    # checkpoints from before the optimizer option were SGD runs
    stored = {"optimizer": "sgd", **stored}
    differing = [
        k
        for k in RESUME_KEYS
        if (k in meta or (k in _WHEN_SET and k in stored)) and stored.get(k) != meta.get(k)
    ]
    if differing:
        details = "; ".join(
            f"{k}: stored {stored.get(k)!r}, now {meta.get(k)!r}" for k in differing
        )
        raise ValueError(
            f"cannot resume from '{path}': its run differs in {details}. Use the same settings "
            "to resume, or another checkpoint path (or delete the file) to start afresh."
        )


def resumed_meta(path: Path, stored: Mapping[str, Any], meta: Mapping[str, Any]) -> dict:
    """`meta` checked against the checkpoint's (`check_resumable`), with where a spawned run
    came from ("spawn") kept from the checkpoint when the caller does not name it."""
    check_resumable(path, stored, meta)
    return {**({"spawn": stored["spawn"]} if "spawn" in stored else {}), **meta}


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingRng:
    """The generators of one training run (`modeconn.training.fit`).

    With `seed` alone, one generator draws the data order, the augmentation and the step's
    own draws (a curve's t), as every run has done. With a data-order or an augmentation
    seed there are two: `order` draws each epoch's permutation (seeded with `data_seed`,
    default `seed`) and `noise` the augmentation and the step's draws (`augment_seed`,
    default `seed`, plus AUGMENT_STREAM), so that a spawned child can change one and keep
    the other (Frankle et al. 2020 vary data order and augmentation as "SGD noise").
    """

    def __init__(self, seed: int, data_seed: int | None = None, augment_seed: int | None = None):
        self.split = data_seed is not None or augment_seed is not None
        self.order = torch.Generator().manual_seed(seed if data_seed is None else data_seed)
        self.noise = self.order
        if self.split:
            start = seed if augment_seed is None else augment_seed
            self.noise = torch.Generator().manual_seed(start + AUGMENT_STREAM)

    def state(self) -> dict[str, Any]:
        """torch's global RNG state, "generator" (the order's) and, if split, "noise"."""
        state = rng_state(self.order)
        if self.split:
            state["noise"] = self.noise.get_state()
        return state

    def load(self, state: Mapping[str, Any]) -> None:
        set_rng_state(self.order, state)
        if self.split:
            self.noise.set_state(state["noise"])

    def epoch(self, data, config, partial: Mapping[str, Any] | None = None) -> tuple:
        """One training epoch's batches and its order ((N,) int64, None with one generator).
        `partial`: the epoch stopped inside, with its "order" and the samples "visited"."""
        if not self.split:
            kw = dict(shuffle=True, augment=config.augment, generator=self.order)
            return data.batches("train", config.batch_size, **kw), None
        if partial is None:  # drawn here, so that a stop inside the epoch can store it
            order, visited = torch.randperm(len(data.train_y), generator=self.order), 0
        else:
            order, visited = partial["order"], int(partial["visited"])
        kw = dict(order=order[visited:], augment=config.augment, generator=self.noise)
        return data.batches("train", config.batch_size, **kw), order


def diverged(value: float, epoch: int, step: int, lr: float, checkpoint: Path | None) -> Exception:
    """The error of a training loss that became NaN or inf (`step`: 1-based in the epoch)."""
    kept = checkpoint is not None and checkpoint.exists()
    return FloatingPointError(
        f"the training loss became {value} at epoch {epoch + 1}, step {step} (lr={lr:.4g}). "
        "Lower the learning rate (optim.lr)"
        + (f"; the checkpoint '{checkpoint}' is intact." if kept else ".")
    )


def check_stop(
    stop_at: int | None, done: int, steps: int, epochs: int, split: bool, path: Path | None
) -> None:
    """Refuse a `stop_at` that is no step of the run (`steps` per epoch), one inside an epoch
    of a run with one generator (its epoch's order is not kept), or one before the `done`
    steps of the checkpoint at `path`."""
    if stop_at is None:
        return
    total = steps * epochs
    if not (0 <= stop_at <= total and (split or stop_at % steps == 0)):
        why = f"stopping inside an epoch ({steps} steps) needs data_seed or augment_seed"
        raise ValueError(f"stop_at={stop_at}: must be a step in [0, {total}]; {why}")
    if stop_at < done:
        raise ValueError(
            f"cannot stop at step {stop_at}: '{path}' is at step {done} already. Use another "
            "checkpoint path (or delete the file) to start afresh."
        )


def check_finite_params(
    module: nn.Module, params: Sequence[nn.Parameter], checkpoint: Path | None
) -> None:
    """Refuse to train weights that hold NaN or inf already, naming the tensor: the loss
    would become NaN at once and the learning rate would take the blame."""
    wanted = {id(p) for p in params}
    for name, p in module.named_parameters():
        if id(p) in wanted and not bool(torch.isfinite(p).all()):
            bad = int((~torch.isfinite(p)).sum())
            where = (
                f" (resumed from '{checkpoint}')"
                if checkpoint is not None and checkpoint.exists()
                else ""
            )
            raise ValueError(
                f"the weights to train are not finite before training{where}: tensor '{name}' "
                f"holds {bad} NaN or inf values of {p.numel()}. Check where they come from "
                "(the initial network, a loaded state dict or the endpoint checkpoints)"
            )


def spawn_checkpoint(
    parent: str | Path,
    child: str | Path,
    *,
    data_seed: int | None = None,
    augment_seed: int | None = None,
    kind: str = "endpoint",
) -> Path:
    """Write at `child` the training run saved at `parent` with its SGD noise seeded anew.

    parent: a checkpoint of a run with separate seeds (`TrainConfig.data_seed` or
    `augment_seed`), typically stopped at step k (`fit(..., stop_at=k)`). The child holds
    the parent's weights, BatchNorm buffers, optimizer state (momentum), schedule position
    (the step), history and torch's global RNG state, bit for bit. `data_seed` reseeds the
    data-order generator and reshuffles, with it, the samples of the current epoch that the
    parent had not visited yet; `augment_seed` reseeds the augmentation generator; a seed
    left None keeps the parent's generator. Resuming `child` with `fit` under the parent's
    settings and the child's seeds (and meta["spawn"] as written here) trains the child:
    children of one checkpoint with equal seeds are bitwise equal.
    """
    from modeconn.io.checkpoints import resume_checkpoint, save_checkpoint

    ckpt = resume_checkpoint(parent, kind)
    meta, training = dict(ckpt.meta), dict(ckpt.training)
    if "step" not in meta:
        raise ValueError(
            f"'{parent}' is not a run with separate data-order and augmentation seeds "
            "(TrainConfig.data_seed, augment_seed): only such a run can be spawned exactly"
        )
    rng = dict(training["rng"])
    meta["spawn"] = {
        "step": int(meta["step"]),
        "data_seed": meta.get("data_seed"),
        "augment_seed": meta.get("augment_seed"),
    }
    if data_seed is not None:
        order = torch.Generator().manual_seed(int(data_seed))
        partial = training.get("partial")
        if partial is not None:  # the rest of this epoch, in the child's order
            visited = int(partial["visited"])
            rest = partial["order"][visited:]
            rest = rest[torch.randperm(len(rest), generator=order)]
            training["partial"] = {
                **partial,
                "order": torch.cat([partial["order"][:visited], rest]),
            }
        rng["generator"] = order.get_state()
        meta["data_seed"] = int(data_seed)
    if augment_seed is not None:
        noise = torch.Generator().manual_seed(int(augment_seed) + AUGMENT_STREAM)
        rng["noise"] = noise.get_state()
        meta["augment_seed"] = int(augment_seed)
    training["rng"] = rng
    return save_checkpoint(child, kind, ckpt.state, meta, training)
