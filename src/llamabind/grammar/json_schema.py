"""JSON Schema → GBNF.

`json_schema_to_gbnf` turns a JSON Schema into a grammar whose every sentence is a JSON
document valid against the schema. Where a schema cannot be expressed exactly the grammar is
*narrower*, never wider (for instance object properties come in the order the schema lists
them, and numbers are written without exponents when they have bounds); where even that is
not possible the converter raises `SchemaError` naming the keyword and its JSON pointer.

Supported: ``type`` (one or a list), ``enum``, ``const``; objects with ``properties``,
``required`` (other properties may be omitted; order as given), ``additionalProperties``
(absent or ``true``: extra properties with any value, after the listed ones; ``false``: none;
a schema: extra values must match it); arrays with ``items``, ``prefixItems`` (and the older
array form of ``items`` with ``additionalItems``), ``minItems``, ``maxItems``; ``anyOf``,
``oneOf`` (treated as ``anyOf``: the branches are not made mutually exclusive), ``allOf``
(merged, objects included), local ``$ref`` into ``$defs`` / ``definitions`` / anywhere in the
document (recursion allowed); strings with ``minLength``, ``maxLength``, ``pattern`` (a regex
subset) and ``format`` date, time, date-time, uuid, email, uri, ipv4; numbers and integers with
``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (any integer bounds for
integers; integer-valued bounds for numbers). A schema without ``type`` whose keywords all
belong to some types (``properties`` → object, ``items`` → array, ...) is treated as those
types; one without any such keyword, ``{}`` and ``true`` allow any JSON value.

Deliberately narrower than the schema: properties only in schema order; names of extra
properties without escapes (when some names are listed); ``enum``/``const`` values and pattern
characters spelled as given, not with ``\\u`` escapes; integers without fractions or exponents
and with at most 16 digits; numbers with at most 16 integer/fraction digits, and without an
exponent when bounded; no 29 February, leap seconds or lowercase ``t``/``z`` in dates and
times; ``\\d``, ``\\w``, ``\\s`` and their negations in patterns are ASCII; ``format: uri`` with
``maxLength`` budgets a 16-character scheme; whitespace between tokens is at most one space or a
newline plus 20 spaces/tabs, and none before or after the document.

Ignored: annotations (title, description, examples, default, deprecated, readOnly, writeOnly,
$schema, $id, $anchor, $comment, content*), ``format`` on non-strings, ``uniqueItems: false``,
and keywords JSON Schema does not define. Raising: not, if/then/else, patternProperties,
propertyNames, dependentRequired/dependentSchemas/dependencies, unevaluated*, contains,
min/maxContains, maxProperties, minProperties > 0, multipleOf, uniqueItems: true,
$dynamicRef/$recursiveRef, remote or anchor ``$ref``, other string formats, ``pattern``
together with minLength/maxLength or a format, regex features outside the subset (lookaround,
backreferences, ``\\b``, flags, Unicode properties, anchors inside the pattern), number bounds
that are not integers, schemas no value satisfies, and ``$ref`` cycles that consume no input.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast
from urllib.parse import unquote

from llamabind.errors import GrammarError, SchemaError
from llamabind.grammar.gbnf import MAX_REPETITION, validate_gbnf

__all__ = ["json_schema_to_gbnf"]

# --------------------------------------------------------------------------------------------
# Keyword tables
# --------------------------------------------------------------------------------------------

_ANNOTATIONS = frozenset(
    "title description examples default deprecated readOnly writeOnly $schema $id id $anchor"
    " $dynamicAnchor $recursiveAnchor $comment $vocabulary contentMediaType contentEncoding"
    " contentSchema $defs definitions".split()
)
_UNSUPPORTED = frozenset(
    "not if then else patternProperties propertyNames dependentRequired dependentSchemas"
    " dependencies unevaluatedProperties unevaluatedItems contains minContains maxContains"
    " maxProperties multipleOf $dynamicRef $recursiveRef".split()
)
_COMBINATORS = frozenset({"allOf", "anyOf", "oneOf", "$ref"})
_FAMILY_OF = {
    "properties": "object",
    "required": "object",
    "additionalProperties": "object",
    "items": "array",
    "prefixItems": "array",
    "additionalItems": "array",
    "minItems": "array",
    "maxItems": "array",
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
_MAX_ALTERNATIVES = 256
_BLOCK = 1000
_MAX_HINT = 48

# --------------------------------------------------------------------------------------------
# Primitive rules (added to the output only when used)
# --------------------------------------------------------------------------------------------

_HEX = "[0-9a-fA-F]"
_PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ws": (r'( " " | "\n" [ \t]{0,20} )?', ()),
    "char": (
        r'[^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CeEfF] '
        + _HEX
        + "{3} | [dD] [0-7] "
        + _HEX
        + "{2} ) )",
        (),
    ),
    "string": (r'"\"" char* "\""', ("char",)),
    "integer": (r'"-"? ( "0" | [1-9] [0-9]{0,15} )', ()),
    "number": (r'"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?', ()),
    "frac": (r'( "." [0-9]{1,16} )?', ()),
    "nzfrac": (r'"." [0-9]{0,15} [1-9]', ()),
    "boolean": (r'"true" | "false"', ()),
    "null": (r'"null"', ()),
    "value": (
        "object | array | string | number | boolean | null",
        ("object", "array", "string", "number", "boolean", "null"),
    ),
    "object": (
        r'"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"',
        ("ws", "string", "value"),
    ),
    "array": (r'"[" ws ( value ( ws "," ws value )* ws )? "]"', ("ws", "value")),
    "keychar": (r'[^"\\\x00-\x1F]', ()),
    "date-body": (
        r'( [1-9] [0-9]{3} | "0" ( [1-9] [0-9]{2} | "0" ( [1-9] [0-9] | "0" [1-9] ) ) ) '
        r'"-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) '
        r'| ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) '
        r'| "02" "-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )',
        (),
    ),
    "time-body": (
        r'( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? '
        r'( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
        (),
    ),
    "date": (r'"\"" date-body "\""', ("date-body",)),
    "time": (r'"\"" time-body "\""', ("time-body",)),
    "date-time": (r'"\"" date-body "T" time-body "\""', ("date-body", "time-body")),
    "uuid": (
        r'"\"" ' + ' "-" '.join(f"{_HEX}{{{n}}}" for n in (8, 4, 4, 4, 12)) + r' "\""',
        (),
    ),
    "email": (
        r'"\"" [a-zA-Z0-9_+-] ( "."? [a-zA-Z0-9_+-] ){0,63} "@" email-label ( "." email-label ){1,4} "\""',
        ("email-label",),
    ),
    "email-label": ("[a-zA-Z0-9] ( [a-zA-Z0-9-]{0,61} [a-zA-Z0-9] )?", ()),
    "uri": (r'"\"" [a-zA-Z] [a-zA-Z0-9+.-]{0,15} ":" uri-char+ "\""', ("uri-char",)),
    "uri-char": (r"[a-zA-Z0-9._~:/?#@!$&'()*+,;=\-\[\]] | " + '"%" ' + _HEX + "{2}", ()),
    "ipv4": (r'"\"" ipv4-octet ( "." ipv4-octet ){3} "\""', ("ipv4-octet",)),
    "ipv4-octet": (r'"25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9]? [0-9]', ()),
}
# Length range (in characters, without quotes) of each format's strings.
_FORMAT_LENGTHS: dict[str, tuple[int, int | None]] = {
    "date": (10, 10),
    "time": (9, 24),
    "date-time": (20, 35),
    "uuid": (36, 36),
    "email": (5, None),
    "uri": (3, None),
    "ipv4": (7, 15),
}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _ptr(base: str, *parts: str | int) -> str:
    for part in parts:
        base += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return base


def _fail(message: str, pointer: str) -> SchemaError:
    return SchemaError(f"{message} (at JSON pointer '#{pointer}')")


def _gbnf_char(cp: int, in_class: bool) -> str:
    c = chr(cp)
    if 0xD800 <= cp <= 0xDFFF:
        return f"\\u{cp:04X}"
    if c in '"\\' or (in_class and c in "[]-"):
        return "\\" + c
    if c == "\n":
        return "\\n"
    if c == "\r":
        return "\\r"
    if c == "\t":
        return "\\t"
    if cp < 0x20 or cp == 0x7F or (in_class and c == "^"):
        return f"\\x{cp:02X}"
    if in_class and cp > 0x7F:
        return f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"
    return c


def _lit(text: str) -> str:
    """A GBNF string literal matching `text` exactly."""
    return '"' + "".join(_gbnf_char(ord(c), False) for c in text) + '"'


def _cls(ranges: list[tuple[int, int]]) -> str:
    parts = []
    for lo, hi in ranges:
        if lo == hi:
            parts.append(_gbnf_char(lo, True))
        elif hi == lo + 1:
            parts.append(_gbnf_char(lo, True) + _gbnf_char(hi, True))
        else:
            parts.append(_gbnf_char(lo, True) + "-" + _gbnf_char(hi, True))
    return "[" + "".join(parts) + "]"


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _scan_item(expr: str, i: int) -> int:
    """The end of the GBNF item (name, literal, class or group) starting at expr[i]; -1 if malformed."""
    n = len(expr)
    c = expr[i]
    if c in '"[':
        close = '"' if c == '"' else "]"
        i += 1
        while i < n and expr[i] != close:
            i += 2 if expr[i] == "\\" else 1
        return i + 1 if i < n else -1
    if c == "(":
        i += 1
        while i < n:
            if expr[i] == ")":
                return i + 1
            if expr[i] in '"[(':
                i = _scan_item(expr, i)
                if i < 0:
                    return -1
            else:
                i += 1
        return -1
    while i < n and (expr[i].isalnum() or expr[i] == "-"):
        i += 1
    return i


def _atom(expr: str) -> str:
    """`expr` in a form a postfix operator can follow."""
    simple = bool(expr) and expr[0] not in " |)*+?{" and _scan_item(expr, 0) == len(expr)
    return expr if simple else f"( {expr} )"


def _ungroup(body: str) -> str:
    """A rule body without redundant outer parentheses."""
    while body.startswith("( ") and _scan_item(body, 0) == len(body):
        body = body[2:-2]
    return body


def _alt(exprs: list[str]) -> str:
    unique = list(dict.fromkeys(exprs))
    if len(unique) == 1:
        return unique[0]
    return "( " + " | ".join(unique) + " )"


def _rep(atom: str, lo: int, hi: int | None, pointer: str = "") -> str:
    """`atom` repeated lo..hi times (hi None: unbounded), within llama.cpp's repetition limits."""
    if hi is not None and hi < lo:
        raise _fail(f"empty repetition range {lo}..{hi}", pointer)
    if lo <= MAX_REPETITION and (hi is None or hi <= MAX_REPETITION):
        if hi == lo:
            return "" if lo == 0 else atom if lo == 1 else f"{atom}{{{lo}}}"
        if (lo, hi) == (0, 1):
            return f"{atom}?"
        if hi is None and lo <= 1:
            return f"{atom}{'*' if lo == 0 else '+'}"
        return f"{atom}{{{lo},{'' if hi is None else hi}}}"
    if lo // _BLOCK > MAX_REPETITION or (hi is not None and (hi - lo) // _BLOCK > MAX_REPETITION):
        raise _fail(f"repetition count {max(lo, hi or 0)} is too large for a grammar", pointer)
    parts = []
    if lo > MAX_REPETITION:
        q, r = divmod(lo, _BLOCK)
        parts.append(f"( {atom}{{{_BLOCK}}} ){{{q}}}")
        if r:
            parts.append(_rep(atom, r, r))
    elif lo:
        parts.append(_rep(atom, lo, lo))
    if hi is None:
        parts.append(f"{atom}*")
    elif hi > lo:
        d = hi - lo
        if d <= MAX_REPETITION:
            parts.append(_rep(atom, 0, d))
        else:
            q, r = divmod(d, _BLOCK)
            block = f"( {atom}{{{_BLOCK}}} )"
            first = " ".join(x for x in (_rep(block, 0, q - 1), _rep(atom, 0, _BLOCK - 1)) if x)
            second = " ".join(x for x in (_rep(block, q, q), _rep(atom, 0, r)) if x)
            parts.append(f"( {first} | {second} )")
    return " ".join(parts)


