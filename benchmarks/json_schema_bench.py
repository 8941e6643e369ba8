"""JSON Schema → grammar on a corpus of realistic schemas: llamabind vs llama-cpp-python.

The corpus is benchmarks/data/schema_corpus.json (our own schemas in the styles of
JSONSchemaBench's sets: function-calling arguments, GitHub-API objects, SchemaStore configs,
Kubernetes manifests, Snowplow events; regenerate with benchmarks/make_schema_corpus.py).

``--jsonschemabench DATA`` runs on real-world schemas instead: a seeded sample of ``--per-set``
schemas from each of eight sets of JSONSchemaBench (Geng et al. 2025, MIT licence; clone
github.com/guidance-ai/jsonschemabench and give its data/ folder; the schemas are not copied into
this repository).

Converters: llamabind's `compile_json_schema` (default, lenient: keywords a grammar cannot
enforce are validated after generation) and llama-cpp-python's
`llama_cpp.llama_grammar.json_schema_to_gbnf`. Reported:

* compiled %: the converter returns a grammar that llama.cpp's own parser accepts
  (``llama_sampler_init_grammar`` on the model's vocabulary returns a sampler);
* compile time p50 / p99 in ms over the corpus, cold: each schema's time is the fastest of
  ``--repeat`` calls (as timeit reports; the garbage collector is off during each call), the
  converters interleaved in one process, with every cache cleared before each call (llamabind caches compiled schemas; the warm figure, a cache hit, is listed apart).
  What each timed call does: llama-cpp-python: ``json_schema_to_gbnf(text)`` (JSON text → GBNF
  text; the ``json.dumps`` is done before timing); llamabind "convert": ``convert_unchecked``
  (schema → GBNF text, the same work); llamabind ``compile_json_schema``: convert, then check the
  grammar against llama.cpp's parser rules and limits in Python (what the library does before any
  grammar reaches llama.cpp);
* valid %: for a seeded sample of ``--generate N`` schemas, the default model generates at
  temperature 0.8 within ``--max-tokens`` tokens and ``--time-limit`` seconds, and the output
  parses and validates with ``jsonschema`` (formats not asserted). Both converters' grammars run
  on the same llamabind generator (same model, kernels, sampler chain, seed and prompt): only the
  grammar differs — and budget closing (``SamplingParams.close_on_budget``): what each library's
  user gets, so llamabind's grammars run with it (its default) and llama-cpp-python's without it
  (llama-cpp-python has no such feature); ``--no-close`` runs llamabind's without it too. Valid %
  is of the sampled schemas the converter compiled (and, apart, of the outputs that completed:
  ended by the model or closed). "closed": outputs budget closing finished (counted among the
  valid or invalid ones by their validation). Invalid outputs are split: cut (by the token budget
  or the time limit; a cut document is invalid), relaxed keyword (every validation error comes
  from a schema object holding a keyword llamabind listed as not enforced by its grammar:
  validated after generation, by design) and grammar escapes (the grammar let an invalid document
  through: a converter bug).

    .venv/bin/python benchmarks/json_schema_bench.py --repeat 7      # compile figures only
    .venv/bin/python benchmarks/json_schema_bench.py --generate 80 --max-tokens 256 --time-limit 60 --threads 1
    .venv/bin/python benchmarks/json_schema_bench.py --jsonschemabench ../jsonschemabench/data --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

import llamabind as lb
from llamabind.grammar import Grammar, compile_json_schema, json_schema

CORPUS = pathlib.Path(__file__).parent / "data" / "schema_corpus.json"
_POINTER = re.compile(r"\(at JSON pointer '#(.*)'\)$")


def _lcp_convert(text: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(text)


@dataclass
class Side:
    name: str
    #: the timed call, on (schema, its JSON text); returns GBNF text and the relaxed keywords
    call: Callable[[Any, str], tuple[str, tuple[str, ...]]]
    times: list[float] = field(default_factory=list)


def _ours_convert(schema: Any, _text: str) -> tuple[str, tuple[str, ...]]:
    return json_schema.convert_unchecked(schema)


def _ours_compile(schema: Any, _text: str) -> tuple[str, tuple[str, ...]]:
    c = compile_json_schema(schema)
    return c.gbnf, c.relaxed


def _lcp(_schema: Any, text: str) -> tuple[str, tuple[str, ...]]:
    return _lcp_convert(text), ()


def _timed(call: Callable[[Any, str], object], schema: Any, text: str, *, cold: bool = True) -> float:
    """One call in ms, with the garbage collector off during it (as timeit does)."""
    if cold:
        json_schema.clear_caches()
    gc.disable()
    start = time.perf_counter()
    try:
        call(schema, text)
    except Exception:  # each converter's own refusal (SchemaError, ValueError, AssertionError, ...)
        pass
    finally:
        elapsed = time.perf_counter() - start
        gc.enable()
    return elapsed * 1000


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def _llama_cpp_accepts(vocab: Any, text: str) -> bool:
    """Whether llama.cpp's grammar parser takes ``text``. A grammar llamabind's checks refuse is tried
    in a child process: llama.cpp's recursive parser crashes the process on some of them (seen on
    llama-cpp-python's grammars for real-world schemas), which counts as not compiled."""
    try:
        Grammar(text)
    except lb.LlamabindError:
        child = subprocess.run(
            [sys.executable, __file__, "--accepts"], input=text, text=True, capture_output=True
        )
        return child.returncode == 0
    return _raw_accepts(vocab, text)


