"""Linear-time regexes (RE2) and post-generation validation of JSON documents against a schema.

JSON Schema ``pattern`` / ``patternProperties`` regexes come from clients, so they never run on
Python's backtracking ``re`` (``^(a+)+$`` against a long string takes exponential time there): they
run on RE2 (``google-re2``), whose matching time is linear in the input. A pattern RE2 cannot
compile (lookaround, backreferences) is refused with `SchemaError`.

:class:`SchemaValidator` checks a generated document with ``jsonschema`` (formats are annotations,
as JSON Schema 2020-12 says by default), its regex keywords swapped for RE2 ones.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import re2
from jsonschema import validators as _validators
from jsonschema.exceptions import ValidationError

from llamabind.errors import SchemaError

__all__ = ["SchemaValidator", "linear_regex"]

_MAX_PATTERN = 4096
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def linear_regex(pattern: str, pointer: str = "") -> Any:
    """``pattern`` compiled with RE2 (linear-time matching); `SchemaError` if RE2 cannot take it."""
    if len(pattern) > _MAX_PATTERN:
        raise SchemaError(f"pattern is longer than {_MAX_PATTERN} characters (at JSON pointer '#{pointer}')")
    try:
        return _compile(pattern)
    except Exception as exc:  # re2.error: unsupported syntax (lookaround, backreferences, ...)
        raise SchemaError(
            f"pattern {pattern!r} cannot be matched in linear time (RE2: {exc}) (at JSON pointer '#{pointer}')"
        ) from None


def _search(pattern: str, text: str) -> bool:
    return _compile(pattern).search(text) is not None


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and isinstance(pattern, str) and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _extra_names(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)]


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _extra_names(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, extras))})")


_KEYWORDS = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}


@functools.lru_cache(maxsize=16)
def _validator_class(base: Any) -> Any:
    return _validators.extend(base, _KEYWORDS)


class SchemaValidator:
    """Validates documents against one schema (RE2 regexes, formats not asserted)."""

    def __init__(self, schema: Any) -> None:
        base = _validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        self._validator = _validator_class(base)(schema)

    def errors(self, instance: Any, limit: int = 5) -> list[str]:
        """Up to ``limit`` messages, each with the JSON pointer of the offending value."""
        out: list[str] = []
        for err in self._validator.iter_errors(instance):
            where = "".join(f"/{p}" for p in err.absolute_path)
            out.append(f"{err.message} (at '#{where}')")
            if len(out) >= limit:
                break
        return out

    def text_errors(self, text: str, limit: int = 5) -> list[str]:
        """:meth:`errors` for JSON text; a single message when it is not JSON at all."""
        try:
            value = json.loads(text)
        except ValueError as exc:
            return [f"output is not a complete JSON document: {exc}"]
        return self.errors(value, limit)
