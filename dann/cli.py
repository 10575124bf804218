"""What the entry points run: parse flags, train, turn a UserError into one line and exit 1
(a SIGTERM/SIGINT stop into one line saying how to resume, exit 128 + signal)."""
from __future__ import annotations

import sys

from dann.config import parse_config
from dann.errors import UserError


def main(method: str, argv: list[str] | None = None) -> int:
    config = parse_config(method, argv)
    from dann.checkpoint import Interrupted  # after parsing: --help and flag errors answer without torch
    from dann.train import run

    try:
        run(config, method)
    except Interrupted as e:  # SIGTERM / SIGINT: checkpointed, says how to resume
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
