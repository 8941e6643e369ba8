"""Rules for scalar schemas: numbers/integers with bounds, strings with lengths, formats and patterns."""

from __future__ import annotations

import math

from ._emit import _FORMAT_LENGTHS, RuleSet, _alt, _atom, _cls, _fail, _json_text, _lit, _rep, _scan_item
from ._numeric import _int_range, _number_range
from ._regex import (
    _normalize,
    _r_nonempty,
    _r_nullable,
    _RAlt,
    _RAnchor,
    _Ranges,
    _RegexParser,
    _RNode,
    _RRep,
    _RSeq,
    _RSet,
    _subtract,
)
from ._schema import _Plain, _Unsatisfiable


class _ScalarRules(RuleSet):
    """The scalar part of the JSON Schema converter."""

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
