"""JSON Schema → GBNF.

`compile_json_schema` turns a JSON Schema into a grammar (`CompiledSchema`) whose sentences are
JSON documents valid against the schema. Where a schema cannot be expressed exactly the grammar
is *narrower*, never wider (property order, number spellings, the choices listed below); where a
keyword cannot be enforced by a grammar at all, the grammar enforces the rest, the keyword is
listed in `CompiledSchema.relaxed`, and `CompiledSchema.errors` validates the generated document
(with ``jsonschema``, regexes on RE2). ``strict=True`` refuses such schemas instead (`SchemaError`
naming the keyword and its JSON pointer); `json_schema_to_gbnf` is strict by default, as its text
carries no validator. docs/JSON_SCHEMA.md has the status of every keyword.

Defaults that keep models on track (what llama.cpp, OpenAI's strict mode and Outlines do):

* **Objects generate only the properties the schema names** (``properties`` and ``required``)
  unless ``additionalProperties`` is given (``true`` or a schema: extra properties after the named
  ones; ``false``: none). Output stays valid — omitting allowed extras is always valid — and a small
  model cannot wander off inventing keys. ``strict_properties=False`` restores the permissive
  reading (an object without ``additionalProperties`` takes any extra property). An object that
  names no property at all (``{"type": "object"}``) allows any members.
* **Properties come in schema order.**
* **Whitespace is bounded** as llama.cpp bounds it: between tokens at most one space, or one
  newline plus up to 20 spaces/tabs, and none around the document. ``whitespace="compact"`` allows
  none at all (tool-call arguments use it).

Narrowings: ``patternProperties`` apply to the named properties whose names match (extra keys
from a single pattern when nothing is named); ``dependentRequired``/``dependencies`` make the
dependencies of a named property required; a ``dependentSchemas`` entry applies when its property
is required, else that property is left out; ``minProperties`` makes optional properties required
in schema order, ``maxProperties`` keeps the first ones; ``if``/``then``/``else`` generates
(if ∧ then) or else when no value can satisfy both 'if' and 'else', otherwise (if ∧ then);
``uniqueItems`` over enumerated items (enum/const, booleans, null; up to 24 values) generates
each value at most once, in the listed order; a ``pattern`` with ``minLength``/``maxLength`` is
matched as a whole string with one repetition's count bounded; number bounds that are not
integers are rounded inwards; ``format`` is an annotation: date, time, date-time, uuid, email, uri,
ipv4 are generated when they fit the length bounds, other formats leave the string free;
properties only in schema order; names of extra properties without escapes; ``enum``/``const``
values and pattern characters spelled as given; integers with at most 16 digits; numbers with at
most 16 integer/fraction digits, without an exponent when bounded; no 29 February, leap seconds or
lowercase ``t``/``z``; ``\\d``, ``\\w``, ``\\s`` and their negations are ASCII.

Not enforced by the grammar (validated after generation; refused in strict mode): ``not``,
``multipleOf``, ``contains``/``minContains``/``maxContains``, ``propertyNames``,
``unevaluatedProperties``/``unevaluatedItems``, ``$dynamicRef``/``$recursiveRef``, overlapping
``oneOf`` branches (generated as ``anyOf``), ``uniqueItems`` over other items, ``patternProperties``
together with extra properties, a ``pattern`` with regex features outside the grammar's subset (but
within RE2's) or with length bounds no single repetition meets, ``else`` when 'if' and 'then' can
never hold together.

Always refused: remote or anchor ``$ref``, patterns RE2 cannot match in linear time (lookaround,
backreferences), schemas no value satisfies, ``$ref`` cycles that consume no input, and schemas
beyond the size limits (100 000 nodes or 1 000 000 characters of strings; allOf/anyOf/oneOf
combinations expanding to more than 4096 alternatives at one place or 200 000 steps in all).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

from llamabind.errors import GrammarError, SchemaError
from llamabind.grammar.grammar import Grammar

from ._cache import SchemaCache
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
from ._validate import SchemaValidator, linear_regex

__all__ = [
    "CompiledSchema",
    "clear_caches",
    "compile_json_schema",
    "convert_unchecked",
    "json_schema_to_gbnf",
]

_CACHE = SchemaCache()
_ATOM = re.compile(r"[a-zA-Z0-9-]+|\"(?:[^\"\\]|\\.)*\"")  # a rule name or a string literal

_MAX_PRODUCT = 4096
_MAX_WORK = 200_000
_MAX_NODES = 100_000
_MAX_CHARS = 1_000_000

Whitespace = Literal["bounded", "compact"]
_T = TypeVar("_T")


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
        total = math.prod(len(f) for f in factors)
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
                keys = {k for k in schema if k not in _ANNOTATIONS}
                if keys == {"$ref"}:
                    return self.ref_rule(schema["$ref"], _ptr(pointer, "$ref"))
                for comb in ("anyOf", "oneOf"):
                    if keys == {comb}:
                        subs = self.subschemas(schema[comb], comb, pointer)
                        if comb == "oneOf":
                            self.check_one_of([self.dnf(sub) for sub in subs], pointer)
                        if len(subs) == 1:
                            return self.expr(subs, hint)
                        return _alt(self.alternatives(subs, hint))
        plains: list[_Plain] = []
        dnfs = [self.dnf(loc) for loc in locs]
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


def _check_size(schema: Any) -> None:
    """Bound the work: at most _MAX_NODES values and _MAX_CHARS characters of strings."""
    nodes = chars = 0
    stack = [schema]
    while stack:
        v = stack.pop()
        nodes += 1
        if isinstance(v, dict):
            stack.extend(v.values())
            chars += sum(len(k) for k in v if isinstance(k, str))
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            chars += len(v)
        if nodes > _MAX_NODES or chars > _MAX_CHARS:
            raise SchemaError(
                f"schema is too large (limits: {_MAX_NODES} values, {_MAX_CHARS} characters of strings)"
            )


@dataclass
class CompiledSchema:
    """A JSON schema's grammar and what it leaves to validation.

    ``gbnf``: the grammar (start rule ``root``); ``relaxed``: the keywords the grammar does not
    enforce, with their JSON pointers (empty: every sentence of the grammar is valid);
    :meth:`errors` validates a generated document.
    """

    schema: Any
    gbnf: str
    relaxed: tuple[str, ...] = ()
    _validator: SchemaValidator | None = field(default=None, repr=False, compare=False)
    _grammar: Grammar | None = field(default=None, repr=False, compare=False)

    @property
    def exact(self) -> bool:
        return not self.relaxed

    @property
    def grammar(self) -> Grammar:
        """`gbnf` as a `Grammar` (checked once: `compile_json_schema` hands over the one it checked)."""
        if self._grammar is None or self._grammar.text != self.gbnf:
            self._grammar = Grammar(self.gbnf)
        return self._grammar

    def errors(self, text: str) -> list[str]:
        """Why generated JSON text is not valid for the schema (empty when it is)."""
        if self._validator is None:
            self._validator = SchemaValidator(self.schema)
        return self._validator.text_errors(text)


def compile_json_schema(
    schema: dict[str, Any] | bool,
    *,
    strict: bool = False,
    strict_properties: bool = True,
    whitespace: Whitespace = "bounded",
) -> CompiledSchema:
    """Convert `schema` (see the module doc for the defaults and what each keyword does).

    ``strict``: refuse keywords the grammar cannot enforce instead of listing them in
    ``relaxed``; ``strict_properties=False``: objects without ``additionalProperties`` also take
    extra properties; ``whitespace``: ``"bounded"`` (llama.cpp's bound) or ``"compact"`` (none).
    Raises `SchemaError` naming the keyword and its JSON pointer. Results are cached (the last
    128 schemas, keyed by their JSON text and the options; `clear_caches` empties the cache).
    """
    key = _CACHE.key(schema, (strict, strict_properties, whitespace))
    hit = _CACHE.get(key) if key is not None else None
    if hit is not None:
        return CompiledSchema(schema, hit[1].text, hit[0], _grammar=hit[1])
    text, relaxed = convert_unchecked(
        schema, strict=strict, strict_properties=strict_properties, whitespace=whitespace
    )
    try:
        grammar = Grammar(text)  # checks it as llama.cpp would (and against its limits)
    except GrammarError as exc:  # e.g. llama.cpp's limits on nested repetitions in a pattern
        raise SchemaError(f"the schema needs a grammar llama.cpp would reject: {exc}") from None
    if key is not None:
        _CACHE.put(key, (relaxed, grammar))
    return CompiledSchema(schema, text, relaxed, _grammar=grammar)


def clear_caches() -> None:
    """Forget every compiled schema (`compile_json_schema` caches the last 128)."""
    _CACHE.clear()


def convert_unchecked(
    schema: dict[str, Any] | bool,
    *,
    strict: bool = False,
    strict_properties: bool = True,
    whitespace: Whitespace = "bounded",
) -> tuple[str, tuple[str, ...]]:
    """`compile_json_schema` without its last step, the check of the grammar against llama.cpp's
    parser and limits: the GBNF text and the relaxed keywords. For measuring the conversion alone
    (benchmarks/json_schema_bench.py); everything else should use `compile_json_schema`."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaError(f"a JSON schema must be an object or a boolean, not {type(schema).__name__}")
    if whitespace not in ("bounded", "compact"):
        raise ValueError(f"whitespace must be 'bounded' or 'compact', not {whitespace!r}")
    _check_size(schema)
    conv = _Converter(
        schema, strict=strict, strict_properties=strict_properties, compact=whitespace == "compact"
    )
    conv.ref_names[""] = "root"  # '$ref: "#"' is the start rule itself
    conv.left_open.add("")
    try:
        body = conv.expr([(schema, "")], "root")
    except _Unsatisfiable as exc:
        raise exc.error from None
    except RecursionError:
        raise SchemaError("schema is nested too deeply") from None
    conv.rules = {"root": _ungroup(body), **conv.rules}
    return conv.output(), tuple(conv.relaxed)


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


def json_schema_to_gbnf(
    schema: dict[str, Any] | bool,
    *,
    strict: bool = True,
    strict_properties: bool = True,
    whitespace: Whitespace = "bounded",
) -> str:
    """A GBNF grammar (start rule ``root``) for JSON documents valid against `schema`.

    Strict by default: raises `SchemaError` (naming the keyword and its JSON pointer) for schemas
    that use a keyword the grammar cannot enforce, or that no value satisfies. With
    ``strict=False`` the grammar may be wider than the schema: use `compile_json_schema` to know.
    """
    return compile_json_schema(
        schema, strict=strict, strict_properties=strict_properties, whitespace=whitespace
    ).gbnf
