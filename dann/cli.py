"""What the entry points run: parse flags, train; turn a UserError into one line and exit 1
(a SIGTERM/SIGINT stop into one line saying how to resume, exit 128 + signal). Only the
main process prints; the others exit quietly. The stop-signal handlers are installed by
`script_main` (the scripts) only: `main` called from Python (a test) leaves signals alone.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

from dann.config import parse_config
from dann.errors import UserError, is_main_process, one_line, route_warnings
from dann.signals import die_with_parent


def exit_with_parent() -> None:
    """Under the sweep runner (DANN_EXIT_WITH_PARENT=1): stop with the process that started us
    (a launcher), so that a killed runner never leaves a run writing behind it."""
    if os.environ.get("DANN_EXIT_WITH_PARENT") == "1":
        die_with_parent()


def glibc() -> ctypes.CDLL | None:
    """glibc, for its allocator's settings (mallopt, malloc_trim); None elsewhere (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # AttributeError where they are missing (musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def return_freed_memory() -> None:
    """Blocks of 8 MB and up (a batch of PACS images, AlexNet's activations) each in a mapping
    of its own, handed back to the system when freed (glibc; elsewhere a no-op). glibc's
    default raises that threshold to the largest block freed so far and then keeps freed
    batches in a heap that small live objects pin: a CPU run on the real PACS peaked at 3.3 GB
    instead of 2.5. Smaller blocks stay in the heap (at 1 MB, the digits first look ran 45% slower)."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(-3, 8 << 20)  # -3 = M_MMAP_THRESHOLD


def script_main(script: str) -> int:
    """train_dann.py / train_baseline.py: main() with SIGTERM/SIGINT turned into a checkpointed stop."""
    exit_with_parent()
    return_freed_memory()
    route_warnings()
    config = parse_config(script)  # first: --help and flag errors answer without loading torch
    from dann.signals import StopOnSignal

    with StopOnSignal() as stop:
        try:
            return main(script, stop=stop, config=config)
        except KeyboardInterrupt:  # a second Ctrl-C (StopOnSignal turned the first into a checkpointed stop)
            if is_main_process():
                print("stopped: SIGINT again: stopped at once, without a checkpoint; an earlier checkpoint, if any, "
                      "continues with --resume auto", file=sys.stderr)
            return 128 + signal.SIGINT


def main(script: str, argv: list[str] | None = None, stop=None, config=None) -> int:
    """stop: an object whose `signum` is set when the run should stop (see dann.train.fit);
    config: the parsed flags (default: parsed from argv)."""
    config = config or parse_config(script, argv)
    # Imported after parsing: --help and flag errors answer without loading torch.
    from dann.signals import Interrupted
    from dann.run import run

    try:
        if config.first_look:
            from dann.run import first_look

            first_look(config, stop)
        else:
            run(config, stop)
    except Interrupted as e:  # SIGTERM / SIGINT: checkpointed, says how to resume
        if is_main_process():
            print(f"stopped: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except UserError as e:
        if is_main_process():
            print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 1
    return 0
