"""OpenAI ``response_format`` (``json_object`` / ``json_schema``) → a sampling grammar.

Schemas are converted leniently (:func:`~llamabind.grammar.compile_json_schema`): objects generate
only the properties they name unless ``additionalProperties`` asks for more, and keywords a grammar
cannot enforce are left to validation after generation — :func:`response_format_schema` returns the
:class:`~llamabind.grammar.CompiledSchema` whose ``errors`` the chat layer reports as
``schema_errors``. ``"strict": true`` in ``json_schema`` refuses such schemas up front instead (as
OpenAI's strict mode does); ``"strict_properties": false`` restores the permissive reading of objects
without ``additionalProperties``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..grammar import CompiledSchema, Grammar, compile_json_schema, json_schema_to_gbnf
from .messages import ChatRequestError

__all__ = [
    "closed_schema",
    "closed_schema_gbnf",
    "response_format_grammar",
    "response_format_schema",
    "tool_arguments_gbnf",
]


def response_format_schema(
    response_format: Mapping[str, Any] | None,
) -> tuple[Grammar | None, CompiledSchema | None]:
    """The grammar an OpenAI ``response_format`` asks for (None for ``text`` / absent), and the
    compiled schema when there is one (its ``errors`` validate the output).

    ``{"type": "json_object"}`` (optionally with a llama.cpp-style ``schema``) and
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict", "strict_properties"}}``.
    Raises :class:`ChatRequestError` for a malformed value and ``SchemaError`` for an unsupported schema.
    """
    if response_format is None:
        return None, None
    if not isinstance(response_format, Mapping):
        raise ChatRequestError("response_format must be an object", "response_format")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None, None
    if kind == "json_object":
        spec: Any = response_format
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if spec is None:
            spec = response_format
        if not isinstance(spec, Mapping):
            raise ChatRequestError("response_format.json_schema must be an object", "response_format")
    else:
        raise ChatRequestError(
            f"response_format.type must be 'text', 'json_object' or 'json_schema', not {kind!r}",
            "response_format",
        )
    schema = spec.get("schema")
    if schema is None:
        return Grammar.json_object(), None
    if not isinstance(schema, (Mapping, bool)):
        raise ChatRequestError("the JSON schema must be an object", "response_format")
    strict = spec.get("strict") is True
    strict_properties = spec.get("strict_properties", response_format.get("strict_properties", True))
    if not isinstance(strict_properties, bool):
        raise ChatRequestError("strict_properties must be a boolean", "response_format")
    compiled = compile_json_schema(
        schema if isinstance(schema, bool) else dict(schema),
        strict=strict,
        strict_properties=strict_properties,
    )
    return compiled.grammar, compiled


def response_format_grammar(response_format: Mapping[str, Any] | None) -> Grammar | None:
    """The grammar of :func:`response_format_schema`."""
    return response_format_schema(response_format)[0]


def tool_arguments_gbnf(schema: Any) -> str:
    """GBNF for tool-call arguments: compact JSON, named properties only; keywords a grammar cannot
    enforce are left out (the parsed arguments are plain JSON either way)."""
    return compile_json_schema(schema, whitespace="compact").gbnf


_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalItems", "contains", "not", "if", "then", "else")


def closed_schema(schema: Any) -> Any:
    """A copy of a JSON schema in which objects that do not mention ``additionalProperties`` (or
    ``patternProperties``) allow no extra keys, as llama.cpp's converter reads them.

    Every document valid against the result is valid against the original; small models otherwise
    tend to keep inventing keys. ``allOf`` members are left open (closing each would conflict).
    """
    if isinstance(schema, list):
        return [closed_schema(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        sub = out.get(key)
        if isinstance(sub, Mapping):
            out[key] = {k: closed_schema(v) for k, v in sub.items()}
    for key in _SUBSCHEMA_LISTS:
        sub = out.get(key)
        if isinstance(sub, list):
            out[key] = [closed_schema(v) for v in sub]
    for key in _SUBSCHEMA_ONE:
        if key in out:
            out[key] = closed_schema(out[key])
    kind = out.get("type")
    is_object = (
        kind == "object"
        or (isinstance(kind, list) and "object" in kind)
        or (kind is None and "properties" in out)
    )
    if (
        is_object
        and "additionalProperties" not in out
        and "patternProperties" not in out
        and "unevaluatedProperties" not in out
        and "allOf" not in out
    ):
        out["additionalProperties"] = False
    return out


def closed_schema_gbnf(schema: Any) -> str:
    """GBNF for :func:`closed_schema` ``(schema)`` (tool-call arguments)."""
    return json_schema_to_gbnf(closed_schema(schema))
