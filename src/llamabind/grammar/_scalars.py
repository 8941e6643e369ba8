"""Rules for scalar schemas: numbers/integers with bounds, strings with lengths, formats and patterns."""

from __future__ import annotations

import math
from abc import abstractmethod

from llamabind.errors import SchemaError

from ._emit import (
    _FORMAT_LENGTHS,
    RuleSet,
    _alt,
    _atom,
    _cls,
    _fail,
    _json_text,
    _lit,
    _ptr,
    _rep,
    _scan_item,
)
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
from ._validate import linear_regex


class _ScalarRules(RuleSet):
    """The scalar part of the JSON Schema converter."""

    strict: bool

    @abstractmethod
    def relax(self, keyword: str, pointer: str, message: str | None = None) -> None:
        """Note that the grammar does not enforce ``keyword`` (raises in strict mode)."""

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
        # Bounds that are not integers are rounded inwards (narrower: 0.5 <= x becomes 1 <= x).
        lo_v = lo_ex = hi_v = hi_ex = None
        if p.lower is not None:
            lo_v = math.ceil(p.lower[0])
            lo_ex = p.lower[1] and float(p.lower[0]).is_integer()
        if p.upper is not None:
            hi_v = math.floor(p.upper[0])
            hi_ex = p.upper[1] and float(p.upper[0]).is_integer()
        alts = _number_range(lo_v, bool(lo_ex), hi_v, bool(hi_ex))
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
        if p.patterns:
            pattern, pptr = p.patterns[0]
            for _, other in p.patterns[1:]:
                self.relax("pattern", other, "several different 'pattern' values combined")
            expr = self.pattern_expr(pattern, pptr, hint, lo, hi)
            if expr is not None:
                return expr
            if (lo > 0 or hi is not None) and not self.strict:
                # the lengths cannot be fitted into the pattern: enforce the pattern (what a model
                # gets wrong) and leave the lengths (usually generous) to validation
                expr = self.pattern_expr(pattern, pptr, hint)
                if expr is not None:
                    keyword = "maxLength" if hi is not None else "minLength"
                    self.relax(
                        keyword,
                        _ptr(p.pointer, keyword),
                        f"'minLength'/'maxLength' together with pattern {pattern!r}",
                    )
                    return expr
            self.relax("pattern", pptr, f"pattern {pattern!r} with 'minLength'/'maxLength'")
        elif p.formats:
            # 'format' is an annotation (JSON Schema 2020-12): known formats are generated when they
            # fit the length bounds; others, and conflicting ones, leave the string free.
            known = {f for f, _ in p.formats if f in _FORMAT_LENGTHS}
            if len(known) == 1:
                fmt = known.pop()
                fptr = next(ptr for f, ptr in p.formats if f == fmt)
                f_lo, f_hi = _FORMAT_LENGTHS[fmt]
                if fmt == "uri" and hi is not None and lo <= f_lo and hi >= 19:
                    # scheme (at most 16 characters) ":" and as many URI characters as still fit
                    rest = self.rep(self.prim("uri-char"), 1, hi - 17, hint, fptr)
                    return f'"\\"" [a-zA-Z] [a-zA-Z0-9+.-]{{0,15}} ":" {rest} "\\""'
                if lo <= f_lo and (hi is None or (f_hi is not None and hi >= f_hi)):
                    return self.prim(fmt)
        self.prim("char")
        if lo == 0 and hi is None:
            return self.prim("string")
        return f'"\\"" {self.rep("char", lo, hi, hint, p.pointer)} "\\""'

    def pattern_expr(
        self, pattern: str, pointer: str, hint: str, lo: int = 0, hi: int | None = None
    ) -> str | None:
        """A JSON string matching `pattern` with lo..hi characters; None when the regex or the length
        bounds cannot be expressed (in strict mode an unsupported regex raises)."""
        try:
            node = _RegexParser(pattern, pointer).parse()
        except SchemaError as exc:
            if self.strict:
                raise
            linear_regex(pattern, pointer)  # validation needs RE2: refuse what it cannot match
            self.relax("pattern", pointer, str(exc).rsplit(" (at JSON pointer", 1)[0])
            return None
        linear_regex(pattern, pointer)
        bounded = lo > 0 or hi is not None
        branches = list(node.items) if isinstance(node, _RAlt) else [node]
        alts: list[str] = []
        for branch in branches:
            items: list[_RNode] = list(branch.items) if isinstance(branch, _RSeq) else [branch]
            start = bool(items) and items[0] == _RAnchor("^")
            if start:
                items = items[1:]
            end = bool(items) and items[-1] == _RAnchor("$")
            if end:
                items = items[:-1]
            if any(self.has_anchor(x) for x in items):
                self.relax(
                    "pattern",
                    pointer,
                    f"pattern {pattern!r}: '^'/'$' are only supported at the very start/end",
                )
                return None
            if bounded:
                # A whole-string match is one kind of search match (narrower); the length bounds are
                # then met by adjusting one repetition, or the branch is left out.
                fitted = _fit_lengths(items, lo, hi)
                if fitted is None:
                    continue
                items, start, end = fitted, True, True
            parts = []
            if not start:
                parts.append(self.prim("char") + "*")
            body = self.regex_expr(_RSeq(tuple(items)), hint)
            if body:
                parts.append(body)
            if not end:
                parts.append(self.prim("char") + "*")
            alts.append(" ".join(parts) if parts else '""')
        if not alts:
            return None
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


