"""Speculative decoding and incremental-prefill benchmark (greedy, same process, same threads).

1. **n-gram drafting on an input-echoing task**: rewrite / proofread a given text (the answer repeats
   most of the input): plain vs ``NgramDrafter`` tokens/s, acceptance rate, identical output.
2. **draft-model drafting**: target SmolLM2-135M-Instruct **F16** (dequantized once into
   ``--cache-dir``) drafted by the shipped **Q4_1** copy of the same model; plus Q4_1 drafting
   for itself (the acceptance ceiling, no speed gain possible: the draft costs as much as the target).
3. **incremental-chat TTFT**: time from Enter to the first token for user messages of about
   50 / 100 / 200 / 500 tokens, normal full prefill (system prompt cached, message decoded at
   Enter) vs incremental prefill (message decoded while "typed" word by word), plus the decode
   counters (tokens decoded in total vs naive re-prefill on every keystroke).

    python benchmarks/speculative.py               # -t 1 (see below), the embedded model
    python benchmarks/speculative.py --json

Threads default to 1: on a small shared machine ggml's spinning worker threads slow down badly
when another process competes for the cores. The load average is reported with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import llamabind as lb
from llamabind.generation.sampling import SamplingParams
from llamabind.incremental import IncrementalChat
from llamabind.speculative import DraftModelDrafter, NgramDrafter, compare

GREEDY = SamplingParams(temperature=0.0)

ECHO_TEXT = (
    "The library will be closed on monday for maintenance. During the closure, the reading rooms, "
    "the cafe and the study carrels will not be available, but the book return box at the main "
    "entrance stays open. Members can renew their loans online or by phone. The childrens "
    "story hour moves to tuesday at ten oclock, and the chess club meets as usual on wednesday "
    "evening in the community hall across the street."
)
ECHO_TASKS = [
    f"Fix the capitalisation and punctuation of this text and return the whole corrected text:\n\n{ECHO_TEXT}",
    f"Rewrite this notice word for word, only changing 'library' to 'museum':\n\n{ECHO_TEXT}",
]
DRAFT_TASKS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
]
FILLER = (
    "I am planning a trip and I would like some advice about what to pack, how to stay within my "
    "budget, which neighbourhoods are pleasant to walk around in the evening, and how to get from "
    "the airport to the city centre without spending too much money on taxis. "
)


def chat_tokens(model: lb.Model, text: str) -> list[int]:
    return model.tokenize(
        f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", add_special=False, parse_special=True
    )


def spec_rows(ctx: lb.Context, drafter: Any, tasks: list[str], n: int) -> list[dict[str, Any]]:
    model = ctx.model
    rows = []
    for task in tasks:
        c = compare(ctx, chat_tokens(model, task), drafter, max_tokens=n, sampling=GREEDY)
        rows.append(
            {
                "task": task[:60] + "…",
                "tokens": len(c.speculative.tokens),
                "plain_tps": round(c.plain.tokens_per_second, 2),
                "spec_tps": round(c.speculative.tokens_per_second, 2),
                "speedup": round(c.speedup, 2),
                "acceptance": round(c.stats.acceptance_rate, 3),
                "tokens_per_round": round(c.stats.tokens_per_round, 2),
                "identical": c.identical,
            }
        )
    return rows


def f16_copy(cache_dir: Path) -> Path:
    from llamabind.gguf_tools import dequantize_to_f16

    out = cache_dir / "SmolLM2-135M-Instruct.F16.gguf"
    if not out.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        dequantize_to_f16(lb.default_model_path(), out)
    return out


def first_token_ms(chat: IncrementalChat, message: str) -> float:
    """Milliseconds from Enter (the final text) to the first generated token."""
    t0 = time.perf_counter()
    stream = chat.reply(message, sampling=GREEDY, max_tokens=1)
    try:
        next(c for c in stream if c.tokens or c.finish_reason)
        return (time.perf_counter() - t0) * 1000
    finally:
        stream.close()


def ttft_rows(model: lb.Model, threads: int, lengths: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    system = "You are a helpful travel assistant. Answer concisely."
    for target in lengths:
        words = (FILLER * (target // 40 + 2)).split()
        # grow the message until it has about `target` tokens
        msg_words: list[str] = []
        for w in words:
            msg_words.append(w)
            if len(model.tokenize(" ".join(msg_words), add_special=False)) >= target:
                break
        message = " ".join(msg_words)
        normal_ms, inc_ms, inc_stats = [], [], None
        for _ in range(repeats):
            with lb.Context(model, n_ctx=2048, n_batch=512, n_threads=threads) as ctx:
                # normal: system prompt cached, the whole message decoded at Enter
                chat = IncrementalChat(ctx, system_prompt=system, reserve=8)
                normal_ms.append(first_token_ms(chat, message))
            with lb.Context(model, n_ctx=2048, n_batch=512, n_threads=threads) as ctx:
                chat = IncrementalChat(ctx, system_prompt=system, reserve=8)
                typed = ""
                for w in message.split(" "):  # the user types word by word (debounced updates)
                    typed = f"{typed} {w}" if typed else w
                    chat.type(typed)
                inc_ms.append(first_token_ms(chat, message))
                inc_stats = chat.prefill.stats
        assert inc_stats is not None
        n_tokens = len(model.tokenize(message, add_special=False))
        normal, inc = min(normal_ms), min(inc_ms)
        rows.append(
            {
                "message_tokens": n_tokens,
                "normal_ttft_ms": round(normal, 1),
                "incremental_ttft_ms": round(inc, 1),
                "ttft_ratio": round(normal / inc, 1) if inc > 0 else 0.0,
                "tokens_at_enter": inc_stats.tokens_flushed,
                "decoded_total": inc_stats.total_decoded,
                "naive_decoded": inc_stats.naive_tokens,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None, help="target GGUF (default: the embedded SmolLM2)")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("-n", "--tokens", type=int, default=96, help="tokens per generation")
    p.add_argument("--n-draft", type=int, default=6)
    p.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "llamabind-bench"))
    p.add_argument("--lengths", default="50,100,200,500")
    p.add_argument("--repeats", type=int, default=2, help="TTFT repetitions (best is reported)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.model) if args.model else lb.default_model_path()
    out: dict[str, Any] = {"model": path.name, "threads": args.threads, "load_average": os.getloadavg()}
    with lb.Model(path) as model:
        with lb.Context(model, n_ctx=2048, n_batch=512, n_threads=args.threads) as ctx:
            out["ngram"] = spec_rows(ctx, NgramDrafter(args.n_draft), ECHO_TASKS, args.tokens)
            with DraftModelDrafter(
                model, args.n_draft, n_ctx=2048, n_threads=args.threads, target=model
            ) as d:
                out["draft_self_q4"] = spec_rows(ctx, d, DRAFT_TASKS, args.tokens)
        f16 = f16_copy(Path(args.cache_dir))
        with (
            lb.Model(f16) as target,
            lb.Context(target, n_ctx=2048, n_batch=512, n_threads=args.threads) as ctx,
        ):
            with DraftModelDrafter(
                model, args.n_draft, n_ctx=2048, n_threads=args.threads, target=target
            ) as d:
                out["draft_q4_for_f16"] = spec_rows(ctx, d, DRAFT_TASKS, args.tokens)
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        out["incremental_ttft"] = ttft_rows(model, args.threads, lengths, args.repeats)
    out["load_average_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"model {out['model']}, {args.threads} thread(s), load average {out['load_average'][0]:.2f}")
    for key, title in (
        ("ngram", "n-gram drafting, echo tasks"),
        ("draft_self_q4", "draft model: Q4_1 drafting for itself"),
        ("draft_q4_for_f16", "draft model: Q4_1 drafting for the F16 target"),
    ):
        print(f"\n{title} (n_draft={args.n_draft}, {args.tokens} tokens)")
        print("  plain tok/s  spec tok/s  speedup  acceptance  tokens/round  identical  task")
        for r in out[key]:
            print(
                f"  {r['plain_tps']:11.2f} {r['spec_tps']:11.2f} {r['speedup']:8.2f} {r['acceptance']:11.3f} "
                f"{r['tokens_per_round']:13.2f}  {r['identical']!s:9}  {r['task']}"
            )
    print("\nincremental chat: time from Enter to the first token")
    print("  message tokens  normal ms  incremental ms  ratio  decoded at Enter  decoded total  naive total")
    for r in out["incremental_ttft"]:
        print(
            f"  {r['message_tokens']:14d} {r['normal_ttft_ms']:10.1f} {r['incremental_ttft_ms']:15.1f} "
            f"{r['ttft_ratio']:6.1f} {r['tokens_at_enter']:17d} {r['decoded_total']:14d} {r['naive_decoded']:12d}"
        )
    print(f"load average after: {out['load_average_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
