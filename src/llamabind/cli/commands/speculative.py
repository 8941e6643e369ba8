"""``llamabind speculative``: the same completion without and with speculative decoding, and the speedup."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ...chat import ChatFormatter
from ...core import Context, Model
from ...speculative import make_drafter
from ...speculative.runner import Comparison, compare
from ..common import (
    UsageError,
    add_context_args,
    add_model_args,
    add_sampling_args,
    apply_loras,
    context_params,
    load_model,
    nonneg_int,
    positive_int,
    sampling_params,
)
from .complete import read_prompt


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "speculative",
        help="compare plain and speculative decoding (draft model, n-gram lookup or MTP)",
        description="Generate the same completion twice — plain, then with a drafter whose proposals "
        "the target verifies in one batch — and print both runs, the acceptance rate and the speedup. "
        "Greedy by default (--temp 0): both texts must then be identical.",
    )
    how = p.add_argument_group("drafter (choose one)").add_mutually_exclusive_group(required=True)
    how.add_argument("--draft", metavar="MODEL", help="draft model GGUF (same tokenizer as the target)")
    how.add_argument("--ngram", action="store_true", help="n-gram / prompt-lookup drafting (no second model)")
    how.add_argument("--mtp", action="store_true", help="the target's own MTP (next-n) layers")
    g = p.add_argument_group("speculation")
    g.add_argument(
        "--n-draft",
        type=positive_int,
        default=None,
        metavar="N",
        help="most tokens drafted per round (default: 8; MTP: 3)",
    )
    g.add_argument(
        "--p-min",
        type=float,
        default=0.0,
        metavar="P",
        help="draft model / MTP: stop a draft at a token less probable than P (default 0)",
    )
    g.add_argument("--n-min", type=nonneg_int, default=0, metavar="N", help="MTP: drop drafts shorter than N")
    g.add_argument("--ngram-min", type=positive_int, default=2, metavar="N", help="shortest n-gram to match")
    g.add_argument("--ngram-max", type=positive_int, default=4, metavar="N", help="longest n-gram to match")
    g.add_argument("--draft-ngl", type=int, default=None, metavar="N", help="GPU layers for the draft model")
    src = p.add_argument_group("prompt")
    src.add_argument("-p", "--prompt", help="the prompt text")
    src.add_argument("-f", "--file", metavar="FILE", help="read the prompt from FILE ('-' for stdin)")
    src.add_argument("--chat", action="store_true", help="send the prompt as a user message (chat template)")
    p.add_argument(
        "-n", "--n-predict", type=positive_int, default=128, metavar="N", help="tokens to generate"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_args(p)
    add_context_args(p)
    add_sampling_args(p, temp=0.0)
    p.set_defaults(func=run)


def _prompt(model: Model, args: argparse.Namespace, text: str) -> str | list[int]:
    if not args.chat:
        return text
    return ChatFormatter.for_model(model).prepare([{"role": "user", "content": text}]).tokens


def _report(c: Comparison, kind: str, n_draft: int) -> dict[str, Any]:
    def run_info(r: Any) -> dict[str, Any]:
        return {
            "text": r.text,
            "tokens": len(r.tokens),
            "seconds": round(r.seconds, 4),
            "generation_tokens_per_second": round(r.tokens_per_second, 2),
        }

    return {
        "drafter": kind,
        "n_draft": n_draft,
        "plain": run_info(c.plain),
        "speculative": {**run_info(c.speculative), **c.stats.as_dict()},
        "identical": c.identical,
        "speedup": round(c.speedup, 3),
    }


def run(args: argparse.Namespace) -> int:
    text = read_prompt(args)
    if args.ngram_min > args.ngram_max:
        raise UsageError("--ngram-min must not exceed --ngram-max")
    sp = sampling_params(args)
    kind = "draft" if args.draft else "ngram" if args.ngram else "mtp"
    draft_model: Model | None = None
    with load_model(args, load_mtp=True if args.mtp else None) as model:
        try:
            params = context_params(args)
            if args.draft:
                path = os.path.expanduser(args.draft)
                draft_model = Model(path, n_gpu_layers=args.draft_ngl)
            with Context(model, params) as ctx:
                apply_loras(model, ctx)
                drafter = make_drafter(
                    kind,
                    ctx,
                    draft_model=draft_model,
                    n_draft=args.n_draft,
                    p_min=args.p_min,
                    n_min=args.n_min,
                    ngram_min=args.ngram_min,
                    ngram_max=args.ngram_max,
                    n_threads=args.threads,
                )
                try:
                    c = compare(
                        ctx, _prompt(model, args, text), drafter, max_tokens=args.n_predict, sampling=sp
                    )
                finally:
                    drafter.close()
        finally:
            if draft_model is not None:
                draft_model.close()
    info = _report(c, kind, drafter.n_draft)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    out = sys.stdout
    pl, spc = info["plain"], info["speculative"]
    out.write(f"--- plain ({pl['tokens']} tokens, {pl['generation_tokens_per_second']:.2f} tok/s)\n")
    out.write(pl["text"] + "\n")
    out.write(
        f"--- speculative: {kind}, n_draft={drafter.n_draft} ({spc['tokens']} tokens, "
        f"{spc['generation_tokens_per_second']:.2f} tok/s)\n"
    )
    out.write(spc["text"] + "\n")
    out.write("---\n")
    out.write(
        f"drafted {spc['drafted']}, accepted {spc['accepted']} "
        f"(acceptance {100 * spc['acceptance_rate']:.1f} %), {spc['rounds']} verification rounds, "
        f"{spc['tokens_per_round']:.2f} tokens/round\n"
    )
    same = "identical" if info["identical"] else "different (expected only when sampling)"
    out.write(f"speedup {info['speedup']:.2f}x; outputs {same}\n")
    return 0
