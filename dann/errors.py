"""UserError (a mistake the user can fix: bad path, flag, download or file) and the one way
messages reach the user: `warn` and `note`, one line each on stderr, from the main process only.

The entry points print a UserError as one line, `error: <what>, <how to fix>`, with no
traceback, and exit 1; other processes of a multi-process run exit quietly.
"""
import errno
import os
import re
import sys
import warnings


class UserError(Exception):
    pass


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a launcher (torchrun, accelerate launch)."""
    return os.environ.get("RANK", "0") == "0"


ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")  # terminal colours, bold, cursor moves


def strip_escapes(text: str) -> str:
    """`text` without terminal escape sequences (torch's messages make words bold)."""
    return ESCAPES.sub("", text)


def one_line(text: str) -> str:
    """A message as one line: escapes removed, its lines joined (a library's message quoted in ours
    may run over several)."""
    return " ".join(part.strip() for part in strip_escapes(text).splitlines() if part.strip())


def _say(kind: str, message: str) -> None:
    if is_main_process():
        print(f"{kind}: {one_line(message)}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Something the user should fix or know is degraded; the run goes on."""
    _say("warning", message)


def note(message: str) -> None:
    """Something the program decided or is doing (a download, a choice made for this machine)."""
    _say("note", message)


REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EEXIST: "it is a file, not a folder",
           errno.ENOTDIR: "a part of the path is a file", errno.EACCES: "permission denied"}


def os_reason(error: Exception) -> str:
    """What a failed write means, in a few words: an OSError, or a library's own error wrapping one
    (safetensors raises SafetensorError '... No space left on device (os error 28)')."""
    if isinstance(error, OSError) and error.errno in REASONS:
        return REASONS[error.errno]
    for code, words in REASONS.items():
        if os.strerror(code) in str(error):
            return words
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {str(error).splitlines()[0]}" if str(error) else type(error).__name__


def unwritable(flag: str, path, error: OSError) -> str:
    """The one line for a folder that cannot be made or written: what the system said, and the fix."""
    return f"{flag} {path}: cannot write there ({os_reason(error)}); choose a writable folder"


def route_warnings() -> None:
    """Python warnings (PIL's, matplotlib's, a library's deprecations) as `warning:` lines, one
    each, instead of two raw lines naming a library's file and source line."""
    warnings.showwarning = lambda message, category, *where, **kw: warn(f"{category.__name__}: {message}")
