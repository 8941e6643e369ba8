"""``llamabind split`` / ``llamabind merge``: GGUF shards compatible with llama.cpp's gguf-split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ...gguf_tools import merge_gguf, split_gguf
from ..common import UsageError, positive_int


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "split",
        help="split a GGUF model into shards",
        description="Write INPUT as shards OUT_PREFIX-00001-of-0000N.gguf (llama.cpp's naming); load them "
        "by passing the first shard to -m. Split by tensor count or by size.",
    )
    p.add_argument("input", help="GGUF model to split")
    p.add_argument("out_prefix", help="output prefix (shards get -0000i-of-0000N.gguf)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--max-tensors", type=positive_int, metavar="N", help="at most N tensors per shard")
    g.add_argument(
        "--max-size", metavar="SIZE", help="at most SIZE bytes of tensor data per shard (e.g. 500M, 2G)"
    )
    p.add_argument("--metadata-only-first", action="store_true", help="first shard holds only metadata")
    p.add_argument("--json", action="store_true", help="print the shard paths as JSON")
    p.set_defaults(func=run_split)

    m: argparse.ArgumentParser = sub.add_parser(
        "merge",
        help="merge GGUF shards into one file",
        description="Merge a split model (give the first shard, or every shard in order) into OUTPUT.",
    )
    m.add_argument("shards", nargs="+", help="first shard (others found by name) or all shards in order")
    m.add_argument("-o", "--output", required=True, help="merged GGUF file to write")
    m.set_defaults(func=run_merge)


def run_split(args: argparse.Namespace) -> int:
    src = Path(args.input)
    if not src.is_file():
        raise UsageError(f"input model not found: {src}")
    try:
        paths = split_gguf(
            src,
            args.out_prefix,
            max_tensors=args.max_tensors,
            max_size=args.max_size,
            metadata_only_first=args.metadata_only_first,
            progress=not args.json,
        )
    except ValueError as exc:
        if "size" in str(exc).lower():
            raise UsageError(str(exc)) from None
        raise
    if args.json:
        print(json.dumps([str(p) for p in paths]))
    else:
        for p in paths:
            print(p)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    first = [Path(s) for s in args.shards]
    for p in first:
        if not p.is_file():
            raise UsageError(f"shard not found: {p}")
    out = merge_gguf(first[0] if len(first) == 1 else first, args.output, progress=True)
    print(out)
    return 0
