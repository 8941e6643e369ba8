"""Tool calls in a model's native output: the call types, format detection and JSON → call reading.

Formats (:class:`ToolCallFormat`):

* ``hermes`` (Hermes 2 Pro, Qwen 2.5/3, SmolLM3, …): ``<tool_call>{"name": …, "arguments": …}</tool_call>``,
  one or more per turn, content around them.
* ``qwen3_coder`` (Qwen3-Coder): ``<tool_call>`` around an XML ``<function=name>`` block with one
  ``<parameter=p>`` element per argument (:mod:`.tool_xml`); the other formats' parsers read it too.
* ``llama3`` (Llama 3.1–3.3): a JSON object ``{"name": …, "parameters": …}`` (several may follow,
  separated by ``;`` or whitespace), optionally after ``<|python_tag|>``; ``<|python_tag|>`` followed
  by ``tool.call(arg=…)`` is a built-in tool call.
* ``mistral``: ``[TOOL_CALLS][{"name": …, "arguments": …}, …]`` and the newer
  ``[TOOL_CALLS]name[ARGS]{…}`` (optionally ``name[CALL_ID]id[ARGS]{…}``), repeated per call.
* ``glm_4_5``, ``deepseek_v3_1``, ``deepseek_r1``, ``command_r7b``: marked blocks, described in
  :mod:`.tool_blocks`.
* ``harmony`` (gpt-oss): channels; a call is a message ``to=functions.name`` whose body is the JSON
  arguments, the ``analysis`` channel is reasoning (:mod:`.tool_harmony`).
* ``functionary_v3_2``: ``>>>name`` + newline + JSON arguments, ``>>>all`` for content
  (:mod:`.tool_functionary`). These two structure every turn, tools or not (:mod:`.native_output`).
* ``generic``: every marker of hermes, llama3 and mistral, and JSON only.

In every format, output that *is* JSON from its first character (``{"tool_calls": [...]}``,
``{"tool_call": {...}}``, a bare ``{"name", "arguments"}`` object, or a list of those) is read as tool
calls (the generic fallback); ``{"response": "…"}`` is read as content. Anything that does not parse
as a call stays content: malformed output never raises. Whitespace that only separates content from
a call is dropped; other content is kept byte for byte.

The parsers live in :mod:`.tool_call_parser` (:class:`ToolCallStreamParser` on a stream of text
deltas; the non-streaming :func:`parse_tool_calls` is the streaming parser fed once, so both always
agree); grammars that force calls in :mod:`.tool_call_grammar`.
"""

from __future__ import annotations

import ast
import enum
import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ToolChoiceError
from ._whitespace import WS

__all__ = [
    "ToolCall",
    "ToolCallFormat",
    "ToolCallResult",
    "ToolChoiceError",
    "detect_tool_call_format",
    "new_tool_call_id",
]

_ID_ALPHABET = string.ascii_letters + string.digits


