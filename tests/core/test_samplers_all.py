"""Every sampler the Sampler offers, on real logits: constructs, samples, reproducible with a seed.

Each case of the table builds a chain around one sampler, samples ``STEPS`` tokens from the logits
of a decoded prompt in a fresh context, and does it again in another fresh context with a fresh
sampler: the token sequences must be equal. Seeded cases must also depend on the seed. The
repetition penalties must visibly break a continuation that greedy decoding loops on, and
``SamplingParams.build`` must produce llama.cpp's default order. Same seed → same output across
processes too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import llamabind as lb
from tests.helpers.core import N_VOCAB, THREADS, generate, prefill, run_json

PROMPT = "The capital of France is"
STEPS = 16
PARIS = 7042  # " Paris"
LOWER = r"[ a-z]+"  # what the grammar cases allow


def _lazy_grammar_text(trigger: str) -> str:
    return f'root ::= "{trigger}" [ a-z]+'


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[lb.Sampler, int], lb.Sampler]  # (empty sampler, seed) -> a complete chain
    names: tuple[str, ...]
    seeded: bool  # the output depends on the seed
    check: Callable[[list[int], str], None] | None = None  # (tokens, text) -> assertions


def _check_lowercase(tokens: list[int], text: str) -> None:
    assert re.fullmatch(LOWER, text), text


def _check_lazy_pattern(tokens: list[int], text: str) -> None:
    # free until the first ".", which greedy decoding reaches at once; then lowercase only
    head, dot, tail = text.partition(".")
    assert head == " Paris" and dot == "." and re.fullmatch(r"[ a-z]+", tail), text


def _check_lazy_token(tokens: list[int], text: str) -> None:
    # free until " Paris" (greedy's first token), then the grammar forces the rest
    assert tokens[0] == PARIS
    assert text.startswith(" Paris is lovely."), text


def _check_forced(tokens: list[int], text: str) -> None:
    assert tokens == [PARIS + 1] * STEPS


def _check_top1(tokens: list[int], text: str) -> None:
    assert text.startswith(" Paris.\n\nThe United States")  # top_k(1) is greedy decoding


CASES = [
    Case("greedy", lambda s, seed: s.greedy(), ("greedy",), False, _check_top1),
    Case("dist", lambda s, seed: s.dist(seed), ("dist",), True),
    Case("top_k", lambda s, seed: s.top_k(20).dist(seed), ("top_k", "dist"), True),
    Case("top_k_1", lambda s, seed: s.top_k(1).dist(seed), ("top_k", "dist"), False, _check_top1),
    Case("top_p", lambda s, seed: s.top_p(0.9).dist(seed), ("top_p", "dist"), True),
    Case("min_p", lambda s, seed: s.min_p(0.02).dist(seed), ("min_p", "dist"), True),
    Case("typical", lambda s, seed: s.typical(0.9).dist(seed), ("typical", "dist"), True),
    Case("temp", lambda s, seed: s.temp(1.2).dist(seed), ("temp", "dist"), True),
    Case("temp_0", lambda s, seed: s.temp(0.0).dist(seed), ("temp", "dist"), False, _check_top1),
    Case(
        "temp_ext",
        lambda s, seed: s.top_k(40).temp_ext(1.0, 0.5, 1.0).dist(seed),
        ("top_k", "temp_ext", "dist"),
        True,
    ),
    Case(
        "xtc",
        lambda s, seed: s.top_k(40).xtc(0.5, 0.05, 1, seed).dist(seed),
        ("top_k", "xtc", "dist"),
        True,
    ),
    Case("top_n_sigma", lambda s, seed: s.top_n_sigma(2.0).dist(seed), ("top_n_sigma", "dist"), True),
    Case(
        "adaptive_p",
        lambda s, seed: s.min_p(0.01).adaptive_p(0.5, 0.9, seed),
        ("min_p", "adaptive_p"),
        True,
    ),
    Case("mirostat", lambda s, seed: s.mirostat(5.0, 0.1, 100, seed), ("mirostat",), True),
    Case("mirostat_v2", lambda s, seed: s.mirostat_v2(5.0, 0.1, seed), ("mirostat_v2",), True),
    Case(
        "penalties",
        lambda s, seed: s.penalties(64, 1.3, 0.2, 0.2).top_k(40).dist(seed),
        ("penalties", "top_k", "dist"),
        True,
    ),
    Case("penalties_greedy", lambda s, seed: s.penalties(64, 1.3).greedy(), ("penalties", "greedy"), False),
    Case("dry", lambda s, seed: s.dry(0.8, 1.75, 2, -1).top_k(40).dist(seed), ("dry", "top_k", "dist"), True),
    Case(
        "logit_bias",
        lambda s, seed: s.logit_bias({PARIS + 1: 100.0}).top_k(40).dist(seed),
        ("logit_bias", "top_k", "dist"),
        False,
        _check_forced,
    ),
    Case("infill", lambda s, seed: s.top_k(40).infill().dist(seed), ("top_k", "infill", "dist"), True),
    Case(
        "grammar",
        lambda s, seed: s.grammar(f"root ::= {LOWER}").temp(1.0).dist(seed),
        ("grammar", "temp", "dist"),
        True,
        _check_lowercase,
    ),
    Case(
        "grammar_first",
        lambda s, seed: _grammar_first(s.grammar(f"root ::= {LOWER}").temp(1.0).dist(seed)),
        ("grammar", "temp", "dist"),
        True,
        _check_lowercase,
    ),
    Case(
        "grammar_mirostat",  # a chain whose apply keeps state: the grammar is always applied first
        lambda s, seed: s.grammar(f"root ::= {LOWER}").mirostat_v2(5.0, 0.1, seed),
        ("grammar", "mirostat_v2"),
        True,
        _check_lowercase,
    ),
    Case(
        "lazy_grammar_patterns",
        lambda s, seed: s.grammar(
            _lazy_grammar_text("."), lazy=True, trigger_patterns=[r"[\s\S]*?(\.)[\s\S]*"]
        ).greedy(),
        ("grammar", "greedy"),
        False,
        _check_lazy_pattern,
    ),
    Case(
        "lazy_grammar_tokens",
        lambda s, seed: s.grammar(
            'root ::= " Paris" " is" " lovely" "."', lazy=True, trigger_tokens=[PARIS]
        ).greedy(),
        ("grammar", "greedy"),
        False,
        _check_lazy_token,
    ),
]


def _grammar_first(s: lb.Sampler) -> lb.Sampler:
    s.grammar_first = True
    return s


@pytest.fixture(scope="module")
def prompt_tokens(model: lb.Model) -> list[int]:
    return model.tokenize(PROMPT)


def run_case(model: lb.Model, tokens: list[int], case: Case, seed: int) -> list[int]:
    """Sample STEPS tokens with a fresh chain in a fresh context."""
    with (
        lb.Context(model, n_ctx=128, n_batch=64, n_threads=THREADS) as ctx,
        case.build(lb.Sampler(model), seed) as smp,
    ):
        prefill(ctx, tokens)
        return generate(ctx, STEPS, pos=len(tokens), sampler=smp)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sampler(model: lb.Model, prompt_tokens: list[int], case: Case) -> None:
    with case.build(lb.Sampler(model), 1) as built:
        assert tuple(built.names) == case.names
        assert len(built) == len(case.names)
        assert " → ".join(case.names) in repr(built)

    first = run_case(model, prompt_tokens, case, 1234)
    assert len(first) == STEPS and all(0 <= t < N_VOCAB for t in first)
    again = run_case(model, prompt_tokens, case, 1234)
    assert again == first, "same seed, fresh context and sampler: the same tokens"
    text = model.detokenize(first)
    if case.check is not None:
        case.check(first, text)
    others = [run_case(model, prompt_tokens, case, seed) for seed in (7, 99)]
    if case.seeded:
        assert any(o != first for o in others), "the seed has no effect"
    else:
        assert all(o == first for o in others), "a deterministic chain depends on the seed"


def test_every_builder_method_is_in_the_table() -> None:
    builders = {
        "greedy",
        "dist",
        "top_k",
        "top_p",
        "min_p",
        "typical",
        "temp",
        "temp_ext",
        "xtc",
        "top_n_sigma",
        "adaptive_p",
        "mirostat",
        "mirostat_v2",
        "penalties",
        "dry",
        "logit_bias",
        "infill",
        "grammar",
    }
    for name in builders:
        assert callable(getattr(lb.Sampler, name))
    assert builders <= {n for c in CASES for n in c.names}
    ids = {c.id for c in CASES}
    assert {"lazy_grammar_patterns", "lazy_grammar_tokens"} <= ids


def test_clone_continues_identically(model: lb.Model, prompt_tokens: list[int]) -> None:
    """A clone taken mid-stream (RNG, penalty history, grammar position) samples what the original does."""
    with lb.Context(model, n_ctx=128, n_batch=64, n_threads=THREADS) as ctx:
        smp = lb.Sampler(model).grammar(f"root ::= {LOWER}").penalties(32, 1.2).top_k(40).dist(5)
        prefill(ctx, prompt_tokens)
        generate(ctx, 4, pos=len(prompt_tokens), sampler=smp)
        twin = smp.clone()
        a = [smp.sample(ctx) for _ in range(3)]
        b = [twin.sample(ctx) for _ in range(3)]
        assert a == b
        smp.close()
        twin.close()


# ----------------------------------------------------------------- repetition penalties

REPETITIVE = "Repeat after me: la la la la la la la la"
LA = 2618  # " la"
N_REP = 32


def _continue(model: lb.Model, smp: lb.Sampler) -> list[int]:
    tokens = model.tokenize(REPETITIVE)
    with lb.Context(model, n_ctx=128, n_batch=64, n_threads=THREADS) as ctx, smp:
        prefill(ctx, tokens)
        return generate(ctx, N_REP, pos=len(tokens), sampler=smp)


def test_penalties_and_dry_break_a_loop(model: lb.Model) -> None:
    plain = _continue(model, lb.Sampler(model).greedy())
    assert plain == [LA] * N_REP, "greedy decoding loops on this prompt"
    variants = {
        "repeat": lb.Sampler(model).penalties(64, 1.3).greedy(),
        "frequency": lb.Sampler(model).penalties(64, 1.0, 0.8, 0.0).greedy(),
        "dry": lb.Sampler(model).dry(0.8, 1.75, 2, -1).greedy(),  # -1: the whole context
        "dry_window": lb.Sampler(model).dry(1.0, 2.0, 2, 64).greedy(),
    }
    for name, smp in variants.items():
        out = _continue(model, smp)
        assert out != plain, name
        assert out.count(LA) <= N_REP // 3, f"{name} still loops: {model.detokenize(out)!r}"
        assert len(set(out)) >= N_REP // 3, f"{name}: {model.detokenize(out)!r}"
    # disabled penalties leave greedy decoding alone
    assert _continue(model, lb.Sampler(model).penalties(64, 1.0).greedy()) == plain
    assert _continue(model, lb.Sampler(model).dry(0.8, 1.75, 2, 0).greedy()) == plain
    assert _continue(model, lb.Sampler(model).dry(0.0, 1.75, 2, -1).greedy()) == plain


def test_sampling_params_penalties_whole_context(model: lb.Model) -> None:
    """``repeat_last_n=-1`` / ``dry_penalty_last_n=-1`` (llama.cpp's "context size") are not off."""
    plain = _continue(model, lb.SamplingParams(temperature=0.0).build(model))
    for sp in (
        lb.SamplingParams(temperature=0.0, repeat_penalty=1.3, repeat_last_n=-1),
        lb.SamplingParams(temperature=0.0, dry_multiplier=0.8),  # dry_penalty_last_n defaults to -1
    ):
        assert _continue(model, sp.build(model)) != plain


# ----------------------------------------------------------------- SamplingParams.build order

ORDER_CASES = [
    ({}, ["top_k", "top_p", "min_p", "temp", "dist"]),
    ({"temperature": 0.0}, ["greedy"]),
    ({"top_k": 0, "top_p": 1.0, "min_p": 0.0}, ["temp", "dist"]),
    (
        {"temperature": 0.0, "repeat_penalty": 1.1, "dry_multiplier": 0.8, "logit_bias": {5: 1.0}},
        ["logit_bias", "penalties", "dry", "greedy"],
    ),
    (
        {
            "logit_bias": {5: -1.0},
            "frequency_penalty": 0.5,
            "dry_multiplier": 0.8,
            "top_n_sigma": 1.5,
            "typical_p": 0.9,
            "xtc_probability": 0.5,
            "dynatemp_range": 0.3,
        },
        [
            "logit_bias",
            "penalties",
            "dry",
            "top_n_sigma",
            "top_k",
            "typical",
            "top_p",
            "min_p",
            "xtc",
            "temp_ext",
            "dist",
        ],
    ),
    ({"presence_penalty": 0.5, "mirostat": 1}, ["penalties", "temp", "mirostat"]),
    ({"mirostat": 2, "top_k": 10}, ["temp", "mirostat_v2"]),
    ({"adaptive_target": 0.4}, ["top_k", "top_p", "min_p", "temp", "adaptive_p"]),
    ({"grammar": 'root ::= "a"'}, ["grammar", "top_k", "top_p", "min_p", "temp", "dist"]),
    (
        {"grammar": 'root ::= "a"', "grammar_lazy": True, "grammar_trigger_tokens": [5], "temperature": 0},
        ["grammar", "greedy"],
    ),
]


@pytest.mark.parametrize(("changes", "names"), ORDER_CASES)
def test_sampling_params_order(
    model: lb.Model, prompt_tokens: list[int], changes: dict[str, object], names: list[str]
) -> None:
    sp = lb.SamplingParams(seed=3).replace(**changes)
    with sp.build(model) as smp:
        assert smp.names == names
        if changes.get("grammar") is None:  # the chain samples from real logits
            with lb.Context(model, n_ctx=64, n_batch=64, n_threads=THREADS) as ctx:
                prefill(ctx, prompt_tokens)
                assert 0 <= smp.sample(ctx) < N_VOCAB


# ----------------------------------------------------------------- across processes

_SCRIPT = """
import json, os
import llamabind as lb
from llamabind.grammar import Grammar
model = lb.Model(lb.default_model_path())
ctx = lb.Context(model, n_ctx=256, n_batch=128, n_threads=1)
gen = lb.Generator(ctx)
out = {}
for name, sp in [
    ("default", lb.SamplingParams(seed=42)),
    ("hot", lb.SamplingParams(seed=42, temperature=1.3, top_k=0, top_p=1.0, min_p=0.0)),
    ("mirostat", lb.SamplingParams(seed=42, mirostat=2)),
    ("grammar", lb.SamplingParams(seed=42, temperature=1.0, grammar=Grammar("root ::= [ a-z]+"))),
]:
    out[name] = gen.complete("The capital of France is", sampling=sp, max_tokens=16, ignore_eos=True).tokens
print(json.dumps(out))
"""


def test_same_seed_same_output_across_processes(model: lb.Model) -> None:
    a = run_json(_SCRIPT)
    b = run_json(_SCRIPT)
    assert a == b
    assert all(len(v) == 16 for v in a.values())
    assert len({json.dumps(v) for v in a.values()}) == len(a)  # the settings do matter
    # and this process agrees
    with lb.Context(model, n_ctx=256, n_batch=128, n_threads=THREADS) as ctx:
        gen = lb.Generator(ctx)
        r = gen.complete(PROMPT, sampling=lb.SamplingParams(seed=42), max_tokens=16, ignore_eos=True)
    assert r.tokens == a["default"]


def test_dist_matches_its_distribution(model: lb.Model, prompt_tokens: list[int]) -> None:
    """``apply`` without selection gives the chain's probabilities; they come from the real logits."""
    with lb.Context(model, n_ctx=64, n_batch=64, n_threads=THREADS) as ctx:
        prefill(ctx, prompt_tokens)
        logits = ctx.logits()
    with lb.Sampler(model).top_k(5).temp(1.0).dist(1) as smp:
        ids, probs = smp.apply(logits)
    top5 = np.argsort(-logits)[:5]
    assert set(ids.tolist()) == set(top5.tolist())
    z = np.exp(logits[top5] - logits[top5].max())
    expected = dict(zip(top5.tolist(), (z / z.sum()).tolist(), strict=True))
    for i, p in zip(ids.tolist(), probs.tolist(), strict=True):
        assert p == pytest.approx(expected[i], rel=1e-4, abs=1e-6)
