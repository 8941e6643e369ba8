"""The JSON Schema → GBNF converter (`_Converter`): references, combinators (allOf/anyOf/oneOf,
if/then/else, dependencies) reduced to alternatives of plain schemas, and the rules for each plain
schema (scalars in `_scalars`, arrays and objects in `_containers`). `json_schema` is its public
face (and documents what each keyword does)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import unquote

from llamabind.errors import SchemaError

from ._containers import _ContainerRules
from ._emit import _MAX_ALTERNATIVES, _PRIMITIVES, _alt, _fail, _json_text, _lit, _ptr, _ungroup
from ._schema import (
    _ANNOTATIONS,
    _TYPES,
    _base_plain,
    _canonical,
    _dependent_required,
    _is_number,
    _json_type_ok,
    _Loc,
    _merge,
    _Plain,
    _Unsatisfiable,
    _value_types,
)
from ._validate import linear_regex

_ATOM = re.compile(r"[a-zA-Z0-9-]+|\"(?:[^\"\\]|\\.)*\"")  # a rule name or a string literal

_T = TypeVar("_T")

_MAX_PRODUCT = 4096
_MAX_WORK = 200_000
# scalar types without keywords: the primitive rules they use (the last one is their rule)
_SCALAR_PRIMITIVES = {
    "string": ("char", "string"),
    "number": ("number",),
    "integer": ("integer",),
    "boolean": ("boolean",),
    "null": ("null",),
}


class _Converter(_ContainerRules):
    def __init__(
        self, schema: dict[str, Any] | bool, *, strict: bool, strict_properties: bool, compact: bool
    ) -> None:
        super().__init__(compact)
        self.schema = schema
        self.strict = strict
        self.strict_properties = strict_properties
        self.relaxed: dict[str, None] = {}
        self.work = 0
        self.ref_names: dict[str, str] = {}
        self.left_open: set[str] = set()  # $ref targets entered with no input consumed yet

    def relax(self, keyword: str, pointer: str, message: str | None = None) -> None:
        """The grammar leaves ``keyword`` unenforced (validated after generation); strict: raise."""
        text = message or f"JSON Schema keyword '{keyword}' is not supported"
        if self.strict:
            raise _fail(text, pointer)
        self.relaxed[f"{text} (at JSON pointer '#{pointer}')"] = None

    def product(self, factors: list[list[Any]], pointer: str) -> Iterator[tuple[Any, ...]]:
        """itertools.product within the expansion budget (a clear error instead of minutes of CPU)."""
        total = len(factors[0]) if len(factors) == 1 else math.prod(len(f) for f in factors)
        if total > _MAX_PRODUCT:
            raise _fail(
                f"combination of allOf/anyOf/oneOf expands to {total} alternatives (limit {_MAX_PRODUCT})",
                pointer,
            )
        self.work += total
        if self.work > _MAX_WORK:
            raise _fail(f"schema needs more than {_MAX_WORK} combination steps to convert", pointer)
        return itertools.product(*factors)

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
        known = len(self.ref_names)
        try:
            self.rules[name] = _ungroup(self.expr([(target, tptr)], name))
        except _Unsatisfiable:
            # no value: forget the rule and every reference made while it was open (they may
            # refer to it); the alternative that asked for it is dropped by the caller
            for stale in list(self.ref_names)[known - 1 :]:
                del self.ref_names[stale]
            del self.rules[name]
            self.orphans = True
            raise
        finally:
            self.left_open.discard(tptr)
        return name

    # -- schemas -----------------------------------------------------------------------------

    def atom(self, locs: list[_Loc], hint: str) -> str:
        """A rule name (or other atom) matching the conjunction of `locs`."""
        expr = self.expr(locs, hint)
        if _ATOM.fullmatch(expr):
            return expr
        return self.add_rule(hint, expr)

    def expr(self, locs: list[_Loc], hint: str) -> str:
        if len(locs) > 1:  # the same schema object twice is one conjunct
            locs = _distinct(locs, lambda loc: id(loc[0]))
        if len(locs) == 1:
            schema, pointer = locs[0]
            if isinstance(schema, dict):
                keys = [k for k in schema if k not in _ANNOTATIONS]
                key = keys[0] if len(keys) == 1 else None
                if key == "type":
                    scalar = self.scalar_type(schema["type"], pointer)
                    if scalar is not None:
                        return scalar
                elif key == "$ref":
                    return self.ref_rule(schema["$ref"], _ptr(pointer, "$ref"))
                elif key == "anyOf" or key == "oneOf":
                    subs = self.subschemas(schema[key], key, pointer)
                    if key == "oneOf":
                        self.check_one_of([self.dnf(sub) for sub in subs], pointer)
                    if len(subs) == 1:
                        return self.expr(subs, hint)
                    return _alt(self.alternatives(subs, hint))
        dnfs = [self.dnf(loc) for loc in locs]
        if len(dnfs) == 1 and len(dnfs[0]) == 1 and len(dnfs[0][0]) == 1:
            # one plain schema (the common case): what the loop below does with one combination
            self.work += 1
            if self.work > _MAX_WORK:
                raise _fail(f"schema needs more than {_MAX_WORK} combination steps to convert", locs[0][1])
            plain = dnfs[0][0][0]
            if plain.types is not None and not plain.types:
                raise _Unsatisfiable(_fail("schema can never be satisfied", locs[0][1]))
            try:
                return self.plain_expr(plain, hint)
            except _Unsatisfiable as exc:
                error = exc.error
            self.orphans = True
            raise _Unsatisfiable(error)  # outside the handler, as below
        plains: list[_Plain] = []
        if len(locs) > 1 and math.prod(len(d) for d in dnfs) > _MAX_PRODUCT:
            # copies of one schema (allOf of traits that repeat a property) are one conjunct
            keep = _distinct(list(range(len(locs))), lambda i: _canonical(locs[i][0]))
            dnfs = [dnfs[i] for i in keep]
        for combo in self.product(dnfs, locs[0][1]):
            merged = _merge(tuple(itertools.chain.from_iterable(combo)))
            if merged is not None:
                plains.append(merged)
            if len(plains) > _MAX_ALTERNATIVES:
                raise _fail("combination of allOf/anyOf/oneOf expands to too many alternatives", locs[0][1])
        if not plains:
            raise _Unsatisfiable(_fail("schema can never be satisfied", locs[0][1]))
        exprs: list[str] = []
        errors: list[SchemaError] = []
        for i, p in enumerate(plains):
            try:
                exprs.append(self.plain_expr(p, hint if len(plains) == 1 else f"{hint}-{i}"))
            except _Unsatisfiable as exc:
                errors.append(exc.error)
                self.orphans = True
        if not exprs:
            raise _Unsatisfiable(errors[0])
        return _alt(exprs)

    def alternatives(self, subs: list[_Loc], hint: str) -> list[str]:
        """An atom per subschema, without those no value satisfies (unsatisfiable if none is left)."""
        atoms: list[str] = []
        errors: list[SchemaError] = []
        for i, loc in enumerate(subs):
            try:
                atoms.append(self.atom([loc], f"{hint}-{i}"))
            except _Unsatisfiable as exc:
                errors.append(exc.error)
                self.orphans = True
        if not atoms:
            raise _Unsatisfiable(errors[0])
        return atoms

    def scalar_type(self, value: Any, pointer: str) -> str | None:
        """`expr` of a schema whose only keyword is a 'type' of scalars without bounds (the most
        common schema): their primitive rules, as the general path (`dnf`, `plain_expr`) makes
        them, with the same two combination steps counted; None for any other 'type'."""
        if type(value) is str:
            if value not in _SCALAR_PRIMITIVES:
                return None
            names: Any = (value,)
        elif type(value) is list and value and all(type(t) is str and t in _SCALAR_PRIMITIVES for t in value):
            names = value
        else:
            return None
        self.work += 2
        if self.work > _MAX_WORK:
            raise _fail(f"schema needs more than {_MAX_WORK} combination steps to convert", pointer)
        exprs = []
        for t in _TYPES:
            if t in names and not (t == "integer" and "number" in names):
                for prim in _SCALAR_PRIMITIVES[t]:
                    self.prim(prim)
                exprs.append(prim)
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
        if "if" in schema:
            cond = self.conditional(schema, pointer)
            if cond is not None:
                factors.append(cond)
        for key in ("dependentSchemas", "dependencies"):
            if key in schema:
                factors.extend(self.dependent(schema, key, pointer))
        if len(factors) == 1:  # no combinator: one step, the plain schema itself
            self.work += 1
            if self.work > _MAX_WORK:
                raise _fail(f"schema needs more than {_MAX_WORK} combination steps to convert", pointer)
            return [factors[0][0]]
        result: list[list[_Plain]] = []
        for combo in self.product(factors, pointer):
            result.append(list(itertools.chain.from_iterable(combo)))
            if len(result) > _MAX_ALTERNATIVES:
                raise _fail("combination of allOf/anyOf/oneOf expands to too many alternatives", pointer)
        return result

    # -- if/then/else, dependencies -----------------------------------------------------------

    def conditional(self, schema: dict[str, Any], pointer: str) -> list[list[_Plain]] | None:
        """``if``/``then``/``else`` as alternatives: (if and then), or else when no value can satisfy
        both 'if' and 'else' (exact); otherwise (if and then) alone (narrower)."""
        if "then" not in schema and "else" not in schema:
            return None
        if_d = self.dnf((schema["if"], _ptr(pointer, "if")))
        then_d = (
            self.dnf((schema["then"], _ptr(pointer, "then"))) if "then" in schema else [[_Plain(pointer)]]
        )
        then_branch = [a + b for a, b in self.product([if_d, then_d], pointer)]
        possible = [c for c in then_branch if _merge(tuple(c)) is not None]
        if "else" not in schema:
            if possible:
                return then_branch
            self.relax("if", _ptr(pointer, "if"), "'if' that can never hold together with 'then'")
            return [[_Plain(pointer)]]
        else_d = self.dnf((schema["else"], _ptr(pointer, "else")))
        if not possible:
            self.relax("if", _ptr(pointer, "if"), "'else' branch (the negation of 'if')")
            return else_d
        if_plains = [m for c in if_d if (m := _merge(tuple(c))) is not None]
        else_plains = [m for c in else_d if (m := _merge(tuple(c))) is not None]
        if all(self.disjoint(a, b) for a in if_plains for b in else_plains):
            return then_branch + else_d
        return then_branch

    def dependent(self, schema: dict[str, Any], key: str, pointer: str) -> list[list[list[_Plain]]]:
        """``dependentSchemas`` / ``dependencies``: a dependent schema applies when its property is
        required; an optional property with a dependent schema is left out (narrower)."""
        value = schema[key]
        kp = _ptr(pointer, key)
        if not isinstance(value, dict):
            raise _fail(f"'{key}' must be an object", kp)
        required = schema.get("required", [])
        extra = _Plain(pointer)
        factors: list[list[list[_Plain]]] = [[[extra]]]
        for name, sub in value.items():
            if isinstance(sub, list):
                extra.dep_required.update(_dependent_required({name: sub}, kp))
            elif isinstance(required, list) and name in required:
                factors.append(self.dnf((sub, _ptr(kp, name))))
            else:
                extra.properties[name] = [(False, _ptr(kp, name))]
        return factors

    # -- oneOf --------------------------------------------------------------------------------

    def check_one_of(self, branches: list[list[list[_Plain]]], pointer: str) -> None:
        """Whether no value can match two branches: a grammar cannot express "exactly one", so
        overlapping branches are generated as 'anyOf' and the result validated (strict: raise)."""
        plains = [[m for c in b if (m := _merge(tuple(c))) is not None] for b in branches]
        for i, j in itertools.combinations(range(len(plains)), 2):
            self.work += len(plains[i]) * len(plains[j])
            if not all(self.disjoint(p, q) for p in plains[i] for q in plains[j]):
                self.relax(
                    "oneOf",
                    _ptr(pointer, "oneOf"),
                    f"'oneOf' branches {i} and {j} may both match the same value, which would make it "
                    "invalid; a grammar cannot exclude that (use 'anyOf' if the overlap is acceptable)",
                )
                return

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
            for n in set(p.required) | set(q.required):  # present in every value both allow
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
            for combo in self.product([self.dnf(loc) for loc in locs], p.pointer):
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
        for keyword, pointer in p.unenforced:
            self.relax(keyword, pointer)
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
        if isinstance(v, str):  # 'format' is an annotation
            if len(v) < p.min_length or (p.max_length is not None and len(v) > p.max_length):
                return False
            return all(linear_regex(pat, ptr).search(v) is not None for pat, ptr in p.patterns)
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


def _distinct(items: list[_T], key: Callable[[_T], Any]) -> list[_T]:
    """``items`` without repeats by ``key``, the first of each kept."""
    seen: set[Any] = set()
    out: list[_T] = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out
