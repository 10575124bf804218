"""What the entry points run: parse flags, train, turn a UserError into one line and exit 1."""
from __future__ import annotations

import sys

from dann.config import parse_config
from dann.errors import UserError


def main(method: str, argv: list[str] | None = None) -> int:
    config = parse_config(method, argv)
    from dann.train import run  # after parsing: --help and flag errors answer without torch

    try:
        run(config, method)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
