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

from dataclasses import dataclass, field
from typing import Any, Literal

from llamabind.errors import GrammarError, SchemaError
from llamabind.grammar.grammar import Grammar

from ._cache import SchemaCache
from ._converter import _Converter
from ._emit import _ungroup
from ._schema import _Unsatisfiable
from ._validate import SchemaValidator

__all__ = [
    "CompiledSchema",
    "clear_caches",
    "compile_json_schema",
    "convert_unchecked",
    "json_schema_to_gbnf",
]

_CACHE = SchemaCache()
_MAX_NODES = 100_000
_MAX_CHARS = 1_000_000

Whitespace = Literal["bounded", "compact"]


def _check_size(schema: Any) -> None:
    """Bound the work: at most _MAX_NODES values and _MAX_CHARS characters of strings."""
    nodes = chars = 0
    stack = [schema]
    while stack:
        v = stack.pop()
        nodes += 1
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
            try:
                chars += len("".join(v))
            except TypeError:  # a key that is not a string (counts nothing)
                chars += sum(len(k) for k in v if isinstance(k, str))
        elif isinstance(v, list):
            stack.extend(v)
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
