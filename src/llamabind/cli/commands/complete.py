"""``llamabind complete``: continue a prompt, streaming to stdout."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from ...core import Context
from ...generation.generator import Generator
from ..common import (
    UsageError,
    add_context_args,
    add_model_args,
    add_sampling_args,
    apply_loras,
    context_params,
    load_model,
    sampling_params,
)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "complete",
        help="continue a prompt (raw completion, no chat template)",
        description="Continue a prompt with the model and stream the text to stdout. "
        "Greedy by default (--temp 0).",
    )
    src = p.add_argument_group("prompt")
    src.add_argument("-p", "--prompt", help="the prompt text")
    src.add_argument("-f", "--file", metavar="FILE", help="read the prompt from FILE ('-' for stdin)")
    p.add_argument(
        "-n", "--n-predict", type=int, default=128, metavar="N", help="tokens to generate (-1: until EOS)"
    )
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string; repeatable")
    p.add_argument("--grammar-file", metavar="FILE", help="constrain output with a GBNF grammar file")
    p.add_argument("--grammar", metavar="GBNF", help="constrain output with a GBNF grammar string")
    p.add_argument(
        "--json-schema", metavar="SCHEMA", help="constrain output to a JSON schema (JSON text or @FILE)"
    )
    p.add_argument(
        "--no-close-on-budget",
        action="store_true",
        help="let -n cut a grammar's document instead of closing it validly (closing is the default)",
    )
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence")
    p.add_argument("--no-special", action="store_true", help="do not parse special tokens in the prompt")
    p.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and timings")
    add_model_args(p)
    add_context_args(p)
    add_sampling_args(p, temp=0.0)
    p.set_defaults(func=run)


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.file:
        raise UsageError("give either -p or -f, not both")
    if args.prompt is not None:
        return str(args.prompt)
    if args.file and args.file != "-":
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"prompt file not found: {path}")
        return path.read_text(encoding="utf-8")
    if args.file == "-" or not sys.stdin.isatty():
        return sys.stdin.read()
    raise UsageError("no prompt: use -p TEXT, -f FILE or pipe text on stdin")


def grammar_from_args(args: argparse.Namespace) -> Any:
    given = [x for x in (args.grammar, args.grammar_file, args.json_schema) if x]
    if not given:
        return None
    if len(given) > 1:
        raise UsageError("give only one of --grammar, --grammar-file, --json-schema")
    from ...errors import GrammarError

    try:
        return _grammar(args)
    except GrammarError as exc:  # a bad flag value: usage error
        raise UsageError(str(exc)) from None


def _grammar(args: argparse.Namespace) -> Any:
    from ...grammar import Grammar

    if args.grammar:
        return Grammar.from_string(args.grammar)
    if args.grammar_file:
        path = Path(args.grammar_file)
        if not path.is_file():
            raise UsageError(f"grammar file not found: {path}")
        return Grammar.from_file(path)
    if args.json_schema:
        text = args.json_schema
        if text.startswith("@"):
            path = Path(text[1:])
            if not path.is_file():
                raise UsageError(f"JSON schema file not found: {path}")
            text = path.read_text(encoding="utf-8")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--json-schema is not valid JSON: {exc}") from None
        return Grammar.from_json_schema(schema)
    return None


def run(args: argparse.Namespace) -> int:
    prompt = read_prompt(args)
    sp = sampling_params(args)
    grammar = grammar_from_args(args)
    if grammar is not None:
        sp = sp.replace(grammar=grammar, close_on_budget=not args.no_close_on_budget)
    with load_model(args) as model:
        params = context_params(args)
        with Context(model, params) as ctx:
            apply_loras(model, ctx)
            gen = Generator(ctx)
            cancel = threading.Event()
            out: list[str] = []
            toks: list[int] = []
            finish = "length"
            closed = False
            try:
                for chunk in gen.stream(
                    prompt,
                    max_tokens=None if args.n_predict < 0 else args.n_predict,
                    sampling=sp,
                    stop=args.stop,
                    cancel=cancel,
                    parse_special=not args.no_special,
                    ignore_eos=args.ignore_eos,
                ):
                    out.append(chunk.text)
                    toks.extend(chunk.tokens)
                    if not args.json and chunk.text:
                        sys.stdout.write(chunk.text)
                        sys.stdout.flush()
                    if chunk.finish_reason:
                        finish = chunk.finish_reason
                        closed = chunk.closed
            except KeyboardInterrupt:
                finish = "cancelled"
            t = gen.last_timings
            if args.json:
                print(
                    json.dumps(
                        {
                            "text": "".join(out),
                            "tokens": toks,
                            "finish_reason": finish,
                            "closed_on_budget": closed,
                            "prompt_tokens": t.prompt_tokens + t.cached_tokens,
                            "completion_tokens": t.generated_tokens,
                            "timings": {
                                "prompt_ms": round(t.prompt_ms, 3),
                                "prompt_tokens_per_second": round(t.prompt_tps, 2),
                                "generation_ms": round(t.generation_ms, 3),
                                "generation_tokens_per_second": round(t.generation_tps, 2),
                                "ttft_ms": round(t.ttft_ms, 3),
                            },
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                sys.stdout.write("\n")
    return 0
