"""JSON Schema normalisation: keyword families, plain (combinator-free) schemas, allOf merging,
JSON type checks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, cast

from llamabind.errors import SchemaError

from ._emit import _fail, _ptr

_ANNOTATIONS = frozenset(
    "title description examples default deprecated readOnly writeOnly $schema $id id $anchor"
    " $dynamicAnchor $recursiveAnchor $comment $vocabulary contentMediaType contentEncoding"
    " contentSchema $defs definitions".split()
)
# Keywords no grammar here enforces: ignored while generating (the result is then validated), or
# refused in strict mode.
_UNENFORCED = frozenset(
    "not propertyNames unevaluatedProperties unevaluatedItems contains minContains maxContains"
    " multipleOf $dynamicRef $recursiveRef".split()
)
_COMBINATORS = frozenset(
    {"allOf", "anyOf", "oneOf", "$ref", "if", "then", "else", "dependentSchemas", "dependencies"}
)
_FAMILY_OF = {
    "properties": "object",
    "required": "object",
    "additionalProperties": "object",
    "items": "array",
    "prefixItems": "array",
    "additionalItems": "array",
    "minItems": "array",
    "maxItems": "array",
    "uniqueItems": "array",
    "patternProperties": "object",
    "minProperties": "object",
    "maxProperties": "object",
    "dependentRequired": "object",
    "minLength": "string",
    "maxLength": "string",
    "pattern": "string",
    "format": "string",
    "minimum": "number",
    "maximum": "number",
    "exclusiveMinimum": "number",
    "exclusiveMaximum": "number",
}
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")

# Limits that keep grammars (and the work to build them) reasonable.


# --------------------------------------------------------------------------------------------
# Primitive rules (added to the output only when used)
# --------------------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    """A key equal for JSON-equal values (1 == 1.0, but true != 1)."""
    if type(value) is str:  # what json.dumps does for a string, without its setup
        return encode_basestring_ascii(value)

    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, allow_nan=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_type_ok(value: Any, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "number":
        return _is_number(value)
    if t == "integer":
        return _is_number(value) and float(value).is_integer()
    if t == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


def _value_types(p: _Plain) -> set[str]:
    """The JSON types of the values `p` may allow (integers are also numbers)."""
    if p.enum is not None:
        out: set[str] = set()
        for v in p.enum:
            out |= {t for t in _TYPES if _json_type_ok(v, t)}
        return out
    types = set(p.types) if p.types is not None else set(p.families) if p.families else set(_TYPES)
    if "number" in types:
        types.add("integer")
    return types


def _intersect_types(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    out = set(a & b)
    if "number" in a and "integer" in b:
        out.add("integer")
    if "integer" in a and "number" in b:
        out.add("integer")
    return frozenset(out)


# --------------------------------------------------------------------------------------------
# Integer and number ranges
# --------------------------------------------------------------------------------------------


_Loc = tuple[Any, str]  # (schema, JSON pointer)


@dataclass
class _Plain:
    pointer: str
    types: frozenset[str] | None = None
    enum: list[Any] | None = None
    families: set[str] = field(default_factory=set)
    min_length: int = 0
    max_length: int | None = None
    patterns: list[tuple[str, str]] = field(default_factory=list)
    formats: list[tuple[str, str]] = field(default_factory=list)
    lower: tuple[float, bool] | None = None  # (bound, exclusive)
    upper: tuple[float, bool] | None = None
    properties: dict[str, list[_Loc]] = field(default_factory=dict)
    required: dict[str, None] = field(default_factory=dict)
    additional: list[_Loc] = field(default_factory=list)  # allOf; empty means any value
    prefix: list[list[_Loc]] = field(default_factory=list)
    items: list[_Loc] = field(default_factory=list)
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False
    pattern_props: list[tuple[str, _Loc]] = field(default_factory=list)
    min_props: int = 0
    max_props: int | None = None
    dep_required: dict[str, list[str]] = field(default_factory=dict)
    unenforced: list[tuple[str, str]] = field(default_factory=list)  # (keyword, pointer)


def _nonneg_int(value: Any, key: str, pointer: str) -> int:
    """`value` of keyword `key` of the schema at `pointer`, checked."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(f"'{key}' must be a non-negative integer", _ptr(pointer, key))
    return value


