"""What the entry points run: parse flags, install the stop-signal handlers, train; turn a
UserError into one line and exit 1 (a SIGTERM/SIGINT stop into one line saying how to
resume, exit 128 + signal). Only the main process prints; the others exit quietly.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

from dann.config import parse_config
from dann.errors import UserError, is_main_process


def exit_with_parent() -> None:
    """Under `sweep.py run` (DANN_EXIT_WITH_PARENT=1): die with the process that started us,
    however it ends, so that a killed runner never leaves a run writing behind it (Linux)."""
    if os.environ.get("DANN_EXIT_WITH_PARENT") == "1" and sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def main(script: str, argv: list[str] | None = None) -> int:
    config = parse_config(script, argv)
    exit_with_parent()
    # Imported after parsing: --help and flag errors answer without loading torch.
    from dann.checkpoint import Interrupted, StopOnSignal
    from dann.run import run

    try:
        with StopOnSignal() as stop:
            run(config, stop)
    except Interrupted as e:  # SIGTERM / SIGINT: checkpointed, says how to resume
        if is_main_process():
            print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except UserError as e:
        if is_main_process():
            print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
