"""``llamabind`` entry point: discovers subcommands in ``llamabind.cli.commands``.

Exit codes: 0 ok, 1 runtime error (one-line message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import LlamabindError
from . import commands
from .common import UsageError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamabind",
        description="Run GGUF language models locally through llama.cpp.",
    )
    parser.add_argument("--version", action="version", version=f"llamabind {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not verbose:
        logging.getLogger("llamabind.native").setLevel(logging.CRITICAL)
    try:
        rc = args.func(args)
    except UsageError as exc:
        print(f"llamabind {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (LlamabindError, OSError, ValueError) as exc:
        print(f"llamabind {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line unless -v asks for the traceback
        if verbose:
            raise
        print(
            f"llamabind {args.command}: internal error: {type(exc).__name__}: {exc} (-v for details)",
            file=sys.stderr,
        )
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
