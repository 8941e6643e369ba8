"""The incremental grammar recognizer and the shortest completion of a prefix.

Checked against the Earley matcher of tests/helpers (an independent recognizer of the same parsed
grammar): on hand-written grammars, where the shortest completions are also found by brute force,
and on the grammars of the schema corpus, where every prefix of sampled sentences is completed and
the completed text must be a sentence (and, for schemas without relaxed keywords, valid JSON for
the schema)."""

from __future__ import annotations

import itertools
import json
import pathlib
import random

import jsonschema
import pytest

from llamabind.grammar import JSON_GBNF, JSON_OBJECT_GBNF, compile_json_schema, parse_gbnf
from llamabind.grammar.completion import Completion, GrammarRecognizer, recognizer_for
from tests.helpers.gbnf_matcher import GbnfMatcher, sample

CORPUS = pathlib.Path(__file__).parents[2] / "benchmarks" / "data" / "schema_corpus.json"

LIST = r'root ::= "[" [0-9]+ ("," [0-9]+)* "]"'
HAND = {
    "list": LIST,
    "alternatives": 'root ::= "abc" | "ab" "xyz" | "q"',
    "nested": 'root ::= "(" inner ")"\ninner ::= "" | "<" inner ">" | [a-c]{2} inner',
    "counted": 'root ::= [a-z]{3,5} "!"',
    "optional": 'root ::= "a"? "b"* ("c" | "dd")',
    "classes": 'root ::= [^"\\\\] [0-9a-f] . "end"',
    "kv": 'root ::= "{" (pair ("," pair)*)? "}"\npair ::= [a-z]+ "=" ("yes" | "no" | [0-9]+)',
}


def _complete(rec: GrammarRecognizer, prefix: str) -> Completion:
    comp = rec.completion(rec.feed_text(rec.start(), prefix))
    assert comp is not None, prefix
    return comp


@pytest.mark.parametrize(
    ("grammar", "prefix", "completion"),
    [
        (LIST, "", "[0]"),
        (LIST, "[12,3", "]"),
        (LIST, "[12,", "0]"),
        (LIST, "[7]", ""),
        (HAND["alternatives"], "a", "bc"),
        (HAND["alternatives"], "ab", "c"),
        (HAND["alternatives"], "abx", "yz"),
        (HAND["nested"], "(<<a", "a>>)"),
        (HAND["counted"], "ab", "a!"),
        (HAND["counted"], "abcde", "!"),
        (HAND["optional"], "abb", "c"),
        (HAND["optional"], "d", "d"),
        (HAND["kv"], "{ab=y", "es}"),
        (HAND["kv"], "{ab=1,c", "=0}"),
        (JSON_GBNF, '{"a": [1, {"b": tr', "ue}]}"),
        (JSON_GBNF, '{"a', '":0}'),
        (JSON_GBNF, "", "0"),
        (JSON_GBNF, '["x\\u00', 'aa"]'),
        (JSON_GBNF, "[1.", "0]"),
        (JSON_GBNF, "-", "0"),
        (JSON_OBJECT_GBNF, "", "{}"),
    ],
)
def test_shortest_completion(grammar: str, prefix: str, completion: str) -> None:
    rec = GrammarRecognizer(grammar)
    comp = _complete(rec, prefix)
    assert comp.text == completion
    assert comp.continuation == b"" and comp.cost == len(completion.encode())
    assert rec.accepts(prefix + completion)
    assert GbnfMatcher(grammar).matches(prefix + completion)


def _alphabet(grammar: str) -> list[str]:
    """Characters worth trying in a brute-force search over ``grammar``'s language."""
    chars = {c for c in grammar if c.isprintable() and c not in '"|()[]*+?{}\\ '}
    return sorted(chars | set("0123456789az"))


