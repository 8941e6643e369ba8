"""JSON Schema → GBNF (llamabind.grammar.json_schema), checked with a recognizer and `jsonschema`."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, time
from typing import Any

import jsonschema
import pytest

from llamabind.errors import GrammarError, SchemaError
from llamabind.grammar import Grammar, json_schema_to_gbnf, parse_gbnf, validate_gbnf
from llamabind.grammar import _emit as js  # the GBNF emitter (repetitions)
from tests.helpers.gbnf_matcher import GbnfMatcher, matches, sample

_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
        and datetime.fromisoformat(value.replace("Z", "+00:00"))
    )


@_FORMATS.checks("time", raises=ValueError)
def _is_time(value: object) -> bool:
    return not isinstance(value, str) or bool(
        re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
        and time.fromisoformat(value.replace("Z", "+00:00"))
    )


@_FORMATS.checks("uri", raises=ValueError)
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*:\S+", value))


def is_valid(schema: Any, instance: Any) -> bool:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return bool(cls(schema, format_checker=_FORMATS).is_valid(instance))


def renderings(instance: Any, ascii_too: bool = True) -> list[str]:
    """The instance as JSON text, compact, spaced and indented (str instances are JSON text already)."""
    if isinstance(instance, Raw):
        return [instance.text]
    out = [
        json.dumps(instance, separators=(",", ":"), ensure_ascii=False),
        json.dumps(instance, ensure_ascii=False),
        json.dumps(instance, indent=2, ensure_ascii=False),
    ]
    if ascii_too:
        out.append(json.dumps(instance, indent="\t"))
    return list(dict.fromkeys(out))


class Raw:
    """An instance given as JSON text (for duplicate keys and exact spellings)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def value(self) -> Any:
        return json.loads(self.text)


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        "role": {"enum": ["admin", "user", "guest"]},
    },
    "required": ["name", "role"],
    "additionalProperties": False,
}

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["value"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

SHAPES = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"kind": {"const": "circle"}, "r": {"type": "number", "exclusiveMinimum": 0}},
            "required": ["kind", "r"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "kind": {"const": "rect"},
                "w": {"type": "integer", "minimum": 1, "maximum": 1000},
                "h": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            "required": ["kind", "w", "h"],
            "additionalProperties": False,
        },
    ]
}

PYDANTIC_LIKE = {
    "$defs": {
        "Color": {"enum": ["red", "green"], "title": "Color", "type": "string"},
        "Item": {
            "properties": {
                "id": {"format": "uuid", "title": "Id", "type": "string"},
                "color": {"$ref": "#/$defs/Color", "default": "red"},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Note"},
            },
            "required": ["id"],
            "title": "Item",
            "type": "object",
        },
    },
    "properties": {
        "items": {"items": {"$ref": "#/$defs/Item"}, "title": "Items", "type": "array"},
        "created": {"format": "date-time", "title": "Created", "type": "string"},
    },
    "required": ["items", "created"],
    "title": "Order",
    "type": "object",
    "description": "an order",
    "$schema": "https://json-schema.org/draft/2020-12/schema",
}

UUID = "123e4567-e89b-12d3-a456-426614174000"

