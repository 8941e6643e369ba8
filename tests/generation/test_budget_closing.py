"""Budget closing: a grammar-constrained output about to run out of tokens closes validly.

Real default model (SmolLM2-135M), greedy unless stated: the texts are exact."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import jsonschema
import pytest

import llamabind as lb
from llamabind.batching import GenRequest, Scheduler
from llamabind.errors import GrammarError
from llamabind.generation.closing import BudgetCloser
from llamabind.grammar import Grammar, GrammarRecognizer, compile_json_schema
from llamabind.speculative import NgramDrafter
from tests.helpers.core import SchedulerCollector, scheduler_config
from tests.helpers.gbnf_matcher import GbnfMatcher, sample

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "age": {"type": "integer"},
    },
    "required": ["name", "tags", "age"],
}
PROMPT = "<|im_start|>user\nGive a JSON person with name, tags, age.<|im_end|>\n<|im_start|>assistant\n"
#: the greedy output without a token limit: 48 tokens, the last one the end token
FULL = '{\n  "name": "John",\n  "tags": [\n    "John",\n    "Age: 25",\n  "John\'s favorite color is blue"\n]\n,\n"age": 25\n}'


@pytest.fixture(scope="module")
def gen(model: lb.Model) -> Iterator[lb.Generator]:
    ctx = lb.Context(model, n_ctx=1024, n_batch=512, n_threads=1, n_threads_batch=1)
    yield lb.Generator(ctx)
    ctx.close()


def _person(**kw: object) -> lb.SamplingParams:
    return lb.SamplingParams(temperature=0.0, grammar=compile_json_schema(PERSON).grammar, **kw)  # type: ignore[arg-type]


def _valid(text: str, schema: object = PERSON) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)  # type: ignore[arg-type]
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def _native_accepts(model: lb.Model, grammar: Grammar, tokens: list[int]) -> None:
    """llama.cpp's own grammar takes ``tokens`` and then the end token (GrammarError otherwise)."""
    s = lb.Sampler(model).grammar(grammar)
    try:
        for t in tokens:
            s.accept(t)
        assert model.vocab.eos is not None
        s.accept(model.vocab.eos)
    finally:
        s.close()


def test_tiny_max_tokens_closes_the_document(gen: lb.Generator, model: lb.Model) -> None:
    r = gen.complete(PROMPT, max_tokens=21, sampling=_person())
    assert r.text == '{\n  "name": "John",\n  "tags": [\n    ""],"age":0}'
    assert r.finish_reason == "length" and r.closed and r.completion_tokens == 21
    assert _valid(r.text)
    _native_accepts(model, compile_json_schema(PERSON).grammar, r.tokens)


def test_close_on_budget_false_reproduces_the_cut(gen: lb.Generator) -> None:
    cut = gen.complete(PROMPT, max_tokens=21, sampling=_person(close_on_budget=False))
    assert cut.text == '{\n  "name": "John",\n  "tags": [\n    "John",\n    "Age:'
    assert cut.finish_reason == "length" and not cut.closed and cut.completion_tokens == 21
    assert not _valid(cut.text)
    closed = gen.complete(PROMPT, max_tokens=21, sampling=_person())
    # the same tokens up to where closing took over (15 tokens: '{\n  "name": "John",\n  "tags": [\n    "')
    assert cut.tokens[:15] == closed.tokens[:15] and cut.tokens[15] != closed.tokens[15]


def test_every_budget_gives_a_valid_document(gen: lb.Generator, model: lb.Model) -> None:
    """From the smallest budget the shortest document fits in (13 tokens) to one the model never
    reaches: always a valid document within the budget; closed exactly when the model had not
    finished by itself."""
    grammar = compile_json_schema(PERSON).grammar
    for max_tokens in range(13, 52, 2):
        r = gen.complete(PROMPT, max_tokens=max_tokens, sampling=_person())
        assert _valid(r.text), (max_tokens, r.text)
        assert r.completion_tokens <= max_tokens
        assert r.closed == (max_tokens < 47), max_tokens  # 47: the document ends on the last token
        assert r.finish_reason == ("stop" if max_tokens >= 49 else "length")
        _native_accepts(model, grammar, r.tokens)
        if not r.closed:
            assert r.text == FULL
    shortest = gen.complete(PROMPT, max_tokens=13, sampling=_person())
    assert shortest.text == '{"name":"","tags":[],"age":0}'  # closed from the first token on


