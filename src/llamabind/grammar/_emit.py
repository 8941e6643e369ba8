"""GBNF emitting: literals, character classes, alternation/repetition, and `RuleSet`, the
rule builder (named rules, deduplicated bodies, JSON primitives on demand).

Shared by the JSON Schema converter and the chat grammar composer."""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from llamabind.errors import SchemaError
from llamabind.grammar._gbnf_fast import register_known_rules
from llamabind.grammar.gbnf import MAX_REPETITION

_MAX_ALTERNATIVES = 256
_BLOCK = 1000
_MAX_HINT = 48

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


_NOT_NAME = re.compile(r"[^a-zA-Z0-9-]+")
# Printable ASCII: in a GBNF string literal, each character stands for itself but '"' and '\\'.
_PRINTABLE_ASCII = re.compile(r"[ -~]*")


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching `text` exactly."""
    if _PRINTABLE_ASCII.fullmatch(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return '"' + "".join(_gbnf_char(ord(c), False) for c in text) + '"'


_lit = gbnf_literal


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
    if type(value) is str:  # what json.dumps does for a string, without its setup
        return encode_basestring(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# a GBNF string literal and a character class, escapes included
_LITERAL = r'"(?:[^"\\]|\\[\s\S])*"'
_CLASS = r"\[(?:[^\]\\]|\\[\s\S])*\]"
_QUOTED = {'"': re.compile(_LITERAL), "[": re.compile(_CLASS)}
# in a group: a literal, a class, a parenthesis, or the start of an unterminated literal or class
_GROUP_PART = re.compile(rf'{_LITERAL}|{_CLASS}|[()"\[]')


def _scan_item(expr: str, i: int) -> int:
    """The end of the GBNF item (name, literal, class or group) starting at expr[i]; -1 if malformed."""
    c = expr[i]
    if c == '"' or c == "[":
        m = _QUOTED[c].match(expr, i)
        return m.end() if m else -1
    if c == "(":
        depth = 0
        for m in _GROUP_PART.finditer(expr, i):
            part = m.group()
            if part == "(":
                depth += 1
            elif part == ")":
                depth -= 1
                if not depth:
                    return m.end()
            elif len(part) == 1:
                return -1  # an unterminated literal or class
        return -1
    n = len(expr)
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
    if len(exprs) == 1:
        return exprs[0]
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


class RuleSet:
    """Named GBNF rules under construction, with JSON primitive rules added on demand."""

    def __init__(self, compact: bool = False) -> None:
        self.rules: dict[str, str] = {}
        self.by_body: dict[str, str] = {}
        self.orphans = False  # rules of a dropped alternative may be left in ``rules``
        self.used_primitives: set[str] = set()
        self.compact = compact  # no whitespace between tokens (the `ws` rule matches only "")

    # -- rules -------------------------------------------------------------------------------

    def name(self, hint: str) -> str:
        base = _NOT_NAME.sub("-", hint).strip("-")[:_MAX_HINT].strip("-") or "rule"
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
        if self.orphans:  # a failed alternative left rules behind: keep only what root reaches
            self.rules = _reachable(self.rules)
        lines = [f"root ::= {self.rules['root']}"]
        lines += [f"{n} ::= {b}" for n, b in self.rules.items() if n != "root"]
        for n in _PRIMITIVES:
            if n in self.used_primitives:
                lines.append(_primitive_line(n, self.compact))
        return "\n".join(lines) + "\n"


_REFERENCE = re.compile(rf"{_LITERAL}|{_CLASS}|([a-zA-Z0-9-]+)")


def _reachable(rules: dict[str, str]) -> dict[str, str]:
    """The rules reachable from ``root`` (in their order): references are the names outside string
    literals and character classes."""
    seen = {"root"}
    stack = ["root"]
    while stack:
        for m in _REFERENCE.finditer(rules[stack.pop()]):
            name = m.group(1)
            if name and name in rules and name not in seen:
                seen.add(name)
                stack.append(name)
    return {n: b for n, b in rules.items() if n in seen}


def _primitive_line(name: str, compact: bool) -> str:
    return f'{name} ::= ""' if name == "ws" and compact else f"{name} ::= {_PRIMITIVES[name][0]}"


# The primitives' lines are the same in every grammar: the grammar check analyses them once.
for _compact in (False, True):
    register_known_rules("\n".join(_primitive_line(n, _compact) for n in _PRIMITIVES))
