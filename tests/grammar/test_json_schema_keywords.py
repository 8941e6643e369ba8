"""JSON Schema defaults and keyword coverage: closed objects, whitespace, the keywords real-world
schemas use (patternProperties, pattern with lengths, min/maxProperties, dependencies, if/then/else,
uniqueItems, overlapping oneOf, unknown formats), the lenient/strict split, RE2 and the size bounds.

Every accepted schema's grammar is sampled (random derivations, `gbnf_matcher.sample`) and each
sample is validated with ``jsonschema``: exact grammars must only produce valid documents."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import jsonschema
import pytest

from llamabind.errors import SchemaError
from llamabind.grammar import compile_json_schema, json_schema_to_gbnf, parse_gbnf
from tests.helpers.gbnf_matcher import GbnfMatcher, sample


def _valid(schema: Any, value: Any) -> bool:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return bool(cls(schema).is_valid(value))


def _samples(text: str, n: int = 40, seed: int = 7) -> list[Any]:
    grammar = parse_gbnf(text)
    rng = random.Random(seed)
    return [json.loads(sample(grammar, rng, budget=80)) for _ in range(n)]


def test_objects_generate_only_named_properties_by_default() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}
    m = GbnfMatcher(json_schema_to_gbnf(schema))
    assert m('{"a": 1, "b": "x"}') and m("{}") and m('{"b": "x"}')
    assert not m('{"a": 1, "w1": 2}') and not m('{"zjljr": 0}')
    assert not m('{"b": "x", "a": 1}')  # schema order
    loose = GbnfMatcher(json_schema_to_gbnf(schema, strict_properties=False))
    assert loose('{"a": 1, "w1": 2}')
    # additionalProperties given: extras allowed, as asked
    m = GbnfMatcher(json_schema_to_gbnf({**schema, "additionalProperties": {"type": "integer"}}))
    assert m('{"a": 1, "z": 3}') and not m('{"a": 1, "z": "3"}')
    # nothing named: any object
    assert GbnfMatcher(json_schema_to_gbnf({"type": "object"}))('{"k": [1, {"x": null}]}')
    # a required name that 'properties' does not list is still generated
    m = GbnfMatcher(json_schema_to_gbnf({"type": "object", "properties": {"a": {}}, "required": ["id"]}))
    assert m('{"id": 3}') and not m('{"id": 3, "q": 1}')


def test_all_of_members_are_closed_together() -> None:
    schema = {"allOf": [{"properties": {"a": {"type": "integer"}}}, {"properties": {"b": {"type": "null"}}}]}
    m = GbnfMatcher(json_schema_to_gbnf(schema))
    assert m('{"a": 1, "b": null}') and not m('{"a": 1, "c": 2}')


def test_compact_whitespace() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    m = GbnfMatcher(json_schema_to_gbnf(schema, whitespace="compact"))
    assert m('{"a":[1,2]}') and not m('{"a": [1,2]}') and not m('{\n"a":[1]}')
    m = GbnfMatcher(json_schema_to_gbnf({"type": "object"}, whitespace="compact"))
    assert m('{"x":{"y":[]}}') and not m('{"x": 1}')


EXACT: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    (
        "pattern-properties-named",
        {
            "type": "object",
            "properties": {"x_a": {"type": "integer"}, "b": {"type": "string"}},
            "patternProperties": {"^x_": {"minimum": 0, "maximum": 5}},
        },
        ['{"x_a": 3, "b": ""}'],
        ['{"x_a": 9}', '{"x_q": 1}'],
    ),
    (
        "pattern-properties-keys",
        {"type": "object", "patternProperties": {"^[a-z]{1,4}$": {"type": "boolean"}}},
        ['{"ab": true, "c": false}', "{}"],
        ['{"AB": true}', '{"ab": 1}'],
    ),
    (
        "pattern-with-lengths",
        {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "minLength": 3, "maxLength": 8},
        ['"ab-1"', '"abcdefgh"'],
        ['"ab"', '"abcdefghi"', '"1abc"'],
    ),
    (
        "unanchored-pattern-with-lengths",
        {"type": "string", "pattern": "[0-9]+", "maxLength": 4},
        ['"1234"'],
        ['"12345"'],
    ),
    (
        "min-max-properties",
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
            "minProperties": 1,
            "maxProperties": 2,
        },
        ['{"a": 1}', '{"a": 1, "b": 2}'],
        ["{}", '{"a": 1, "b": 2, "c": 3}'],
    ),
    (
        "min-properties-open",
        {"type": "object", "minProperties": 1, "maxProperties": 2},
        ['{"a": 1, "b": 2}', '{"a": 1}'],
        ["{}", '{"a": 1, "b": 2, "c": 3}'],
    ),
    (
        "dependent-required",
        {
            "type": "object",
            "properties": {"card": {"type": "string"}, "billing": {"type": "string"}},
            "dependentRequired": {"card": ["billing"]},
        },
        ['{"card": "1", "billing": "x"}', '{"billing": "x"}'],
        ['{"card": "1"}'],
    ),
    (
        "dependencies-both-forms",
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
            "required": ["c"],
            "dependencies": {"a": ["b"], "c": {"properties": {"b": {"minimum": 1}}}},
        },
        ['{"a": 1, "b": 1, "c": 0}', '{"b": 2, "c": 0}'],
        ['{"a": 1, "c": 0}', '{"b": 0, "c": 0}'],
    ),
    (
        "if-then-else-disjoint",
        {
            "type": "object",
            "properties": {"kind": {"enum": ["a", "b"]}, "n": {"type": "integer"}},
            "required": ["kind", "n"],
            "if": {"properties": {"kind": {"const": "a"}}, "required": ["kind"]},
            "then": {"properties": {"n": {"minimum": 10}}},
            "else": {"properties": {"kind": {"const": "b"}, "n": {"maximum": 0}}},
        },
        ['{"kind": "a", "n": 12}', '{"kind": "b", "n": -1}'],
        ['{"kind": "a", "n": 1}', '{"kind": "b", "n": 5}'],
    ),
    (
        "if-then-only",
        {
            "type": "object",
            "properties": {"country": {"type": "string", "maxLength": 3}, "zip": {"type": "string"}},
            "if": {"properties": {"country": {"const": "US"}}},
            "then": {"properties": {"zip": {"pattern": "^[0-9]{5}$"}}},
        },
        ['{"country": "US", "zip": "12345"}'],
        ['{"country": "US", "zip": "1"}'],
    ),
    (
        "unique-enum-items",
        {"type": "array", "items": {"enum": ["r", "w", "x"]}, "uniqueItems": True, "minItems": 1},
        ['["r"]', '["r", "w", "x"]', '["w", "x"]'],
        ['["r", "r"]', "[]", '["w", "r"]'],
    ),
    (
        "unique-booleans",
        {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True},
        ["[]", "[true, false]"],
        ["[true, true]"],
    ),
    (
        "unknown-format-is-an-annotation",
        {"type": "string", "format": "hostname", "maxLength": 5},
        ['"a.b"'],
        ['"abcdef"'],
    ),
    (
        "format-with-pattern",
        {"type": "string", "format": "email", "pattern": "^[a-z]+@x\\.org$"},
        ['"ab@x.org"'],
        ['"ab@y.org"'],
    ),
    (
        "non-integer-bounds",
        {"type": "number", "minimum": 0.5, "exclusiveMaximum": 2.5},
        ["1", "1.75", "2"],
        ["0.5", "0", "2.25", "2.5"],
    ),
]


@pytest.mark.parametrize(("schema", "good", "narrowed"), [c[1:] for c in EXACT], ids=[c[0] for c in EXACT])
def test_keywords_are_enforced_exactly(schema: dict[str, Any], good: list[str], narrowed: list[str]) -> None:
    compiled = compile_json_schema(schema)
    assert compiled.exact, compiled.relaxed
    assert compiled.gbnf == json_schema_to_gbnf(schema)  # nothing to refuse in strict mode either
    m = GbnfMatcher(compiled.gbnf)
    for text in good:
        assert _valid(schema, json.loads(text)) and m(text), text
    for text in narrowed:  # invalid, or valid but left out by a documented narrowing
        assert not m(text), text
    for value in _samples(compiled.gbnf):
        assert _valid(schema, value), value
        assert compiled.errors(json.dumps(value)) == []


RELAXED: list[tuple[str, Any, str, Any]] = [
    (
        "overlapping-one-of",
        {"oneOf": [{"type": "integer"}, {"type": "number"}]},
        "'oneOf' branches 0 and 1",
        1,
    ),
    ("not", {"type": "integer", "not": {"const": 3}}, "'not'", 3),
    ("multiple-of", {"type": "integer", "multipleOf": 5}, "'multipleOf'", 7),
    (
        "unique-objects",
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        "'uniqueItems'",
        [1, 1],
    ),
    ("regex-outside-subset", {"type": "string", "pattern": "\\bword"}, "escape '\\b'", "xword"),
    ("contains", {"type": "array", "contains": {"const": 1}}, "'contains'", [2]),
]


@pytest.mark.parametrize(("schema", "fragment", "bad"), [c[1:] for c in RELAXED], ids=[c[0] for c in RELAXED])
def test_unenforced_keywords_are_validated_after_generation_or_refused_in_strict_mode(
    schema: Any, fragment: str, bad: Any
) -> None:
    compiled = compile_json_schema(schema)
    assert not compiled.exact and any(fragment in r for r in compiled.relaxed), compiled.relaxed
    errors = compiled.errors(json.dumps(bad))
    assert errors and all("(at '#" in e for e in errors)
    assert compiled.errors("{not json") == [compiled.errors("{not json")[0]]
    with pytest.raises(SchemaError, match=fragment.replace("\\", "\\\\").replace("'", "'")):
        compile_json_schema(schema, strict=True)
    with pytest.raises(SchemaError):
        json_schema_to_gbnf(schema)


def test_relaxed_grammars_still_generate_the_enforceable_part() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9, "multipleOf": 3}},
        "required": ["n"],
    }
    compiled = compile_json_schema(schema)
    for value in _samples(compiled.gbnf):
        assert set(value) == {"n"} and 1 <= value["n"] <= 9
        assert (compiled.errors(json.dumps(value)) == []) == (value["n"] % 3 == 0)


def test_pattern_regex_runs_in_linear_time() -> None:
    evil = "^(a+)+$"
    schema = {"type": "object", "properties": {"s": {"enum": ["a" * 5000 + "b", "aa"], "pattern": evil}}}
    start = time.monotonic()
    text = json_schema_to_gbnf(schema)
    assert "aa" in text and "aaaaab" not in text
    compiled = compile_json_schema({"type": "string", "pattern": evil, "not": {"const": ""}})
    assert compiled.errors(json.dumps("a" * 100_000 + "b"))
    assert time.monotonic() - start < 5  # Python's re would take longer than the universe's age
    with pytest.raises(SchemaError, match="linear time"):
        compile_json_schema({"type": "string", "pattern": "(?=a)b"})  # lenient, but RE2 cannot


def test_combination_expansion_is_bounded() -> None:
    branches = [{"anyOf": [{"type": "integer", "minimum": i, "maximum": i + 1000} for i in range(120)]}] * 3
    start = time.monotonic()
    with pytest.raises(SchemaError, match="expands to 1728000 alternatives"):
        json_schema_to_gbnf({"allOf": branches})
    assert time.monotonic() - start < 5


def test_schema_size_is_bounded() -> None:
    with pytest.raises(SchemaError, match="too large"):
        json_schema_to_gbnf({"enum": list(range(200_000))})
    with pytest.raises(SchemaError, match="too large"):
        json_schema_to_gbnf({"const": "x" * 2_000_000})


def test_pattern_with_lengths_inside_an_optional_group() -> None:
    schema = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 6, "minLength": 2}
    compiled = compile_json_schema(schema)
    assert compiled.exact, compiled.relaxed
    m = GbnfMatcher(compiled.gbnf)
    assert m('"ab"') and m('"a-b-c1"') and not m('"a"') and not m('"a-b-c-d"') and not m('"a-"')
    for value in _samples(compiled.gbnf):
        assert _valid(schema, value), value


# -- parts no value satisfies (seen in JSONSchemaBench's GitHub and Washington Post sets) ---------


def test_an_optional_property_no_value_satisfies_is_never_generated() -> None:
    # a string enum under "type": "object": no value at all; the property is optional
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "builtin": {"type": "object", "enum": ["MODIFIABLE", "DELETABLE"]},
        },
        "required": ["name"],
    }
    text = json_schema_to_gbnf(schema)
    m = GbnfMatcher(text)
    assert m('{"name": "x"}')
    assert not m('{"name": "x", "builtin": "MODIFIABLE"}')
    for value in _samples(text):
        assert _valid(schema, value) and set(value) == {"name"}
    with pytest.raises(SchemaError, match="builtin"):  # required: the schema has no valid document
        json_schema_to_gbnf({**schema, "required": ["name", "builtin"]})


def test_an_alternative_whose_reference_has_no_value_is_dropped() -> None:
    # the unsatisfiable target is referenced from two places: neither leaves a rule behind
    schema = {
        "$defs": {
            "never": {"type": "integer", "minimum": 5, "maximum": 1},
            "point": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
        },
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"$ref": "#/$defs/never"}, {"type": "string"}]},
            "b": {"anyOf": [{"$ref": "#/$defs/point"}, {"$ref": "#/$defs/never"}]},
        },
        "required": ["a", "b"],
    }
    text = json_schema_to_gbnf(schema)
    parse_gbnf(text)  # every referenced rule is defined
    m = GbnfMatcher(text)
    assert m('{"a": "s", "b": {"x": 1}}')
    assert not m('{"a": 3, "b": {"x": 1}}') and not m('{"a": "s", "b": 3}')
    for value in _samples(text):
        assert _valid(schema, value)


def test_repeated_conjuncts_count_once() -> None:
    # 16 traits each repeating the same anyOf for one property: 2**16 combinations unless merged
    item = {"anyOf": [{"$ref": "#/$defs/author"}, {"$ref": "#/$defs/ref"}], "type": "object"}
    traits = [{"properties": {"by": {"type": "array", "items": dict(item)}}} for _ in range(16)]
    schema = {
        "$defs": {
            "author": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            "ref": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        },
        "type": "object",
        "allOf": traits,
    }
    text = json_schema_to_gbnf(schema)
    m = GbnfMatcher(text)
    assert m('{"by": [{"name": "A"}, {"id": "r1"}]}')
    assert not m('{"by": [{"title": "A"}]}')
    for value in _samples(text):
        assert _valid(schema, value)


def test_a_required_property_allowed_by_a_pattern_is_generated() -> None:
    # additionalProperties false, but patternProperties admits the required name (SchemaStore's ansible)
    schema = {
        "type": "object",
        "additionalProperties": False,
        "patternProperties": {"^(ansible\\.builtin\\.)?import_playbook$": {"type": "string"}},
        "properties": {"name": {"type": "string"}},
        "required": ["import_playbook"],
    }
    text = json_schema_to_gbnf(schema)
    m = GbnfMatcher(text)
    assert m('{"import_playbook": "site.yml"}') and m('{"name": "n", "import_playbook": "a"}')
    assert not m('{"import_playbook": 1}') and not m("{}")
    for value in _samples(text):
        assert _valid(schema, value)


def test_lengths_shared_between_the_repetitions_of_a_pattern() -> None:
    # two unbounded runs: each gets an equal share of maxLength, the first one grows to meet minLength
    schema = {"type": "string", "minLength": 5, "maxLength": 20, "pattern": "^\\S+@\\S+$"}
    compiled = compile_json_schema(schema)
    assert compiled.relaxed == ()
    m = GbnfMatcher(compiled.gbnf)
    assert m('"abc@d"') and m('"a' + "b" * 8 + "@" + "c" * 9 + '"')
    assert not m('"a@b"') and not m('"abcd"') and not m('"' + "a" * 10 + "@" + "b" * 10 + '"')
    for value in _samples(compiled.gbnf):
        assert _valid(schema, value)


def test_nested_repetitions_capped_to_fit_max_length() -> None:
    schema = {
        "type": "string",
        "maxLength": 146,
        "pattern": "^([a-z0-9-]+):([a-z0-9.-]+):([a-z0-9-]+)?:([a-z0-9-]+)$",
    }
    compiled = compile_json_schema(schema)
    assert compiled.relaxed == ()
    m = GbnfMatcher(compiled.gbnf)
    assert m('"ns:obj.v1::id"') and m('"a:b:c:d"') and not m('"132012"')
    assert not m('"' + "1" * 140 + ':a::a"')  # a run longer than its share
    for value in _samples(compiled.gbnf):
        assert _valid(schema, value)


def test_a_pattern_lengths_cannot_fit_is_enforced_and_the_lengths_validated() -> None:
    # the shortest match ("a:") is below minLength whatever the caps: no fitting, so the pattern
    # is kept and the lengths checked afterwards
    schema = {"type": "string", "minLength": 10, "maxLength": 20, "pattern": "^([a-z]+:)+$"}
    compiled = compile_json_schema(schema)
    assert len(compiled.relaxed) == 1 and "#/maxLength" in compiled.relaxed[0]
    m = GbnfMatcher(compiled.gbnf)
    assert m('"abc:de:fghij:"') and not m('"abc"')
    assert compiled.errors(json.dumps("a:"))  # too short: reported by validation
    with pytest.raises(SchemaError, match="pattern"):  # strict keeps the refusal
        compile_json_schema(schema, strict=True)