def _r_len(node: _RNode) -> tuple[int, int | None]:
    """The shortest and longest (None: unbounded) match of a regex node, in characters."""
    if isinstance(node, _RSet):
        return 1, 1
    if isinstance(node, _RAnchor):
        return 0, 0
    if isinstance(node, _RSeq):
        lo = 0
        hi: int | None = 0
        for x in node.items:
            a, b = _r_len(x)
            lo += a
            hi = None if hi is None or b is None else hi + b
        return lo, hi
    if isinstance(node, _RAlt):
        lens = [_r_len(x) for x in node.items]
        his = [b for _, b in lens]
        return min(a for a, _ in lens), None if None in his else max(b for b in his if b is not None)
    assert isinstance(node, _RRep)
    a, b = _r_len(node.item)
    return a * node.lo, None if node.hi is None or b is None else b * node.hi


def _fit_lengths(items: list[_RNode], lo: int, hi: int | None) -> list[_RNode] | None:
    """`items` (a whole-string match) with one repetition's count bounded so that every match has
    lo..hi characters; None if no single repetition can do it."""
    lens = [_r_len(x) for x in items]
    t_lo = sum(a for a, _ in lens)
    t_hi = None if any(b is None for _, b in lens) else sum(b for _, b in lens if b is not None)
    if t_lo >= lo and (hi is None or (t_hi is not None and t_hi <= hi)):
        return items
    for i, x in enumerate(items):
        if not isinstance(x, _RRep):
            continue
        o_lo = t_lo - lens[i][0]
        rest_hi = [bb for j, (_, bb) in enumerate(lens) if j != i]
        if any(bb is None for bb in rest_hi):
            continue
        o_hi = sum(bb for bb in rest_hi if bb is not None)
        if x.hi == 1:  # an optional group: fit what is inside it (present whenever the rest is too short)
            inner_items: list[_RNode] = list(x.item.items) if isinstance(x.item, _RSeq) else [x.item]
            inner = _fit_lengths(inner_items, max(0, lo - o_lo), None if hi is None else hi - o_hi)
            if inner is not None:
                return [*items[:i], _RRep(_RSeq(tuple(inner)), x.lo if o_lo >= lo else 1, 1), *items[i + 1 :]]
            continue
        a, b = _r_len(x.item)
        if a != b or a == 0:
            continue
        c_lo = max(x.lo, -(-(lo - o_lo) // a) if lo > o_lo else 0)
        c_hi = x.hi if hi is None else (hi - o_hi) // a if x.hi is None else min(x.hi, (hi - o_hi) // a)
        if c_hi is not None and c_lo > c_hi:
            continue
        return [*items[:i], _RRep(x.item, c_lo, c_hi), *items[i + 1 :]]
    return _fit_shared(items, lens, lo, hi) or _fit_capped(items, lo, hi)


def _cap(node: _RNode, share: int) -> _RNode:
    """``node`` with every unbounded repetition (nested ones too) limited to about ``share``
    characters (never below its own minimum count)."""
    if isinstance(node, _RSeq):
        return _RSeq(tuple(_cap(x, share) for x in node.items))
    if isinstance(node, _RAlt):
        return _RAlt(tuple(_cap(x, share) for x in node.items))
    if isinstance(node, _RRep):
        item = _cap(node.item, share)
        if node.hi is not None:
            return _RRep(item, node.lo, node.hi)
        width = _r_len(item)[1]
        return _RRep(item, node.lo, max(node.lo, share // width) if width else node.lo)
    return node


def _fit_capped(items: list[_RNode], lo: int, hi: int | None) -> list[_RNode] | None:
    """`items` with every unbounded repetition capped at the largest equal share of characters that
    keeps every match within ``hi`` (narrower); None without ``hi`` or when the shortest match is
    then below ``lo``."""
    if hi is None:
        return None
    seq = _RSeq(tuple(items))
    best: _RNode | None = None
    low, high = 1, hi
    while low <= high:  # the longest match grows with the share
        mid = (low + high) // 2
        capped = _cap(seq, mid)
        longest = _r_len(capped)[1]
        if longest is not None and longest <= hi:
            best, low = capped, mid + 1
        else:
            high = mid - 1
    if not isinstance(best, _RSeq) or _r_len(best)[0] < lo:
        return None
    return list(best.items)


def _fit_shared(
    items: list[_RNode], lens: list[tuple[int, int | None]], lo: int, hi: int | None
) -> list[_RNode] | None:
    """`items` with every unbounded repetition of a fixed-width item capped so that together they fit
    ``hi`` (an equal share each), the first one's count raised until every match has ``lo``
    characters; None when another item is unbounded or the shares cannot meet ``lo``
    (``^\\S+@\\S+$`` with ``maxLength: 255``: each ``\\S`` run gets at most 126)."""
    reps: dict[int, _RRep] = {
        i: x
        for i, x in enumerate(items)
        if isinstance(x, _RRep) and x.hi is None and _r_len(x.item)[0] == _r_len(x.item)[1] != 0
    }
    if not reps or any(b is None for j, (_, b) in enumerate(lens) if j not in reps):
        return None
    width = {i: _r_len(x.item)[0] for i, x in reps.items()}
    fixed_hi = sum(b for j, (_, b) in enumerate(lens) if j not in reps and b is not None)
    caps: dict[int, int | None] = {i: None for i in reps}
    if hi is not None:
        extra = hi - fixed_hi - sum(x.lo * width[i] for i, x in reps.items())
        if extra < 0:
            return None
        caps = {i: x.lo + extra // len(reps) // width[i] for i, x in reps.items()}
    lows = {i: x.lo for i, x in reps.items()}
    short = lo - sum(a for a, _ in lens)
    for i in reps:
        if short <= 0:
            break
        cap = caps[i]
        room = short if cap is None else min(short, (cap - lows[i]) * width[i])
        add = -(-room // width[i])
        lows[i] += add
        short -= add * width[i]
    if short > 0:
        return None
    out = list(items)
    for i, x in reps.items():
        out[i] = _RRep(x.item, lows[i], caps[i])
    return out