def _number(value: Any, key: str, pointer: str) -> float:
    """`value` of keyword `key` of the schema at `pointer`, checked."""
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        raise _fail(f"'{key}' must be a finite number", _ptr(pointer, key))
    return cast(float, value)


def _tighter_lower(a: tuple[float, bool] | None, b: tuple[float, bool] | None) -> tuple[float, bool] | None:
    if a is None or b is None:
        return a or b
    if a[0] != b[0]:
        return a if a[0] > b[0] else b
    return (a[0], a[1] or b[1])


def _tighter_upper(a: tuple[float, bool] | None, b: tuple[float, bool] | None) -> tuple[float, bool] | None:
    if a is None or b is None:
        return a or b
    if a[0] != b[0]:
        return a if a[0] < b[0] else b
    return (a[0], a[1] or b[1])


def _base_plain(schema: dict[str, Any], pointer: str) -> _Plain:
    """The keywords of `schema` other than combinators, checked."""
    p = _Plain(pointer)
    for key, value in schema.items():
        if key in _ANNOTATIONS or key in _COMBINATORS:
            continue
        if key in _UNENFORCED:
            p.unenforced.append((key, _ptr(pointer, key)))
            continue
        if key in _FAMILY_OF:
            p.families.add(_FAMILY_OF[key])
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not all(isinstance(t, str) for t in names):
                raise _fail("'type' must be a type name or a non-empty list of them", _ptr(pointer, key))
            for t in names:
                if t not in _TYPES:
                    raise _fail(f"unknown type {t!r}", _ptr(pointer, key))
            p.types = frozenset(names)
        elif key in ("enum", "const"):
            values = [value] if key == "const" else value
            if not isinstance(values, list) or not values:
                raise _fail("'enum' must be a non-empty array", _ptr(pointer, key))
            try:
                keys = [_canonical(v) for v in values]
            except (TypeError, ValueError) as exc:
                raise _fail(f"'{key}' value is not JSON: {exc}", _ptr(pointer, key)) from None
            p.enum = list({k: v for k, v in zip(keys, values, strict=True)}.values())
        elif key in ("minLength", "maxLength", "minItems", "maxItems"):
            n = _nonneg_int(value, key, pointer)
            if key == "minLength":
                p.min_length = n
            elif key == "maxLength":
                p.max_length = n
            elif key == "minItems":
                p.min_items = n
            else:
                p.max_items = n
        elif key == "pattern":
            if not isinstance(value, str):
                raise _fail("'pattern' must be a string", _ptr(pointer, key))
            p.patterns.append((value, _ptr(pointer, key)))
        elif key == "format":
            if not isinstance(value, str):
                raise _fail("'format' must be a string", _ptr(pointer, key))
            # checked when a string is generated: formats only apply to strings
            p.formats.append((value, _ptr(pointer, key)))
        elif key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            if isinstance(value, bool):  # draft 4: exclusiveMinimum/Maximum qualify minimum/maximum
                if key.startswith("exclusive"):
                    continue
                raise _fail(f"'{key}' must be a number", _ptr(pointer, key))
            v = _number(value, key, pointer)
            if key == "minimum":
                p.lower = _tighter_lower(p.lower, (v, schema.get("exclusiveMinimum") is True))
            elif key == "maximum":
                p.upper = _tighter_upper(p.upper, (v, schema.get("exclusiveMaximum") is True))
            elif key == "exclusiveMinimum":
                p.lower = _tighter_lower(p.lower, (v, True))
            else:
                p.upper = _tighter_upper(p.upper, (v, True))
        elif key == "properties":
            if not isinstance(value, dict):
                raise _fail("'properties' must be an object", _ptr(pointer, key))
            kp = _ptr(pointer, key)
            p.properties = {name: [(sub, _ptr(kp, name))] for name, sub in value.items()}
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise _fail("'required' must be an array of strings", _ptr(pointer, key))
            p.required = dict.fromkeys(value)
        elif key == "additionalProperties":
            p.additional = [(value, _ptr(pointer, key))]
        elif key == "prefixItems":
            kp = _ptr(pointer, key)
            if not isinstance(value, list):
                raise _fail("'prefixItems' must be an array", kp)
            if isinstance(schema.get("items"), list):
                raise _fail("'prefixItems' together with an array-valued 'items'", kp)
            p.prefix = [[(sub, _ptr(kp, i))] for i, sub in enumerate(value)]
        elif key == "items":
            kp = _ptr(pointer, key)
            if isinstance(value, list):  # draft 4-2019 tuple form
                p.prefix = [[(sub, _ptr(kp, i))] for i, sub in enumerate(value)]
                if "additionalItems" in schema:
                    p.items = [(schema["additionalItems"], _ptr(pointer, "additionalItems"))]
            else:
                p.items = [(value, kp)]
        elif key == "additionalItems":
            continue  # handled with a list-valued 'items'; ignored otherwise, as JSON Schema does
        elif key == "uniqueItems":
            if not isinstance(value, bool):
                raise _fail("'uniqueItems' must be a boolean", _ptr(pointer, key))
            p.unique = value
        elif key == "minProperties":
            p.min_props = _nonneg_int(value, key, pointer)
        elif key == "maxProperties":
            p.max_props = _nonneg_int(value, key, pointer)
        elif key == "patternProperties":
            kp = _ptr(pointer, key)
            if not isinstance(value, dict):
                raise _fail("'patternProperties' must be an object", kp)
            p.pattern_props = [(pat, (sub, _ptr(kp, pat))) for pat, sub in value.items()]
        elif key == "dependentRequired":
            p.dep_required = _dependent_required(value, _ptr(pointer, key))
    return p


