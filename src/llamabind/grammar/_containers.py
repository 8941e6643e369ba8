"""Rules for arrays and objects: items, lengths, ``uniqueItems`` over enumerated values, properties
(schema order; closed unless ``additionalProperties`` asks for more), ``patternProperties``,
``dependentRequired``, ``minProperties`` / ``maxProperties``."""

from __future__ import annotations

import itertools
from abc import abstractmethod
from typing import Any

from llamabind.errors import SchemaError

from ._emit import _alt, _cls, _fail, _json_text, _lit, _ptr
from ._regex import _subtract
from ._scalars import _ScalarRules
from ._schema import _canonical, _Loc, _merge, _Plain, _Unsatisfiable
from ._validate import linear_regex

_MAX_UNIQUE_VALUES = 24


class _ContainerRules(_ScalarRules):
    """The array/object part of the JSON Schema converter."""

    strict_properties: bool
    left_open: set[str]

    @abstractmethod
    def atom(self, locs: list[_Loc], hint: str) -> str: ...

    @abstractmethod
    def dnf(self, loc: _Loc) -> list[list[_Plain]]: ...

    @abstractmethod
    def value_ok(self, v: Any, p: _Plain) -> bool: ...

    @abstractmethod
    def const_expr(self, value: Any) -> str: ...

    @abstractmethod
    def relax(self, keyword: str, pointer: str, message: str | None = None) -> None: ...

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
            if p.unique and (hi is None or hi > 1):
                values = self.enumerated(p.items) if not p.prefix and p.items else None
                if values is not None:
                    return self.unique_array(values, lo, hi, hint, p.pointer)
                self.relax("uniqueItems", _ptr(p.pointer, "uniqueItems"))

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

    def enumerated(self, locs: list[_Loc]) -> list[Any] | None:
        """Every value the conjunction of `locs` allows, when that is a short list (enum/const,
        booleans, null); None otherwise."""
        out: dict[str, Any] = {}
        for combo in itertools.product(*[self.dnf(loc) for loc in locs]):
            merged = _merge(tuple(itertools.chain.from_iterable(combo)))
            if merged is None:
                continue
            if merged.enum is not None:
                candidates = merged.enum
            elif merged.types is not None and merged.types <= {"boolean", "null"}:
                candidates = [
                    v for t, v in (("boolean", True), ("boolean", False), ("null", None)) if t in merged.types
                ]
            else:
                return None
            for v in candidates:
                if self.value_ok(v, merged):
                    out.setdefault(_canonical(v), v)
        values = list(out.values())
        return values if 0 < len(values) <= _MAX_UNIQUE_VALUES else None

    def unique_array(self, values: list[Any], lo: int, hi: int | None, hint: str, pointer: str) -> str:
        """Arrays of distinct `values` (each at most once, in the given order), lo..hi of them."""
        n = len(values)
        top = n if hi is None else min(hi, n)
        if lo > top:
            raise _Unsatisfiable(_fail("'minItems' cannot be met with unique items", pointer))
        ws = self.ws()
        names: dict[tuple[int, int], str | None] = {}

        def state(i: int, c: int) -> str | None:
            """Items from values[i:], c chosen so far; None when lo can no longer be reached."""
            if c + (n - i) < lo:
                return None
            if i == n or c == top:
                return '""' if c >= lo else None
            key = (i, c)
            if key not in names:
                alts = []
                take = state(i + 1, c + 1)
                if take is not None:
                    sep = f'{ws} "," {ws} ' if c else ""
                    alts.append(f"{sep}{self.const_expr(values[i])} {take}".strip())
                skip = state(i + 1, c)
                if skip is not None:
                    alts.append(skip)
                names[key] = self.add_rule(f"{hint}-uniq-{i}-{c}", _alt(alts)) if alts else None
            return names[key]

        body = state(0, 0)
        assert body is not None
        return f'"[" {ws} {body} {ws} "]"'

    # -- objects -----------------------------------------------------------------------------

    def object_expr(self, p: _Plain, hint: str) -> str:
        ws = self.ws()
        saved, self.left_open = self.left_open, set()
        try:
            return self._object_expr(p, hint, ws)
        finally:
            self.left_open = saved

    def _object_expr(self, p: _Plain, hint: str, ws: str) -> str:
        explicit_false = any(s is False for s, _ in p.additional)
        required = dict(p.required)
        forbidden = {n for n, locs in p.properties.items() if any(s is False for s, _ in locs)}

        def allowed(name: str) -> bool:
            return name not in forbidden and (
                name in p.properties
                or not explicit_false
                or any(linear_regex(pattern, loc[1]).search(name) for pattern, loc in p.pattern_props)
            )

        # dependentRequired: a property that depends on others makes them required (narrower, sound);
        # one whose dependencies are not allowed is left out.
        changed = True
        while changed:
            changed = False
            for name, deps in p.dep_required.items():
                if not allowed(name):
                    continue
                if not all(allowed(d) for d in deps):
                    forbidden.add(name)
                    changed = True
                elif name in required:
                    for d in deps:
                        if d not in required:
                            required[d] = None
                            changed = True
        for name in required:
            if not allowed(name):
                raise _Unsatisfiable(_fail(f"required property {name!r} is not allowed", p.pointer))
        order = [n for n in p.properties if n not in forbidden]
        order += [n for n in required if n not in p.properties]
        # An optional property with dependencies makes them required (narrower, sound).
        for name in list(order):
            for d in p.dep_required.get(name, []):
                required.setdefault(d, None)
                if d not in order:
                    order.append(d)

        # minProperties / maxProperties over the named properties (schema order decides which).
        if p.max_props is not None and len(required) > p.max_props:
            raise _Unsatisfiable(
                _fail("'maxProperties' is below the number of required properties", p.pointer)
            )
        optional = [n for n in order if n not in required]
        if p.min_props > len(required):
            for n in optional[: p.min_props - len(required)]:
                required[n] = None
        if p.max_props is not None:
            keep = set(required) | set([n for n in order if n not in required][: p.max_props - len(required)])
            order = [n for n in order if n in keep]
        nothing_named = not order

        # Extra properties.
        extra_locs: list[tuple[str, list[_Loc]]] = []  # (key rule, value schemas)
        known = set(p.properties) | set(required)
        if not explicit_false and (
            p.additional or not self.strict_properties or (nothing_named and not p.pattern_props)
        ):
            key = self.add_rule(f"{hint}-extra-key", self.key_not_in(known))
            extra_locs.append((key, p.additional))
            if p.pattern_props:
                self.relax(
                    "patternProperties", p.pointer, "'patternProperties' together with extra properties"
                )
        elif len(p.pattern_props) == 1 and not known:
            pattern, loc = p.pattern_props[0]
            try:
                key_expr = self.pattern_expr(pattern, loc[1], hint)
            except SchemaError:  # a key pattern the grammar cannot express: no pattern keys (narrower)
                key_expr = ""
            if key_expr:
                extra_locs.append((self.add_rule(f"{hint}-pattern-key", key_expr), [loc]))

        sep = f'{ws} "," {ws}'

        def value_of(name: str) -> str:
            matched = [loc for pattern, loc in p.pattern_props if linear_regex(pattern, loc[1]).search(name)]
            # additionalProperties covers only names that neither properties nor a pattern names
            locs = list(p.properties.get(name, [] if matched else p.additional)) + matched
            value = self.atom(locs, f"{hint}-{name}") if locs else self.prim("value")
            return f'{_lit(_json_text(name))} {ws} ":" {ws} {value}'

        pieces: list[str] = []
        for name in list(order):
            try:
                pieces.append(value_of(name))
            except _Unsatisfiable:
                if name in required:
                    raise
                order.remove(name)  # an optional property no value satisfies is never generated
                self.orphans = True
        is_req = [name in required for name in order]
        count = len(order)
        extra = ""
        extra_lo, extra_hi = 0, None
        if extra_locs:
            extras = []
            for key, locs in extra_locs:
                value = self.atom(locs, f"{hint}-additional") if locs else self.prim("value")
                extras.append(f'{key} {ws} ":" {ws} {value}')
            extra = self.add_rule(f"{hint}-extra", _alt(extras))
            if p.max_props is not None:
                extra_hi = p.max_props - count
            if p.min_props > count:
                extra_lo = p.min_props - count
                if extra_lo > 1:  # two extra members may repeat a key and count once
                    self.relax("minProperties", _ptr(p.pointer, "minProperties"))
        elif p.min_props > count:
            raise _Unsatisfiable(_fail("'minProperties' cannot be met", p.pointer))
        if extra_hi == 0:
            extra = ""

        def extras_after(done_named: int) -> str:
            if not extra:
                return ""
            lo = extra_lo if done_named else max(extra_lo - 1, 0)
            hi = extra_hi if done_named or extra_hi is None else extra_hi - 1
            return self.rep(f"{sep} {extra}", lo, hi, f"{hint}-extras", p.pointer)

        first_required = next((i for i, r in enumerate(is_req) if r), count)
        use_chain = first_required > 2

        def piece(i: int) -> str:
            return f"{sep} {pieces[i]}" if is_req[i] else f"( {sep} {pieces[i]} )?"

        tails: dict[int, str] = {}

        def tail(i: int) -> str:
            if not use_chain:
                return " ".join(x for x in [*(piece(j) for j in range(i, count)), extras_after(1)] if x)
            if i == count:
                return extras_after(1)
            if i not in tails:
                rest = tail(i + 1)
                tails[i] = self.add_rule(f"{hint}-after-{order[i]}", f"{piece(i)} {rest}".strip())
            return tails[i]

        alts = [f"{pieces[i]} {tail(i + 1)}".strip() for i in range(min(first_required + 1, count))]
        nullable = first_required == count
        if nullable and extra:
            alts.append(f"{extra} {extras_after(0)}".strip())
        if not alts:
            return f'"{{" {ws} "}}"'
        body = _alt(alts)
        if nullable and extra_lo == 0:
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
