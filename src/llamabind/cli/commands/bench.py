"""``llamabind bench``: prompt processing and generation speed like llama-bench, plus Python overhead."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ...bench import BenchConfig, BenchResult, format_markdown, model_summary, run_bench
from ...core.backend import library_info
from ..common import UsageError, add_model_args, apply_loras, load_model


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="measure prompt processing and generation speed (like llama-bench)",
        description="Measure prompt processing (pp: a random prompt of N tokens decoded in n_batch "
        "chunks) and text generation (tg: N single-token decodes with greedy sampling) in tokens/s, "
        "and the Python overhead: 1 - llama.cpp's own decode time (its perf counters) / wall time. "
        "Lists such as -p 128,512 run one test per value; 0 skips a test kind.",
    )
    g = p.add_argument_group("tests")
    g.add_argument(
        "-p", "--n-prompt", type=_int_list, default=[512], metavar="N[,N…]", help="prompt sizes (default 512)"
    )
    g.add_argument(
        "-n",
        "--n-gen",
        type=_int_list,
        default=[128],
        metavar="N[,N…]",
        help="generation sizes (default 128)",
    )
    g.add_argument(
        "-r", "--repetitions", type=int, default=5, metavar="N", help="repetitions of each test (default 5)"
    )
    g.add_argument(
        "-t",
        "--threads",
        type=_int_list,
        default=None,
        metavar="N[,N…]",
        help="thread counts (default: all cores)",
    )
    g.add_argument(
        "-b", "--batch-size", type=int, default=2048, metavar="N", help="logical batch size (default 2048)"
    )
    g.add_argument(
        "-ub", "--ubatch-size", type=int, default=512, metavar="N", help="physical batch size (default 512)"
    )
    g.add_argument(
        "-fa", "--flash-attn", choices=["auto", "on", "off"], default="auto", help="flash attention"
    )
    g.add_argument(
        "-ctk", "--cache-type-k", default="f16", metavar="TYPE", help="KV cache type for K (default f16)"
    )
    g.add_argument(
        "-ctv", "--cache-type-v", default="f16", metavar="TYPE", help="KV cache type for V (default f16)"
    )
    g.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run of each test")
    g.add_argument("--seed", type=int, default=42, help="seed of the random prompts (default 42)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a markdown table")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        prompt_sizes=args.n_prompt,
        gen_sizes=args.n_gen,
        repetitions=args.repetitions,
        threads=args.threads or (),
        n_batch=args.batch_size,
        n_ubatch=args.ubatch_size,
        flash_attn=args.flash_attn,
        type_k=args.cache_type_k,
        type_v=args.cache_type_v,
        warmup=not args.no_warmup,
        seed=args.seed,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with load_model(args) as model:
        first = True

        def show(res: BenchResult) -> None:
            nonlocal first
            if not args.json:
                print(format_markdown(model, [res], header=first), flush=True)
                first = False

        results = run_bench(model, cfg, on_result=show, setup=lambda ctx: apply_loras(model, ctx))
        if args.json:
            doc = {
                "model": model_summary(model),
                "library": library_info(),
                "results": [r.to_dict() for r in results],
            }
            json.dump(doc, sys.stdout, indent=2)
            sys.stdout.write("\n")
    return 0
