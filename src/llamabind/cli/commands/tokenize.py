"""``llamabind tokenize``: show how a text is split into tokens."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..common import UsageError, add_model_args, load_model


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tokenize",
        help="split text into tokens",
        description="Tokenize TEXT (or stdin) with the model's vocabulary.",
    )
    p.add_argument("text", nargs="?", help="text to tokenize (default: stdin)")
    p.add_argument("--no-bos", action="store_true", help="do not add BOS/special tokens")
    p.add_argument("--parse-special", action="store_true", help="turn special-token text into special tokens")
    p.add_argument("--ids", action="store_true", help="print only the ids")
    p.add_argument("--json", action="store_true", help="print JSON [{id, piece}]")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = args.text if args.text is not None else (sys.stdin.read() if not sys.stdin.isatty() else None)
    if text is None:
        raise UsageError("no text: pass TEXT or pipe it on stdin")
    with load_model(args, vocab_only=True) as m:
        ids = m.tokenize(text, add_special=not args.no_bos, parse_special=args.parse_special)
        pieces = [m.vocab.token_to_piece(t).decode("utf-8", "replace") for t in ids]
    if args.json:
        print(
            json.dumps([{"id": i, "piece": p} for i, p in zip(ids, pieces, strict=True)], ensure_ascii=False)
        )
    elif args.ids:
        print(" ".join(str(i) for i in ids))
    else:
        for i, piece in zip(ids, pieces, strict=True):
            print(f"{i:>8} -> {piece!r}")
        print(f"{len(ids)} tokens")
    return 0
