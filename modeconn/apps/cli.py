"""The command line: `modeconn <app> [overrides]`, and the checks of what is typed.

`modeconn train seed=1` runs the Hydra app `modeconn.apps.train` as
`python -m modeconn.apps.train seed=1` does (overrides, `-m` multirun, launchers, `--help`):
the sub-command is taken off `sys.argv` and the app module's `main` is called.

Before that, the command line is checked (`modeconn.apps.checks`): an option the app does
not have, or an output directory that cannot be created, is one line with the fix.
"""

from __future__ import annotations

import importlib
import sys

from modeconn.apps.checks import check_command_line, did_you_mean, run_module  # noqa: F401

APPS = {
    "train": "train an endpoint network       (dataset=digits seed=1)",
    "connect": "train a curve between endpoints (start=a.pt end=b.pt curve=bezier)",
    "evaluate": "loss and error along the curve  (curve_ckpt=c.pt points=61)",
    "plane": "loss and error on the plane     (curve_ckpt=c.pt, or points=[a.pt,b.pt,c.pt])",
    "ensemble": "ensembles of w1 with phi(t)     (curve_ckpt=c.pt points=21)",
    "fge": "fast geometric ensembling       (start=a.pt cycles=4 cycle=2)",
    "align": "align end's units to start's    (start=a.pt end=b.pt method=weight|activation)",
    "simplex": "a simplex or complex of networks (start=a.pt, or networks=[a.pt,b.pt,c.pt])",
    "stability": "instability vs spawn step k     (spawn=[0,0.01,0.1,1.0] pairs=2)",
    "landscape": "the loss surface around a network (ckpt=a.pt directions=filter grid=51)",
    "curvature": "Hessian extremes, trace, spectrum (ckpt=a.pt where=point|path|surface)",
    "critique": "four direction families x three networks: can we trust the pictures?",
    "similarity": "SVCCA/PWCCA/CKA of layers       (analysis=pair|curve|training|classes)",
    "trajectory": "training paths on PCA planes, animated (net=100x1; gallery=DIR)",
    "demo": "the whole chain on the embedded digits data",
}


def usage() -> str:
    rows = "\n".join(f"  {name:9s} {text}" for name, text in APPS.items())
    return (
        "usage: modeconn <command> [key=value ...] [-m] [--help]\n\n"
        "Each command is a Hydra app on the configs shipped with modeconn: key=value overrides,\n"
        "group choices (model=mlp), -m for a sweep (seed=1,2). `modeconn <command> --help` shows\n"
        "its options; `modeconn <command> --cfg job` prints its config.\n\n"
        f"commands:\n{rows}"
    )


def main(argv: list[str] | None = None) -> None:
    """The `modeconn` console script: `modeconn <command> [overrides]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in APPS:
        raise SystemExit(
            f"modeconn: error: unknown command '{name}'{did_you_mean(name, APPS)}; "
            f"the commands are: {', '.join(APPS)} (modeconn --help describes them)"
        )
    try:
        check_command_line(name, rest)
    except ValueError as err:
        raise SystemExit(f"modeconn: error: {err}") from None
    app = importlib.import_module(f"modeconn.apps.{name}")
    sys.argv = [sys.argv[0], *rest]  # what the app's Hydra parses
    app.main()
