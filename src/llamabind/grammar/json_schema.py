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
import re
from typing import Any
from urllib.parse import unquote

from llamabind.errors import GrammarError, SchemaError
from llamabind.grammar.gbnf import validate_gbnf

from ._emit import _MAX_ALTERNATIVES, _PRIMITIVES, _alt, _cls, _fail, _json_text, _lit, _ptr, _ungroup
from ._regex import _subtract
from ._scalars import _ScalarRules
from ._schema import (
    _ANNOTATIONS,
    _TYPES,
    _base_plain,
    _canonical,
    _is_number,
    _json_type_ok,
    _Loc,
    _merge,
    _Plain,
    _Unsatisfiable,
    _value_types,
)


class _Converter(_ScalarRules):
    def __init__(self, schema: dict[str, Any] | bool) -> None:
        super().__init__()
        self.schema = schema
        self.ref_names: dict[str, str] = {}
        self.left_open: set[str] = set()  # $ref targets entered with no input consumed yet

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
