"""Stopping a run on request: SIGTERM (Slurm, `kill`) and SIGINT (Ctrl-C) become a flag the loop
checks (`StopOnSignal`, installed by the scripts, never by `fit`); `StopRequested` is raised when
the flag is seen in the middle of an evaluation or a score, `Interrupted` once a checkpoint is
saved (the scripts print it and exit 128 + signal). And the other way round: a child process
that must not outlive its parent (`die_with_parent`).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Get `signum` when the parent process ends, however it ends (Linux; elsewhere a no-op).
    parent: its pid, when known; if it has ended already (before this call), the signal comes now."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # 1 = PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent:
            os.kill(os.getpid(), signum)


class StopRequested(Exception):
    """A stop signal arrived during an evaluation or an end-of-run score: the caller checkpoints
    or skips what is left."""


def stop_requested(stop, accelerator) -> bool:
    """Whether `stop` (a StopOnSignal, or None) holds a signal, in a one-process run. Several
    processes would part ways if each stopped on its own: they agree at the loop's checks instead."""
    return stop is not None and stop.signum is not None and accelerator.num_processes == 1


class Interrupted(Exception):
    """Training stopped on SIGTERM / SIGINT after saving a checkpoint; `exit_code` is 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopOnSignal:
    """Within `with`, SIGTERM and SIGINT set `.signum` instead of killing the process, so the
    loop can finish its step and checkpoint. A second Ctrl-C interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is None and os.environ.get("RANK", "0") == "0":  # said once, by the main process
            again = "; Ctrl-C again stops at once, without one" if signum == signal.SIGINT else ""
            # os.write: unbuffered, safe whatever the main thread was writing when the signal came
            os.write(2, f"note: {signal.Signals(signum).name}: stopping with a checkpoint{again}\n".encode())
        self.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # handlers: main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
