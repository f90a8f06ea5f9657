"""The checks of what is typed on a command line, before Hydra runs an app, and where the
shipped configs are.

Two mistakes that Hydra reports with a traceback or lets through: an option the app does not
have (Hydra's struct error for `point=3` advises `+point=3`, which it then accepts and the app
ignores or trips over), and an output directory that cannot be created (a read-only working
directory). Each becomes one line with the fix. `modeconn <app>` and `python -m
modeconn.apps.X` (and torchrun, `run_module`) run these checks first, and `run_app` repeats
the option check inside every app for callers of its Hydra `main`.

Known options are those of the app's config composed from the shipped conf/ with the
command's group choices (`model=mlp`, `hydra/launcher=...`) but none of its keys. Levels named
`args` (`model.args`, `curve.args`) hold a model's or curve's keyword arguments and take any
key; every other level is fixed.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import os
import sys
from pathlib import Path

FREE = "args"  # a level of keyword arguments: any key is valid there


def _config_dir() -> str:
    """The directory of the package modeconn.conf: conf/ as a wheel installs it, or the
    checkout's conf/ that an editable install maps; a bare checkout on PYTHONPATH (no install)
    falls back to its conf/."""
    try:
        spec = importlib.util.find_spec("modeconn.conf")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")


CONFIG_PATH = _config_dir()


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def run_module(name: str, main_fn) -> None:
    """`python -m modeconn.apps.<name> ...` (and torchrun -m): the same checks of the command
    line as `modeconn <name>`, then the app's Hydra `main`."""
    try:
        check_command_line(name, sys.argv[1:])
    except ValueError as err:
        raise SystemExit(f"modeconn: error: {err}") from None
    main_fn()


def check_command_line(app: str, argv: list[str]) -> None:
    """Raise ValueError (one line) if `argv`, an app's command line, names an option the app
    does not have, or Hydra could not create the run's output directory. Anything else that
    is wrong is left to Hydra, which reports it on its own."""
    args = _hydra_args(argv)
    if args is None or args.help or args.hydra_help or args.info:
        return
    if args.shell_completion or args.config_path or args.config_dir or args.experimental_rerun:
        return
    groups = _shipped_groups()
    config = _compose(args.config_name or app, args.overrides, groups)
    if config is None:
        return
    _check_keys(config, args.overrides, groups)
    if not args.cfg:  # --cfg prints the config and runs nothing
        mode = str(config.hydra.mode) if config.hydra.get("mode") is not None else ""
        _check_output_dir(config, multirun=args.multirun or mode.endswith("MULTIRUN"))


def check_options(cfg) -> None:
    """Inside a running Hydra app: raise ValueError if an override added an option the app
    does not have (`+point=3`, `++optim.epoch=3`). Does nothing outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    # the groups of this run, with any of a --config-dir
    groups = _shipped_groups() | {key.split("@")[0] for key in hydra_cfg.runtime.choices}
    config = _compose(hydra_cfg.job.config_name, overrides, groups)
    if config is not None:
        _check_keys(config, overrides, groups)


def _hydra_args(argv: list[str]):
    """Hydra's own reading of the command line; None where it fails (Hydra says why)."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return get_args_parser().parse_args(argv)
    except SystemExit:
        return None


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def _shipped_groups() -> set[str]:
    """The config groups of conf/: its directories (`model`, `hydra/launcher`)."""
    root = Path(CONFIG_PATH)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def _is_group(override, groups: set[str]) -> bool:
    """A group choice (`model=mlp`) or a hydra setting, not an option of the app."""
    return override.is_hydra_override() or override.key_or_group in groups


def _compose(config_name: str, overrides: list[str], groups: set[str]):
    """The app's config (with the hydra node) under the group choices and hydra settings of
    `overrides`, none of their keys; None where Hydra cannot compose it (it will say why)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        parsed = _parse(overrides)
        choices = [
            o.input_line for o in parsed if _is_group(o, groups) and not o.is_sweep_override()
        ]
        if GlobalHydra.instance().is_initialized():  # inside a running app
            return compose(config_name, overrides=choices, return_hydra_config=True)
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return compose(config_name, overrides=choices, return_hydra_config=True)
    except Exception:
        return None


def _check_keys(config, overrides: list[str], groups: set[str]) -> None:
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(config, resolve=False)
    tree.pop("hydra", None)
    for override in _parse(overrides):
        if not _is_group(override, groups):
            problem = unknown_option(tree, override.key_or_group, config.hydra.job.config_name)
            if problem:
                raise ValueError(problem)


def unknown_option(tree: dict, key: str, app: str) -> str | None:
    """Why the dotted `key` is no option of the config `tree` (plain dicts), or None if it is.

    >>> unknown_option({"points": 61, "optim": {"epochs": 20}}, "point", "evaluate")
    "unknown option 'point' (did you mean 'points'?)"
    """
    node, path = tree, []
    for part in key.split("."):
        if not isinstance(node, dict) or (path and path[-1] == FREE):
            return None  # a list, a value or a level of keyword arguments: Hydra checks it
        if part not in node:
            full = ".".join([*path, part])
            close = difflib.get_close_matches(part, list(node), n=1)
            if close:
                return f"unknown option '{full}' (did you mean '{'.'.join([*path, close[0]])}'?)"
            level = ".".join(path) or app
            return f"unknown option '{full}'; the options of {level} are: {', '.join(node)}"
        node, path = node[part], [*path, part]
    return None


def _check_output_dir(config, multirun: bool) -> None:
    """Raise ValueError if Hydra could not create the run's (or sweep's) output directory."""
    from omegaconf import OmegaConf

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        where = Path(str(OmegaConf.select(config, key)))
        first = where.absolute()
        while not first.exists() and first != first.parent:
            first = first.parent  # the part of the path that exists already
        if first.is_dir() and os.access(first, os.W_OK | os.X_OK):
            return
    except Exception:
        return  # an interpolation only Hydra resolves, or an unreadable path: Hydra reports
    why = "is not writable" if first.is_dir() else "is not a directory"
    raise ValueError(
        f"Hydra cannot create the output directory '{where}' for this run's config and log: "
        f"'{first}' {why}; run from a writable directory or move it with {key}=/writable/dir"
    )