def _canonical(value: Any) -> str:
    """A key equal for JSON-equal values (1 == 1.0, but true != 1)."""

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

_MAX_DIGITS = 16


def _digit_class(lo: int, hi: int) -> str:
    return f"[{lo}]" if lo == hi else f"[{lo}-{hi}]"


def _digits_any(n: int) -> str:
    return "" if n == 0 else "[0-9]" if n == 1 else f"[0-9]{{{n}}}"


def _same_length(x: str, y: str) -> list[str]:
    """Alternatives matching the decimal strings of the same length from x to y (inclusive)."""
    if x == y:
        return [_lit(x)]
    k = 0
    while x[k] == y[k]:
        k += 1
    prefix = _lit(x[:k]) + " " if k else ""
    xd, yd, rest = int(x[k]), int(y[k]), len(x) - k - 1
    xs, ys = x[k + 1 :], y[k + 1 :]
    if rest == 0:
        return [prefix + _digit_class(xd, yd)]
    out = []
    first_full = xd
    if xs != "0" * rest:
        out.append(f"{prefix}{_lit(str(xd))} {_alt(_same_length(xs, '9' * rest))}")
        first_full = xd + 1
    last_full = yd if ys == "9" * rest else yd - 1
    if first_full <= last_full:
        out.append(f"{prefix}{_digit_class(first_full, last_full)} {_digits_any(rest)}")
    if ys != "9" * rest:
        out.append(f"{prefix}{_lit(str(yd))} {_alt(_same_length('0' * rest, ys))}")
    return out


