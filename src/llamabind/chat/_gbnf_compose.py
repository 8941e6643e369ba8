"""Small helpers to embed several GBNF grammars into one: rename every rule of a sub-grammar with a prefix.

GBNF rule names are made of ``[a-zA-Z0-9-]``. A sub-grammar produced by
``json_schema_to_gbnf`` has a ``root`` rule and helper rules (``space``, ``string``, …) whose names
collide with those of other sub-grammars, so each one is renamed with its own prefix before they
are concatenated. The scanner understands string literals, character classes, ``{m,n}``
repetitions, ``<token>`` references and ``#`` comments, so nothing inside those is renamed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from llamabind.grammar._emit import gbnf_literal

__all__ = [
    "defined_rules",
    "gbnf_literal",
    "json_string_literal",
    "parameter_pieces",
    "prefix_rules",
    "rule_name",
]

_WORD = re.compile(r"[a-zA-Z0-9-]+")
_NAME_OK = re.compile(r"^[a-zA-Z0-9-]+$")


def _skip_delimited(text: str, i: int, close: str) -> int:
    """Index just past the closing delimiter of a literal starting at ``i`` (handles backslash escapes)."""
    n = len(text)
    j = i + 1
    while j < n:
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == close:
            return j + 1
        j += 1
    return n


def _tokens(text: str) -> list[tuple[int, int]]:
    """Spans of the identifier tokens of a GBNF text (outside literals, classes and comments)."""
    spans: list[tuple[int, int]] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif ch == '"':
            i = _skip_delimited(text, i, '"')
        elif ch == "[":
            i = _skip_delimited(text, i, "]")
        elif ch == "{":
            j = text.find("}", i)
            i = n if j < 0 else j + 1
        elif ch == "<":
            j = text.find(">", i)
            i = n if j < 0 else j + 1
        else:
            m = _WORD.match(text, i)
            if m is None:
                i += 1
            else:
                spans.append((m.start(), m.end()))
                i = m.end()
    return spans


def _definitions(text: str, spans: list[tuple[int, int]]) -> list[str]:
    names: list[str] = []
    for start, end in spans:
        j = end
        while j < len(text) and text[j] in " \t":
            j += 1
        if text.startswith("::=", j):
            names.append(text[start:end])
    return names


def defined_rules(grammar: str) -> list[str]:
    """The names of the rules a GBNF grammar defines, in order of definition."""
    return _definitions(grammar, _tokens(grammar))


def prefix_rules(grammar: str, prefix: str) -> str:
    """Rename every rule the grammar defines (definitions and references) to ``prefix + name``.

    References to rules the grammar does not define are left alone. ``prefix`` must itself be made
    of GBNF name characters (``[a-zA-Z0-9-]``).
    """
    if not _NAME_OK.match(prefix):
        raise ValueError(f"invalid GBNF rule-name prefix {prefix!r}: use only [a-zA-Z0-9-]")
    spans = _tokens(grammar)
    defined = set(_definitions(grammar, spans))
    out: list[str] = []
    last = 0
    for start, end in spans:
        word = grammar[start:end]
        if word in defined:
            out.append(grammar[last:start])
            out.append(prefix + word)
            last = end
    out.append(grammar[last:])
    return "".join(out)


def rule_name(text: str) -> str:
    """A GBNF-safe rule-name fragment derived from arbitrary text (e.g. a tool name)."""
    cleaned = re.sub(r"[^a-zA-Z0-9-]+", "-", text).strip("-")
    return cleaned or "x"


def json_string_literal(text: str) -> str:
    """A GBNF literal matching ``text`` encoded as a JSON string (quotes included)."""
    return gbnf_literal(json.dumps(text, ensure_ascii=False))


def parameter_pieces(
    params: Any,
    prefix: str,
    schema_to_gbnf: Callable[[Any], str],
    raw_text: Callable[[Any], str | None],
    markup: Callable[[str, str], str],
) -> tuple[list[str], list[str]]:
    """(rules, pieces) for tool-call formats that write each argument in markup of its own (Qwen3-Coder
    XML, GLM-4.5): one piece per property of ``params`` in schema order, optional ones as ``( … )?``.

    A property whose schema ``raw_text`` gives a GBNF body for is written as that raw text; any other
    is compact JSON for its schema (the sub-grammar renamed with ``prefix`` + its index).
    ``markup(name, value_rule)`` wraps a value in the format's markup.
    """
    props = params.get("properties", {}) if isinstance(params, Mapping) else {}
    required = set(params.get("required", [])) if isinstance(params, Mapping) else set()
    rules: list[str] = []
    pieces: list[str] = []
    for j, (pname, pschema) in enumerate(props.items() if isinstance(props, Mapping) else []):
        if pschema is False:
            continue
        sub = f"{prefix}p{j}-"
        raw = raw_text(pschema)
        if raw is not None:
            value = f"{sub}text"
            rules.append(f"{value} ::= {raw}")
        else:
            rules.append(prefix_rules(schema_to_gbnf(pschema), sub).strip())
            value = f"{sub}root"
        piece = markup(pname, value)
        pieces.append(piece if pname in required else f"( {piece} )?")
    return rules, pieces
