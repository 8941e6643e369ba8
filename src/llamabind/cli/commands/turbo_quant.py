"""``llamabind turbo-quant``: quantized KV cache with and without attention rotation vs F16 KV."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ...core.types import ggml_types
from ...kvcache import KV_CACHE_TYPES, compare_generation, compare_perplexity, format_bytes, kv_type_report
from ..common import UsageError, add_model_args, load_model, positive_int

DEFAULT_PROMPT = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who told "
    "stories to the children every evening. One of his favourite stories was about"
)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "turbo-quant",
        help="compare quantized KV cache (rotation on/off) with F16 KV",
        description="Generate greedily with F16 KV, then with --kv-type KV with attention rotation "
        "on and off; print the KV cache size of each type and where each output diverges from "
        "F16. --ppl-file also measures perplexity on a text file.",
    )
    p.add_argument(
        "--kv-type",
        action="append",
        default=None,
        metavar="TYPE",
        help=f"quantized KV type to test; repeatable (default q5_0; any of {', '.join(KV_CACHE_TYPES)})",
    )
    p.add_argument("-p", "--prompt", default=DEFAULT_PROMPT, help="prompt to continue")
    p.add_argument("-n", "--n-predict", type=positive_int, default=32, metavar="N", help="tokens to generate")
    p.add_argument(
        "-c",
        "--ctx-size",
        type=positive_int,
        default=32768,
        metavar="N",
        help="context size for the KV size report",
    )
    p.add_argument("--ppl-file", metavar="FILE", default=None, help="also compare perplexity on this text")
    p.add_argument("--ppl-chunk", type=positive_int, default=512, metavar="N", help="perplexity chunk size")
    p.add_argument("-t", "--threads", type=positive_int, default=None, metavar="N", help="threads")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    types = [t.lower() for t in (args.kv_type or ["q5_0"])]
    known = ggml_types()
    for t in types:
        if t not in KV_CACHE_TYPES:
            hint = "" if t in known else " (not a ggml type)"
            raise UsageError(f"--kv-type {t!r}{hint}: choose from {', '.join(KV_CACHE_TYPES)}")
    ppl_text = None
    if args.ppl_file:
        path = Path(args.ppl_file)
        if not path.is_file():
            raise UsageError(f"--ppl-file {path}: no such file")
        ppl_text = path.read_text(encoding="utf-8")
    with load_model(args) as model:
        sizes = kv_type_report(model, ["f16", *[t for t in types if t != "f16"]])
        comparison = compare_generation(
            model, args.prompt, kv_types=types, n_predict=args.n_predict, n_threads=args.threads
        )
        ppl_rows = (
            compare_perplexity(
                model, ppl_text, kv_types=types, chunk_size=args.ppl_chunk, n_threads=args.threads
            )
            if ppl_text is not None
            else []
        )
        name = model.name
    n_ctx = args.ctx_size
    if args.json:
        print(
            json.dumps(
                {
                    "model": name,
                    "n_ctx": n_ctx,
                    "kv_sizes": [
                        {
                            "type": r.type_k,
                            "bits_per_element": r.bits_per_element,
                            "bytes_per_token": r.bytes_per_token,
                            "bytes_at_n_ctx": r.bytes_at(n_ctx),
                        }
                        for r in sizes
                    ],
                    "reference": {"type": "f16", "text": comparison.reference.text},
                    "runs": [
                        {
                            "type": r.type_k,
                            "rotation": r.rotation,
                            "diverges_at": r.diverges_at,
                            "text": r.text,
                        }
                        for r in comparison.runs
                    ],
                    "perplexity": [
                        {"type": r.type_k, "rotation": r.rotation, "ppl": r.ppl, "delta": r.delta_ppl}
                        for r in ppl_rows
                    ],
                },
                ensure_ascii=False,
            )
        )
        return 0
    f16 = sizes[0].bytes_at(n_ctx)
    print(f"KV cache of {name} at {n_ctx} tokens:")
    for r in sizes:
        print(
            f"  {r.type_k:<7} {r.bits_per_element:6.3f} bits/elem  {r.bytes_per_token:>7} B/token  "
            f"{format_bytes(r.bytes_at(n_ctx)):>11}  ({r.bytes_at(n_ctx) / f16:5.1%} of f16)"
        )
    n = len(comparison.reference.tokens)
    print(f"\nF16 KV, {n} tokens: {comparison.reference.text!r}")
    for run_ in comparison.runs:
        where = (
            "identical to F16"
            if run_.diverges_at is None
            else f"diverges from F16 at token {run_.diverges_at}"
        )
        print(f"{run_.label:<18} {where}: {run_.text!r}")
    if ppl_rows:
        print(f"\nperplexity on {args.ppl_file}:")
        for row in ppl_rows:
            rot = "on" if row.rotation else "off"
            print(f"  {row.type_k:<7} rot={rot:<3} ppl {row.ppl:9.4f}  ({row.delta_ppl:+.4f})")
    return 0