def _uint_range(a: int, b: int | None) -> list[str]:
    """Alternatives matching the non-negative integers a..b (b None: unbounded) without leading zeros."""
    out: list[str] = []
    if a == 0:
        out.append('"0"')
        a = 1
    if b is not None and a > b:
        return out
    la = len(str(a))
    if b is None:
        max_digits = max(_MAX_DIGITS, la)
        if a == 10 ** (la - 1):
            out.append(f"[1-9] {_rep('[0-9]', la - 1, max_digits - 1)}".strip())
            return out
        out.extend(_same_length(str(a), "9" * la))
        if la < max_digits:
            out.append(f"[1-9] {_rep('[0-9]', la, max_digits - 1)}")
        return out
    lb = len(str(b))
    if la == lb:
        out.extend(_same_length(str(a), str(b)))
        return out
    out.extend(_same_length(str(a), "9" * la))
    if lb - la >= 2:
        out.append(f"[1-9] {_rep('[0-9]', la, lb - 2)}")
    out.extend(_same_length("1" + "0" * (lb - 1), str(b)))
    return out


def _int_range(lo: int | None, hi: int | None) -> str:
    alts: list[str] = []
    if hi is None or hi >= 0:
        alts.extend(_uint_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        m_lo = 1 if hi is None or hi >= 0 else -hi
        m_hi = None if lo is None else -lo
        alts.append('"-" ' + _alt(_uint_range(m_lo, m_hi)))
    return _alt(alts)


def _magnitudes(c: int, c_ex: bool, d: int | None, d_ex: bool) -> list[str]:
    """Alternatives for decimals (no sign, no exponent) between c and d (None: unbounded)."""
    if d is not None and (d < c or (d == c and (c_ex or d_ex))):
        return []
    if d is not None and d == c:
        return [_lit(str(c))]
    out = []
    n_lo = c + 1 if c_ex else c
    n_hi = None if d is None else d - 1
    if n_hi is None or n_lo <= n_hi:
        out.append(f"{_alt(_uint_range(n_lo, n_hi))} frac")
    if c_ex:
        out.append(f"{_lit(str(c))} nzfrac")
    if d is not None and not d_ex:
        out.append(_lit(str(d)))
    return out


def _number_range(lo: int | None, lo_ex: bool, hi: int | None, hi_ex: bool) -> list[str]:
    alts: list[str] = []
    if hi is None or hi > 0 or (hi == 0 and not hi_ex):
        c, c_ex = (0, False) if lo is None or lo < 0 else (lo, lo_ex)
        alts.extend(_magnitudes(c, c_ex, hi, hi_ex))
    if lo is None or lo < 0:
        mc, mc_ex = (0, True) if hi is None or hi >= 0 else (-hi, hi_ex)
        md, md_ex = (None, False) if lo is None else (-lo, lo_ex)
        neg = _magnitudes(mc, mc_ex, md, md_ex)
        if neg:
            alts.append('"-" ' + _alt(neg))
    return alts


# --------------------------------------------------------------------------------------------
# Regular expressions (the subset JSON Schema patterns commonly use)
# --------------------------------------------------------------------------------------------

_Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _RSet:
    ranges: _Ranges


@dataclass(frozen=True)
class _RSeq:
    items: tuple[_RNode, ...]


@dataclass(frozen=True)
class _RAlt:
    items: tuple[_RNode, ...]


@dataclass(frozen=True)
class _RRep:
    item: _RNode
    lo: int
    hi: int | None


@dataclass(frozen=True)
class _RAnchor:
    kind: str  # "^" or "$"


_RNode: TypeAlias = "_RSet | _RSeq | _RAlt | _RRep | _RAnchor"

_ALL: _Ranges = ((0, 0x10FFFF),)
_DIGIT: _Ranges = ((48, 57),)
_WORD: _Ranges = ((48, 57), (65, 90), (95, 95), (97, 122))
_SPACE: _Ranges = ((9, 13), (32, 32))
_ASCII: _Ranges = ((0, 127),)


def _normalize(ranges: list[tuple[int, int]] | _Ranges) -> _Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: _Ranges, within: _Ranges = _ALL) -> _Ranges:
    out: list[tuple[int, int]] = []
    for wlo, whi in within:
        cur = wlo
        for lo, hi in _normalize(ranges):
            if hi < cur or lo > whi:
                continue
            if lo > cur:
                out.append((cur, lo - 1))
            cur = max(cur, hi + 1)
        if cur <= whi:
            out.append((cur, whi))
    return _normalize(out)


def _subtract(ranges: _Ranges, minus: _Ranges) -> _Ranges:
    return _complement(_complement(ranges) + tuple(minus)) if ranges else ()


class _RegexParser:
    _CLASS_ESCAPES: dict[str, _Ranges] = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
    _CHAR_ESCAPES = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11, "0": 0}

    def __init__(self, pattern: str, pointer: str) -> None:
        self.p = pattern
        self.i = 0
        self.pointer = pointer

    def fail(self, what: str) -> SchemaError:
        return _fail(
            f"unsupported regex feature in pattern {self.p!r} at offset {self.i}: {what}", self.pointer
        )

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def parse(self) -> _RNode:
        node = self.alternation()
        if self.i < len(self.p):
            raise self.fail("unbalanced ')'")
        return node

    def alternation(self) -> _RNode:
        items = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            items.append(self.sequence())
        return items[0] if len(items) == 1 else _RAlt(tuple(items))

    def sequence(self) -> _RNode:
        items: list[_RNode] = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            items.append(self.quantified(atom))
        return items[0] if len(items) == 1 else _RSeq(tuple(items))

    def quantified(self, atom: _RNode) -> _RNode:
        while True:
            c = self.peek()
            if c in ("*", "+", "?"):
                self.i += 1
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            elif c == "{" and (m := re.match(r"\{(\d+)(?:(,)(\d*))?\}", self.p[self.i :])):
                self.i += m.end()
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                if hi is not None and hi < lo:
                    raise self.fail(f"quantifier {m.group(0)} has its minimum above its maximum")
            else:
                return atom
            if isinstance(atom, _RAnchor):
                raise self.fail("quantified anchor")
            if self.peek() == "?":  # lazy: same language
                self.i += 1
            elif self.peek() == "+":
                raise self.fail("possessive quantifier")
            atom = _RRep(atom, lo, hi)

    def atom(self) -> _RNode:
        c = self.peek()
        if c == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.p.startswith("?<", self.i) and not self.p.startswith(("?<=", "?<!"), self.i):
                m = re.match(r"\?<[A-Za-z_][A-Za-z0-9_]*>", self.p[self.i :])
                if not m:
                    raise self.fail("malformed named group")
                self.i += m.end()
            elif self.p.startswith("?P<", self.i):
                m = re.match(r"\?P<[A-Za-z_][A-Za-z0-9_]*>", self.p[self.i :])
                if not m:
                    raise self.fail("malformed named group")
                self.i += m.end()
            elif self.peek() == "?":
                raise self.fail("lookaround, flags or other '(?' group")
            node = self.alternation()
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.i += 1
            return node
        if c in ("*", "+", "?"):
            raise self.fail(f"'{c}' with nothing to repeat")
        if c in ("^", "$"):
            self.i += 1
            return _RAnchor(c)
        if c == ".":
            self.i += 1
            return _RSet(_complement(((10, 10), (13, 13), (0x2028, 0x2029))))
        if c == "[":
            return _RSet(self.char_class())
        if c == "\\":
            return _RSet(self.escape(in_class=False))
        self.i += 1
        return _RSet(((ord(c), ord(c)),))

    def escape(self, in_class: bool) -> _Ranges:
        self.i += 1
        e = self.peek()
        if not e:
            raise self.fail("trailing backslash")
        self.i += 1
        if e.lower() in self._CLASS_ESCAPES:
            base = self._CLASS_ESCAPES[e.lower()]
            # Negated classes stay within ASCII: Python's Unicode-aware \D, \W, \S and
            # ECMAScript's ASCII ones then agree on every character the grammar allows.
            return base if e.islower() else _complement(base, _ASCII)
        if e in self._CHAR_ESCAPES:
            if e == "0" and self.peek().isdigit():
                raise self.fail("octal escape")
            cp = self._CHAR_ESCAPES[e]
            return ((cp, cp),)
        if in_class and e == "b":
            return ((8, 8),)
        if e in "xu":
            size = 2 if e == "x" else 4
            digits = self.p[self.i : self.i + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"malformed \\{e} escape")
            self.i += size
            cp = int(digits, 16)
            return ((cp, cp),)
        if e.isalnum() or e == "_":
            raise self.fail(f"escape '\\{e}'")
        return ((ord(e), ord(e)),)

    def char_class(self) -> _Ranges:
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            c = self.peek()
            if not c:
                raise self.fail("unterminated character class")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            lo_set = self.class_atom()
            if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                hi_set = self.class_atom()
                if (
                    len(lo_set) != 1
                    or len(hi_set) != 1
                    or lo_set[0][0] != lo_set[0][1]
                    or hi_set[0][0] != hi_set[0][1]
                ):
                    raise self.fail("range with a class escape as an end")
                if hi_set[0][0] < lo_set[0][0]:
                    raise self.fail("reversed range in character class")
                ranges.append((lo_set[0][0], hi_set[0][0]))
            else:
                ranges.extend(lo_set)
        result = _normalize(ranges)
        return _complement(result) if negated else result

    def class_atom(self) -> _Ranges:
        c = self.peek()
        if c == "\\":
            return self.escape(in_class=True)
        if c == "[" and self.p[self.i + 1 : self.i + 2] in (":", "=", "."):
            raise self.fail("POSIX character class")
        self.i += 1
        return ((ord(c), ord(c)),)