@pytest.mark.parametrize("name", sorted(HAND))
def test_completion_is_shortest_by_brute_force(name: str) -> None:
    """For every viable prefix of sampled sentences, no shorter string completes it."""
    grammar = HAND[name]
    rec, oracle = GbnfMatcher(grammar), GrammarRecognizer(grammar)
    alphabet = _alphabet(grammar)
    rng = random.Random(7)
    prefixes = {
        s[:i] for s in (sample(rec.grammar, rng, budget=12) for _ in range(25)) for i in range(len(s) + 1)
    }
    for prefix in sorted(prefixes)[:60]:
        comp = _complete(oracle, prefix)
        assert rec.matches(prefix + comp.text), (prefix, comp)
        for length in range(len(comp.text)):
            if len(alphabet) ** length > 20_000:
                break  # searched up to here
            for chars in itertools.product(alphabet, repeat=length):
                assert not rec.matches(prefix + "".join(chars)), (name, prefix, chars, comp.text)


@pytest.mark.parametrize("name", sorted(HAND))
def test_viability_agrees_with_earley(name: str) -> None:
    """Prefixes with one character changed: viable exactly when the Earley chart survives them."""
    grammar = HAND[name]
    oracle, rec = GbnfMatcher(grammar), GrammarRecognizer(grammar)
    rng = random.Random(3)
    alphabet = _alphabet(grammar)
    for _ in range(200):
        s = sample(oracle.grammar, rng, budget=15)
        cut = rng.randrange(len(s) + 1)
        text = s[:cut] + rng.choice(alphabet)
        state = rec.feed_text(rec.start(), text)
        assert state.viable == oracle.viable_prefix(text), text
        assert state.complete == oracle.matches(text), text
        if state.viable:
            comp = rec.completion(state)
            assert comp is not None and oracle.matches(text + comp.text)
        else:
            assert rec.completion(state) is None


@pytest.mark.parametrize("text", ["{]", "[1,,", '{"a" 1}', "tru ", "01", '"\x01"', "[1] ", "{} {}", "nulx"])
def test_prefixes_that_are_not_viable(text: str) -> None:
    rec = GrammarRecognizer(JSON_GBNF)
    state = rec.feed_text(rec.start(), text)
    assert not state.viable and not state.complete
    assert rec.completion(state) is None
    assert not GbnfMatcher(JSON_GBNF).viable_prefix(text)
    assert not rec.feed_text(state, "]").viable  # nothing revives it


def test_incremental_feeding_equals_feeding_at_once() -> None:
    rec = GrammarRecognizer(JSON_GBNF)
    doc = '{"name": "Zoë 😀", "tags": ["a", "b"], "n": -12.5e3, "ok": true, "x": null}'
    data = doc.encode()
    whole = rec.feed_bytes(rec.start(), data)
    assert whole.complete
    for step in (1, 2, 3, 5):
        state = rec.start()
        for i in range(0, len(data), step):
            state = rec.feed_bytes(state, data[i : i + step])  # splits the UTF-8 characters too
            assert state.viable
        assert state == whole


def test_split_utf8_character_is_completed_with_continuation_bytes() -> None:
    rec = GrammarRecognizer(JSON_GBNF)
    state = rec.feed_bytes(rec.start(), '["中'.encode()[:-2])  # the lead byte of 中 only
    assert state.viable and not state.complete and state.partial[1] == 2
    comp = rec.completion(state)
    assert comp is not None
    assert comp.continuation == b"\x80\x80" and comp.text == '"]'
    done = rec.feed_bytes(state, comp.continuation + comp.text.encode())
    assert done.complete
    # a class that admits no character with this lead byte: no completion through it
    ascii_only = GrammarRecognizer('root ::= "[" [a-z]* "]"')
    assert not ascii_only.feed_bytes(ascii_only.start(), b"[\xe4").viable


def test_invalid_utf8_is_not_viable() -> None:
    rec = GrammarRecognizer(JSON_GBNF)
    state = rec.feed_bytes(rec.start(), b'["\x80')
    assert not state.viable
    assert rec.completion(state) is None