def test_budget_too_small_for_any_document_is_cut(gen: lb.Generator) -> None:
    """12 tokens cannot hold the shortest document (13): nothing to close, the output is cut."""
    r = gen.complete(PROMPT, max_tokens=12, sampling=_person())
    assert r.finish_reason == "length" and not r.closed and r.completion_tokens == 12
    assert r.text == '{\n  "name": "John",\n  "tags":'


def test_context_budget_closes_too(model: lb.Model) -> None:
    """No max_tokens: the context (n_ctx minus the prompt) is the budget."""
    with lb.Context(model, n_ctx=256, n_batch=256, n_threads=1, n_threads_batch=1) as ctx:
        assert ctx.n_ctx_per_seq == 256
        system = "You write JSON."
        while True:  # a prompt that leaves 25 positions of the context
            prompt = f"<|im_start|>system\n{system}<|im_end|>\n{PROMPT}"
            if len(model.tokenize(prompt, parse_special=True)) >= 256 - 25:
                break
            system += " Be brief."
        room = 256 - len(model.tokenize(prompt, parse_special=True))
        r = lb.Generator(ctx).complete(prompt, max_tokens=None, sampling=_person())
    assert r.closed and r.finish_reason == "length" and r.completion_tokens == room == 23
    assert r.text == '{\n  "name": "Mike",\n  "tags": [\n    "M"],"age":0}'
    assert _valid(r.text)


def test_sampled_outputs_close_validly(gen: lb.Generator, model: lb.Model) -> None:
    grammar = compile_json_schema(PERSON).grammar
    for seed in range(6):
        sp = lb.SamplingParams(temperature=0.9, seed=seed, grammar=grammar)
        r = gen.complete(PROMPT, max_tokens=30, sampling=sp)
        assert _valid(r.text), (seed, r.text)
        assert r.completion_tokens <= 30
        _native_accepts(model, grammar, r.tokens)


def test_speculative_decoding_closes_the_same(gen: lb.Generator) -> None:
    for max_tokens in (17, 29, 41):
        plain = gen.complete(PROMPT, max_tokens=max_tokens, sampling=_person())
        spec = gen.complete(PROMPT, max_tokens=max_tokens, sampling=_person(), draft=NgramDrafter(n_draft=4))
        assert spec.text == plain.text and spec.closed and plain.closed
        assert spec.tokens == plain.tokens


def test_gbnf_grammar(gen: lb.Generator) -> None:
    grammar = 'root ::= "Colors: " color (", " color)* "."\ncolor ::= [a-z]+'
    sp = lb.SamplingParams(temperature=0.0, grammar=grammar)
    prompt = "<|im_start|>user\nList many colors.<|im_end|>\n<|im_start|>assistant\n"
    free = gen.complete(prompt, max_tokens=64, sampling=sp.replace(close_on_budget=False))
    r = gen.complete(prompt, max_tokens=10, sampling=sp)
    assert free.text.startswith("Colors: ireland, iran, iran, iran,") and not free.closed
    assert r.text == "Colors: ireland, ir." and r.closed and GbnfMatcher(grammar).matches(r.text)


def test_when_closing_does_not_apply(model: lb.Model) -> None:
    grammar = compile_json_schema(PERSON).grammar
    assert BudgetCloser.for_sampling(model, lb.SamplingParams(grammar=grammar)) is not None
    assert BudgetCloser.for_sampling(model, lb.SamplingParams()) is None
    assert BudgetCloser.for_sampling(model, lb.SamplingParams(grammar=grammar, close_on_budget=False)) is None
    lazy = lb.SamplingParams(grammar=grammar, grammar_lazy=True, grammar_trigger_patterns=["\\{"])
    assert BudgetCloser.for_sampling(model, lazy) is None
    assert BudgetCloser.for_sampling(model, None) is None