def _r_nullable(node: _RNode) -> bool:
    if isinstance(node, _RSet):
        return False
    if isinstance(node, _RSeq):
        return all(_r_nullable(x) for x in node.items)
    if isinstance(node, _RAlt):
        return any(_r_nullable(x) for x in node.items)
    if isinstance(node, _RRep):
        return node.lo == 0 or _r_nullable(node.item)
    return True


def _r_nonempty(node: _RNode) -> _RNode | None:
    """A node for the language of `node` without the empty string (None if that is empty)."""
    if not _r_nullable(node):
        return node
    if isinstance(node, _RSeq):
        if not node.items:
            return None
        head, tail = node.items[0], _RSeq(node.items[1:])
        alts: list[_RNode] = []
        head_ne = _r_nonempty(head)
        if head_ne is not None:
            alts.append(_RSeq((head_ne, *tail.items)))
        tail_ne = _r_nonempty(tail)
        if tail_ne is not None:
            alts.append(tail_ne)
        return None if not alts else alts[0] if len(alts) == 1 else _RAlt(tuple(alts))
    if isinstance(node, _RAlt):
        items = [x for x in (_r_nonempty(i) for i in node.items) if x is not None]
        return None if not items else items[0] if len(items) == 1 else _RAlt(tuple(items))
    if isinstance(node, _RRep):
        inner = _r_nonempty(node.item)
        if inner is None or node.hi == 0:
            return None
        return _RRep(inner, 1, node.hi)
    return None


# --------------------------------------------------------------------------------------------
# The normalised ("plain") form of a schema without combinators
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