# (id, schema, valid instances, invalid instances)
CASES: list[tuple[str, Any, list[Any], list[Any]]] = [
    (
        "person",
        PERSON,
        [
            {"name": "Ann", "role": "admin"},
            {"name": "Bob", "age": 0, "role": "user"},
            {"name": "Zoë", "age": 130, "email": "z@x.org", "tags": [], "role": "guest"},
            {"name": "C", "tags": ["a", "bcdef", ""], "role": "user"},
        ],
        [
            {"role": "admin"},
            {"name": "", "role": "admin"},
            {"name": "Ann", "role": "root"},
            {"name": "Ann", "age": 131, "role": "user"},
            {"name": "Ann", "age": -1, "role": "user"},
            {"name": "Ann", "age": 1.5, "role": "user"},
            {"name": "Ann", "tags": ["a", "b", "c", "d"], "role": "user"},
            {"name": "Ann", "tags": ["toolong"], "role": "user"},
            {"name": "Ann", "role": "user", "extra": 1},
            {"name": "Ann", "email": "no-at-sign", "role": "user"},
            {"name": "a" * 13, "role": "user"},
        ],
    ),
    (
        "open-object",
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "number"}, "c": {"type": "boolean"}},
            "required": ["b"],
        },
        [
            {"b": 1},
            {"a": "x", "b": -2.5e3},
            {"a": "x", "b": 0, "c": True, "zz": [1, {"k": None}]},
            {"b": 1, "extra": "e", "more": {}},
            {"b": 1, "ab": 1, "": 2},
        ],
        [
            {},
            {"a": "x"},
            {"a": 1, "b": 1},
            {"b": "1"},
            Raw('{"b": 1, "a": 5}'),
            Raw('{"b": 1, "c": 3}'),
        ],
    ),
    (
        "map-of-integers",
        {"type": "object", "additionalProperties": {"type": "integer", "minimum": -3, "maximum": 3}},
        [{}, {"x": 3}, {"x": -3, "y y": 0, "é": 1}],
        [{"x": 4}, {"x": "1"}, {"x": None}, []],
    ),
    (
        "tree",
        TREE,
        [{"value": 1}, {"value": 1, "children": [{"value": 2, "children": []}, {"value": -3}]}],
        [
            {"value": 1, "children": [{}]},
            {"value": 1, "children": [{"value": "2"}]},
            {"value": 1, "other": 2},
        ],
    ),
    (
        "pattern",
        {"type": "string", "pattern": "^[A-Z]{2}-\\d{3,4}(/[a-z]+)?$"},
        ["AB-123", "XY-9999/abc"],
        ["ab-123", "AB-12", "AB-12345", "AB-123/", "AB-123/ABC", "xAB-123", 5],
    ),
    (
        "pattern-unanchored-with-escapes",
        {"type": "string", "pattern": 'a"b\\\\c|(foo|ba[rz])+x?$'},
        ['a"b\\c', 'xxa"b\\cyy', "foo", "barbazx", "zzfoox", "a\nfoo"],
        ['a"bc', "fo", "foob", "bax", 'a"b'],
    ),
    (
        "formats",
        {
            "type": "object",
            "properties": {
                "d": {"type": "string", "format": "date"},
                "t": {"type": "string", "format": "time"},
                "dt": {"type": "string", "format": "date-time"},
                "u": {"type": "string", "format": "uuid"},
                "ip": {"type": "string", "format": "ipv4"},
                "uri": {"type": "string", "format": "uri"},
            },
            "additionalProperties": False,
        },
        [
            {"d": "2024-02-28", "t": "23:59:59Z", "dt": "1999-12-31T00:00:00.123+05:30"},
            {"u": UUID, "ip": "192.168.0.255", "uri": "https://example.com/a?b=c#d"},
            {},
        ],
        [
            {"d": "2024-13-01"},
            {"d": "2023-02-30"},
            {"d": "24-01-01"},
            {"t": "24:00:00Z"},
            {"dt": "2024-01-01 00:00:00Z"},
            {"u": UUID[:-1]},
            {"ip": "256.1.1.1"},
            {"uri": "no scheme"},
        ],
    ),
    (
        "numbers",
        {
            "type": "object",
            "properties": {
                "n": {"type": "number", "minimum": -5, "exclusiveMaximum": 10},
                "i": {"type": "integer", "exclusiveMinimum": 0},
                "neg": {"type": "integer", "minimum": -250, "maximum": -17},
                "p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            },
            "additionalProperties": False,
        },
        [
            {"n": -5, "i": 1, "neg": -250, "p": 1},
            {"n": 9.999, "i": 123456789, "neg": -17, "p": 0.0001},
            {"n": 0, "p": 0.5},
            {"n": -4.5},
        ],
        [
            {"n": 10},
            {"n": -5.01},
            {"i": 0},
            {"i": -1},
            {"neg": -16},
            {"neg": -251},
            {"p": 0},
            {"p": 1.01},
            {"n": "1"},
        ],
    ),
    (
        "tagged-union",
        SHAPES,
        [{"kind": "circle", "r": 0.5}, {"kind": "rect", "w": 1, "h": 1000}],
        [{"kind": "circle", "r": 0}, {"kind": "rect", "w": 1}, {"kind": "square", "w": 1, "h": 1}, {"r": 1}],
    ),
    (
        "all-of-merge",
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string", "maxLength": 2}}, "required": ["b"]},
                {"properties": {"a": {"minimum": 10}}},
            ]
        },
        [{"a": 10, "b": ""}, {"a": 99, "b": "xy", "c": None}],
        [{"a": 9, "b": ""}, {"a": 10}, {"b": "x"}, {"a": 10, "b": "xyz"}, {"a": "10", "b": "x"}],
    ),
    (
        "tuple",
        {
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}],
            "items": False,
            "minItems": 2,
        },
        [["a", 1], ["a", 1, True]],
        [[], ["a"], ["a", 1, True, None], [1, "a"], ["a", 1, "true"]],
    ),
    (
        "draft7-tuple-with-additional-items",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "array",
            "items": [{"type": "null"}],
            "additionalItems": {"type": "integer"},
            "maxItems": 3,
            "definitions": {"unused": {"type": "string"}},
        },
        [[], [None], [None, 1, 2]],
        [[1], [None, "x"], [None, 1, 2, 3]],
    ),
    (
        "array-of-objects",
        {
            "type": "array",
            "items": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
            "minItems": 2,
            "maxItems": 4,
        },
        [[{"x": 1}, {"x": 2}], [{"x": 1}, {"x": 2, "y": 3}, {"x": 3}, {"x": 4}]],
        [[{"x": 1}], [{"x": 1}] * 5, [{"x": 1}, {}], [{"x": 1}, 3]],
    ),
    (
        "enum-and-const",
        {
            "type": "object",
            "properties": {"e": {"enum": [1, "two", None, [3], {"four": 4}, True]}, "c": {"const": "é"}},
        },
        [{"e": 1}, {"e": "two"}, {"e": None}, {"e": [3]}, {"e": {"four": 4}}, {"e": True, "c": "é"}],
        [{"e": 2}, {"e": "three"}, {"e": False}, {"c": "e"}],
    ),
    (
        "type-list",
        {"type": ["string", "integer", "null"], "maxLength": 3, "minimum": 5},
        ["", "abc", 5, 1000, None],
        ["abcd", 4, 5.5, True, [], {}],
    ),
    (
        "nullable-anyof",
        {
            "anyOf": [{"type": "string", "minLength": 2}, {"type": "null"}, {"$ref": "#/definitions/pos"}],
            "definitions": {"pos": {"type": "integer", "minimum": 1}},
        },
        ["ab", None, 1, 77],
        ["a", 0, False, {}],
    ),
    (
        "ref-with-siblings-and-anyof-with-siblings",
        {
            "$defs": {
                "base": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "additionalProperties": False,
                }
            },
            "$ref": "#/$defs/base",
            "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
        },
        [{"a": 1}, {"b": 2}, {"a": 1, "b": 2}],
        [{}, {"a": "1"}, {"a": 1, "c": 3}],
    ),
    (
        "openapi-and-pydantic-urls",
        {
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri", "minLength": 1, "maxLength": 42},
                "n": {"type": "integer", "format": "int64"},
            },
            "required": ["url"],
        },
        [{"url": "https://a.example/x?y=1#z"}, {"url": "a:b", "n": -7}],
        [{"url": "https://a.example/" + "x" * 40}, {"url": ""}, {"url": "http://x", "n": 1.5}],
    ),
    ("any-value-true", True, [None, 1, -2.5, "x", [1, [2]], {"a": {"b": []}}, True], []),
    ("any-value-empty", {"title": "anything", "description": "…"}, [None, {"a": 1}, []], []),
    (
        "typeless-object",
        {"properties": {"id": {"type": "integer"}}, "required": ["id"]},
        [{"id": 1}, {"id": 2, "x": "y"}],
        [{}, {"id": "1"}],
    ),
    (
        "pydantic-like",
        PYDANTIC_LIKE,
        [
            {"items": [], "created": "2024-05-01T12:00:00Z"},
            {
                "items": [{"id": UUID, "color": "green", "note": None}, {"id": UUID, "note": "hi"}],
                "created": "2024-05-01T12:00:00.5-01:00",
            },
        ],
        [
            {"items": [{"color": "red"}], "created": "2024-05-01T12:00:00Z"},
            {"items": [{"id": UUID, "color": "blue"}], "created": "2024-05-01T12:00:00Z"},
            {"items": []},
        ],
    ),
    (
        "string-lengths-and-awkward-names",
        {
            "type": "object",
            "properties": {
                'we"ird key': {"type": "string", "minLength": 2, "maxLength": 3},
                "a/b~c": {"type": "boolean"},
                "string": {"type": "null"},
                "root": {"const": 1},
            },
            "required": ['we"ird key'],
            "additionalProperties": False,
        },
        [{'we"ird key': "ab"}, {'we"ird key': "a\nb", "a/b~c": False, "string": None, "root": 1}],
        [{'we"ird key': "a"}, {'we"ird key': "abcd"}, {"a/b~c": True}],
    ),
]

