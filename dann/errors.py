"""UserError: a mistake the user can fix (bad path, missing download, broken file), and warn().

The entry points print a UserError as one line, `error: <what>, <how to fix>`, with no
traceback; warn() prints `warning: <what>` as one line and the run goes on.
"""
import sys


class UserError(Exception):
    pass


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