def _nonneg_int(value: Any, key: str, pointer: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(f"'{key}' must be a non-negative integer", pointer)
    return value


def _number(value: Any, key: str, pointer: str) -> float:
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        raise _fail(f"'{key}' must be a finite number", pointer)
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
        kp = _ptr(pointer, key)
        if key in _ANNOTATIONS or key in _COMBINATORS:
            continue
        if key in _UNSUPPORTED:
            raise _fail(f"JSON Schema keyword '{key}' is not supported", kp)
        if key in _FAMILY_OF:
            p.families.add(_FAMILY_OF[key])
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not all(isinstance(t, str) for t in names):
                raise _fail("'type' must be a type name or a non-empty list of them", kp)
            for t in names:
                if t not in _TYPES:
                    raise _fail(f"unknown type {t!r}", kp)
            p.types = frozenset(names)
        elif key in ("enum", "const"):
            values = [value] if key == "const" else value
            if not isinstance(values, list) or not values:
                raise _fail("'enum' must be a non-empty array", kp)
            try:
                keys = [_canonical(v) for v in values]
            except (TypeError, ValueError) as exc:
                raise _fail(f"'{key}' value is not JSON: {exc}", kp) from None
            p.enum = list({k: v for k, v in zip(keys, values, strict=True)}.values())
        elif key in ("minLength", "maxLength", "minItems", "maxItems"):
            n = _nonneg_int(value, key, kp)
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
                raise _fail("'pattern' must be a string", kp)
            p.patterns.append((value, kp))
        elif key == "format":
            if not isinstance(value, str):
                raise _fail("'format' must be a string", kp)
            p.formats.append((value, kp))  # checked when a string is generated: formats only apply to strings
        elif key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            if isinstance(value, bool):  # draft 4: exclusiveMinimum/Maximum qualify minimum/maximum
                if key.startswith("exclusive"):
                    continue
                raise _fail(f"'{key}' must be a number", kp)
            v = _number(value, key, kp)
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
                raise _fail("'properties' must be an object", kp)
            p.properties = {name: [(sub, _ptr(kp, name))] for name, sub in value.items()}
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise _fail("'required' must be an array of strings", kp)
            p.required = dict.fromkeys(value)
        elif key == "additionalProperties":
            p.additional = [(value, kp)]
        elif key == "prefixItems":
            if not isinstance(value, list):
                raise _fail("'prefixItems' must be an array", kp)
            if isinstance(schema.get("items"), list):
                raise _fail("'prefixItems' together with an array-valued 'items'", kp)
            p.prefix = [[(sub, _ptr(kp, i))] for i, sub in enumerate(value)]
        elif key == "items":
            if isinstance(value, list):  # draft 4-2019 tuple form
                p.prefix = [[(sub, _ptr(kp, i))] for i, sub in enumerate(value)]
                if "additionalItems" in schema:
                    p.items = [(schema["additionalItems"], _ptr(pointer, "additionalItems"))]
            else:
                p.items = [(value, kp)]
        elif key == "additionalItems":
            continue  # handled with a list-valued 'items'; ignored otherwise, as JSON Schema does
        elif key == "uniqueItems":
            if value is True:
                raise _fail("'uniqueItems: true' is not supported", kp)
        elif key == "minProperties":
            if _nonneg_int(value, key, kp) > 0:
                raise _fail("'minProperties' is not supported", kp)
    return p


def _merge(parts: tuple[_Plain, ...]) -> _Plain | None:
    """The conjunction of plain schemas; None if obviously unsatisfiable."""
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
    return out


# --------------------------------------------------------------------------------------------
# The converter
# --------------------------------------------------------------------------------------------


class _Converter:
    def __init__(self, schema: dict[str, Any] | bool) -> None:
        self.schema = schema
        self.rules: dict[str, str] = {}
        self.by_body: dict[str, str] = {}
        self.ref_names: dict[str, str] = {}
        self.used_primitives: set[str] = set()
        self.left_open: set[str] = set()  # $ref targets entered with no input consumed yet

    # -- rules -------------------------------------------------------------------------------

    def name(self, hint: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-")[:_MAX_HINT].strip("-") or "rule"
        name, n = base, 1
        while name in self.rules or name in _PRIMITIVES or name == "root":
            n += 1
            name = f"{base}-{n}"
        return name

    def add_rule(self, hint: str, body: str) -> str:
        body = _ungroup(body)
        if body in self.by_body:
            return self.by_body[body]
        name = self.name(hint)
        self.rules[name] = body
        self.by_body[body] = name
        return name

    def prim(self, name: str) -> str:
        stack = [name]
        while stack:
            n = stack.pop()
            if n not in self.used_primitives:
                self.used_primitives.add(n)
                stack.extend(_PRIMITIVES[n][1])
        return name

    def ws(self) -> str:
        return self.prim("ws")

    def output(self) -> str:
        lines = [f"root ::= {self.rules['root']}"]
        lines += [f"{n} ::= {b}" for n, b in self.rules.items() if n != "root"]
        lines += [f"{n} ::= {_PRIMITIVES[n][0]}" for n in _PRIMITIVES if n in self.used_primitives]
        return "\n".join(lines) + "\n"

    # -- references --------------------------------------------------------------------------

    def resolve(self, ref: Any, pointer: str) -> _Loc:
        if not isinstance(ref, str):
            raise _fail("'$ref' must be a string", pointer)
        if not ref.startswith("#"):
            raise _fail(f"remote or relative $ref {ref!r} is not supported (only '#...' references)", pointer)
        frag = unquote(ref[1:])
        if frag and not frag.startswith("/"):
            raise _fail(f"$ref {ref!r}: anchor references are not supported", pointer)
        target: Any = self.schema
        parts = frag.split("/")[1:] if frag else []
        for raw in parts:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise _fail(f"$ref {ref!r} does not resolve", pointer)
        return target, _ptr("", *[p.replace("~1", "/").replace("~0", "~") for p in parts])

    def ref_rule(self, ref: Any, pointer: str) -> str:
        target, tptr = self.resolve(ref, pointer)
        if tptr in self.left_open:
            raise _fail(f"$ref {ref!r} is circular without consuming any input", pointer)
        if tptr in self.ref_names:
            return self.ref_names[tptr]
        hint = tptr.rsplit("/", 1)[-1] if tptr else "root"
        name = self.name("ref-" + hint if hint in _PRIMITIVES or hint == "root" else hint)
        self.ref_names[tptr] = name
        self.rules[name] = ""  # reserve
        self.left_open.add(tptr)
        try:
            self.rules[name] = _ungroup(self.expr([(target, tptr)], name))
        finally:
            self.left_open.discard(tptr)
        return name

    # -- schemas -----------------------------------------------------------------------------

    def atom(self, locs: list[_Loc], hint: str) -> str:
        """A rule name (or other atom) matching the conjunction of `locs`."""
        expr = self.expr(locs, hint)
        if re.fullmatch(r"[a-zA-Z0-9-]+|\"(?:[^\"\\]|\\.)*\"", expr):
            return expr
        return self.add_rule(hint, expr)

    def expr(self, locs: list[_Loc], hint: str) -> str:
        if len(locs) == 1:
            schema, pointer = locs[0]
            if isinstance(schema, dict):
                keys = {k for k in schema if k not in _ANNOTATIONS}
                if keys == {"$ref"}:
                    return self.ref_rule(schema["$ref"], _ptr(pointer, "$ref"))
                for comb in ("anyOf", "oneOf"):
                    if keys == {comb}:
                        subs = self.subschemas(schema[comb], comb, pointer)
                        if comb == "oneOf":
                            self.check_one_of([self.dnf(sub) for sub in subs], pointer)
                        return _alt(
                            [self.atom([loc], f"{hint}-{i}") for i, loc in enumerate(subs)]
                            if len(subs) > 1
                            else [self.expr(subs, hint)]
                        )
        plains: list[_Plain] = []
        for combo in itertools.product(*[self.dnf(loc) for loc in locs]):
            merged = _merge(tuple(itertools.chain.from_iterable(combo)))
            if merged is not None:
                plains.append(merged)
            if len(plains) > _MAX_ALTERNATIVES:
                raise _fail("combination of allOf/anyOf/oneOf expands to too many alternatives", locs[0][1])
        if not plains:
            raise _fail("schema can never be satisfied", locs[0][1])
        exprs: list[str] = []
        errors: list[SchemaError] = []
        for i, p in enumerate(plains):
            try:
                exprs.append(self.plain_expr(p, hint if len(plains) == 1 else f"{hint}-{i}"))
            except _Unsatisfiable as exc:
                errors.append(exc.error)
        if not exprs:
            raise errors[0]
        return _alt(exprs)

    def subschemas(self, value: Any, key: str, pointer: str) -> list[_Loc]:
        kp = _ptr(pointer, key)
        if not isinstance(value, list) or not value:
            raise _fail(f"'{key}' must be a non-empty array of schemas", kp)
        return [(sub, _ptr(kp, i)) for i, sub in enumerate(value)]

    def dnf(self, loc: _Loc) -> list[list[_Plain]]:
        """The schema as a disjunction of conjunctions of plain schemas."""
        schema, pointer = loc
        if schema is True:
            return [[_Plain(pointer)]]
        if schema is False:
            return []
        if not isinstance(schema, dict):
            raise _fail("a schema must be an object or a boolean", pointer)
        factors: list[list[list[_Plain]]] = [[[_base_plain(schema, pointer)]]]
        if "$ref" in schema:
            target, tptr = self.resolve(schema["$ref"], _ptr(pointer, "$ref"))
            if tptr in self.left_open:
                raise _fail(f"$ref {schema['$ref']!r} is circular without consuming any input", pointer)
            self.left_open.add(tptr)
            try:
                factors.append(self.dnf((target, tptr)))
            finally:
                self.left_open.discard(tptr)
        if "allOf" in schema:
            for sub in self.subschemas(schema["allOf"], "allOf", pointer):
                factors.append(self.dnf(sub))
        for comb in ("anyOf", "oneOf"):
            if comb in schema:
                branches = [self.dnf(sub) for sub in self.subschemas(schema[comb], comb, pointer)]
                if comb == "oneOf":
                    self.check_one_of(branches, pointer)
                factors.append(list(itertools.chain.from_iterable(branches)))
        result: list[list[_Plain]] = []
        for combo in itertools.product(*factors):
            result.append(list(itertools.chain.from_iterable(combo)))
            if len(result) > _MAX_ALTERNATIVES:
                raise _fail("combination of allOf/anyOf/oneOf expands to too many alternatives", pointer)
        return result

    # -- oneOf --------------------------------------------------------------------------------

    def check_one_of(self, branches: list[list[list[_Plain]]], pointer: str) -> None:
        """Raise unless no value can match two branches: a grammar cannot express "exactly one"."""
        plains = [[m for c in b if (m := _merge(tuple(c))) is not None] for b in branches]
        for i, j in itertools.combinations(range(len(plains)), 2):
            if not all(self.disjoint(p, q) for p in plains[i] for q in plains[j]):
                raise _fail(
                    f"'oneOf' branches {i} and {j} may both match the same value, which would make it "
                    "invalid; a grammar cannot exclude that (use 'anyOf' if the overlap is acceptable)",
                    _ptr(pointer, "oneOf"),
                )

    def disjoint(self, p: _Plain, q: _Plain) -> bool:
        """Whether no value can satisfy both `p` and `q` (False when that cannot be shown)."""
        common = _value_types(p) & _value_types(q)
        if not common:
            return True
        if p.enum is not None and q.enum is not None:
            if not {_canonical(v) for v in p.enum} & {_canonical(v) for v in q.enum}:
                return True
        for a, b in ((p, q), (q, p)):
            if a.enum is not None:
                try:
                    if not any(self.value_ok(v, b) for v in a.enum):
                        return True
                except SchemaError:
                    pass
        if common <= {"object"}:
            for n in set(p.required) & set(q.required):
                vp, vq = self.const_values(p, n), self.const_values(q, n)
                if vp is not None and vq is not None and not vp & vq:
                    return True
            for a, b in ((p, q), (q, p)):
                for n in a.required:
                    if any(s is False for s, _ in b.properties.get(n, b.additional)):
                        return True
        if common <= {"number", "integer"}:
            for lo, up in ((p.lower, q.upper), (q.lower, p.upper)):
                if (
                    lo is not None
                    and up is not None
                    and (up[0] < lo[0] or (up[0] == lo[0] and (up[1] or lo[1])))
                ):
                    return True
        return False

    def const_values(self, p: _Plain, name: str) -> set[str] | None:
        """The canonical values property `name` can take, if it is limited by enum/const."""
        locs = p.properties.get(name)
        if not locs:
            return None
        try:
            out: set[str] = set()
            for combo in itertools.product(*[self.dnf(loc) for loc in locs]):
                merged = _merge(tuple(itertools.chain.from_iterable(combo)))
                if merged is None:
                    continue
                if merged.enum is None:
                    return None
                out |= {_canonical(v) for v in merged.enum}
            return out
        except SchemaError:
            return None

    def plain_expr(self, p: _Plain, hint: str) -> str:
        if p.enum is not None:
            return self.enum_expr(p)
        types = p.types
        if types is None:
            if not p.families:
                return self.prim("value")
            types = frozenset(p.families)
        exprs: list[str] = []
        errors: list[SchemaError] = []
        for t in _TYPES:
            if t not in types or (t == "integer" and "number" in types):
                continue
            try:
                exprs.append(self.type_expr(t, p, hint if len(types) == 1 else f"{hint}-{t}"))
            except _Unsatisfiable as exc:
                errors.append(exc.error)
        if not exprs:
            raise _Unsatisfiable(errors[0])
        return _alt(exprs)

    def type_expr(self, t: str, p: _Plain, hint: str) -> str:
        if t == "null":
            return self.prim("null")
        if t == "boolean":
            return self.prim("boolean")
        if t in ("number", "integer"):
            return self.number_expr(p, t == "integer")
        if t == "string":
            return self.string_expr(p, hint)
        if t == "array":
            return self.array_expr(p, hint)
        return self.object_expr(p, hint)

    # -- enum --------------------------------------------------------------------------------

    def enum_expr(self, p: _Plain) -> str:
        assert p.enum is not None
        values = [v for v in p.enum if self.value_ok(v, p)]
        if not values:
            raise _Unsatisfiable(_fail("no 'enum'/'const' value satisfies the rest of the schema", p.pointer))
        return _alt([self.const_expr(v) for v in values])

    def const_expr(self, value: Any) -> str:
        """Exactly `value` (object members in the given order), with the usual optional whitespace."""
        if isinstance(value, dict) and value:
            ws = self.ws()
            members = [f'{_lit(_json_text(k))} {ws} ":" {ws} {self.const_expr(v)}' for k, v in value.items()]
            return f'"{{" {ws} ' + f' {ws} "," {ws} '.join(members) + f' {ws} "}}"'
        if isinstance(value, list) and value:
            ws = self.ws()
            return f'"[" {ws} ' + f' {ws} "," {ws} '.join(self.const_expr(v) for v in value) + f' {ws} "]"'
        if isinstance(value, (dict, list)):
            ws = self.ws()
            return f'"{_json_text(value)[0]}" {ws} "{_json_text(value)[1]}"'
        return _lit(_json_text(value))

    def value_ok(self, v: Any, p: _Plain) -> bool:
        if p.types is not None and not any(_json_type_ok(v, t) for t in p.types):
            return False
        if isinstance(v, str):
            if p.formats:
                raise _fail("'enum'/'const' combined with 'format' is not supported", p.formats[0][1])
            if len(v) < p.min_length or (p.max_length is not None and len(v) > p.max_length):
                return False
            return all(re.search(pat, v) for pat, _ in p.patterns)
        if _is_number(v):
            if p.lower and (v < p.lower[0] or (p.lower[1] and v == p.lower[0])):
                return False
            return not (p.upper and (v > p.upper[0] or (p.upper[1] and v == p.upper[0])))
        if isinstance(v, list):
            if p.prefix or p.items:
                raise _fail("'enum'/'const' with arrays combined with 'items' is not supported", p.pointer)
            return p.min_items <= len(v) and (p.max_items is None or len(v) <= p.max_items)
        if isinstance(v, dict):
            if p.properties or p.additional:
                raise _fail(
                    "'enum'/'const' with objects combined with 'properties' is not supported", p.pointer
                )
            return all(k in v for k in p.required)
        return True

    # -- numbers -----------------------------------------------------------------------------

    def number_expr(self, p: _Plain, integer: bool) -> str:
        if p.lower is None and p.upper is None:
            return self.prim("integer" if integer else "number")
        if integer:
            lo = None
            hi = None
            if p.lower is not None:
                v, ex = p.lower
                lo = math.floor(v) + 1 if ex else math.ceil(v)
            if p.upper is not None:
                v, ex = p.upper
                hi = math.ceil(v) - 1 if ex else math.floor(v)
            if lo is not None and hi is not None and lo > hi:
                raise _Unsatisfiable(_fail("no integer satisfies the bounds", p.pointer))
            return _int_range(lo, hi)
        for bound in (p.lower, p.upper):
            if bound is not None and not float(bound[0]).is_integer():
                raise _fail("number bounds that are not integers are not supported", p.pointer)
        lo_v = None if p.lower is None else int(p.lower[0])
        hi_v = None if p.upper is None else int(p.upper[0])
        alts = _number_range(lo_v, bool(p.lower and p.lower[1]), hi_v, bool(p.upper and p.upper[1]))
        if not alts:
            raise _Unsatisfiable(_fail("no number satisfies the bounds", p.pointer))
        expr = _alt(alts)
        if "frac" in expr:
            self.prim("frac")
        if "nzfrac" in expr:
            self.prim("nzfrac")
        return expr

    # -- strings -----------------------------------------------------------------------------

    def string_expr(self, p: _Plain, hint: str) -> str:
        lo, hi = p.min_length, p.max_length
        if hi is not None and hi < lo:
            raise _Unsatisfiable(_fail("'minLength' is greater than 'maxLength'", p.pointer))
        if len(p.formats) > 1:
            raise _fail("several different 'format' values combined", p.formats[1][1])
        if len(p.patterns) > 1:
            raise _fail("several different 'pattern' values combined", p.patterns[1][1])
        if p.formats:
            fmt, fptr = p.formats[0]
            if p.patterns:
                raise _fail(f"'pattern' combined with format {fmt!r} is not supported", p.patterns[0][1])
            if fmt not in _FORMAT_LENGTHS:
                raise _fail(f"string format {fmt!r} is not supported", fptr)
            f_lo, f_hi = _FORMAT_LENGTHS[fmt]
            if fmt == "uri" and hi is not None and lo <= f_lo and hi >= 19:
                # scheme (at most 16 characters) ":" and as many URI characters as still fit
                rest = self.rep(self.prim("uri-char"), 1, hi - 17, hint, fptr)
                return f'"\\"" [a-zA-Z] [a-zA-Z0-9+.-]{{0,15}} ":" {rest} "\\""'
            if lo > f_lo or (hi is not None and (f_hi is None or hi < f_hi)):
                raise _fail(f"'minLength'/'maxLength' combined with format {fmt!r} is not supported", fptr)
            return self.prim(fmt)
        if p.patterns:
            pattern, pptr = p.patterns[0]
            if lo > 0 or hi is not None:
                raise _fail("'minLength'/'maxLength' combined with 'pattern' is not supported", pptr)
            return self.pattern_expr(pattern, pptr, hint)
        self.prim("char")
        if lo == 0 and hi is None:
            return self.prim("string")
        return f'"\\"" {self.rep("char", lo, hi, hint, p.pointer)} "\\""'

    def pattern_expr(self, pattern: str, pointer: str, hint: str) -> str:
        node = _RegexParser(pattern, pointer).parse()
        branches = list(node.items) if isinstance(node, _RAlt) else [node]
        alts: list[str] = []
        for branch in branches:
            items = list(branch.items) if isinstance(branch, _RSeq) else [branch]
            start = bool(items) and items[0] == _RAnchor("^")
            if start:
                items = items[1:]
            end = bool(items) and items[-1] == _RAnchor("$")
            if end:
                items = items[:-1]
            if any(self.has_anchor(x) for x in items):
                raise _fail(f"pattern {pattern!r}: '^'/'$' are only supported at the very start/end", pointer)
            parts = []
            if not start:
                parts.append(self.prim("char") + "*")
            body = self.regex_expr(_RSeq(tuple(items)), hint)
            if body:
                parts.append(body)
            if not end:
                parts.append(self.prim("char") + "*")
            alts.append(" ".join(parts) if parts else '""')
        inner = _alt(alts)
        return f'"\\"" {inner} "\\""' if inner != '""' else '"\\"\\""'

    def has_anchor(self, node: _RNode) -> bool:
        if isinstance(node, _RAnchor):
            return True
        if isinstance(node, (_RSeq, _RAlt)):
            return any(self.has_anchor(x) for x in node.items)
        if isinstance(node, _RRep):
            return self.has_anchor(node.item)
        return False

    def rep(self, expr: str, lo: int, hi: int | None, hint: str, pointer: str) -> str:
        """`expr` repeated lo..hi times, shaped for llama.cpp's limits.

        llama.cpp refuses a repetition whose count times the number of rules created inside the
        repeated group exceeds 2000, so large repetitions repeat a rule name and live in a rule
        of their own (keeping their generated rules out of any enclosing group).
        """
        if max(lo, hi or 0) < 50:
            return _rep(_atom(expr), lo, hi, pointer)
        simple = expr[0] not in "( " and _scan_item(expr, 0) == len(expr)
        atom = expr if simple else self.add_rule(f"{hint}-item", expr)
        return self.add_rule(f"{hint}-rep", _rep(atom, lo, hi, pointer))

    def regex_expr(self, node: _RNode, hint: str) -> str:
        """GBNF (over the JSON-escaped text) for a regex node; '' for the empty string."""
        if isinstance(node, _RSet):
            return self.set_expr(node.ranges, hint)
        if isinstance(node, _RSeq):
            parts: list[str] = []
            literal = ""
            for item in node.items:
                if (
                    isinstance(item, _RSet)
                    and len(item.ranges) == 1
                    and item.ranges[0][0] == item.ranges[0][1]
                ):
                    literal += _json_text(chr(item.ranges[0][0]))[1:-1]
                    continue
                if literal:
                    parts.append(_lit(literal))
                    literal = ""
                sub = self.regex_expr(item, hint)
                if sub:
                    parts.append(sub)
            if literal:
                parts.append(_lit(literal))
            return " ".join(parts)
        if isinstance(node, _RAlt):
            return _alt([self.regex_expr(x, hint) or '""' for x in node.items])
        assert isinstance(node, _RRep)
        repeated: _RNode | None = node.item
        lo, hi = node.lo, node.hi
        if hi is None and _r_nullable(node.item):
            repeated, lo = _r_nonempty(node.item), 0  # (x)* with x nullable loops without input
        if repeated is None or hi == 0:
            return ""
        sub = self.regex_expr(repeated, hint)
        return self.rep(sub, lo, hi, hint, "") if sub else ""

    def set_expr(self, ranges: _Ranges, hint: str) -> str:
        specials = ((0, 0x1F), (0x22, 0x22), (0x5C, 0x5C))
        raw = _subtract(_normalize(ranges), specials)
        alts = [_cls(list(raw))] if raw else []
        for lo, hi in _normalize(ranges):
            for cp in range(lo, min(hi, 0x5C) + 1):
                if cp <= 0x1F or cp in (0x22, 0x5C):
                    alts.append(_lit(_json_text(chr(cp))[1:-1]))
        if not alts:
            raise _fail("pattern has an empty character class", "")
        expr = _alt(alts)
        return expr if len(alts) <= 3 else self.add_rule(f"{hint}-chars", expr[2:-2])

    # -- arrays ------------------------------------------------------------------------------

    def array_expr(self, p: _Plain, hint: str) -> str:
        ws = self.ws()
        saved, self.left_open = self.left_open, set()
        try:
            lo, hi = p.min_items, p.max_items
            k = len(p.prefix)
            rest_false = any(s is False for s, _ in p.items)
            if rest_false:
                hi = k if hi is None else min(hi, k)
            if hi is not None and lo > hi:
                raise _Unsatisfiable(_fail("'minItems' cannot be met", p.pointer))
            if hi == 0:
                return f'"[" {ws} "]"'
            sep = f'{ws} "," {ws}'

            def item(i: int) -> str:
                if i < k:
                    return self.atom(p.prefix[i], f"{hint}-{i}")
                return self.atom(p.items, f"{hint}-item") if p.items else self.prim("value")

            def seq_from(i: int) -> str:
                if hi is not None and i >= hi:
                    return ""
                if i < k:
                    piece = " ".join(x for x in ((sep if i else ""), item(i), seq_from(i + 1)) if x)
                    return piece if i == 0 or i < lo else f"( {piece} )?"
                rest = item(i)
                if i == 0:
                    more = self.rep(
                        f"{sep} {rest}", max(lo - 1, 0), None if hi is None else hi - 1, hint, p.pointer
                    )
                    return f"{rest} {more}".strip()
                return self.rep(
                    f"{sep} {rest}", max(lo - i, 0), None if hi is None else hi - i, hint, p.pointer
                )

            body = seq_from(0)
            if lo == 0:
                return f'"[" {ws} ( {body} {ws} )? "]"'
            return f'"[" {ws} {body} {ws} "]"'
        finally:
            self.left_open = saved

    # -- objects -----------------------------------------------------------------------------

    def object_expr(self, p: _Plain, hint: str) -> str:
        ws = self.ws()
        saved, self.left_open = self.left_open, set()
        try:
            return self._object_expr(p, hint, ws)
        finally:
            self.left_open = saved

    def _object_expr(self, p: _Plain, hint: str, ws: str) -> str:
        no_extra = any(s is False for s, _ in p.additional)
        props: list[tuple[str, list[_Loc]]] = []
        for name, locs in p.properties.items():
            if any(s is False for s, _ in locs):
                if name in p.required:
                    raise _Unsatisfiable(_fail(f"required property {name!r} is not allowed", p.pointer))
                continue
            props.append((name, locs))
        for name in p.required:
            if name not in p.properties:
                if no_extra:
                    raise _Unsatisfiable(_fail(f"required property {name!r} is not allowed", p.pointer))
                props.append((name, p.additional))
        known = set(p.properties) | set(p.required)
        sep = f'{ws} "," {ws}'

        def kv(name: str, locs: list[_Loc]) -> str:
            value = self.atom(locs, f"{hint}-{name}") if locs else self.prim("value")
            return f'{_lit(_json_text(name))} {ws} ":" {ws} {value}'

        pieces = [kv(n, locs) for n, locs in props]
        required = [n in p.required for n, _ in props]
        extra = ""
        if not no_extra:
            value = self.atom(p.additional, f"{hint}-additional") if p.additional else self.prim("value")
            key = self.add_rule(f"{hint}-extra-key", self.key_not_in(known))
            extra = self.add_rule(f"{hint}-extra", f'{key} {ws} ":" {ws} {value}')
        n = len(props)
        extras_after = f"( {sep} {extra} )*" if extra else ""
        first_required = next((i for i, r in enumerate(required) if r), n)
        use_chain = first_required > 2

        def piece(i: int) -> str:
            return f"{sep} {pieces[i]}" if required[i] else f"( {sep} {pieces[i]} )?"

        tails: dict[int, str] = {}

        def tail(i: int) -> str:
            if not use_chain:
                return " ".join(x for x in [*(piece(j) for j in range(i, n)), extras_after] if x)
            if i == n:
                return extras_after
            if i not in tails:
                rest = tail(i + 1)
                tails[i] = self.add_rule(f"{hint}-after-{props[i][0]}", f"{piece(i)} {rest}".strip())
            return tails[i]

        alts = []
        for i in range(min(first_required + 1, n)):
            alts.append(f"{pieces[i]} {tail(i + 1)}".strip())
        nullable = first_required == n
        if nullable and extra:
            alts.append(f"{extra} {extras_after}")
        if not alts:
            return f'"{{" {ws} "}}"'
        body = _alt(alts)
        if nullable:
            return f'"{{" {ws} ( {body} {ws} )? "}}"'
        return f'"{{" {ws} {body} {ws} "}}"'

    def key_not_in(self, names: set[str]) -> str:
        """A JSON string (no escapes) that is none of `names`."""
        raw_ok = [n for n in names if not any(c in '"\\' or ord(c) < 0x20 for c in n)]
        if not names:
            return self.prim("string")
        kc = self.prim("keychar")
        trie: dict[str, Any] = {}
        for name in raw_ok:
            node = trie
            for c in name:
                node = node.setdefault(c, {})
            node[""] = {}

        def build(node: dict[str, Any]) -> str:
            alts = []
            if "" not in node:
                alts.append('""')
            children = sorted(c for c in node if c)
            for c in children:
                alts.append(f"{_lit(c)} {build(node[c])}")
            others = _subtract(
                ((0x20, 0x10FFFF),), ((0x22, 0x22), (0x5C, 0x5C), *((ord(c), ord(c)) for c in children))
            )
            alts.append(f"{_cls(list(others))} {kc}*")
            return _alt(alts)

        return f'"\\"" {build(trie)} "\\""'


class _Unsatisfiable(Exception):
    """One alternative of a schema can never be met (others may still be)."""

    def __init__(self, error: SchemaError) -> None:
        super().__init__(str(error))
        self.error = error


def json_schema_to_gbnf(schema: dict[str, Any] | bool) -> str:
    """A GBNF grammar (start rule ``root``) for JSON documents valid against `schema`.

    Raises `SchemaError` (naming the keyword and its JSON pointer) for schemas that use a
    feature this converter cannot express, or that no value satisfies.
    """
    if not isinstance(schema, (dict, bool)):
        raise SchemaError(f"a JSON schema must be an object or a boolean, not {type(schema).__name__}")
    conv = _Converter(schema)
    conv.ref_names[""] = "root"  # '$ref: "#"' is the start rule itself
    conv.left_open.add("")
    try:
        body = conv.expr([(schema, "")], "root")
    except _Unsatisfiable as exc:
        raise exc.error from None
    except RecursionError:
        raise SchemaError("schema is nested too deeply") from None
    conv.rules = {"root": _ungroup(body), **conv.rules}
    text = conv.output()
    try:
        validate_gbnf(text)
    except GrammarError as exc:  # e.g. llama.cpp's limits on nested repetitions in a pattern
        raise SchemaError(f"the schema needs a grammar llama.cpp would reject: {exc}") from None
    return text
