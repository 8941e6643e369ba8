"""JSON Schema → grammar on a corpus of realistic schemas: llamabind vs llama-cpp-python.

The corpus is benchmarks/data/schema_corpus.json (our own schemas in the styles of
JSONSchemaBench's sets: function-calling arguments, GitHub-API objects, SchemaStore configs,
Kubernetes manifests, Snowplow events; regenerate with benchmarks/make_schema_corpus.py).

For each converter — llamabind's `compile_json_schema` (default, lenient: keywords a grammar
cannot enforce are validated after generation) and llama-cpp-python's
`llama_cpp.llama_grammar.json_schema_to_gbnf` — it reports:

* compiled %: the converter returns a grammar that llama.cpp's parser accepts;
* compile time p50 / p99 (milliseconds, conversion only);
* valid %: for the first ``--generate N`` schemas (seeded sample), the default model generates at
  temperature 0.8 within ``--max-tokens`` and the output parses and validates with ``jsonschema``
  (formats not asserted); a cut or unparsable output counts as invalid. Valid % is of the schemas
  the converter compiled among those N.

    .venv/bin/python benchmarks/json_schema_bench.py --generate 30 --max-tokens 320
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jsonschema

import llamabind as lb
from llamabind.errors import LlamabindError
from llamabind.grammar import Grammar, compile_json_schema

CORPUS = pathlib.Path(__file__).parent / "data" / "schema_corpus.json"


def _ours(schema: Any) -> str:
    return compile_json_schema(schema).gbnf


def _llama_cpp_python(schema: Any) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(schema))


CONVERTERS: dict[str, Callable[[Any], str]] = {"llamabind": _ours, "llama-cpp-python": _llama_cpp_python}


def _valid(schema: Any, text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return bool(cls(schema).is_valid(value))


def _compile(convert: Callable[[Any], str], schema: Any) -> tuple[Grammar | None, float]:
    start = time.perf_counter()
    try:
        text = convert(schema)
    except Exception:  # each converter's own refusal (SchemaError, ValueError, KeyError, ...)
        return None, time.perf_counter() - start
    elapsed = time.perf_counter() - start
    try:
        return Grammar(text), elapsed
    except LlamabindError:
        return None, elapsed


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generate", type=int, default=0, help="schemas to generate from (0: compile only)")
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    rng = random.Random(args.seed)
    sample_ids = {e["id"] for e in rng.sample(corpus, min(args.generate, len(corpus)))}
    gen = None
    if sample_ids:
        model = lb.Model(lb.default_model_path())
        gen = lb.Generator(
            lb.Context(model, n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads)
        )

    rows = []
    for name, convert in CONVERTERS.items():
        times: list[float] = []
        compiled = 0
        gen_total = gen_valid = 0
        for entry in corpus:
            schema = entry["schema"]
            grammar, elapsed = _compile(convert, schema)
            times.append(elapsed * 1000)
            if grammar is None:
                continue
            compiled += 1
            if gen is None or entry["id"] not in sample_ids:
                continue
            gen_total += 1
            keys = ", ".join(schema.get("properties", {})) if isinstance(schema, dict) else ""
            prompt = (  # short (the grammar does the rest; prompt reading would dominate on a CPU)
                f"<|im_start|>user\nReply with a JSON document giving {keys or 'the values'}.<|im_end|>\n"
                "<|im_start|>assistant\n"
            )
            sp = lb.SamplingParams(temperature=0.8, seed=args.seed, grammar=grammar)
            gen.reset()
            out = gen.complete(prompt, max_tokens=args.max_tokens, sampling=sp)
            ok = out.finish_reason != "length" and _valid(schema, out.text)
            gen_valid += ok
            print(
                f"  {name} {entry['id']}: {'valid' if ok else 'INVALID'} ({out.completion_tokens} tokens)",
                file=sys.stderr,
                flush=True,
            )
        rows.append(
            row := (
                name,
                f"{100 * compiled / len(corpus):.1f} % ({compiled}/{len(corpus)})",
                f"{statistics.median(times):.2f}",
                f"{_pct(times, 0.99):.2f}",
                f"{100 * gen_valid / gen_total:.1f} % ({gen_valid}/{gen_total})" if gen_total else "-",
            )
        )
        print("  " + " | ".join(row), file=sys.stderr, flush=True)
    print(
        f"corpus: {len(corpus)} schemas; generation: {len(sample_ids)} sampled, max_tokens {args.max_tokens}"
    )
    print("| converter | compiled | compile p50 (ms) | compile p99 (ms) | valid of compiled (generated) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