def _raw_accepts(vocab: Any, text: str) -> bool:
    import llama_cpp.llama_cpp as raw

    handle = raw.llama_sampler_init_grammar(vocab, text.encode(), b"root")
    if not handle:
        return False
    raw.llama_sampler_free(handle)
    return True


#: the JSONSchemaBench sets the issue names (function calling, GitHub, SchemaStore, Kubernetes,
#: Snowplow, Washington Post); Github_trivial and Github_ultra left out
JSB_SETS = (
    "Glaiveai2K",
    "Github_easy",
    "Github_medium",
    "Github_hard",
    "JsonSchemaStore",
    "Kubernetes",
    "Snowplow",
    "WashingtonPost",
)


def _jsonschemabench(data: pathlib.Path, per_set: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of ``per_set`` schemas from each set of a JSONSchemaBench checkout's data/."""
    rng = random.Random(seed)
    corpus = []
    for name in JSB_SETS:
        files = sorted((data / name).glob("*.json"))
        if not files:
            raise SystemExit(
                f"{data / name}: no schemas (give the data/ folder of a JSONSchemaBench checkout)"
            )
        for f in rng.sample(files, min(per_set, len(files))):
            try:
                schema = json.loads(f.read_text(encoding="utf-8"))
            except ValueError:
                continue
            corpus.append({"id": f"{name}/{f.stem}", "schema": schema})
    return corpus


def _unchecked_grammar(text: str) -> Grammar:
    """A Grammar for text llama.cpp accepted but llamabind's stricter checks refuse (llama-cpp-python's
    deeply nested length bounds): the generator then runs it as llama.cpp would."""
    g = object.__new__(Grammar)
    object.__setattr__(g, "text", text)
    object.__setattr__(g, "root", "root")
    return g


def _classify(schema: Any, text: str, finish: str, closed: bool, relaxed: tuple[str, ...]) -> str:
    if finish == "length" and not closed:
        return "cut-tokens"
    if finish == "cancelled":
        return "cut-time"
    try:
        value = json.loads(text)
    except ValueError:
        return "escape"
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = list(cls(schema).iter_errors(value))
    if not errors:
        return "valid"
    # an error is explained by a relaxed keyword when it comes from the schema object holding it
    owners = [m.group(1).rsplit("/", 1)[0] for r in relaxed if (m := _POINTER.search(r))]
    for error in errors:
        path = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in error.schema_path)
        if not any(path.startswith(owner + "/") or path == owner for owner in owners):
            return "escape"
    return "relaxed"


