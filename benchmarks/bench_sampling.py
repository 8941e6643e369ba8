"""Sampling benchmark: what sampling costs per token, and what a JSON-schema grammar costs.

(a) Per-token cost of sampling with a chain (``SamplingParams().build``, llama.cpp's default
    order: top-k 40 → top-p 0.95 → min-p 0.05 → temp 0.8 → dist) as a share of the per-token
    time of generation. ``Sampler.sample`` is timed apart from ``Context.decode`` (wall clock,
    everything Python does included); llama.cpp's own sampler counters (``Sampler.perf``, which
    leave out filling the candidate array) are shown beside it. Target: < 5 %.
(b) Grammar-constrained generation tokens/s as a ratio to unconstrained: the same prompt, greedy,
    the same number of tokens (the grammar run's length), side by side in one run. The grammar
    comes from a JSON schema. Two grammar runs: the default grammar-last sampling (sample without
    the grammar, let the grammar check the chosen token, re-sample with it only when rejected, as
    llama.cpp's common sampler does) and ``grammar_first`` (the grammar applied to the whole
    vocabulary every step); both must give the same tokens.

Repetitions alternate the variants so that load from other processes hits them alike; medians
are reported. Every run starts from an empty KV cache.

    .venv/bin/python benchmarks/bench_sampling.py --threads 1 -n 256 -r 5
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import llamabind as lb
from llamabind.grammar import Grammar

PROMPT = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who told "
    "stories to the children every evening. One of his favourite stories was about"
)
JSON_PROMPT = (
    "<|im_start|>user\nList four people as JSON: name, age, city and hobbies.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 24},
        "hobbies": {
            "type": "array",
            "items": {"type": "string", "maxLength": 16},
            "minItems": 2,
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}
SCHEMA = {"type": "array", "items": PERSON, "minItems": 4, "maxItems": 4}


# ------------------------------------------------------------------ (a) sampling cost


@dataclass
class CostRun:
    sample_wall_ms: float  # Σ sample() wall time
    decode_wall_ms: float  # Σ decode() + synchronize wall time
    total_ms: float  # the whole loop
    sampler_ms: float  # llama.cpp's sampler counter
    eval_ms: float  # llama.cpp's eval counter
    n: int


def cost_once(ctx: lb.Context, model: lb.Model, sp: lb.SamplingParams, prompt: list[int], n: int) -> CostRun:
    ctx.memory.clear()
    batch = lb.Batch(ctx.n_batch)
    batch.add_sequence(prompt, 0, 0, logits_last=True)
    ctx.decode(batch)
    one = lb.Batch(1)
    smp = sp.build(model, no_perf=False)
    ctx.reset_perf()
    smp.reset_perf()
    t_sample = t_decode = 0.0
    pos = len(prompt)
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        token = smp.sample(ctx, -1)
        t1 = time.perf_counter()
        one.clear()
        one.add(token, pos, 0, True)
        ctx.decode(one)
        ctx.synchronize()
        t2 = time.perf_counter()
        t_sample += t1 - t0
        t_decode += t2 - t1
        pos += 1
    total = time.perf_counter() - t_start
    perf = smp.perf()
    run = CostRun(t_sample * 1e3, t_decode * 1e3, total * 1e3, perf.t_sample_ms, ctx.perf().t_eval_ms, n)
    smp.close()
    return run


CHAINS: list[tuple[str, lb.SamplingParams]] = [
    ("default (top-k 40, top-p 0.95, min-p 0.05, temp 0.8, dist)", lb.SamplingParams(seed=1234)),
    ("greedy", lb.SamplingParams(temperature=0.0)),
    (
        "default + penalties + DRY",
        lb.SamplingParams(seed=1234, repeat_penalty=1.1, frequency_penalty=0.1, dry_multiplier=0.8),
    ),
]


def bench_cost(model: lb.Model, threads: int, n: int, reps: int) -> list[dict[str, Any]]:
    prompt = model.tokenize(PROMPT)
    rows = []
    with lb.Context(model, n_ctx=len(prompt) + n + 16, n_batch=512, n_threads=threads) as ctx:
        cost_once(ctx, model, CHAINS[0][1], prompt, 16)  # warm-up
        runs: dict[str, list[CostRun]] = {name: [] for name, _ in CHAINS}
        for r in range(reps):
            order = CHAINS if r % 2 == 0 else CHAINS[::-1]
            for name, sp in order:
                runs[name].append(cost_once(ctx, model, sp, prompt, n))
        for name, _ in CHAINS:
            rs = runs[name]
            per_tok = statistics.median(x.total_ms / x.n for x in rs)
            sample = statistics.median(x.sample_wall_ms / x.n for x in rs)
            rows.append(
                {
                    "chain": name,
                    "sample_us": sample * 1e3,
                    "sampler_counter_us": statistics.median(x.sampler_ms / x.n for x in rs) * 1e3,
                    "decode_ms": statistics.median(x.decode_wall_ms / x.n for x in rs),
                    "per_token_ms": per_tok,
                    "share_pct": statistics.median(100 * x.sample_wall_ms / x.total_ms for x in rs),
                    "counter_share_pct": statistics.median(
                        100 * x.sampler_ms / (x.sampler_ms + x.eval_ms) for x in rs
                    ),
                }
            )
    return rows


# ------------------------------------------------------------------ (b) grammar vs none


def bench_grammar(model: lb.Model, threads: int, reps: int) -> dict[str, Any]:
    grammar = Grammar.from_json_schema(SCHEMA)
    with lb.Context(model, n_ctx=1024, n_batch=512, n_threads=threads) as ctx:
        gen = lb.Generator(ctx)

        def run(kind: str, n: int | None) -> lb.GenerationResult:
            gen.reset()
            if kind == "none":
                return gen.complete(
                    JSON_PROMPT, sampling=lb.SamplingParams(temperature=0.0), max_tokens=n, ignore_eos=True
                )
            smp = lb.SamplingParams(temperature=0.0, grammar=grammar).build(model)
            smp.grammar_first = kind == "grammar-first"
            try:
                return gen.complete(JSON_PROMPT, sampler=smp, max_tokens=512)
            finally:
                smp.close()

        ref = run("grammar-last", None)
        if ref.finish_reason != "stop":
            raise SystemExit(f"the grammar run did not finish: {ref.finish_reason}")
        json.loads(ref.text)
        n = ref.completion_tokens
        kinds = ["none", "grammar-last", "grammar-first"]
        tps: dict[str, list[float]] = {k: [] for k in kinds}
        identical = True
        for r in range(reps):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                res = run(kind, n)
                if res.completion_tokens != n:
                    raise SystemExit(f"{kind}: {res.completion_tokens} tokens, expected {n}")
                if kind != "none":
                    identical &= res.tokens == ref.tokens
                tps[kind].append(res.timings.generation_tps)
        med = {k: statistics.median(v) for k, v in tps.items()}
        return {
            "tokens": n,
            "tps": med,
            "ratio_grammar_last": med["grammar-last"] / med["none"],
            "ratio_grammar_first": med["grammar-first"] / med["none"],
            "identical": identical,
            "text": ref.text,
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF path (default: the test model)")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-n", "--tokens", type=int, default=256, help="tokens per run in (a)")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)

    model = lb.Model(args.model or lb.default_model_path())
    cost = bench_cost(model, args.threads, args.tokens, args.reps)
    gram = bench_grammar(model, args.threads, args.reps)

    cmd = " ".join(
        shlex.quote(a) for a in [".venv/bin/python", "benchmarks/bench_sampling.py", *sys.argv[1:]]
    )
    print(f"`{cmd}`\n")
    print(
        f"model {model.path.name}, {args.threads} thread(s), {args.tokens} tokens × {args.reps} repetitions\n"
    )
    print("(a) sampling cost per token")
    print()
    print(
        "| chain | sample() µs/token | llama.cpp sampler counter µs/token | decode ms/token | sampling share of per-token time |"
    )
    print("|---|---:|---:|---:|---:|")
    for row in cost:
        print(
            f"| {row['chain']} | {row['sample_us']:.0f} | {row['sampler_counter_us']:.0f} | "
            f"{row['decode_ms']:.2f} | {row['share_pct']:.2f} % (counters: {row['counter_share_pct']:.2f} %) |"
        )
    print()
    print(f"(b) JSON-schema grammar vs unconstrained, greedy, {gram['tokens']} tokens each")
    print()
    print("| run | tokens/s | ratio to unconstrained |")
    print("|---|---:|---:|")
    t = gram["tps"]
    print(f"| unconstrained | {t['none']:.1f} | 1.00 |")
    print(
        f"| grammar, grammar-last sampling (default) | {t['grammar-last']:.1f} | {gram['ratio_grammar_last']:.2f} |"
    )
    print(
        f"| grammar, grammar applied first | {t['grammar-first']:.1f} | {gram['ratio_grammar_first']:.2f} |"
    )
    print()
    print(f"grammar-last and grammar-first outputs identical: {gram['identical']}")
    if args.json:
        print(json.dumps({"cost": cost, "grammar": {k: v for k, v in gram.items() if k != "text"}}))
    return 0 if gram["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
