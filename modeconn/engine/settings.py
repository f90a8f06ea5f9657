"""How weight points are evaluated: one settings object for every grid job and app.

`EvalSettings` holds the options that travel together (STYLE 11): the BatchNorm budget and
estimator, the evaluation batch, points per vmap'd pass, torch.compile, autocast and the
evaluation subset. Apps build it once from the `engine` config group (`conf/engine/`), the
analyses pass it down as one argument, and results record it as one block of metadata.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeconn.engine.execution import autocast_dtype, autocast_name, check_layout

AUTO = "auto"


def _positive_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 or None (all samples), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EvalSettings:
    """Engine settings of a job over weight points.

    bn_samples: train samples for the BatchNorm statistics at each point (None: all).
    bn_exact: True (default) merges exact means and variances over all samples; False is the
        2018 reference's estimator (batch-size-weighted average of batch variances).
    batch_size: evaluation batch (None: `eval_plan`'s rule: 128 for images on a CPU, else
        1024). It changes no number in eager evaluation; compiled, each size is a graph.
    layout: "auto" (channels_last for images of 16x16 or more), "contiguous" or
        "channels_last": the inputs' memory layout, chosen by rule, never by timing; it
        changes the last bits of convolutions.
    points_per_pass: points per vmap'd pass, an int >= 1 or "auto" (1 on a CPU).
    compile: run the network through torch.compile.
    autocast: "bfloat16" / "float16" forward passes, or None (full precision).
    eval_samples: the losses of every point on a fixed, seeded, class-stratified subset of
        this many samples per split (None: the whole splits), or a pair (train, test).
        Distinct from bn_samples: the statistics still see the train set (or bn_samples).
    eval_seed: the seed of that subset.
    bn: "recompute" (default): BatchNorm statistics recomputed at every point from the train
        data; "fixed": every point evaluated with the model's current running statistics
        (Li et al.'s centre statistics; `modeconn.landscape.surface` sets it for `bn="origin"`).
    """

    bn_samples: int | None = None
    bn_exact: bool = True
    batch_size: int | None = None
    points_per_pass: int | str = AUTO
    compile: bool = False
    autocast: str | None = None
    eval_samples: int | tuple[int | None, int | None] | None = None
    eval_seed: int = 0
    bn: str = "recompute"
    layout: str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "bn_samples", _positive_or_none("bn_samples", self.bn_samples))
        set_(self, "batch_size", _positive_or_none("batch_size", self.batch_size))
        check_layout(self.layout)
        from modeconn.engine.batched import check_points_per_pass

        set_(self, "points_per_pass", check_points_per_pass(self.points_per_pass))
        autocast_dtype(self.autocast)  # an unknown name fails here, with the valid ones
        set_(self, "autocast", autocast_name(self.autocast))
        if self.compile and self.points_per_pass not in (AUTO, 1):
            raise ValueError(
                f"compile=True evaluates one point per pass, got points_per_pass="
                f"{self.points_per_pass}: use points_per_pass=1 (or auto), or compile=False"
            )
        samples = self.eval_samples
        if isinstance(samples, Sequence) and not isinstance(samples, str):
            if len(samples) != 2:
                raise ValueError(
                    f"eval_samples must be an int, None or a pair (train, test), got {samples!r}"
                )
            samples = tuple(_positive_or_none("eval_samples", s) for s in samples)
            samples = None if samples == (None, None) else samples
        else:
            samples = _positive_or_none("eval_samples", samples)
        set_(self, "eval_samples", samples)
        from modeconn.engine.point import check_bn_policy

        check_bn_policy(self.bn)
        set_(self, "bn_exact", bool(self.bn_exact))
        set_(self, "compile", bool(self.compile))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> EvalSettings:
        """From the `engine` config group (a plain mapping; unknown keys are refused)."""
        cfg = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(
                f"unknown engine option {unknown[0]!r}; valid options: {', '.join(sorted(known))}"
            )
        return cls(**cfg)

    def replace(self, **changes: Any) -> EvalSettings:
        return dataclasses.replace(self, **changes)

    @property
    def eval_sizes(self) -> tuple[int | None, int | None]:
        """(train, test) sizes of the evaluation subset (None: the whole split)."""
        if isinstance(self.eval_samples, tuple):
            return self.eval_samples
        return (self.eval_samples, self.eval_samples)

    def meta(self) -> dict[str, Any]:
        """Every setting, as the "engine" block of a result's metadata."""
        out = dataclasses.asdict(self)
        if isinstance(self.eval_samples, tuple):
            out["eval_samples"] = list(self.eval_samples)
        return out

    def resume_config(self) -> dict[str, Any]:
        """The settings that change results, as a partial file records them. Settings at
        their old defaults are left out, so files written before they existed still resume."""
        out: dict[str, Any] = {"bn_samples": self.bn_samples}
        if self.autocast:
            out["autocast"] = self.autocast
        if not self.bn_exact:
            out["bn_exact"] = False
        if self.eval_samples is not None:
            out["eval_samples"] = self.meta()["eval_samples"]
            out["eval_seed"] = self.eval_seed
        if self.bn != "recompute":
            out["bn"] = self.bn
        if self.layout != "auto":
            out["layout"] = self.layout
        return out


def resolve_settings(settings: EvalSettings | None, options: Mapping[str, Any]) -> EvalSettings:
    """`settings`, or settings built from keyword options (`bn_samples=2000, compile=True`):
    the Python API's shorthand, turned into one object at the boundary. Both at once, or an
    unknown option, is an error that lists the valid options."""
    if options and settings is not None:
        raise ValueError(
            f"pass the engine options either as settings=EvalSettings(...) or as keywords, "
            f"not both (got settings and {', '.join(sorted(options))})"
        )
    if settings is None:
        return EvalSettings.from_config(options)
    if not isinstance(settings, EvalSettings):
        raise TypeError(f"settings must be an EvalSettings, got {type(settings).__name__}")
    return settings