def _compile_table(corpus: list[dict[str, Any]], repeat: int) -> list[Side]:
    sides = [Side("llamabind convert", _ours_convert), Side("llamabind compile_json_schema", _ours_compile)]
    sides.append(Side("llama-cpp-python json_schema_to_gbnf", _lcp))
    for entry in corpus:
        schema, text = entry["schema"], json.dumps(entry["schema"])
        runs: dict[str, list[float]] = {s.name: [] for s in sides}
        for _ in range(repeat):
            for side in sides:
                runs[side.name].append(_timed(side.call, schema, text))
        for side in sides:
            side.times.append(min(runs[side.name]))
    return sides


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generate", type=int, default=0, help="schemas to generate from (0: compile only)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per generation")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per schema and converter")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", type=pathlib.Path, help="write one JSON line per generation here")
    ap.add_argument(
        "--jsonschemabench",
        type=pathlib.Path,
        metavar="DATA",
        help="the data/ folder of a JSONSchemaBench checkout (github.com/guidance-ai/jsonschemabench, "
        "MIT): run on a seeded sample of its real-world schemas instead of the built-in corpus",
    )
    ap.add_argument("--per-set", type=int, default=50, help="schemas sampled from each JSONSchemaBench set")
    ap.add_argument("--accepts", action="store_true", help=argparse.SUPPRESS)  # child: grammar on stdin
    ap.add_argument("--no-close", action="store_true", help="llamabind's grammars without budget closing too")
    args = ap.parse_args()
    if args.accepts:
        model = lb.Model(lb.default_model_path(), vocab_only=True)
        return 0 if _raw_accepts(model.vocab._handle, sys.stdin.read()) else 1

    if args.jsonschemabench:
        corpus = _jsonschemabench(args.jsonschemabench, args.per_set, args.seed)
    else:
        corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    sides = _compile_table(corpus, args.repeat)
    warm = []  # llamabind with its cache filled: the cost of compiling a schema seen before
    for entry in corpus:
        try:
            compile_json_schema(entry["schema"])
        except lb.LlamabindError:  # refused: no warm figure
            continue
        calls = [_timed(_ours_compile, entry["schema"], "", cold=False) for _ in range(args.repeat)]
        warm.append(min(calls))

    model = lb.Model(lb.default_model_path())
    vocab = model.vocab._handle
    compilers: dict[str, Callable[[Any, str], tuple[str, tuple[str, ...]]]] = {
        "llamabind": _ours_compile,
        "llama-cpp-python": _lcp,
    }
    grammars: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {name: {} for name in compilers}
    ours_checked = lcp_checked = 0
    for entry in corpus:
        text = json.dumps(entry["schema"])
        for name, call in compilers.items():
            try:
                gbnf, relaxed = call(entry["schema"], text)
            except Exception:
                continue
            if _llama_cpp_accepts(vocab, gbnf):
                grammars[name][entry["id"]] = (gbnf, relaxed)
                try:
                    Grammar(gbnf)
                    if name == "llamabind":
                        ours_checked += 1
                    else:
                        lcp_checked += 1
                except lb.LlamabindError:
                    pass

    rng = random.Random(args.seed)
    sample = rng.sample(corpus, min(args.generate, len(corpus)))
    outcomes: dict[str, dict[str, int]] = {name: {} for name in compilers}
    log = args.log.open("w", encoding="utf-8") if args.log else None
    if sample:
        gen = lb.Generator(
            lb.Context(model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
        )
        for entry in sample:
            schema = entry["schema"]
            keys = ", ".join(schema.get("properties", {})) if isinstance(schema, dict) else ""
            prompt = (  # short (the grammar does the rest; prompt reading would dominate on a CPU)
                f"<|im_start|>user\nReply with a JSON document giving {keys or 'the values'}.<|im_end|>\n"
                "<|im_start|>assistant\n"
            )
            for name in compilers:
                if entry["id"] not in grammars[name]:
                    continue
                gbnf, relaxed = grammars[name][entry["id"]]
                close = name == "llamabind" and not args.no_close
                sp = lb.SamplingParams(
                    temperature=0.8, seed=args.seed, grammar=_unchecked_grammar(gbnf), close_on_budget=close
                )
                gen.reset()
                cancel = threading.Event()
                timer = threading.Timer(args.time_limit, cancel.set)
                timer.start()
                start = time.perf_counter()
                try:
                    out = gen.complete(prompt, max_tokens=args.max_tokens, sampling=sp, cancel=cancel)
                finally:
                    timer.cancel()
                kind = _classify(schema, out.text, out.finish_reason, out.closed, relaxed)
                outcomes[name][kind] = outcomes[name].get(kind, 0) + 1
                if out.closed:
                    outcomes[name]["closed"] = outcomes[name].get("closed", 0) + 1
                record = {
                    "converter": name,
                    "id": entry["id"],
                    "outcome": kind,
                    "closed": out.closed,
                    "tokens": out.completion_tokens,
                    "seconds": round(time.perf_counter() - start, 2),
                    "relaxed": list(relaxed),
                    "text": out.text,
                }
                if log:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                print(
                    f"  {name} {entry['id']}: {kind}{' (closed)' if out.closed else ''} "
                    f"({out.completion_tokens} tokens)",
                    file=sys.stderr,
                    flush=True,
                )

    n = len(corpus)
    print(f"corpus: {n} schemas; compile time of a schema: the fastest of {args.repeat} cold calls")
    print("| converter | compiled (llama.cpp accepts) | cold p50 (ms) | cold p99 (ms) |")
    print("| --- | ---: | ---: | ---: |")
    counts = {
        "llamabind convert": len(grammars["llamabind"]),
        "llamabind compile_json_schema": len(grammars["llamabind"]),
        "llama-cpp-python json_schema_to_gbnf": len(grammars["llama-cpp-python"]),
    }
    for side in sides:
        k = counts[side.name]
        print(
            f"| {side.name} | {100 * k / n:.1f} % ({k}/{n}) | {statistics.median(side.times):.3f} | "
            f"{_pct(side.times, 0.99):.3f} |"
        )
    print(
        f"llamabind compile_json_schema warm (cache hit): p50 {statistics.median(warm):.3f} ms, "
        f"p99 {_pct(warm, 0.99):.3f} ms; also passing llamabind's own checks: llamabind "
        f"{ours_checked}/{n}, llama-cpp-python {lcp_checked}/{n}"
    )
    if sample:
        print(
            f"\ngeneration: {len(sample)} sampled schemas (seed {args.seed}), temperature 0.8, "
            f"max_tokens {args.max_tokens}, {args.time_limit:g} s limit"
        )
        print(
            "| converter | budget closing | valid of compiled | valid of completed | closed | cut: tokens "
            "| cut: time | invalid: relaxed keyword | invalid: grammar escape |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, got in outcomes.items():
            total = sum(v for k, v in got.items() if k != "closed")
            done = total - got.get("cut-tokens", 0) - got.get("cut-time", 0)
            valid = got.get("valid", 0)
            closing = "on" if name == "llamabind" and not args.no_close else "off"
            print(
                f"| {name} | {closing} | {100 * valid / max(total, 1):.1f} % ({valid}/{total}) | "
                f"{100 * valid / max(done, 1):.1f} % ({valid}/{done}) | "
                + " | ".join(
                    str(got.get(k, 0)) for k in ("closed", "cut-tokens", "cut-time", "relaxed", "escape")
                )
                + " |"
            )
    if log:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
