"""``llamabind`` entry point: discovers subcommands in ``llamabind.cli.commands``.

Exit codes: 0 ok, 1 runtime error (one-line message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

#: command name -> the module of ``llamabind.cli.commands`` that registers it. Only the chosen
#: command's module is imported (start-up stays cheap); ``--help`` or an unknown command imports all.
COMMANDS: dict[str, str] = {
    "bench": "bench",
    "chat": "chat",
    "complete": "complete",
    "embed": "embed",
    "incremental-chat": "incremental_chat",
    "info": "info",
    "merge": "split",
    "models": "models",
    "mtmd": "mtmd",
    "quantize": "quantize",
    "rpc-server": "rpc_server",
    "serve": "serve",
    "speculative": "speculative",
    "split": "split",
    "tokenize": "tokenize",
    "turbo-quant": "turbo_quant",
}


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    """The command modules the parser needs: the named command's, none for a bare ``--version``, all
    for help, no command or an unknown one (so that the message lists them)."""
    everything = sorted(set(COMMANDS.values()))
    if argv is None:
        return everything
    for arg in argv:
        if arg in ("-h", "--help"):
            return everything
        if arg == "--version":
            return []
        if not arg.startswith("-"):
            return [COMMANDS[arg]] if arg in COMMANDS else everything
    return everything


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a command, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="llamabind",
        description="Run GGUF language models locally through llama.cpp.",
    )
    parser.add_argument("--version", action="version", version=f"llamabind {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(argv):
        importlib.import_module(f"{__package__}.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from ..errors import LlamabindError
    from .common import UsageError

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