def new_tool_call_id() -> str:
    """A fresh OpenAI-style tool-call id: ``call_`` and 24 random letters/digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


class ToolCallFormat(str, enum.Enum):
    """The native syntax a model uses for tool calls."""

    HERMES = "hermes"
    QWEN3_CODER = "qwen3_coder"
    LLAMA3 = "llama3"
    MISTRAL = "mistral"
    GLM_4_5 = "glm_4_5"
    DEEPSEEK_V3_1 = "deepseek_v3_1"
    DEEPSEEK_R1 = "deepseek_r1"
    COMMAND_R7B = "command_r7b"
    HARMONY = "harmony"
    FUNCTIONARY_V3_2 = "functionary_v3_2"
    GENERIC = "generic"


@dataclass(frozen=True)
class ToolCall:
    """One parsed tool call. ``arguments`` is a JSON object serialised as a string (OpenAI style)."""

    name: str
    arguments: str
    id: str = field(default_factory=new_tool_call_id)

    def arguments_dict(self) -> dict[str, Any]:
        value = json.loads(self.arguments)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ToolCallResult:
    """A parsed model turn: the content text outside the calls, and the calls in order."""

    content: str
    tool_calls: list[ToolCall]


_HERMES_OPEN = "<tool_call>"
_HERMES_CLOSE = "</tool_call>"
_MISTRAL_OPEN = "[TOOL_CALLS]"
_MISTRAL_ARGS = "[ARGS]"
_MISTRAL_CALL_ID = "[CALL_ID]"
_PYTHON_TAG = "<|python_tag|>"

_MARKERS: dict[ToolCallFormat, tuple[str, ...]] = {
    ToolCallFormat.HERMES: (_HERMES_OPEN,),
    ToolCallFormat.QWEN3_CODER: (_HERMES_OPEN,),
    ToolCallFormat.LLAMA3: (_PYTHON_TAG,),
    ToolCallFormat.MISTRAL: (_MISTRAL_OPEN,),
    ToolCallFormat.HARMONY: (),  # parsed by .tool_harmony
    ToolCallFormat.FUNCTIONARY_V3_2: (),  # parsed by .tool_functionary
    ToolCallFormat.GENERIC: (_HERMES_OPEN, _MISTRAL_OPEN, _PYTHON_TAG),
}

_FUNC_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,256}$")


def detect_tool_call_format(template: str | None) -> ToolCallFormat:
    """Guess the tool-call format from a chat template's source text.

    ``<|channel|>`` with ``<|message|>`` → harmony; ``>>>all`` → functionary_v3_2;
    ``<tool_call>`` with ``<arg_key>`` → glm_4_5; ``<tool_call>`` with ``<function=``/``<parameter=``
    → qwen3_coder; ``<tool_call>`` → hermes; ``<｜tool▁call▁begin｜>`` with a ```` ```json ```` fence →
    deepseek_r1, without → deepseek_v3_1; ``<|START_ACTION|>`` → command_r7b; ``[TOOL_CALLS]`` →
    mistral; ``<|python_tag|>``, or Llama 3 headers (``<|start_header_id|>``) together with an
    ``ipython`` role or ``"parameters"`` → llama3; anything else (including no template) → generic.
    """
    if not template:
        return ToolCallFormat.GENERIC
    if "<|channel|>" in template and "<|message|>" in template:
        return ToolCallFormat.HARMONY
    if ">>>all" in template:
        return ToolCallFormat.FUNCTIONARY_V3_2
    if _HERMES_OPEN in template and "<arg_key>" in template:
        return ToolCallFormat.GLM_4_5
    if "<｜tool▁call▁begin｜>" in template:
        return ToolCallFormat.DEEPSEEK_R1 if "```json" in template else ToolCallFormat.DEEPSEEK_V3_1
    if "<|START_ACTION|>" in template:
        return ToolCallFormat.COMMAND_R7B
    if _HERMES_OPEN in template and "<function=" in template and "<parameter=" in template:
        return ToolCallFormat.QWEN3_CODER
    if _HERMES_OPEN in template:
        return ToolCallFormat.HERMES
    if _MISTRAL_OPEN in template:
        return ToolCallFormat.MISTRAL
    if _PYTHON_TAG in template or (
        "<|start_header_id|>" in template and ("ipython" in template or '"parameters"' in template)
    ):
        return ToolCallFormat.LLAMA3
    return ToolCallFormat.GENERIC


# ---------------------------------------------------------------------------------------------
# JSON → calls
# ---------------------------------------------------------------------------------------------


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _call_from_obj(obj: Any, *, require_arguments: bool, new_id: Callable[[], str]) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    call_id = obj.get("id")
    fn = obj.get("function")
    if isinstance(fn, dict):
        obj = fn
    name = obj.get("name")
    if not isinstance(name, str) or not _FUNC_NAME.match(name):
        return None
    if "arguments" in obj:
        args = obj["arguments"]
    elif "parameters" in obj:
        args = obj["parameters"]
    elif require_arguments:
        return None
    else:
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    if not isinstance(call_id, str) or not call_id:
        call_id = new_id()
    return ToolCall(name=name, arguments=_dump(args), id=call_id)


def _calls_from_json(value: Any, *, bare: bool, new_id: Callable[[], str]) -> list[ToolCall] | None:
    """Tool calls in a parsed JSON value, or None when it is not (only) tool calls.

    ``bare``: the value was not inside a tool-call marker, so a lone object needs both a name and
    arguments/parameters to count as a call.
    """
    items: list[Any]
    require = bare
    if isinstance(value, dict):
        if isinstance(value.get("tool_calls"), list) and set(value) <= {"tool_calls", "content"}:
            items = value["tool_calls"]
            require = False
        elif isinstance(value.get("tool_call"), dict) and len(value) == 1:
            items = [value["tool_call"]]
            require = False
        else:
            items = [value]
    elif isinstance(value, list):
        items = value
    else:
        return None
    if not items:
        return None
    calls: list[ToolCall] = []
    for item in items:
        call = _call_from_obj(item, require_arguments=require, new_id=new_id)
        if call is None:
            return None
        calls.append(call)
    return calls


def _json_sequence(text: str) -> list[Any] | None:
    """Every JSON value in ``text`` (separated by whitespace, ``,`` or ``;``), or None on any error."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    i = 0
    n = len(text)
    while True:
        while i < n and (text[i] in WS or (values and text[i] in ",;")):
            i += 1
        if i >= n:
            break
        try:
            value, i = decoder.raw_decode(text, i)
        except ValueError:
            return None
        values.append(value)
    return values or None


def _python_tag_call(code: str, new_id: Callable[[], str]) -> ToolCall | None:
    """``brave_search.call(query="…")`` (Llama 3.1 built-in tools) → a call."""
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    node = tree.body
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "call"
        and isinstance(node.func.value, ast.Name)
        and not node.args
    ):
        return None
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            return None
        try:
            args[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, SyntaxError, TypeError):
            return None
    try:
        return ToolCall(name=node.func.value.id, arguments=_dump(args), id=new_id())
    except (TypeError, ValueError):
        return None