def _dependent_required(value: Any, pointer: str) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()
    ):
        raise _fail("'dependentRequired' must map names to arrays of names", pointer)
    return {k: list(v) for k, v in value.items()}


def _merge(parts: tuple[_Plain, ...]) -> _Plain | None:
    """The conjunction of plain schemas; None if obviously unsatisfiable. Plain schemas are never
    changed once built, so the conjunction of one is itself."""
    if len(parts) == 1:
        return None if parts[0].types is not None and not parts[0].types else parts[0]
    out = _Plain(parts[0].pointer)
    for p in parts:
        if p.types is not None:
            out.types = p.types if out.types is None else _intersect_types(out.types, p.types)
            if not out.types:
                return None
        if p.enum is not None:
            if out.enum is None:
                out.enum = list(p.enum)
            else:
                keep = {_canonical(v) for v in p.enum}
                out.enum = [v for v in out.enum if _canonical(v) in keep]
                if not out.enum:
                    return None
        out.families |= p.families
        out.min_length = max(out.min_length, p.min_length)
        if p.max_length is not None:
            out.max_length = p.max_length if out.max_length is None else min(out.max_length, p.max_length)
        out.patterns += [x for x in p.patterns if x[0] not in {q[0] for q in out.patterns}]
        out.formats += [x for x in p.formats if x[0] not in {q[0] for q in out.formats}]
        out.lower = _tighter_lower(out.lower, p.lower)
        out.upper = _tighter_upper(out.upper, p.upper)
        # objects: a name is constrained by a part's 'properties' entry, else by its 'additionalProperties'
        names = list(dict.fromkeys([*out.properties, *p.properties]))
        out.properties = {
            n: out.properties.get(n, out.additional) + p.properties.get(n, p.additional) for n in names
        }
        out.additional = out.additional + p.additional
        out.required.update(p.required)
        # arrays
        length = max(len(out.prefix), len(p.prefix))
        out.prefix = [
            (out.prefix[i] if i < len(out.prefix) else out.items)
            + (p.prefix[i] if i < len(p.prefix) else p.items)
            for i in range(length)
        ]
        out.items = out.items + p.items
        out.min_items = max(out.min_items, p.min_items)
        if p.max_items is not None:
            out.max_items = p.max_items if out.max_items is None else min(out.max_items, p.max_items)
        out.unique = out.unique or p.unique
        out.pattern_props += p.pattern_props
        out.min_props = max(out.min_props, p.min_props)
        if p.max_props is not None:
            out.max_props = p.max_props if out.max_props is None else min(out.max_props, p.max_props)
        for name, deps in p.dep_required.items():
            out.dep_required[name] = list(dict.fromkeys([*out.dep_required.get(name, []), *deps]))
        out.unenforced += p.unenforced
    return out


# --------------------------------------------------------------------------------------------
# The converter
# --------------------------------------------------------------------------------------------


class _Unsatisfiable(Exception):
    """One alternative of a schema can never be met (others may still be)."""

    def __init__(self, error: SchemaError) -> None:
        super().__init__(str(error))
        self.error = error
