"""Ctrl-C and SIGTERM: long jobs save what is finished, then stop with one line.

SLURM sends SIGTERM before it kills or preempts a job, a user presses Ctrl-C (SIGINT). A long
job wraps its loop in `save_on_interrupt(save)`: on either signal `save()` writes what is
finished and says what it wrote, and `Interrupted` (a KeyboardInterrupt, so Python callers
can still catch it as one) carries the line to print and the exit status the shell expects
(130 for SIGINT, 143 for SIGTERM). The apps turn SIGTERM into that exception only while they
run (`signals_as_interrupts`), and print the line without a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


class Interrupted(KeyboardInterrupt):
    """A job stopped by SIGINT or SIGTERM; str() is the one line to show the user."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.message, self.signum = message, int(signum)

    def __str__(self) -> str:
        return self.message

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
        return 128 + self.signum


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the job was when it arrived (see `signals_as_interrupts`)."""

    signum = signal.SIGTERM


def signal_of(err: BaseException) -> int:
    """The signal behind a KeyboardInterrupt: SIGTERM for `Terminated`, else SIGINT."""
    return int(getattr(err, "signum", signal.SIGINT))


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread, as SIGINT raises
    KeyboardInterrupt, so both reach the jobs' save-and-stop path. The previous handler is
    restored on exit. Outside the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):  # noqa: ARG001
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def save_on_interrupt(save: Callable[[], str]) -> Iterator[None]:
    """On KeyboardInterrupt (SIGINT, or SIGTERM as `Terminated`) inside the block, call
    `save()`, which writes what is finished and returns what it wrote and how to go on (e.g.
    "64 of 169 points saved in out/plane-partial.npz; rerun the same command to resume"),
    and raise `Interrupted` with the line "interrupted: <that>". Further signals are ignored
    while it saves, so the file is never left half written."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as err:
        signum = signal_of(err)
        with _deferred_signals():
            what = save()
        raise Interrupted(f"interrupted: {what}", signum) from None


def interrupted_exit(err: KeyboardInterrupt) -> SystemExit:
    """The exit of an app stopped by a signal: its one line on stderr, status 130 / 143."""
    import sys

    line = str(err) if isinstance(err, Interrupted) else "interrupted; nothing was saved"
    print(f"modeconn: {line}", file=sys.stderr, flush=True)
    return SystemExit(128 + signal_of(err))


def epoch_saved(where: str, checkpoint, last: int) -> str:
    """What an interrupted training run says: where it was, and the last epoch on disk."""
    if checkpoint is None:
        return f"{where}; no checkpoint path was given, so nothing was saved"
    if not last:
        return f"{where}, before any epoch finished: nothing to save; rerun to start again"
    return f"{where}: epoch {last} saved in '{checkpoint}'; rerun the same command to resume"


def grid_saved(job) -> str:
    """Save a `PartialGrid` and say so: "64 of 169 points saved in <file>; rerun ..."."""
    job.save()
    return (
        f"{int(job.done.sum())} of {job.done.size} points saved in '{job.path}.npz'; rerun the "
        "same command to resume"
    )


@contextlib.contextmanager
def _deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM ignored during the block: the job is stopping already, and a second
    Ctrl-C must not cut its last save short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
