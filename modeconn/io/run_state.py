"""What a training run checks and saves to resume exactly: the keys of its description that
must match, the RNG states, and that the weights to train are finite before the first step.
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
)


def check_resumable(path: Path, stored: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    # checkpoints from before the optimizer option were SGD runs
    stored = {"optimizer": "sgd", **stored}
    differing = [k for k in RESUME_KEYS if k in meta and stored.get(k) != meta.get(k)]
    if differing:
        details = "; ".join(f"{k}: stored {stored.get(k)!r}, now {meta[k]!r}" for k in differing)
        raise ValueError(
            f"cannot resume from '{path}': its run differs in {details}. Use the same settings "
            "to resume, or another checkpoint path (or delete the file) to start afresh."
        )


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
