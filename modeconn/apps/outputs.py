"""Where runs write, so that two configurations never share a file silently.

Default checkpoint names carry the model and curve arguments (`args_tag`), and a finished
result is replaced only by a run of the same job or with `overwrite=true` (`guard_result`):
a second `plane` run with another grid in the same output directory used to replace a
finished 13x13 result by a 5x5 one without a word. A damaged result (truncated, garbage) is
set aside as `<name>.corrupt` and computed again, with one warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modeconn.io.store import plain_meta, read_or_set_aside
from modeconn.plotting import save_figure

log = logging.getLogger("modeconn")


def args_tag(args: Mapping[str, Any] | None, limit: int = 40) -> str:
    """A file-name part naming constructor arguments: {} -> '', {'degree': 3} -> 'degree3',
    {'widths': [16, 32], 'hidden': 256} -> 'hidden256_widths16.32'; longer than `limit`
    characters, 'args' plus an 8-digit digest of them."""
    if not args:
        return ""

    def value(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return ".".join(value(x) for x in v)
        if isinstance(v, Mapping):
            return ".".join(f"{k}{value(x)}" for k, x in sorted(v.items()))
        return str(v)

    tag = "_".join(f"{k}{value(v)}" for k, v in sorted(args.items()))
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", tag)
    if len(tag) <= limit:
        return tag
    digest = hashlib.sha256(json.dumps(plain_meta(args), sort_keys=True).encode()).hexdigest()
    return f"args{digest[:8]}"


def non_default_args(model: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model arguments that differ from the registered builder's defaults (all of them
    for an unknown builder): what an endpoint's default file name must carry."""
    import inspect

    from modeconn.models.registry import MODELS

    args = plain_meta(args or {})
    builder = MODELS.get(model)
    if builder is None:
        return args
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return args
    defaults = {
        k: plain_meta({"v": p.default})["v"]
        for k, p in params.items()
        if p.default is not inspect.Parameter.empty
    }
    return {k: v for k, v in args.items() if k not in defaults or defaults[k] != v}


def guard_result(path: Path, job: Mapping[str, Any], overwrite: bool) -> None:
    """Refuse to replace the finished result `path` (.npz + .json) of another job.

    `job` holds what distinguishes runs (grid, points, wd, the curve's fingerprint, ...); it
    is recorded in the result's metadata under "job" (`job_meta`). A result of the same job
    is recomputed and replaced as before; `overwrite=True` replaces any. A result that cannot
    be read (its .npz or .json truncated or garbage, or the .json missing) is no finished
    result: its files are set aside as `<name>.corrupt` (`read_or_set_aside`) with one
    warning naming them, and the run computes it again.
    """
    sidecar = Path(path).with_suffix(".json")
    if overwrite:
        return
    loaded = read_or_set_aside(path, "replacing a damaged finished result")
    if loaded is None:
        return
    stored = loaded[1].get("job")
    job = plain_meta(job)
    if stored == job:
        return
    if isinstance(stored, dict):
        keys = sorted(k for k in set(stored) | set(job) if stored.get(k) != job.get(k))
        why = f"of another configuration (differing: {', '.join(keys)})"
    else:
        why = "whose configuration is not recorded"
    raise ValueError(
        f"'{sidecar.with_suffix('.npz')}' holds a finished result {why}. Pass overwrite=true "
        "to replace it, or out=<directory> to keep both"
    )


def job_meta(result: Any, job: Mapping[str, Any]) -> Any:
    """Record `job` in a result's metadata (what `guard_result` compares); returns it."""
    result.meta["job"] = plain_meta(job)
    return result


def reported_score(task: str) -> str:
    """The test score an app's log line reports: the error of a classification task, the
    mse of a regression one."""
    return "error" if task == "classification" else "mse"


def finish(result: Any, job: Mapping[str, Any], path: Path, figure: Any = None, *line: Any) -> Any:
    """An app's ending: `result` saved as `path` (.npz + .json) with its `job` recorded
    (`job_meta`), its `figure` beside it (`path`.png and .pdf), one log line (`line`: a
    format and its arguments) and where the results are. Returns `result`."""
    job_meta(result, job).save(path)
    if figure is not None:
        save_figure(figure, path)
    if line:
        log.info(*line)
    log.info("results in %s", Path(path).parent)
    return result
