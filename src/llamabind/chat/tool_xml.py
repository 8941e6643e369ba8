"""Qwen3-Coder's XML tool-call format: reading a call, and the grammar that forces one.

Inside ``<tool_call>…</tool_call>`` the model writes::

    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>

A parameter's text is the value of a string parameter; for a parameter whose schema is not
a plain string, the text is JSON. The parser has no schemas: a text that parses as a JSON
object, array, number, boolean or null becomes that value, anything else a string (so a string
parameter whose text is ``123`` reads as the number 123; the grammar writes strings without
``<``, so strings never look like markup).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._gbnf_compose import gbnf_literal, parameter_pieces

__all__ = ["parse_xml_call", "xml_call_rule"]

_FUNCTION = re.compile(r"\s*<function=([A-Za-z0-9_.:\-]{1,256})>(.*?)</function>\s*", re.DOTALL)
_PARAMETER = re.compile(r"\s*<parameter=([^>\n]{1,256})>\n?(.*?)\n?</parameter>", re.DOTALL)


def _value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return text if isinstance(value, str) else value


def parse_xml_call(inner: str) -> tuple[str, dict[str, Any]] | None:
    """The (name, arguments) of one ``<function=…>`` block (the text inside ``<tool_call>``)."""
    m = _FUNCTION.fullmatch(inner)
    if m is None:
        return None
    body = m.group(2)
    args: dict[str, Any] = {}
    pos = 0
    for p in _PARAMETER.finditer(body):
        if body[pos : p.start()].strip():
            return None
        args[p.group(1).strip()] = _value(p.group(2))
        pos = p.end()
    if body[pos:].strip():
        return None
    return m.group(1), args


def _is_plain_string(schema: Any) -> bool:
    return (
        isinstance(schema, Mapping)
        and schema.get("type") == "string"
        and not (set(schema) & {"enum", "const", "pattern", "format", "minLength", "maxLength"})
    )


def xml_call_rule(
    index: int, name: str, params: Any, schema_to_gbnf: Callable[[Any], str]
) -> tuple[str, list[str]]:
    """(rule name, rules) forcing one ``<function=name>…</function>`` block for a tool's parameters.

    Properties come in schema order, required ones always, others optionally; a plain string
    parameter is text without ``<``; any other is compact JSON for its schema.
    """

    def markup(pname: str, value: str) -> str:
        opener = gbnf_literal(f"<parameter={pname}>" + chr(10))
        return f"{opener} {value} {gbnf_literal(chr(10) + '</parameter>' + chr(10))}"

    rules, pieces = parameter_pieces(
        params, f"x{index}", schema_to_gbnf, lambda s: "[^<]*" if _is_plain_string(s) else None, markup
    )
    rule = f"xml-call-{index}"
    head = gbnf_literal(f"<function={name}>\n")
    rules.append(f"{rule} ::= {head} {' '.join(pieces)} {gbnf_literal('</function>')}".replace("  ", " "))
    return rule, rules