def test_memory_stays_bounded_on_long_repetitions() -> None:
    """A long string or array keeps the stack set and each stack's depth constant (tail
    recursion of repetitions is replaced, not pushed)."""
    rec = GrammarRecognizer(JSON_GBNF)
    sizes: set[tuple[int, int]] = set()
    state = rec.feed_text(rec.start(), '{"k": ["')
    for i in range(3000):
        state = rec.feed_text(state, "abc" if i % 50 else '", "')
        depth = max(_depth(s) for s in state.stacks)
        sizes.add((len(state.stacks), depth))
    assert len(sizes) <= 3, sizes
    assert rec.completion(state) == Completion(b"", ('"]}',), 3)


def _depth(stack: object) -> int:
    n = 0
    while stack is not None:
        n += 1
        stack = stack[2]  # type: ignore[index]
    return n


def test_token_terminals() -> None:
    grammar = 'root ::= <[7]> "a" | "b" <think> "c" | !<[9]> "z"'
    rec = GrammarRecognizer(grammar, token_id=lambda text: 42 if text == "<think>" else None)
    start = rec.start()
    comp = rec.completion(start)
    assert comp is not None and comp.segments == (7, "a") and comp.cost == 2
    after = rec.feed_token(start, 7, b"<seven>")  # the id matches, whatever the piece says
    assert after.viable and rec.completion(after) == Completion(b"", ("a",), 1)
    b = rec.feed_token(start, 9, b"b")  # not the negated alternative: 9 is the token it excludes
    assert rec.completion(b) == Completion(b"", (42, "c"), 2)
    assert rec.feed_token(b, 42, b"<think>").viable
    assert not rec.feed_token(b, 41, b"<think>").viable  # a token terminal ignores text
    any_but_9 = rec.feed_token(start, 8, b"anything")  # !<[9]>: any token but 9
    assert any_but_9.viable and rec.completion(any_but_9) == Completion(b"", ("z",), 1)
    assert not rec.feed_token(start, 9, b"z").viable
    unresolved = GrammarRecognizer('root ::= <think> "c"')  # no vocabulary to name the token
    assert unresolved.completion(unresolved.start()) is None


def test_recognizer_cache_and_parsed_grammar() -> None:
    assert recognizer_for(LIST) is recognizer_for(LIST)
    parsed = parse_gbnf('start ::= "x" more\nmore ::= "y"*', "start")
    rec = GrammarRecognizer(parsed)
    assert rec.accepts("xyy") and not rec.accepts("y")
    assert _complete(rec, "").text == "x"


def _corpus() -> list[dict[str, object]]:
    return json.loads(CORPUS.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("stride", [0, 1, 2, 3, 4])
def test_compiled_schemas_every_prefix_completes_to_a_valid_document(stride: int) -> None:
    """A fifth of the corpus per case: for a sampled document of each schema, every prefix (every
    3rd character) is completed; the result is a sentence of the grammar (for the Earley matcher
    too, checked on a few prefixes of the smaller grammars, which it is slow on) and valid for the
    schema when the grammar enforces all of it."""
    rng = random.Random(stride)
    checked = 0
    for entry in _corpus()[stride::5]:
        compiled = compile_json_schema(entry["schema"])
        rec = GrammarRecognizer(compiled.gbnf)
        oracle = GbnfMatcher(rec.grammar) if len(rec.grammar.rules) < 300 else None
        schema = entry["schema"]
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(
            schema
        )
        doc = sample(rec.grammar, rng, budget=60)
        state = rec.start()
        for i in range(0, len(doc) + 1, 3):
            state = rec.feed_text(state, doc[max(0, i - 3) : i])
            comp = rec.completion(state)
            assert comp is not None, (entry["id"], doc[:i])
            text = doc[:i] + comp.text
            assert rec.feed_text(state, comp.text).complete, (entry["id"], text)
            if i % 60 == 0:
                assert rec.accepts(text), (entry["id"], text)
                assert oracle is None or oracle.matches(text), (entry["id"], text)
            if not compiled.relaxed:
                errors = [e.message for e in validator.iter_errors(json.loads(text))]
                assert not errors, (entry["id"], text, errors)
            checked += 1
    assert checked > 100
