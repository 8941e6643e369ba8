"""JSON Schema → grammar, sampled from the real model: every output parses and validates.

For each schema, the model samples at temperature 0.8 with several seeds through
``SamplingParams(grammar=Grammar.from_json_schema(schema))``; 100 % of the outputs must parse and
validate with ``jsonschema`` (formats checked), and none may be cut by ``max_tokens`` (the
schemas bound every string and array, so a complete value always fits).

Each run starts from an empty KV cache (``Generator.reset``): llama.cpp's results depend on
where the cache places tokens at the level of rounding, which can flip near-ties, so runs that are
compared must start alike.

Also: the grammar-last sampling path of ``Sampler.sample`` (sample without the grammar, check the
token, re-sample with the grammar first only when it is rejected) picks exactly the tokens that
applying the grammar first picks, for greedy chains.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

import llamabind as lb
from llamabind.grammar import Grammar
from tests.helpers.core import THREADS

SEEDS = (1, 2, 3)
MAX_TOKENS = 200

_NAME = {"type": "string", "minLength": 1, "maxLength": 16}

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested_objects": {
        "type": "object",
        "properties": {
            "name": _NAME,
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string", "maxLength": 20},
                    "city": _NAME,
                    "geo": {
                        "type": "object",
                        "properties": {
                            "lat": {"type": "integer", "minimum": -90, "maximum": 90},
                            "lon": {"type": "integer", "minimum": -180, "maximum": 180},
                        },
                        "required": ["lat", "lon"],
                        "additionalProperties": False,
                    },
                },
                "required": ["street", "city", "geo"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "address"],
        "additionalProperties": False,
    },
    "array_min_max_items": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 99},
        "minItems": 2,
        "maxItems": 5,
    },
    "array_of_objects": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"task": _NAME, "done": {"type": "boolean"}},
            "required": ["task", "done"],
            "additionalProperties": False,
        },
        "minItems": 1,
        "maxItems": 3,
    },
    "enums": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"enum": ["S", "M", "L", 42, None, True]},
            "unit": {"const": "cm"},
        },
        "required": ["color", "size", "unit"],
        "additionalProperties": False,
    },
    "any_of": {
        "type": "object",
        "properties": {
            "value": {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 10},
                    {"type": "string", "maxLength": 8},
                    {"type": "boolean"},
                    {"type": "null"},
                ]
            },
            "values": {
                "type": "array",
                "items": {"anyOf": [{"type": "integer", "minimum": -5, "maximum": 5}, {"enum": ["x", "y"]}]},
                "maxItems": 4,
            },
        },
        "required": ["value", "values"],
        "additionalProperties": False,
    },
    "one_of_tagged": {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "circle"},
                    "r": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                "required": ["kind", "r"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "rect"},
                    "w": {"type": "integer", "minimum": 1, "maximum": 100},
                    "h": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                "required": ["kind", "w", "h"],
                "additionalProperties": False,
            },
        ]
    },
    "refs_and_defs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -1000, "maximum": 1000},
                    "y": {"type": "integer", "minimum": -1000, "maximum": 1000},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            },
            "segment": {
                "type": "object",
                "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
                "required": ["from", "to"],
                "additionalProperties": False,
            },
        },
        "type": "object",
        "properties": {"label": _NAME, "segment": {"$ref": "#/$defs/segment"}},
        "required": ["label", "segment"],
        "additionalProperties": False,
    },
    "string_formats": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "time"},
        },
        "required": ["id", "day", "at"],
        "additionalProperties": False,
    },
    "integer_bounds": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 65},
            "delta": {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "count": {"type": "integer", "minimum": 0, "maximum": 1000000},
        },
        "required": ["age", "delta", "year", "count"],
        "additionalProperties": False,
    },
    "optional_properties": {
        "type": "object",
        "properties": {
            "title": _NAME,
            "subtitle": {"type": "string", "maxLength": 12},
            "pages": {"type": "integer", "minimum": 1, "maximum": 999},
            "draft": {"type": "boolean"},
        },
        "required": ["title"],
        "additionalProperties": False,
    },
    "additional_properties_false": {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"type": "null"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
    "pattern": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
            "phone": {"type": "string", "pattern": "^\\+?[0-9]{7,10}$"},
            "slug": {"type": "string", "pattern": "^[a-z]{1,8}(-[a-z]{1,8}){0,2}$"},
        },
        "required": ["code", "phone", "slug"],
        "additionalProperties": False,
    },
    "bounded_numbers_and_strings": {
        "type": "object",
        "properties": {
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "word": {"type": "string", "minLength": 3, "maxLength": 6},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 6},
                "minItems": 1,
                "maxItems": 2,
                "uniqueItems": False,
            },
        },
        "required": ["ratio", "word", "tags"],
        "additionalProperties": False,
    },
    # real-world keywords (issue 15), and objects without additionalProperties (closed by default)
    "config_keywords": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "minLength": 2, "maxLength": 12},
            "mode": {"enum": ["fast", "safe"]},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5},
            "perms": {
                "type": "array",
                "items": {"enum": ["r", "w", "x"]},
                "uniqueItems": True,
                "maxItems": 3,
            },
            "labels": {
                "type": "object",
                "patternProperties": {"^[a-z]{1,8}$": {"type": "boolean"}},
                "maxProperties": 2,
            },
        },
        "required": ["name", "mode"],
        "dependentRequired": {"retries": ["perms"]},
        "if": {"properties": {"mode": {"const": "safe"}}, "required": ["mode"]},
        "then": {"properties": {"retries": {"minimum": 1}}},
        "else": {"properties": {"mode": {"const": "fast"}}},
    },
}


def _prompt(schema: dict[str, Any]) -> str:
    """A short request naming the top-level keys (the grammar does the rest; short keeps it fast)."""
    keys = ", ".join(schema.get("properties", {})) or "the values"
    return f"<|im_start|>user\nReply with JSON giving {keys}.<|im_end|>\n<|im_start|>assistant\n"


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def gen(model: lb.Model) -> Iterator[lb.Generator]:
    with lb.Context(model, n_ctx=1024, n_batch=512, n_threads=THREADS) as ctx:
        yield lb.Generator(ctx)


def _complete(gen: lb.Generator, prompt: str, **kw: Any) -> lb.GenerationResult:
    gen.reset()
    return gen.complete(prompt, max_tokens=MAX_TOKENS, **kw)


def test_enough_schemas() -> None:
    assert len(SCHEMAS) >= 10
    text = json.dumps(SCHEMAS)
    for keyword in ("$ref", "$defs", "anyOf", "oneOf", "enum", "minItems", "maxItems", "pattern", "format"):
        assert keyword in text


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_sampled_outputs_validate(gen: lb.Generator, name: str) -> None:
    schema = SCHEMAS[name]
    validator = _validator(schema)
    grammar = Grammar.from_json_schema(schema)
    prompt = _prompt(schema)
    outputs = []
    for seed in SEEDS:
        sp = lb.SamplingParams(temperature=0.8, seed=seed, grammar=grammar)
        r = _complete(gen, prompt, sampling=sp)
        assert r.finish_reason == "stop", f"seed {seed}: cut by max_tokens: {r.text!r}"
        value = json.loads(r.text)
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, f"seed {seed}: {r.text!r}: {errors}"
        outputs.append(r.text)
    assert len(set(outputs)) > 1, "the seeds should give different outputs"


IDENTITY = ["nested_objects", "any_of", "string_formats", "pattern"]


@pytest.mark.parametrize("name", IDENTITY)
def test_grammar_last_sampling_is_identical(model: lb.Model, gen: lb.Generator, name: str) -> None:
    """Greedy chains: checking the grammar after sampling selects what applying it first does."""
    schema = SCHEMAS[name]
    grammar = Grammar.from_json_schema(schema)
    prompt = _prompt(schema)
    params = [
        lb.SamplingParams(temperature=0.0, grammar=grammar),
        # penalties and DRY change the logits every step; a bias pushes tokens the grammar rejects
        lb.SamplingParams(
            temperature=0.0,
            grammar=grammar,
            repeat_penalty=1.3,
            dry_multiplier=0.8,
            logit_bias={model.tokenize(" the", add_special=False)[0]: 5.0},
        ),
    ]
    for sp in params:
        results = []
        for grammar_first in (False, True):
            smp = sp.build(model, no_perf=False)
            smp.grammar_first = grammar_first
            r = _complete(gen, prompt, sampler=smp)
            assert smp.perf().n_sample == len(r.tokens) + (r.finish_reason == "stop")
            smp.close()
            results.append(r)
        fast, slow = results
        assert fast.tokens == slow.tokens
        assert fast.finish_reason == slow.finish_reason == "stop"
        _validator(schema).validate(json.loads(fast.text))


def test_grammar_last_resamples_rejected_tokens(model: lb.Model, gen: lb.Generator) -> None:
    """A token the chain prefers but the grammar rejects is replaced, in the same step."""
    words = Grammar('root ::= "yes" | "no"')
    banned = model.tokenize("Sure", add_special=False)[0]
    with lb.Sampler(model).grammar(words).logit_bias({banned: 50.0}).greedy() as smp:
        r = gen.complete("Answer yes or no: is the sky blue?", sampler=smp, max_tokens=8)
    assert r.text in ("yes", "no") and r.finish_reason == "stop"