def test_split_utf8_character_is_finished_with_byte_tokens(model: lb.Model) -> None:
    """A token that ends inside a UTF-8 character: the closing finishes the character with byte
    tokens first, and llama.cpp's grammar takes the whole output."""
    grammar = 'root ::= "\\"" [^"]* "\\""'
    lead = next(t for t in range(model.n_vocab) if model.vocab.token_to_piece(t) == b"\xe4")
    quote = model.tokenize('"', add_special=False)
    closer = BudgetCloser(model, grammar)
    assert closer.admit(quote[0], 10) and closer.admit(lead, 9)
    assert closer.state.partial[1] == 2
    tokens = closer.closing()
    assert tokens is not None and closer.closed
    pieces = b"".join(model.vocab.token_to_piece(t) for t in [quote[0], lead, *tokens])
    assert pieces == '"䀀"'.encode()
    _native_accepts(model, Grammar(grammar), [quote[0], lead, *tokens])


def test_refused_token_when_the_rest_would_not_fit(model: lb.Model) -> None:
    """admit() refuses exactly the token after which the shortest completion needs more tokens
    than are left; closing() then completes the text before it."""
    grammar = Grammar('root ::= "[" ("x" ("," "x")*)? "]"')
    closer = BudgetCloser(model, grammar)
    tok = {s: model.tokenize(s, add_special=False) for s in ("[", "x", ",", "]")}
    assert all(len(v) == 1 for v in tok.values())
    assert closer.admit(tok["["][0], 3)  # "[": "]" completes it, 3 tokens left
    assert closer.admit(tok["x"][0], 2)  # "[x": "]" (1 token), 2 left
    assert not closer.admit(tok[","][0], 1)  # "[x,": needs "x]" (2 tokens), only 1 left
    assert closer.closing() == tok["]"]
    assert closer.history == [tok["["][0], tok["x"][0]]


def test_recognizer_agrees_with_llama_cpp_on_tokens(model: lb.Model) -> None:
    """Token by token over sampled documents (and the same with one token swapped for a random one),
    the recognizer and llama.cpp's grammar agree on which tokens are allowed."""
    import json as _json
    import pathlib

    corpus = _json.loads(
        (pathlib.Path(__file__).parents[2] / "benchmarks" / "data" / "schema_corpus.json").read_text()
    )
    rng = random.Random(5)
    vocab = model.vocab
    compared = 0
    for entry in corpus[::9]:
        compiled = compile_json_schema(entry["schema"])
        rec = GrammarRecognizer(compiled.gbnf)
        doc = sample(rec.grammar, rng, budget=40)
        tokens = model.tokenize(doc, add_special=False, parse_special=False)
        swap = rng.randrange(len(tokens))
        for variant in (tokens, [*tokens[:swap], rng.randrange(model.n_vocab), *tokens[swap + 1 :]]):
            s = lb.Sampler(model).grammar(compiled.grammar)
            state = rec.start()
            try:
                for t in variant:
                    if vocab.is_eog(t):
                        break
                    after = rec.feed_token(state, t, vocab.token_to_piece(t))
                    try:
                        s.accept(t)
                        native = True
                    except GrammarError:
                        native = False
                    assert after.viable == native, (entry["id"], vocab.detokenize(variant), t)
                    compared += 1
                    if not native:
                        break
                    state = after
            finally:
                s.close()
    assert compared > 500


def test_scheduler_closes_per_slot(model: lb.Model) -> None:
    """Two slots at once, one closing and one cut (close_on_budget=False)."""
    prompt = model.tokenize(PROMPT)
    with Scheduler(model, scheduler_config()) as sch:
        on, off = SchedulerCollector(), SchedulerCollector()
        sch.submit(GenRequest(prompt, on, _person(), max_tokens=21))
        sch.submit(GenRequest(prompt, off, _person(close_on_budget=False), max_tokens=21))
        assert on.done.wait(120) and off.done.wait(120)
    assert on.error is None and off.error is None and on.event is not None and off.event is not None
    assert on.event.closed and on.event.finish_reason == "length"
    # (not compared with the Generator's text: two slots in one batch round differently)
    assert _valid("".join(on.text)) and on.event.usage.completion_tokens <= 21
    assert not off.event.closed and off.event.finish_reason == "length"
    assert not _valid("".join(off.text))


def test_scheduler_speculative_closes(model: lb.Model) -> None:
    prompt = model.tokenize(PROMPT)
    with Scheduler(model, scheduler_config(spec="ngram", n_draft=4)) as sch:
        c = SchedulerCollector()
        sch.submit(GenRequest(prompt, c, _person(), max_tokens=29))
        assert c.done.wait(120)
    assert c.error is None and c.event is not None and c.event.closed
    assert _valid("".join(c.text))