# Valid instances the grammar deliberately does not produce (it is narrower than the schema).
NARROWER: list[tuple[Any, str]] = [
    (PERSON, '{"role": "admin", "name": "Ann"}'),  # properties in schema order only
    ({"type": "integer"}, "1.0"),  # integers without a fraction
    ({"type": "integer"}, "12345678901234567"),  # at most 16 digits
    ({"type": "number", "minimum": 0}, "1e3"),  # no exponent when a number has bounds
    ({"type": "string", "format": "date"}, '"2024-02-29"'),  # no 29 February
    ({"type": "string", "pattern": "^a$"}, '"\\u0061"'),  # pattern characters are not escaped
    ({"type": "string", "pattern": "\\d"}, '"٣"'),  # \d is ASCII
    (  # no escapes in the names of extra properties when some names are known
        {
            "type": "object",
            "properties": {"b": {"type": "null"}},
            "additionalProperties": {"type": "integer"},
        },
        '{"\\u0061": 1}',
    ),
]


def _check_grammar_shape(text: str) -> None:
    validate_gbnf(text)
    names = re.findall(r"^([^\s]+) ::=", text, re.MULTILINE)
    assert names[0] == "root"
    assert all(re.fullmatch(r"[a-zA-Z0-9-]+", n) for n in names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize(("schema", "valid", "invalid"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schema_accepts_valid_and_rejects_invalid(schema: Any, valid: list[Any], invalid: list[Any]) -> None:
    text = json_schema_to_gbnf(schema, strict_properties=False)  # the test data has extra properties
    _check_grammar_shape(text)
    matcher = GbnfMatcher(text)
    for instance in valid:
        value = instance.value() if isinstance(instance, Raw) else instance
        assert is_valid(schema, value), f"test data: {instance!r} should be valid"
        plain_ascii = "pattern" not in json.dumps(schema) and json.dumps(schema, ensure_ascii=False).isascii()
        for rendered in renderings(instance, ascii_too=plain_ascii):
            assert matcher(rendered), f"grammar rejects valid {rendered!r}\n{text}"
    for instance in invalid:
        value = instance.value() if isinstance(instance, Raw) else instance
        assert not is_valid(schema, value), f"test data: {instance!r} should be invalid"
        for rendered in renderings(instance):
            assert not matcher(rendered), f"grammar accepts invalid {rendered!r}\n{text}"


@pytest.mark.parametrize("schema", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_sampled_outputs_are_valid(schema: Any) -> None:
    grammar = parse_gbnf(json_schema_to_gbnf(schema))
    rng = random.Random(42)
    for _ in range(25):
        text = sample(grammar, rng, budget=70)
        value = json.loads(text)
        assert is_valid(schema, value), f"sampled invalid instance {text!r}"


@pytest.mark.parametrize(("schema", "text"), NARROWER)
def test_narrower_than_schema(schema: Any, text: str) -> None:
    assert is_valid(schema, json.loads(text))
    assert not matches(json_schema_to_gbnf(schema), text)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (0, 0),
        (1, 9),
        (7, 7),
        (3, 1000),
        (17, 250),
        (-250, -17),
        (-99, 99),
        (-5, None),
        (None, -3),
        (95, 105),
        (None, None),
    ],
)
def test_integer_ranges_exhaustively(lo: int | None, hi: int | None) -> None:
    schema: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    m = GbnfMatcher(json_schema_to_gbnf(schema))
    for i in range(-300, 1101):
        assert m(str(i)) == ((lo is None or i >= lo) and (hi is None or i <= hi)), i
    for s in ["007", "+5", "1.0", ""]:
        assert not m(s), s
    if m("-0"):  # JSON's negative zero is the integer 0
        assert (lo is None or lo <= 0) and (hi is None or hi >= 0)


@pytest.mark.parametrize(
    "bounds",
    [
        {"minimum": 0},
        {"exclusiveMinimum": 0},
        {"minimum": -2, "maximum": 3},
        {"exclusiveMinimum": -2, "exclusiveMaximum": 3},
        {"maximum": 0},
        {"exclusiveMaximum": 0},
        {"minimum": 12, "exclusiveMaximum": 13},
        {"minimum": 5, "maximum": 5},
        {"exclusiveMinimum": -20, "maximum": -10},
    ],
)
def test_number_ranges(bounds: dict[str, int]) -> None:
    schema = {"type": "number", **bounds}
    m = GbnfMatcher(json_schema_to_gbnf(schema))
    candidates = [
        f"{sign}{i}{frac}"
        for sign in ("", "-")
        for i in range(0, 25)
        for frac in ("", ".0", ".5", ".05", ".999")
    ]
    accepted = 0
    for s in candidates:
        if m(s):
            accepted += 1
            assert is_valid(schema, json.loads(s)), s
        elif not (s.endswith("0") and "." in s) and not s.startswith("-0"):
            # the grammar only drops spellings with trailing fraction zeros and negative zero
            assert not is_valid(schema, json.loads(s)), s
    assert accepted


def test_large_repetitions_split_into_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(js, "MAX_REPETITION", 5)
    monkeypatch.setattr(js, "_BLOCK", 3)
    for lo in range(0, 13):
        for hi in [*range(lo, 16), None]:
            text = f"root ::= {js._rep('[a]', lo, hi)}\n"
            validate_gbnf(text)
            m = GbnfMatcher(text)
            for n in range(0, 19):
                assert m("a" * n) == (lo <= n and (hi is None or n <= hi)), (lo, hi, n, text)


def test_long_strings_within_llama_cpp_limits() -> None:
    text = json_schema_to_gbnf({"type": "string", "minLength": 2500, "maxLength": 9000})
    _check_grammar_shape(text)
    text = json_schema_to_gbnf({"type": "array", "items": {"type": "integer"}, "maxItems": 5000})
    _check_grammar_shape(text)


def test_whitespace_is_bounded() -> None:
    m = GbnfMatcher(json_schema_to_gbnf({"type": "object", "properties": {"a": {"type": "integer"}}}))
    assert m('{"a": 1}') and m('{ "a" : 1 }') and m('{\n\t\t"a":\n    1\n}')
    assert not m('{"a":  1}')
    assert not m('{"a": 1}\n')
    assert not m(' {"a": 1}')
    assert not m('{"a":\n' + " " * 21 + "1}")


def test_recursive_grammar_has_no_left_recursion_and_is_small() -> None:
    text = json_schema_to_gbnf(TREE)
    _check_grammar_shape(text)
    assert len(text.splitlines()) < 10


def test_recursive_root_reference() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "child": {"$ref": "#"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    text = json_schema_to_gbnf(schema)
    _check_grammar_shape(text)
    assert "ref-root" not in text and " root " in text.splitlines()[0]  # the start rule recurses
    m = GbnfMatcher(text)
    deep = {"name": "a", "child": {"name": "b", "child": {"name": "c"}}}
    assert is_valid(schema, deep) and m(json.dumps(deep))
    assert not m(json.dumps({"name": "a", "child": {"child": {"name": "c"}}}))


ONE_OF_DISJOINT: list[Any] = [
    {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    {
        "oneOf": [
            {"type": "integer", "minimum": 2},
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            {"type": "null"},
        ]
    },
    {"oneOf": [{"const": "a"}, {"enum": ["b", "c"]}, {"type": "integer", "minimum": 3}]},
    {"oneOf": [{"type": "integer", "maximum": 0}, {"type": "integer", "exclusiveMinimum": 0}]},
    {
        "oneOf": [
            {"required": ["a"], "properties": {"a": {"type": "null"}}, "additionalProperties": False},
            {"required": ["b"]},
        ]
    },
]
ONE_OF_OVERLAPPING: list[Any] = [
    {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]},
    {"oneOf": [{"type": "object", "required": ["a"]}, {"type": "object", "required": ["b"]}]},
    {"type": "object", "properties": {"x": {"oneOf": [{}, {"type": "null"}]}}},
]


@pytest.mark.parametrize("schema", ONE_OF_DISJOINT)
def test_one_of_with_disjoint_branches(schema: Any) -> None:
    text = json_schema_to_gbnf(schema)
    grammar = parse_gbnf(text)
    rng = random.Random(5)
    for _ in range(30):
        assert is_valid(schema, json.loads(sample(grammar, rng)))


@pytest.mark.parametrize("schema", ONE_OF_OVERLAPPING)
def test_one_of_with_overlapping_branches_raises(schema: Any) -> None:
    with pytest.raises(SchemaError, match="'oneOf' branches 0 and 1 may both match") as info:
        json_schema_to_gbnf(schema)
    assert "JSON pointer '#" in str(info.value) and "/oneOf'" in str(info.value)


def test_grammar_from_json_schema() -> None:
    g = Grammar.from_json_schema(PERSON)
    assert g.root == "root"
    assert matches(g.text, '{"name":"A","role":"user"}')


UNSUPPORTED: list[tuple[Any, str, str]] = [
    ({"not": {"type": "string"}}, "'not'", "#/not"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'", "#/multipleOf"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'", "#/uniqueItems"),
    ({"type": "string", "pattern": "^a+$", "minLength": 2, "maxLength": 1}, "'minLength' is greater", "#"),
    (
        {"type": "object", "properties": {"a": {}}, "maxProperties": 1, "required": ["a", "b"]},
        "'maxProperties'",
        "#",
    ),
    ({"type": "number", "minimum": 0.5, "maximum": 0.7}, "no number satisfies", "#"),
    ({"type": "array", "contains": {"type": "integer"}}, "'contains'", "#/contains"),
    ({"propertyNames": {"maxLength": 3}}, "'propertyNames'", "#/propertyNames"),
    ({"unevaluatedProperties": False}, "'unevaluatedProperties'", "#/unevaluatedProperties"),
    ({"items": [{"$ref": "other.json#/x"}]}, "remote or relative $ref", "#/items/0/$ref"),
    ({"$ref": "https://example.com/s.json"}, "remote or relative $ref", "#/$ref"),
    ({"$ref": "#node"}, "anchor references", "#/$ref"),
    ({"$ref": "#/$defs/missing"}, "does not resolve", "#/$ref"),
    ({"type": "string", "pattern": "(?=a)b"}, "lookaround", "#/pattern"),
    ({"type": "string", "pattern": "(a)\\1"}, "escape '\\1'", "#/pattern"),
    ({"type": "string", "pattern": "\\bword"}, "escape '\\b'", "#/pattern"),
    ({"type": "string", "pattern": "a^b"}, "only supported at the very start/end", "#/pattern"),
    ({"type": "string", "pattern": "(?i)abc"}, "flags", "#/pattern"),
    ({"type": "string", "pattern": "\\p{L}"}, "escape '\\p'", "#/pattern"),
    ({"type": "strng"}, "unknown type 'strng'", "#/type"),
    (
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        "circular",
        "#/",
    ),
    ({"anyOf": [{"$ref": "#"}, {"type": "null"}]}, "circular", "#/anyOf/0"),
    ({"anyOf": {"type": "string"}}, "'anyOf' must be a non-empty array", "#/anyOf"),
    (False, "never be satisfied", "#"),
    ({"type": "object", "properties": {"a": False}, "required": ["a"]}, "required property 'a'", "#"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "never be satisfied", "#"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer satisfies", "#"),
    ({"type": "string", "minLength": 3, "maxLength": 2}, "'minLength' is greater", "#"),
    ({"enum": ["a", "b"], "type": "integer"}, "no 'enum'/'const' value", "#"),
    ({"const": float("nan")}, "not JSON", "#/const"),
]


@pytest.mark.parametrize(
    ("schema", "fragment", "pointer"), UNSUPPORTED, ids=[u[1] + " " + u[2] for u in UNSUPPORTED]
)
def test_unsupported_or_unsatisfiable_schemas_raise(schema: Any, fragment: str, pointer: str) -> None:
    with pytest.raises(SchemaError) as info:
        json_schema_to_gbnf(schema)
    assert isinstance(info.value, GrammarError)
    message = str(info.value)
    assert fragment in message, message
    assert f"JSON pointer '{pointer}" in message, message


def test_annotations_and_unknown_keywords_are_ignored() -> None:
    plain = json_schema_to_gbnf({"type": "string"})
    annotated = json_schema_to_gbnf(
        {
            "type": "string",
            "title": "t",
            "description": "d",
            "examples": ["x"],
            "default": "x",
            "$comment": "c",
            "$id": "https://example.com/x",
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "deprecated": True,
            "x-vendor-extension": 1,
            "uniqueItems": False,
        }
    )
    assert plain == annotated


def test_not_a_schema() -> None:
    with pytest.raises(SchemaError):
        json_schema_to_gbnf([{"type": "string"}])  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="must be an object or a boolean"):
        json_schema_to_gbnf({"items": 3})
