"""Interactive choice on a TTY (used when several Hub files match)."""

from __future__ import annotations

import sys

__all__ = ["pick"]


def pick(options: list[str]) -> str:
    print("Several files match; choose one:", file=sys.stderr)
    for i, opt in enumerate(options, 1):
        print(f"  {i}) {opt}", file=sys.stderr)
    while True:
        print(f"[1-{len(options)}] (default 1): ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip():
            return options[0]
        if line.strip().isdigit() and 1 <= int(line) <= len(options):
            return options[int(line) - 1]
