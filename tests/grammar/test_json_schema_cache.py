"""compile_json_schema's cache of compiled schemas, the grammar it hands over, and the fast paths
of the GBNF emitter (same output as the general code)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamabind.errors import SchemaError
from llamabind.grammar import Grammar, compile_json_schema, json_schema
from llamabind.grammar import _emit as emit
from llamabind.grammar._cache import MAX_ENTRIES

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "string", "maxLength": 3}, "b": {"enum": ["x", "y"]}},
    "required": ["a"],
}


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    json_schema.clear_caches()


def test_a_cache_hit_is_the_same_compilation() -> None:
    first = compile_json_schema(_SCHEMA)
    assert len(json_schema._CACHE) == 1
    again = compile_json_schema(json.loads(json.dumps(_SCHEMA)))  # an equal schema, another object
    assert (again.gbnf, again.relaxed) == (first.gbnf, first.relaxed)
    assert again.grammar is first.grammar  # checked once, shared (Grammar is immutable)
    assert len(json_schema._CACHE) == 1


def test_the_key_keeps_member_order_options_and_values() -> None:
    reordered = {**_SCHEMA, "properties": dict(reversed(list(_SCHEMA["properties"].items())))}
    a, b = compile_json_schema(_SCHEMA), compile_json_schema(reordered)
    assert a.gbnf != b.gbnf  # properties are generated in schema order
    assert a.gbnf.index('"\\"a\\""') < a.gbnf.index('"\\"b\\""')
    assert b.gbnf.index('"\\"b\\""') < b.gbnf.index('"\\"a\\""')
    compact = compile_json_schema(_SCHEMA, whitespace="compact")
    assert compact.gbnf != a.gbnf and 'ws ::= ""' in compact.gbnf
    open_ = compile_json_schema(_SCHEMA, strict_properties=False)
    assert open_.gbnf != a.gbnf
    one = compile_json_schema({"const": 1})
    assert compile_json_schema({"const": True}).gbnf != one.gbnf
    assert compile_json_schema({"const": 1.5}).gbnf != one.gbnf


def test_a_schema_changed_after_compiling_is_compiled_again() -> None:
    schema = json.loads(json.dumps(_SCHEMA))
    before = compile_json_schema(schema)
    schema["properties"]["a"]["maxLength"] = 7
    after = compile_json_schema(schema)
    assert "{0,3}" in before.gbnf and "{0,7}" in after.gbnf
    assert after.schema is schema


def test_strict_refusals_are_not_hidden_by_a_lenient_entry() -> None:
    schema = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert compile_json_schema(schema).relaxed  # lenient: cached with its relaxed keyword
    with pytest.raises(SchemaError, match="uniqueItems"):
        compile_json_schema(schema, strict=True)


def test_uncacheable_schemas_still_compile_and_the_cache_is_bounded() -> None:
    odd = {"type": "integer", "default": float("nan")}  # json.dumps(allow_nan=False) refuses it
    assert compile_json_schema(odd).gbnf == compile_json_schema({"type": "integer"}).gbnf
    assert len(json_schema._CACHE) == 1  # only the plain one
    # json.dumps writes the key 1 as "1": the two must not share an entry
    text_key = compile_json_schema({"type": "object", "properties": {"1": {"type": "null"}}})
    int_key: dict[str, Any] = {"type": "object", "properties": {1: {"type": "null"}}}
    assert compile_json_schema(int_key).gbnf == json_schema.convert_unchecked(int_key)[0] != text_key.gbnf
    assert len(json_schema._CACHE) == 2
    for n in range(MAX_ENTRIES + 10):
        compile_json_schema({"type": "string", "maxLength": n})
    assert len(json_schema._CACHE) == MAX_ENTRIES
    json_schema.clear_caches()
    assert len(json_schema._CACHE) == 0


def test_the_grammar_handed_over_is_the_checked_text() -> None:
    compiled = compile_json_schema(_SCHEMA)
    assert isinstance(compiled.grammar, Grammar) and compiled.grammar.text == compiled.gbnf
    assert Grammar.from_json_schema(_SCHEMA).text == compiled.gbnf
    by_hand = json_schema.CompiledSchema(_SCHEMA, compiled.gbnf)  # built without compiling: checked here
    assert by_hand.grammar.text == compiled.gbnf
    text, relaxed = json_schema.convert_unchecked(_SCHEMA)
    assert (text, relaxed) == (compiled.gbnf, compiled.relaxed)


@pytest.mark.parametrize(
    "text", ["plain", 'say "hi"', "back\\slash", "", "tab\there", "é", "\x7f", "\u2028", "a]b-c^"]
)
def test_literal_fast_path_matches_the_general_escaping(text: str) -> None:
    general = '"' + "".join(emit._gbnf_char(ord(c), False) for c in text) + '"'
    assert emit.gbnf_literal(text) == general
    assert emit._json_text(text) == json.dumps(text, ensure_ascii=False, separators=(",", ":"))
