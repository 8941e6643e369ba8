"""OpenAI ``response_format`` (``json_object`` / ``json_schema``) → a sampling grammar.

Schemas are *closed* first (:func:`closed_schema`): objects that do not mention extra keys allow
none, as llama.cpp's converter reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..grammar import Grammar, json_schema_to_gbnf
from .messages import ChatRequestError

__all__ = ["closed_schema", "closed_schema_gbnf", "response_format_grammar"]


def response_format_grammar(response_format: Mapping[str, Any] | None) -> Grammar | None:
    """The grammar an OpenAI ``response_format`` asks for (None for ``text`` / absent).

    ``{"type": "json_object"}`` (optionally with a llama.cpp-style ``schema``) and
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``. Raises
    :class:`ChatRequestError` for a malformed value and ``SchemaError`` for an unsupported schema.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ChatRequestError("response_format must be an object", "response_format")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        if schema is None:
            return Grammar.json_object()
        return _schema_grammar(schema)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if spec is None:
            spec = {"schema": response_format.get("schema")}
        if not isinstance(spec, Mapping):
            raise ChatRequestError("response_format.json_schema must be an object", "response_format")
        schema = spec.get("schema")
        if schema is None:
            return Grammar.json_object()
        return _schema_grammar(schema)
    raise ChatRequestError(
        f"response_format.type must be 'text', 'json_object' or 'json_schema', not {kind!r}",
        "response_format",
    )


def _schema_grammar(schema: Any) -> Grammar:
    if not isinstance(schema, (Mapping, bool)):
        raise ChatRequestError("the JSON schema must be an object", "response_format")
    return Grammar.from_json_schema(closed_schema(schema))


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
