"""Training loops for endpoint networks and curves (SGD, the paper's schedule, resumable).

Both loops share `fit`: SGD with momentum, the learning-rate schedule of Garipov et al. 2018
(constant for the first half, linear decay to 1 % by 90 %, then constant), a checkpoint every
`save_every` epochs and at the end, and resume from that checkpoint with optimizer and RNG
state, so an interrupted run ends with the same weights as an uninterrupted one. A run with
separate data-order and augmentation seeds also stops at any step and goes on exactly, and
children spawned there differ only in those seeds (`modeconn.io.run_state.spawn_checkpoint`).

Curve training draws t ~ U[0, 1] once per mini-batch and runs SGD on the bends; weight decay
is the paper's regulariser on the point, 0.5 * wd * ||phi(t)||^2, not decay of the bends.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from modeconn.curves.family import Curve, curve_args
from modeconn.data.tasks import CLASSIFICATION, batch_score, task_loss, task_of
from modeconn.engine.ranks import Ranks
from modeconn.io.checkpoints import resume_checkpoint, save_checkpoint
from modeconn.io.interrupt import epoch_saved, save_on_interrupt
from modeconn.io.run_state import (
    RESUME_KEYS,
    TrainingRng,
    check_finite_params,
    check_stop,
    diverged,
    resumed_meta,
)

OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (paper defaults for CIFAR, scaled for digits)."""

    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    wd: float = 5e-4
    batch_size: int = 128
    seed: int = 1
    save_every: int = 0  # epochs between checkpoints; 0: only at the end
    augment: bool = True  # train-time augmentation, if the data set defines one
    progress: bool = True
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam" (betas 0.9, 0.999; momentum unused)
    data_seed: int | None = None  # either set: data order and augmentation draw from two
    augment_seed: int | None = None  # generators (io.run_state.TrainingRng); None: from seed

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "wd", "momentum", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("data_seed", "augment_seed"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 2**32:
                raise ValueError(f"{name} must be None or in [0, 2**32), got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
            )


def lr_schedule(base_lr: float, progress: float) -> float:
    """Learning rate at `progress` = fraction of training done, in [0, 1] (paper's schedule)."""
    if progress <= 0.5:
        factor = 1.0
    elif progress <= 0.9:
        factor = 1.0 - (progress - 0.5) / 0.4 * 0.99
    else:
        factor = 0.01
    return base_lr * factor


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_from_epoch: int = 0
    step: int = 0  # optimizer steps done when `fit` returned


StepFn = Callable[[nn.Module, Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


def fit(
    module: nn.Module,
    params: Sequence[nn.Parameter],
    step: StepFn,
    data,
    config: TrainConfig,
    *,
    meta: Mapping[str, Any],
    state_fn: Callable[[], Mapping[str, Tensor]],
    load_fn: Callable[[Mapping[str, Tensor]], None],
    checkpoint: str | Path | None = None,
    weight_decay: float = 0.0,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    lr_fn: Callable[[float], float] | None = None,
    broadcast_buffers: bool = True,
    extra_state: tuple[Callable[[], Any], Callable[[Any], None]] | None = None,
    step_callbacks: Sequence[Callable[[int, float], None]] = (),
    stop_at: int | None = None,
) -> TrainResult:
    """The shared SGD loop. `step(net, x, y, generator) -> (loss, logits)` computes one batch
    by calling `net`: `module` itself, or under torchrun its DistributedDataParallel wrapper.

    `lr_fn(epochs_done)` gives the learning rate at a fractional epoch (default: the paper's
    schedule over `config.epochs`); `callbacks(epoch, record)` run after each epoch, before
    its checkpoint is written. `extra_state = (get, set)`: more state to checkpoint and
    restore on resume (what the callbacks collect). `broadcast_buffers`: DDP's option (rank
    0's buffers, e.g. BatchNorm statistics, sent to all ranks before each step).
    `step_callbacks(step, loss)` run at every batch after its forward pass and before the
    optimizer step: `step` optimizer steps are done (0 at the very first batch of a fresh
    run), so the weights are still those the batch loss `loss` was computed on (a
    trajectory recorder's snapshot, `modeconn.trajectory.pca`).
    `stop_at`: stop after that many optimizer steps, saving the checkpoint (inside an epoch:
    a run with data_seed or augment_seed, whose epoch order is kept); a rerun goes on exactly.
    """
    if lr_fn is None:
        lr_fn = lambda e: lr_schedule(config.lr, e / config.epochs)  # noqa: E731
    task = task_of(data)
    scored = "train_error" if task == CLASSIFICATION else "train_mse"
    if config.optimizer == "adam":  # weight decay as Adam's L2 term (coupled, not AdamW)
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=weight_decay
        )
    rngs = TrainingRng(config.seed, config.data_seed, config.augment_seed)
    torch.manual_seed(config.seed)
    meta = {
        **meta,
        **{k: v for k, v in asdict(config).items() if k in RESUME_KEYS and v is not None},
        "epochs": config.epochs,
    }
    meta["optimizer"] = config.optimizer
    steps = math.ceil(len(data.train_y) / config.batch_size)
    result = TrainResult(checkpoint=Path(checkpoint) if checkpoint else None)
    check_stop(stop_at, 0, steps, config.epochs, rngs.split, result.checkpoint)
    start_epoch, skip, partial = 0, 0, None
    if result.checkpoint is not None and result.checkpoint.exists():
        ckpt = resume_checkpoint(result.checkpoint, meta["kind"])
        meta = resumed_meta(result.checkpoint, ckpt.meta, meta)
        load_fn(ckpt.state)
        if extra_state is not None:
            extra_state[1](ckpt.training.get("extra"))
        result.history = list(ckpt.training.get("history", []))
        start_epoch = result.resumed_from_epoch = int(ckpt.meta["epoch"])
        result.step = int(ckpt.meta.get("step", start_epoch * steps))
        check_stop(stop_at, result.step, steps, config.epochs, rngs.split, result.checkpoint)
        if ckpt.finished or result.step == stop_at:
            return result
        optimizer.load_state_dict(ckpt.training["optimizer"])
        rngs.load(ckpt.training["rng"])
        skip, partial = result.step - start_epoch * steps, ckpt.training.get("partial")

    check_finite_params(module, params, result.checkpoint)

    ranks = Ranks.current()  # under torchrun: each rank's share of every batch (engine/ranks)
    rank = ranks.rank
    device = params[0].device if params else next(module.buffers()).device
    net = ranks.wrap(module, device, broadcast_buffers)

    def payload(epoch: int, inside: dict | None = None) -> tuple:
        """What a checkpoint at the end of `epoch` holds (`inside`: the next epoch's order and
        sums, stopped inside it), copied (a snapshot stays valid while training goes on)."""
        extra = extra_state[0]() if extra_state is not None else None
        info = {**meta, "epoch": epoch, "finished": epoch == config.epochs}
        if rngs.split:  # the step, for stopping and spawning anywhere
            info["step"] = result.step
        training = dict(optimizer=optimizer.state_dict(), rng=rngs.state(), history=result.history)
        training.update(extra=extra, **({"partial": inside} if inside is not None else {}))
        state = {k: v.detach().to("cpu", copy=True) for k, v in state_fn().items()}
        return state, info, copy.deepcopy(training)

    def save(epoch: int, inside: dict | None = None) -> None:
        if result.checkpoint is None or rank != 0:
            return
        save_checkpoint(result.checkpoint, meta["kind"], *payload(epoch, inside))

    # The last finished epoch that is not on disk yet, kept in memory so that Ctrl-C or
    # SIGTERM (a preemption) saves it: `save_every=0` writes only at the end.
    snapshot: tuple | None = None
    saved_epoch = start_epoch
    current = [start_epoch]

    def interrupted() -> str:
        if result.checkpoint is not None and snapshot is not None and rank == 0:
            save_checkpoint(result.checkpoint, meta["kind"], *snapshot)
        last = snapshot[1]["epoch"] if snapshot is not None else saved_epoch
        return epoch_saved(f"in epoch {current[0] + 1} of {config.epochs}", result.checkpoint, last)

    bar = tqdm(
        range(start_epoch, config.epochs),
        desc=meta["kind"],
        disable=not config.progress or rank != 0,
        initial=start_epoch,
        total=config.epochs,
    )
    with save_on_interrupt(interrupted):
        for epoch in bar:
            if result.step == stop_at:  # at the start of this epoch
                save(epoch)
                break
            current[0] = epoch
            module.train()
            began, loss_sum, score, seen = time.perf_counter(), 0.0, 0.0, 0
            first = skip if epoch == start_epoch else 0  # the steps done before a stop
            if first:
                loss_sum, score, seen = (partial[k] for k in ("loss_sum", "score", "seen"))
                began -= partial["seconds"]
            batches, order = rngs.epoch(data, config, partial if first else None)
            for i, (x, y) in enumerate(batches, start=first):
                lr = lr_fn(epoch + i / steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                x, y, scale, counted = ranks.share(x, y)
                loss, logits = step(net, x, y, rngs.noise)
                value = ranks.largest(loss.detach())
                if not torch.isfinite(value):
                    raise diverged(value.item(), epoch, i + 1, lr, result.checkpoint)
                for step_callback in step_callbacks:
                    step_callback(epoch * steps + i, value.item())
                optimizer.zero_grad(set_to_none=True)
                (loss * scale if scale != 1.0 else loss).backward()
                optimizer.step()
                if counted:
                    loss_sum += loss.item() * len(y)
                    score += batch_score(task, logits, y)  # wrong predictions, or sum of mse
                    seen += len(y)
                result.step = epoch * steps + i + 1
                if result.step == stop_at and i + 1 < steps:  # stop inside the epoch
                    sums = dict(loss_sum=loss_sum, score=score, seen=seen)
                    seconds, visited = time.perf_counter() - began, (i + 1) * config.batch_size
                    save(epoch, {"order": order, "visited": visited, "seconds": seconds, **sums})
                    return result
            if ranks.world > 1:
                loss_sum, score, seen = ranks.sums([loss_sum, score, seen], device)
                seen = int(seen)
            record = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / seen,
                # classification: error (%) of the training batches; regression: their mse
                scored: (100.0 * score if task == CLASSIFICATION else score) / seen,
                "seconds": time.perf_counter() - began,
            }
            result.history.append(record)
            shown = "err" if task == CLASSIFICATION else "mse"
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", **{shown: f"{record[scored]:.4g}"})
            done = epoch + 1
            for callback in callbacks:
                callback(done, record)
            if done == config.epochs or (config.save_every and done % config.save_every == 0):
                save(done)
                snapshot, saved_epoch = None, done
            elif result.checkpoint is not None and rank == 0:
                snapshot = payload(done)
    return result


def train_endpoint(
    model: nn.Module,
    data,
    config: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    step_callbacks: Sequence[Callable[[int, float], None]] = (),
    stop_at: int | None = None,
) -> TrainResult:
    """Train a network with SGD on the task's loss (cross-entropy; mse for a regression data
    set: `modeconn.data.tasks.task_loss`), weight decay `config.wd` in the optimizer.

    `meta` (model name/arguments, data set, ...) goes into the checkpoint; a checkpoint that
    exists at `checkpoint` is resumed (or returned at once if finished). `callbacks` run
    after each epoch, `step_callbacks` at each batch before its update, `stop_at` stops
    after that many steps (`fit`).
    """

    task = task_of(data)

    def step(net: nn.Module, x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        logits = net(x)
        return task_loss(task, logits, y), logits

    return fit(
        model,
        list(model.parameters()),
        step,
        data,
        config,
        meta={"kind": "endpoint", **(meta or {})},
        state_fn=model.state_dict,
        load_fn=model.load_state_dict,
        checkpoint=checkpoint,
        weight_decay=config.wd,
        callbacks=callbacks,
        step_callbacks=step_callbacks,
        stop_at=stop_at,
    )


def curve_step_loss(
    curve: Curve,
    x: Tensor,
    y: Tensor,
    t: float,
    wd: float,
    forward: nn.Module | None = None,
    task: str = CLASSIFICATION,
) -> tuple[Tensor, Tensor]:
    """Loss of one curve step at t: CE(phi(t)) + 0.5 * wd * ||phi(t)||^2, and the logits
    (for a regression `task`, MSE(phi(t)) instead of CE: `modeconn.data.tasks.task_loss`).

    The regulariser's gradient, wd * phi(t), is folded into phi's backward pass
    (`Curve.train_output`); its value is added here as a constant. `forward`: the module
    that runs the step (a DistributedDataParallel wrapper of `CurveStep(curve)`); default
    the curve itself.
    """
    wd = wd if curve.bends.requires_grad else 0.0
    logits, sq = (forward or curve.train_output)(x, t, wd)
    loss = task_loss(task, logits, y)
    if wd:
        loss = loss + 0.5 * wd * sq
    return loss, logits


class CurveStep(nn.Module):
    """`curve.train_output` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, curve: Curve):
        super().__init__()
        self.curve = curve

    def forward(self, x: Tensor, t: float, wd: float) -> tuple[Tensor, Tensor]:  # noqa: D102
        return self.curve.train_output(x, t, wd)


def train_curve(
    curve: Curve,
    data,
    config: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    step_callbacks: Sequence[Callable[[int, float], None]] = (),
) -> TrainResult:
    """Train the bends of `curve`: t ~ U[0, 1] per mini-batch, SGD through the chain rule."""
    if curve.num_bends == 0:
        raise ValueError("a Line has no bends to train; use Bezier or PolyChain")
    task = task_of(data)

    def step(net: nn.Module, x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        t = torch.rand((), generator=g).item()
        return curve_step_loss(curve, x, y, t, config.wd, forward=net, task=task)

    def load(state: Mapping[str, Tensor]) -> None:
        for name in ("start", "end"):
            if not torch.equal(state[name].to(curve.start), getattr(curve, name)):
                raise ValueError(
                    f"cannot resume from '{checkpoint}': it connects a different {name} network. "
                    "Use another checkpoint path (or delete the file) to start afresh."
                )
        with torch.no_grad():
            curve.bends.copy_(state["bends"])

    curve_meta = {"type": curve.kind, **curve_args(curve)}
    return fit(
        CurveStep(curve),
        [curve.bends],
        step,
        data,
        config,
        meta={"kind": "curve", **(meta or {}), "curve": curve_meta},
        state_fn=lambda: {"start": curve.start, "end": curve.end, "bends": curve.bends},
        load_fn=load,
        checkpoint=checkpoint,
        callbacks=callbacks,
        step_callbacks=step_callbacks,
        broadcast_buffers=False,  # the endpoints are fixed; BatchNorm statistics are recomputed
    )
