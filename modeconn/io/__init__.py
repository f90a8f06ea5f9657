"""Files: atomic writes, results (.npz + JSON sidecar), checkpoints (ours and the 2018 code's),
safe torch reading, run state and interrupts."""

from modeconn.io.checkpoints import (
    Checkpoint,
    checkpoint_kind,
    endpoint_meta,
    load_checkpoint,
    load_curve,
    load_endpoint,
    save_checkpoint,
)
from modeconn.io.store import SavedResult, load_result

__all__ = [
    "Checkpoint",
    "SavedResult",
    "checkpoint_kind",
    "endpoint_meta",
    "load_checkpoint",
    "load_curve",
    "load_endpoint",
    "load_result",
    "save_checkpoint",
]
