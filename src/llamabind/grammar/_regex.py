"""The regex subset of JSON Schema ``pattern``: a parser to a small AST over code-point ranges."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from llamabind.errors import SchemaError

from ._emit import _fail

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
_SPACE_BOTH: _Ranges = ((9, 13), (0x1C, 0x1F), (32, 32))  # whitespace to Python or ECMAScript
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
            if e.islower():
                return base
            # \x1c-\x1f are whitespace to Python's \s, not to ECMAScript's: \S leaves them out
            return _complement(_SPACE_BOTH if e == "S" else base, _ASCII)
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
