"""UserError (a mistake the user can fix: bad path, flag, download or file) and the one way
messages reach the user: `warn` and `note`, one line each on stderr, from the main process only.

The entry points print a UserError as one line, `error: <what>, <how to fix>`, with no
traceback, and exit 1; other processes of a multi-process run exit quietly.
"""
import errno
import os
import sys


class UserError(Exception):
    pass


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a launcher (torchrun, accelerate launch)."""
    return os.environ.get("RANK", "0") == "0"


def _say(kind: str, message: str) -> None:
    if is_main_process():
        print(f"{kind}: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Something the user should fix or know is degraded; the run goes on."""
    _say("warning", message)


def note(message: str) -> None:
    """Something the program decided or is doing (a download, a choice made for this machine)."""
    _say("note", message)


def os_reason(error: OSError) -> str:
    """What an OSError of a write means, in a few words."""
    return {errno.EEXIST: "it is a file, not a folder", errno.ENOTDIR: "a part of the path is a file",
            errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
            errno.EDQUOT: "the disk quota is exceeded"}.get(error.errno, error.strerror or str(error))


def unwritable(flag: str, path, error: OSError) -> str:
    """The one line for a folder that cannot be made or written: what the system said, and the fix."""
    return f"{flag} {path}: cannot write there ({os_reason(error)}); choose a writable folder"
