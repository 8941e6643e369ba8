"""KV-cache quality benchmark: perplexity with F16 KV vs each quantized KV type, rotation on and off.

    .venv/bin/python benchmarks/kv_quality.py [--model PATH] [--threads N] [--out FILE]

The text is ``tests/data/alice_ch1.txt``: the opening of Chapter I of Lewis Carroll's *Alice's
Adventures in Wonderland* (1865, public domain; Project Gutenberg eBook #11). Perplexity is
computed in chunks of ``--chunk`` tokens, each scored on its second half (llama.cpp's scheme), so
every scored token sees at least ``chunk/2`` tokens of cached keys and values. Prints a markdown
table (and writes it to ``--out``) with the KV bytes per token and at 32K context from ggml's
row sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests" / "data" / "alice_ch1.txt"


def main(argv: list[str] | None = None) -> int:
    import llamabind as lb
    from llamabind.core.params import default_threads
    from llamabind.kvcache import compare_perplexity, format_bytes, kv_type_report

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default=None, help="GGUF model (default: the embedded SmolLM2-135M-Instruct Q4_1)"
    )
    ap.add_argument("--text", default=str(TEXT), help="text file (default: the Alice fixture)")
    ap.add_argument("--chunk", type=int, default=512, help="perplexity chunk size in tokens (default 512)")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all usable cores)")
    ap.add_argument(
        "--types",
        default="q8_0,q5_1,q5_0,q4_1,q4_0,iq4_nl",
        help="quantized KV types, comma-separated (default: all of llama.cpp's)",
    )
    ap.add_argument("--n-ctx-report", type=int, default=32768, help="context size for the memory column")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    ap.add_argument("--json", default=None, help="also write the raw numbers to this JSON file")
    args = ap.parse_args(argv)
    logging.getLogger("llamabind.native").setLevel(logging.CRITICAL)

    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    text = Path(args.text).read_text(encoding="utf-8")
    threads = args.threads or default_threads()
    path = args.model or lb.default_model_path()
    t0 = time.perf_counter()
    with lb.Model(path) as model:
        n_tokens = len(model.tokenize(text, add_special=False))
        report = {r.type_k: r for r in kv_type_report(model, ["f16", "bf16", *types])}
        rows = compare_perplexity(
            model,
            text,
            kv_types=["bf16", *types],
            rotations=(True, False),
            chunk_size=args.chunk,
            n_threads=threads,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
        name, ftype = model.name, model.ftype
    elapsed = time.perf_counter() - t0
    n_ctx = args.n_ctx_report
    k = n_ctx // 1024
    f16_bytes = report["f16"].bytes_at(n_ctx)
    lines = [
        f"KV-cache quality: {name} ({ftype}), perplexity on {Path(args.text).name} "
        f"({n_tokens} tokens, {rows[0].result.n_chunks} chunks of {args.chunk}, "
        f"{rows[0].result.n_scored} scored), flash attention auto, {threads} thread(s).",
        "",
        f"| KV type (K and V) | rotation | perplexity | Δ vs F16 | bits/element | KV bytes/token | KV at {k}K ctx | vs F16 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    seen_unrotated: set[str] = set()
    for row in rows:
        r = report[row.type_k]
        if not r.rotated:
            # rotation only applies to quantized types: on and off are the same run twice
            if row.type_k in seen_unrotated:
                continue
            seen_unrotated.add(row.type_k)
            rot = "n/a"
        else:
            rot = "on" if row.rotation else "off"
        delta = "—" if row.type_k == "f16" else f"{row.delta_ppl:+.4f}"
        lines.append(
            f"| {row.type_k} | {rot} | {row.ppl:.4f} | {delta} | {r.bits_per_element:.2f} | "
            f"{r.bytes_per_token:,} | {format_bytes(r.bytes_at(n_ctx))} | {r.bytes_at(n_ctx) / f16_bytes:.1%} |"
        )
    lines += ["", f"({elapsed:.0f} s on {platform.machine()}, llamabind {lb.__version__})"]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "type": row.type_k,
                        "rotation": row.rotation,
                        "ppl": row.ppl,
                        "delta_ppl": row.delta_ppl,
                        "bytes_per_token": row.bytes_per_token,
                        f"bytes_at_{n_ctx}": report[row.type_k].bytes_at(n_ctx),
                        "chunk_ppl": row.result.chunk_ppl,
                    }
                    for row in rows
                ],
                indent=1,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
