"""Tool-call formats made of marked blocks: a start marker, a body, an end marker → calls.

A :class:`BlockFormat` describes one such format for every part that handles tool calls: the
stream parser (:mod:`.tool_call_parser`) looks for ``open``, collects the text up to ``close`` and
hands it to ``read``; markers in ``drop`` are wrappers removed from the content; the grammar
builder (:func:`block_grammar`) composes the format's ``call_rule`` for each tool under its
``root``; ``write`` renders calls the way the model writes them.

* ``glm_4_5`` (GLM-4.5/4.6/4.7 and templates that took over their syntax)::

      <tool_call>get_weather
      <arg_key>city</arg_key>
      <arg_value>Paris</arg_value>
      </tool_call>

  A value is the text of a string argument, or JSON for any other. The parser has no schemas: a
  text that parses as non-string JSON becomes that value, anything else a string (the grammar
  writes strings without ``<``). It shares ``<tool_call>`` with hermes, so the one reader of
  ``<tool_call>`` bodies (:func:`read_tool_call_tag`) reads JSON, Qwen3-Coder XML and GLM bodies.
* ``deepseek_v3_1``: ``<｜tool▁calls▁begin｜>`` then per call
  ``<｜tool▁call▁begin｜>name<｜tool▁sep｜>{…}<｜tool▁call▁end｜>``, then ``<｜tool▁calls▁end｜>``.
* ``deepseek_r1``: the same wrapper; a call is ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>name``,
  a newline and the arguments in a ```` ```json ```` fence, then ``<｜tool▁call▁end｜>``; calls are
  separated by a newline. Both DeepSeek formats share one reader, which takes either body.
* ``command_r7b``: ``<|START_ACTION|>[{"tool_call_id": "0", "tool_name": …, "parameters": {…}}, …]
  <|END_ACTION|>``; the content comes in ``<|START_RESPONSE|>…<|END_RESPONSE|>``, a wrapper that
  is dropped. Calls get fresh ids (the model numbers its calls from 0 in every turn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._gbnf_compose import gbnf_literal, json_string_literal, parameter_pieces, prefix_rules
from .tool_calls import (
    _FUNC_NAME,
    ToolCall,
    ToolCallFormat,
    _calls_from_json,
    _dump,
    _json_sequence,
)
from .tool_xml import _value, parse_xml_call

__all__ = [
    "BLOCK_FORMATS",
    "BlockFormat",
    "block_grammar",
    "describe_tools_natively",
    "read_tool_call_tag",
]

NewId = Callable[[], str]
SchemaToGbnf = Callable[[Any], str]
Reader = Callable[[str, NewId], "list[ToolCall] | None"]
CallRule = Callable[[int, str, Any, SchemaToGbnf], "tuple[str, list[str]]"]

TAG_OPEN = "<tool_call>"
TAG_CLOSE = "</tool_call>"
DS_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
DS_CALLS_END = "<｜tool▁calls▁end｜>"
DS_CALL_BEGIN = "<｜tool▁call▁begin｜>"
DS_CALL_END = "<｜tool▁call▁end｜>"
DS_SEP = "<｜tool▁sep｜>"
R7B_ACTION_OPEN = "<|START_ACTION|>"
R7B_ACTION_CLOSE = "<|END_ACTION|>"
R7B_RESPONSE_OPEN = "<|START_RESPONSE|>"
R7B_RESPONSE_CLOSE = "<|END_RESPONSE|>"


@dataclass(frozen=True)
class BlockFormat:
    """One marked-block tool-call format (see the module doc).

    ``read(body, new_id)``: the calls in the text between ``open`` and ``close`` (None: not a
    call). ``call_rule(index, name, parameters, schema_to_gbnf)``: (rule name, rules) of one call
    of that tool; ``root(parallel)``: the root rule over ``tc-call`` (any one call).
    ``write(calls)``: (name, arguments) pairs as the model writes them. ``trigger``: the text that
    starts the calls (the lazy grammar's trigger word).
    """

    open: str
    close: str
    read: Reader
    call_rule: CallRule
    root: Callable[[bool], str]
    write: Callable[[Sequence[tuple[str, Mapping[str, Any]]]], str]
    trigger: str
    drop: tuple[str, ...] = ()
    extra_rules: tuple[str, ...] = ()

    @property
    def markers(self) -> tuple[str, ...]:
        """Every marker the stream parser watches for in content."""
        return (self.open, *self.drop)


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------

_GLM_HEAD = re.compile(r"\s*([^\s<]{1,256})")
_GLM_ARG = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


def _read_glm(body: str) -> tuple[str, dict[str, Any]] | None:
    m = _GLM_HEAD.match(body)
    if m is None or not _FUNC_NAME.match(m.group(1)):
        return None
    args: dict[str, Any] = {}
    pos = m.end()
    for a in _GLM_ARG.finditer(body, pos):
        if body[pos : a.start()].strip():
            return None
        args[a.group(1).strip()] = _value(a.group(2))
        pos = a.end()
    if body[pos:].strip():
        return None
    return m.group(1), args


def read_tool_call_tag(body: str, new_id: NewId) -> list[ToolCall] | None:
    """The calls in a ``<tool_call>`` body: JSON calls (hermes), one Qwen3-Coder ``<function=…>``
    block, or one GLM ``name`` + ``<arg_key>``/``<arg_value>`` call."""
    values = _json_sequence(body)
    if values is not None:
        calls: list[ToolCall] = []
        for value in values:
            got = _calls_from_json(value, bare=False, new_id=new_id)
            if got is None:
                return None
            calls.extend(got)
        return calls or None
    found = parse_xml_call(body) or _read_glm(body)
    return None if found is None else [ToolCall(found[0], _dump(found[1]), new_id())]


def _arguments(raw: str) -> dict[str, Any] | None:
    """A JSON object, or a JSON string holding one (arguments a template wrote as a string)."""
    try:
        value = json.loads(raw) if raw.strip() else {}
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _read_deepseek(body: str, new_id: NewId) -> list[ToolCall] | None:
    """``name<｜tool▁sep｜>{…}`` (V3.1) or ``function<｜tool▁sep｜>name\\n```json\\n{…}\\n```​`` (R1)."""
    head, sep, rest = body.partition(DS_SEP)
    if not sep:
        return None
    rest = rest.strip()
    if rest.startswith(("{", '"')):
        name, raw = head.strip(), rest
    else:
        if head.strip() not in ("function", ""):
            return None
        name, _, raw = rest.partition("\n")
        name, raw = name.strip(), raw.strip()
        if raw.startswith("```"):
            raw = raw[3:]
            raw = raw[4:] if raw.startswith("json") else raw
            if not raw.rstrip().endswith("```"):
                return None
            raw = raw.rstrip()[:-3]
    args = _arguments(raw)
    if args is None or not _FUNC_NAME.match(name):
        return None
    return [ToolCall(name, _dump(args), new_id())]


def _read_action(body: str, new_id: NewId) -> list[ToolCall] | None:
    """A Command-R7B action: a JSON list of ``{"tool_call_id", "tool_name", "parameters"}``."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        return None
    calls: list[ToolCall] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        name = item.get("tool_name")
        params = item.get("parameters")
        args = _arguments(params) if isinstance(params, str) else ({} if params is None else params)
        if not isinstance(name, str) or not _FUNC_NAME.match(name) or not isinstance(args, dict):
            return None
        calls.append(ToolCall(name, _dump(args), new_id()))
    return calls


# ---------------------------------------------------------------------------------------------
# Grammar rules of one call
# ---------------------------------------------------------------------------------------------


def _json_args(index: int, params: Any, schema_to_gbnf: SchemaToGbnf) -> tuple[str, str]:
    prefix = f"b{index}-"
    return f"{prefix}root", prefix_rules(schema_to_gbnf(params), prefix).strip()


_MAX_BOUND = 256  # longest length bound a raw string's grammar repeats (llama.cpp expands repetitions)


def _raw_string(schema: Any) -> str | None:
    """GBNF for a string-only schema written as raw text (without ``<``): a string ``enum``/``const``
    as its literals, ``type: string`` as text within ``minLength``/``maxLength`` (bounds over 256,
    ``pattern`` and ``format`` are not enforced). None: not a string-only schema."""
    if not isinstance(schema, Mapping):
        return None
    if "const" in schema:
        const = schema["const"]
        return gbnf_literal(const) if isinstance(const, str) and "<" not in const else None
    enum = schema.get("enum")
    if isinstance(enum, list):
        if enum and all(isinstance(v, str) and "<" not in v for v in enum):
            return " | ".join(gbnf_literal(v) for v in enum)
        return None
    if schema.get("type") != "string":
        return None
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    if not isinstance(low, int) or not isinstance(high, (int, type(None))):
        return "[^<]*"
    low = low if 0 <= low <= _MAX_BOUND else 0
    high = high if high is not None and low <= high <= _MAX_BOUND else None
    if high is None:
        return f"[^<]{{{low},}}" if low else "[^<]*"
    return f"[^<]{{{low},{high}}}"


def _glm_call_rule(index: int, name: str, params: Any, schema_to_gbnf: SchemaToGbnf) -> tuple[str, list[str]]:
    """Properties in schema order, required ones always, others optionally; a string-only value is
    raw text (:func:`_raw_string`), any other compact JSON for its schema."""

    def markup(pname: str, value: str) -> str:
        key = gbnf_literal(f"<arg_key>{pname}</arg_key>\n<arg_value>")
        return f"{key} {value} {gbnf_literal('</arg_value>' + chr(10))}"

    rules, pieces = parameter_pieces(params, f"g{index}", schema_to_gbnf, _raw_string, markup)
    rule = f"glm-call-{index}"
    body = " ".join([gbnf_literal(f"{TAG_OPEN}{name}\n"), *pieces, gbnf_literal(TAG_CLOSE)])
    rules.append(f"{rule} ::= {body}")
    return rule, rules


def _v31_call_rule(index: int, name: str, params: Any, schema_to_gbnf: SchemaToGbnf) -> tuple[str, list[str]]:
    args, sub = _json_args(index, params, schema_to_gbnf)
    rule = f"ds-call-{index}"
    head = gbnf_literal(DS_CALL_BEGIN + name + DS_SEP)
    return rule, [sub, f"{rule} ::= {head} {args} {gbnf_literal(DS_CALL_END)}"]


def _r1_call_rule(index: int, name: str, params: Any, schema_to_gbnf: SchemaToGbnf) -> tuple[str, list[str]]:
    args, sub = _json_args(index, params, schema_to_gbnf)
    rule = f"ds-call-{index}"
    head = gbnf_literal(f"{DS_CALL_BEGIN}function{DS_SEP}{name}\n```json\n")
    return rule, [sub, f"{rule} ::= {head} {args} {gbnf_literal(chr(10) + '```' + DS_CALL_END)}"]


def _r7b_call_rule(index: int, name: str, params: Any, schema_to_gbnf: SchemaToGbnf) -> tuple[str, list[str]]:
    args, sub = _json_args(index, params, schema_to_gbnf)
    rule = f"r7b-call-{index}"
    head = f'"{{" {json_string_literal("tool_call_id")} ": \\"" [0-9]{{1,3}} "\\", "'
    head += f" {json_string_literal('tool_name')} {gbnf_literal(': ')} {json_string_literal(name)}"
    head += f" {gbnf_literal(', ')} {json_string_literal('parameters')} {gbnf_literal(': ')}"
    return rule, [sub, f'{rule} ::= {head} {args} "}}"']


def _repeat(parallel: bool, sep: str = "") -> str:
    if not parallel:
        return "tc-call"
    return f"tc-call ({gbnf_literal(sep)} tc-call)*" if sep else "tc-call+"


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------

Calls = Sequence[tuple[str, Mapping[str, Any]]]


def _write_glm(calls: Calls) -> str:
    def one(name: str, args: Mapping[str, Any]) -> str:
        pairs = "".join(
            f"<arg_key>{k}</arg_key>\n<arg_value>{v if isinstance(v, str) else _dump(v)}</arg_value>\n"
            for k, v in args.items()
        )
        return f"{TAG_OPEN}{name}\n{pairs}{TAG_CLOSE}"

    return "\n".join(one(n, a) for n, a in calls)


def _write_v31(calls: Calls) -> str:
    body = "".join(f"{DS_CALL_BEGIN}{n}{DS_SEP}{_dump(dict(a))}{DS_CALL_END}" for n, a in calls)
    return DS_CALLS_BEGIN + body + DS_CALLS_END


def _write_r1(calls: Calls) -> str:
    body = "\n".join(
        f"{DS_CALL_BEGIN}function{DS_SEP}{n}\n```json\n{_dump(dict(a))}\n```{DS_CALL_END}" for n, a in calls
    )
    return DS_CALLS_BEGIN + body + DS_CALLS_END


def _write_r7b(calls: Calls) -> str:
    items = ", ".join(
        f'{{"tool_call_id": "{i}", "tool_name": {json.dumps(n)}, "parameters": {_dump(dict(a))}}}'
        for i, (n, a) in enumerate(calls)
    )
    return f"{R7B_ACTION_OPEN}[{items}]{R7B_ACTION_CLOSE}"


_DS_ROOT = gbnf_literal(DS_CALLS_BEGIN) + " {calls} " + gbnf_literal(DS_CALLS_END)

BLOCK_FORMATS: dict[ToolCallFormat, BlockFormat] = {
    ToolCallFormat.GLM_4_5: BlockFormat(
        open=TAG_OPEN,
        close=TAG_CLOSE,
        read=read_tool_call_tag,
        call_rule=_glm_call_rule,
        root=lambda parallel: "root ::= " + _repeat(parallel, "\n"),
        write=_write_glm,
        trigger=TAG_OPEN,
    ),
    ToolCallFormat.DEEPSEEK_V3_1: BlockFormat(
        open=DS_CALL_BEGIN,
        close=DS_CALL_END,
        read=_read_deepseek,
        call_rule=_v31_call_rule,
        root=lambda parallel: "root ::= " + _DS_ROOT.format(calls=_repeat(parallel)),
        write=_write_v31,
        trigger=DS_CALLS_BEGIN,
        drop=(DS_CALLS_BEGIN, DS_CALLS_END),
    ),
    ToolCallFormat.DEEPSEEK_R1: BlockFormat(
        open=DS_CALL_BEGIN,
        close=DS_CALL_END,
        read=_read_deepseek,
        call_rule=_r1_call_rule,
        root=lambda parallel: "root ::= " + _DS_ROOT.format(calls=_repeat(parallel, "\n")),
        write=_write_r1,
        trigger=DS_CALLS_BEGIN,
        drop=(DS_CALLS_BEGIN, DS_CALLS_END),
    ),
    ToolCallFormat.COMMAND_R7B: BlockFormat(
        open=R7B_ACTION_OPEN,
        close=R7B_ACTION_CLOSE,
        read=_read_action,
        call_rule=_r7b_call_rule,
        root=lambda parallel: (
            f"root ::= {gbnf_literal(R7B_ACTION_OPEN + '[')} r7b-ws "
            + ('tc-call ("," r7b-ws tc-call)*' if parallel else "tc-call")
            + f" r7b-ws {gbnf_literal(']' + R7B_ACTION_CLOSE)}"
        ),
        write=_write_r7b,
        trigger=R7B_ACTION_OPEN,
        drop=(R7B_RESPONSE_OPEN, R7B_RESPONSE_CLOSE),
        extra_rules=("r7b-ws ::= [ \\t\\n]{0,8}",),
    ),
}


def block_grammar(
    fmt: ToolCallFormat,
    functions: Sequence[tuple[str, Any]],
    parallel: bool,
    schema_to_gbnf: SchemaToGbnf,
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(GBNF grammar, trigger words, lazy trigger patterns) forcing calls of ``functions`` in ``fmt``."""
    block = BLOCK_FORMATS[fmt]
    rules: list[str] = []
    alternatives: list[str] = []
    for i, (name, params) in enumerate(functions):
        rule, call_rules = block.call_rule(i, name, params, schema_to_gbnf)
        alternatives.append(rule)
        rules.extend(call_rules)
    head = [block.root(parallel), "tc-call ::= " + " | ".join(alternatives)]
    grammar = "\n".join(head + rules + list(block.extra_rules)) + "\n"
    pattern = r"[\s\S]*?(" + re.escape(block.trigger) + r")[\s\S]*"
    return grammar, (block.trigger,), (pattern,)


# ---------------------------------------------------------------------------------------------
# Tools described in the prompt, for templates that render calls but not tool definitions
# ---------------------------------------------------------------------------------------------


def _example_args(params: Any) -> dict[str, Any]:
    props = params.get("properties", {}) if isinstance(params, Mapping) else {}
    return {k: f"<{k}>" for k in props} if isinstance(props, Mapping) else {}


def describe_tools_natively(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None, fmt: ToolCallFormat
) -> list[dict[str, Any]]:
    """``messages`` with the tools described in the system message, and how to call them in ``fmt``
    (earlier calls stay ``tool_calls``: the template renders them natively)."""
    out = [dict(m) for m in messages]
    if not tools:
        return out
    lines = ["## Tools", "You can call the following tools.", ""]
    functions: list[tuple[str, Any]] = []
    for tool in tools:
        fn = tool.get("function", tool)
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        functions.append((fn["name"], params))
        lines.append(f"### {fn['name']}")
        if fn.get("description"):
            lines.append(f"Description: {fn['description']}")
        lines.extend([f"Parameters: {json.dumps(params, ensure_ascii=False)}", ""])
    if functions:
        example = BLOCK_FORMATS[fmt].write([(functions[0][0], _example_args(functions[0][1]))])
        lines.append(f"To call tools, write them exactly in this format:\n{example}")
    note = "\n".join(lines)
    if out and out[0].get("role") in ("system", "developer") and isinstance(out[0].get("content"), str):
        out[0]["content"] = out[0]["content"] + "\n\n" + note
    else:
        out.insert(0, {"role": "system", "content": note})
    return out
