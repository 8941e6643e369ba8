"""Hypothesis strategies for hostile JSON schemas, and the code that runs one against the library
(in a worker process: see fuzz_worker.py): ``json_schema_to_gbnf`` may raise only llamabind errors
(SchemaError / GrammarError), and the grammar of every accepted schema must compile in llama.cpp
(a grammar sampler is built and samples a few tokens).

A case is ``{"kind": "schema", "schema": <schema>, "seed": n}``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SAFE_PATTERNS = ("^[a-z]+$", "^\\d{3}-\\d{4}$", "[A-Z][a-z]*", "^(ab|cd)*$", "^a{2,5}$", "^[^\\s]+@x\\.org$")
NASTY_PATTERNS = (
    "^(a+)+$",
    "(a|a)*b",
    "((a*)*)*",
    "\\",
    "[",
    "(?=a)b",
    "(a)\\1",
    "a{100000}",
    "(?i)abc",
    "^$",
    ".*",
    "[^\\x00-\\x7f]{2}",
    "\\p{L}+",
    "a{3,1}",
    "((((((((((a{2,3}){2,3}){2,3}){2,3}){2,3}){2,3}){2,3}){2,3}){2,3}){2,3})",
    "[z-a]",
    "(?P<n>x)(?P=n)",
    "\\u00e9|\\x41|\\n",
)
FORMATS = ("date", "time", "date-time", "uuid", "email", "uri", "ipv4", "hostname", "no-such-format")
_NUMS = st.sampled_from([-1, 0, 1, 2, 5, 20, 1000, 10**9, 2**63, -(2**63), 0.5, 1e308, -1e308])
_SMALL = st.sampled_from([0, 1, 2, 3, 5, 50, 10**6, -1])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["", "a", "b", 'q"\\', "é", "\u0000", 1.5])
)
_NAMES = st.sampled_from(["a", "b", "c", "id", "", "$ref", "with space", '"q"', "é"])
_REFS = st.sampled_from(
    [
        "#",
        "#/$defs/a",
        "#/$defs/b",
        "#/$defs/missing",
        "#/properties/a",
        "#/definitions/a",
        "x.json",
        "#/$defs/a/properties/b",
    ]
)


def _leaf() -> st.SearchStrategy[Any]:
    typed = st.sampled_from(["string", "number", "integer", "boolean", "null", "object", "array"]).map(
        lambda t: {"type": t}
    )
    multi = st.lists(st.sampled_from(["string", "number", "integer", "null", "bogus"]), max_size=3).map(
        lambda ts: {"type": ts}
    )
    pattern = st.sampled_from(SAFE_PATTERNS + NASTY_PATTERNS).map(lambda p: {"type": "string", "pattern": p})
    length = st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={"minLength": _SMALL, "maxLength": _SMALL, "format": st.sampled_from(FORMATS)},
    )
    number = st.fixed_dictionaries(
        {"type": st.sampled_from(["integer", "number"])},
        optional={
            "minimum": _NUMS,
            "maximum": _NUMS,
            "exclusiveMinimum": _NUMS,
            "exclusiveMaximum": _NUMS,
            "multipleOf": _NUMS,
        },
    )
    enum = st.lists(_SCALARS, max_size=6).map(lambda vs: {"enum": vs})
    const = _SCALARS.map(lambda v: {"const": v})
    ref = _REFS.map(lambda r: {"$ref": r})
    odd = st.sampled_from(
        [True, False, {}, {"not": {"type": "string"}}, {"anyOf": []}, {"type": "string", "bogus": 1}]
    )
    return st.one_of(typed, typed, multi, pattern, length, number, number, enum, const, ref, odd)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    obj = st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(_NAMES, children, max_size=4)},
        optional={
            "required": st.lists(_NAMES, max_size=3),
            "additionalProperties": st.one_of(st.booleans(), children),
            "minProperties": _SMALL,
            "maxProperties": _SMALL,
            "patternProperties": st.dictionaries(st.sampled_from(SAFE_PATTERNS[:2]), children, max_size=1),
        },
    )
    arr = st.fixed_dictionaries(
        {"type": st.just("array")},
        optional={
            "items": st.one_of(children, st.booleans()),
            "prefixItems": st.lists(children, max_size=3),
            "minItems": _SMALL,
            "maxItems": _SMALL,
            "uniqueItems": st.booleans(),
        },
    )
    combos = st.tuples(
        st.sampled_from(["anyOf", "oneOf", "allOf"]), st.lists(children, min_size=1, max_size=4)
    ).map(lambda t: {t[0]: t[1]})
    mixed = st.tuples(children, combos).map(lambda t: {**t[0], **t[1]} if isinstance(t[0], dict) else t[1])
    return st.one_of(obj, obj, arr, arr, combos, mixed)


def schemas() -> st.SearchStrategy[Any]:
    body = st.recursive(_leaf(), _extend, max_leaves=12)
    defs = st.dictionaries(st.sampled_from(["a", "b"]), body, max_size=2)
    with_defs = st.tuples(body, defs).map(
        lambda t: {**t[0], "$defs": t[1]} if isinstance(t[0], dict) and t[1] else t[0]
    )
    return st.one_of(body, with_defs)


def schema_cases() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"kind": st.just("schema"), "schema": schemas(), "seed": st.integers(0, 2**32 - 1)}
    )


# ------------------------------------------------------------------------------------- running


def run_schema_case(model: Any, case: dict[str, Any], n_tokens: int = 4) -> str:
    """Convert the schema and sample with its grammar; "ok" or "refused: <llamabind error>".
    Any other exception propagates (a failure)."""
    import numpy as np

    from llamabind.errors import LlamabindError
    from llamabind.grammar import Grammar

    try:
        grammar = Grammar.from_json_schema(case["schema"])
    except LlamabindError as exc:
        return f"refused: {type(exc).__name__}: {str(exc)[:160]}"
    rng = np.random.default_rng(case["seed"])
    from llamabind.core.sampler import Sampler

    # an accepted schema's grammar must compile in llama.cpp: sampler init, then a few tokens
    with Sampler(model).grammar(grammar).dist(case["seed"]) as sampler:
        for _ in range(n_tokens):
            token = sampler.sample_logits(rng.normal(0.0, 3.0, model.n_vocab).astype(np.float32))
            if model.vocab.is_eog(token):
                break
    return "ok"
