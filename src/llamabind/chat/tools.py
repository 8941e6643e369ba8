"""Tool calls in a model's native output: detection, parsing (whole or streaming) and grammars.

Formats (:class:`ToolCallFormat`):

* ``hermes`` (Hermes 2 Pro, Qwen 2.5/3, SmolLM3, …): ``<tool_call>{"name": …, "arguments": …}</tool_call>``,
  one or more per turn, content around them.
* ``llama3`` (Llama 3.1–3.3): a JSON object ``{"name": …, "parameters": …}`` (several may follow,
  separated by ``;`` or whitespace), optionally after ``<|python_tag|>``; ``<|python_tag|>`` followed
  by ``tool.call(arg=…)`` is a built-in tool call.
* ``mistral``: ``[TOOL_CALLS][{"name": …, "arguments": …}, …]`` and the newer
  ``[TOOL_CALLS]name[ARGS]{…}`` (optionally ``name[CALL_ID]id[ARGS]{…}``), repeated per call.
* ``generic``: every marker above, and JSON only.

In every format, output that *is* JSON from its first character (``{"tool_calls": [...]}``,
``{"tool_call": {...}}``, a bare ``{"name", "arguments"}`` object, or a list of those) is read as tool
calls (the generic fallback); ``{"response": "…"}`` is read as content. Anything that does not parse
as a call stays content: malformed output never raises. Whitespace that only separates content from
a call is dropped; other content is kept byte for byte.

:class:`ToolCallStreamParser` does the same on a stream of text deltas; the non-streaming
:func:`parse_tool_calls` is the streaming parser fed once, so both always agree.
"""

from __future__ import annotations

import ast
import enum
import json
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..errors import ToolChoiceError
from ._gbnf_compose import gbnf_literal, json_string_literal, prefix_rules

__all__ = [
    "StreamEvent",
    "ToolCall",
    "ToolCallFormat",
    "ToolCallResult",
    "ToolCallStreamParser",
    "ToolChoiceError",
    "ToolGrammar",
    "detect_tool_call_format",
    "new_tool_call_id",
    "parse_tool_calls",
    "tool_call_grammar",
]

_ID_ALPHABET = string.ascii_letters + string.digits


def new_tool_call_id() -> str:
    """A fresh OpenAI-style tool-call id: ``call_`` and 24 random letters/digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


class ToolCallFormat(str, enum.Enum):
    """The native syntax a model uses for tool calls."""

    HERMES = "hermes"
    LLAMA3 = "llama3"
    MISTRAL = "mistral"
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

    def to_openai(self) -> dict[str, Any]:
        """The ``tool_calls`` entry of an OpenAI chat completion message."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


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
    ToolCallFormat.LLAMA3: (_PYTHON_TAG,),
    ToolCallFormat.MISTRAL: (_MISTRAL_OPEN,),
    ToolCallFormat.GENERIC: (_HERMES_OPEN, _MISTRAL_OPEN, _PYTHON_TAG),
}

_FUNC_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,256}$")
_WS = " \t\r\n"


def detect_tool_call_format(template: str | None) -> ToolCallFormat:
    """Guess the tool-call format from a chat template's source text.

    ``<tool_call>`` → hermes; ``[TOOL_CALLS]`` → mistral; ``<|python_tag|>``, or Llama 3 headers
    (``<|start_header_id|>``) together with an ``ipython`` role or ``"parameters"`` → llama3;
    anything else (including no template) → generic.
    """
    if not template:
        return ToolCallFormat.GENERIC
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
        while i < n and (text[i] in _WS or (values and text[i] in ",;")):
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


# ---------------------------------------------------------------------------------------------
# streaming parser
# ---------------------------------------------------------------------------------------------


class _JsonScanner:
    """Finds where one JSON object/array ends in a stream of text (strings and escapes aware)."""

    __slots__ = ("depth", "escape", "in_string", "started")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.started = False

    def feed(self, text: str) -> int | None:
        """End offset (exclusive) of the value in ``text``; None when more is needed; -1 when invalid."""
        for i, ch in enumerate(text):
            if not self.started:
                if ch in _WS:
                    continue
                if ch not in "{[":
                    return -1
                self.started = True
                self.depth = 1
                continue
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                continue
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return None


class _S(enum.Enum):
    START = 0
    CONTENT = 1
    TAG = 2
    MISTRAL_HEAD = 3
    MISTRAL_NAME = 4
    JSON = 5
    AFTER_JSON = 6
    PYTAG_HEAD = 7
    PYCODE = 8


def _partial_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``markers``."""
    longest = max((len(m) for m in markers), default=1) - 1
    for k in range(min(len(text), longest), 0, -1):
        tail = text[-k:]
        if any(m.startswith(tail) for m in markers):
            return k
    return 0


StreamEvent: TypeAlias = "str | ToolCall"
"""What :class:`ToolCallStreamParser` yields: a content delta or a completed call."""


class ToolCallStreamParser:
    """Turn a stream of generated text deltas into content deltas and completed :class:`ToolCall` s.

    ``feed(delta)`` returns the events that became certain with this delta; ``finish()`` returns
    the rest. Text that may still turn out to be (the start of) a tool-call marker or a JSON call is
    held back until it is decided, so content never leaks call markup.

    ``tool_names``: when given, JSON outside any marker (the bare/generic/llama3 forms) only counts
    as a call when every name in it is one of these.
    """

    def __init__(
        self,
        fmt: ToolCallFormat | str = ToolCallFormat.GENERIC,
        *,
        tool_names: Iterable[str] | None = None,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self.format = ToolCallFormat(fmt)
        self._markers = _MARKERS[self.format]
        self._names = None if tool_names is None else frozenset(tool_names)
        self._new_id = id_factory or new_tool_call_id
        self._state = _S.START
        self._buf = ""
        self._events: list[StreamEvent] = []
        self._ws = ""  # whitespace held back: emitted before the next content, dropped before a call
        self._after_call = False  # drop whitespace right after a call
        self._prefix = ""  # raw text of the current candidate call before its JSON (markers, names)
        self._json = ""  # raw JSON text of the current candidate call
        self._json_kind = ""
        self._scanner = _JsonScanner()
        self._tag_searched = 0
        self._pending_name = ""
        self._pending_id: str | None = None
        self._calls: list[ToolCall] = []
        self._finished = False

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every call completed so far."""
        return list(self._calls)

    def feed(self, text: str) -> list[StreamEvent]:
        if self._finished:
            raise RuntimeError("ToolCallStreamParser.feed() after finish()")
        if text:
            self._buf += text
            self._run(final=False)
        return self._drain()

    def finish(self) -> list[StreamEvent]:
        if not self._finished:
            self._finished = True
            self._run(final=True)
            if self._ws:
                self._events.append(self._ws)
                self._ws = ""
        return self._drain()

    # -- output ---------------------------------------------------------------------------------

    def _drain(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in self._events:
            if isinstance(ev, str) and out and isinstance(out[-1], str):
                out[-1] = out[-1] + ev
            elif not (isinstance(ev, str) and not ev):
                out.append(ev)
        self._events = []
        return out

    def _content(self, text: str) -> None:
        if not text:
            return
        if self._after_call:
            text = text.lstrip(_WS)
            if not text:
                return
            self._after_call = False
        body = text.rstrip(_WS)
        if body:
            self._events.append(self._ws + body)
            self._ws = text[len(body) :]
        else:
            self._ws += text

    def _emit_calls(self, calls: list[ToolCall]) -> None:
        self._ws = ""
        self._events.extend(calls)
        self._calls.extend(calls)
        self._after_call = True

    def _fail(self) -> None:
        """The candidate was not a call: its raw text is content; continue scanning after it."""
        self._content(self._prefix + self._json)
        self._prefix = ""
        self._json = ""
        self._state = _S.CONTENT

    def _names_ok(self, calls: list[ToolCall]) -> bool:
        return self._names is None or all(c.name in self._names for c in calls)

    # -- state machine --------------------------------------------------------------------------

    def _run(self, final: bool) -> None:
        steps = {
            _S.START: self._start,
            _S.CONTENT: self._scan_content,
            _S.TAG: self._tag,
            _S.MISTRAL_HEAD: self._mistral_head,
            _S.MISTRAL_NAME: self._mistral_name,
            _S.JSON: self._json_value,
            _S.AFTER_JSON: self._after_json,
            _S.PYTAG_HEAD: self._pytag_head,
            _S.PYCODE: self._pycode,
        }
        while steps[self._state](final):
            pass

    def _begin_json(self, kind: str) -> None:
        self._json = ""
        self._json_kind = kind
        self._scanner = _JsonScanner()
        self._state = _S.JSON

    def _start(self, final: bool) -> bool:
        s = self._buf
        stripped = s.lstrip(_WS)
        if not stripped:
            self._content(s)
            self._buf = ""
            if final:
                self._state = _S.CONTENT
            return False
        if len(stripped) != len(s):
            self._content(s[: len(s) - len(stripped)])
            self._buf = s = stripped
        if s[0] in "{[":
            rest = s[1:].lstrip(_WS)
            if not rest:
                if not final:
                    return False
            elif (s[0] == "{" and rest[0] == '"') or (s[0] == "[" and rest[0] == "{"):
                self._prefix = ""
                self._begin_json("start")
                return True
        self._state = _S.CONTENT
        return True

    def _scan_content(self, final: bool) -> bool:
        s = self._buf
        best = -1
        marker = ""
        for m in self._markers:
            i = s.find(m)
            if i >= 0 and (best < 0 or i < best):
                best, marker = i, m
        if best >= 0:
            self._content(s[:best])
            self._prefix = marker
            self._buf = s[best + len(marker) :]
            if marker == _HERMES_OPEN:
                self._state = _S.TAG
                self._tag_searched = 0
            elif marker == _MISTRAL_OPEN:
                self._state = _S.MISTRAL_HEAD
            else:
                self._state = _S.PYTAG_HEAD
            return True
        if final:
            self._content(s)
            self._buf = ""
            return False
        hold = _partial_suffix(s, self._markers)
        self._content(s[: len(s) - hold])
        self._buf = s[len(s) - hold :]
        return False

    def _tag(self, final: bool) -> bool:
        s = self._buf
        j = s.find(_HERMES_CLOSE, self._tag_searched)
        if j < 0:
            if not final:
                self._tag_searched = max(0, len(s) - len(_HERMES_CLOSE) + 1)
                return False
            inner = s
            raw = s
            self._buf = ""
        else:
            inner = s[:j]
            raw = s[: j + len(_HERMES_CLOSE)]
            self._buf = s[j + len(_HERMES_CLOSE) :]
        self._json = raw
        calls: list[ToolCall] | None = None
        values = _json_sequence(inner)
        if values is not None:
            calls = []
            for value in values:
                got = _calls_from_json(value, bare=False, new_id=self._new_id)
                if got is None:
                    calls = None
                    break
                calls.extend(got)
        if calls:
            self._prefix = self._json = ""
            self._emit_calls(calls)
            self._state = _S.CONTENT
        else:
            self._fail()
        return True

    def _head_after_marker(self, final: bool, kind: str, otherwise: _S) -> bool:
        """After a marker: skip whitespace, then JSON (``[``/``{``) or the ``otherwise`` state."""
        s = self._buf
        stripped = s.lstrip(_WS)
        if not stripped:
            if final:
                self._prefix += s
                self._buf = ""
                self._fail()
                return True
            return False
        self._prefix += s[: len(s) - len(stripped)]
        self._buf = stripped
        if stripped[0] in "[{":
            self._begin_json(kind)
        else:
            self._state = otherwise
        return True

    def _mistral_head(self, final: bool) -> bool:
        return self._head_after_marker(final, "mistral", _S.MISTRAL_NAME)

    def _mistral_name(self, final: bool) -> bool:
        s = self._buf
        k = s.find(_MISTRAL_ARGS)
        if k < 0:
            if final or len(s) > 600 or any(c in s for c in "\n{\"'"):
                self._fail()
                return True
            return False
        name, _, call_id = s[:k].partition(_MISTRAL_CALL_ID)
        name = name.strip()
        if not _FUNC_NAME.match(name):
            self._fail()
            return True
        self._prefix += s[: k + len(_MISTRAL_ARGS)]
        self._buf = s[k + len(_MISTRAL_ARGS) :]
        self._pending_name = name
        self._pending_id = call_id.strip() or None
        self._begin_json("mistral_args")
        return True

    def _json_value(self, final: bool) -> bool:
        s = self._buf
        end = self._scanner.feed(s)
        if end is None:
            self._json += s
            self._buf = ""
            if final:
                self._fail()
                return True
            return False
        if end < 0:
            self._fail()
            return True
        self._json += s[:end]
        self._buf = s[end:]
        try:
            value: Any = json.loads(self._json)
        except ValueError:
            self._fail()
            return True
        kind = self._json_kind
        calls: list[ToolCall] | None
        if kind == "mistral_args":
            calls = None
            if isinstance(value, dict):
                calls = [ToolCall(self._pending_name, _dump(value), self._pending_id or self._new_id())]
        else:
            calls = _calls_from_json(value, bare=kind != "mistral", new_id=self._new_id)
            if calls is not None and kind != "mistral" and not self._names_ok(calls):
                calls = None
        if calls:
            self._prefix = self._json = ""
            self._emit_calls(calls)
            self._state = _S.AFTER_JSON if kind in ("start", "pytag") else _S.CONTENT
            return True
        if kind == "start" and isinstance(value, dict) and set(value) == {"response"}:
            response = value["response"]
            if isinstance(response, str):
                self._prefix = self._json = ""
                self._content(response)
                self._state = _S.CONTENT
                return True
        self._fail()
        return True

    def _after_json(self, final: bool) -> bool:
        s = self._buf
        i = 0
        while i < len(s) and s[i] in " \t\r\n;":
            i += 1
        if i == len(s):
            if final:
                self._buf = ""
                self._state = _S.CONTENT
            return False
        if s[i] == "{":
            self._buf = s[i:]
            self._prefix = ""
            self._begin_json("start")
            return True
        self._state = _S.CONTENT
        return True

    def _pytag_head(self, final: bool) -> bool:
        return self._head_after_marker(final, "pytag", _S.PYCODE)

    def _pycode(self, final: bool) -> bool:
        if not final:
            return False
        code = self._buf
        self._buf = ""
        call = _python_tag_call(code, self._new_id)
        if call is not None and self._names_ok([call]):
            self._prefix = ""
            self._emit_calls([call])
            self._state = _S.CONTENT
            return False
        self._json = code
        self._fail()
        return False


def parse_tool_calls(
    text: str,
    fmt: ToolCallFormat | str = ToolCallFormat.GENERIC,
    *,
    tool_names: Iterable[str] | None = None,
    id_factory: Callable[[], str] | None = None,
) -> ToolCallResult:
    """Split a complete model turn into content and tool calls (see the module doc)."""
    parser = ToolCallStreamParser(fmt, tool_names=tool_names, id_factory=id_factory)
    events = parser.feed(text) + parser.finish()
    content = "".join(ev for ev in events if isinstance(ev, str))
    return ToolCallResult(content=content, tool_calls=[ev for ev in events if isinstance(ev, ToolCall)])


# ---------------------------------------------------------------------------------------------
# grammars
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolGrammar:
    """A GBNF grammar (root rule ``root``) that forces tool calls in one format.

    ``lazy``: the grammar must only be enforced once a trigger fires (``tool_choice="auto"``): use
    ``llama_sampler_init_grammar_lazy_patterns`` with ``trigger_patterns``. Those are llama.cpp
    lazy-grammar patterns: each must match the *whole* text generated so far, and the grammar is
    applied from the start of the first non-empty capture group. ``trigger_words`` are the literal
    markers the patterns look for (informational; the patterns already include them).
    """

    grammar: str
    lazy: bool
    trigger_patterns: tuple[str, ...] = ()
    trigger_words: tuple[str, ...] = ()
    root: str = "root"


def _tool_function(tool: Any, index: int) -> tuple[str, Any]:
    if not isinstance(tool, Mapping):
        raise ToolChoiceError(f"tools[{index}] must be an object")
    if tool.get("type", "function") != "function":
        raise ToolChoiceError(f"tools[{index}].type must be 'function'")
    fn = tool.get("function", tool)
    if not isinstance(fn, Mapping):
        raise ToolChoiceError(f"tools[{index}].function must be an object")
    name = fn.get("name")
    if not isinstance(name, str) or not _FUNC_NAME.match(name):
        raise ToolChoiceError(f"tools[{index}].function.name must be a name of [A-Za-z0-9_.:-]")
    params = fn.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, (Mapping, bool)):
        raise ToolChoiceError(f"tools[{index}].function.parameters must be a JSON schema object")
    return name, params if isinstance(params, bool) else dict(params)


def _chosen_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function", tool_choice)
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str):
            raise ToolChoiceError(
                "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', ...}"
            )
        return name
    return None


_SP = "tc-ws"
_SP_RULE = f"{_SP} ::= [ \\t\\n\\r]{{0,20}}"
_WS_RE = "[ \\t\\r\\n]{0,20}"


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]],
    tool_choice: Any = "required",
    fmt: ToolCallFormat | str = ToolCallFormat.GENERIC,
    *,
    parallel_tool_calls: bool = True,
    schema_to_gbnf: Callable[[Any], str] | None = None,
) -> ToolGrammar | None:
    """A grammar forcing tool calls in ``fmt``, each call's arguments matching its JSON schema.

    ``tool_choice``: ``"required"`` (a non-lazy grammar: the turn must be one or more calls),
    ``{"type": "function", "function": {"name": …}}`` (exactly one call of that function),
    ``"auto"`` (a lazy grammar with trigger patterns: free text until the model starts a call) or
    ``"none"`` (returns None). ``schema_to_gbnf`` converts one schema to a GBNF grammar with a
    ``root`` rule; it defaults to :func:`llamabind.grammar.json_schema.json_schema_to_gbnf`.
    """
    fmt = ToolCallFormat(fmt)
    if tool_choice is None:
        tool_choice = "auto"
    if tool_choice == "none" or not tools:
        if tool_choice not in ("none", "auto"):
            raise ToolChoiceError("tool_choice requires a non-empty tools list")
        return None
    functions = [_tool_function(tool, i) for i, tool in enumerate(tools)]
    seen: set[str] = set()
    for name, _ in functions:
        if name in seen:
            raise ToolChoiceError(f"duplicate tool name {name!r}")
        seen.add(name)
    chosen = _chosen_name(tool_choice)
    if chosen is not None:
        functions = [f for f in functions if f[0] == chosen]
        if not functions:
            raise ToolChoiceError(f"tool_choice names {chosen!r}, which is not among the tools")
        parallel_tool_calls = False
        lazy = False
    elif tool_choice == "required":
        lazy = False
    elif tool_choice == "auto":
        lazy = True
    else:
        raise ToolChoiceError(f"unsupported tool_choice {tool_choice!r}")

    if schema_to_gbnf is None:
        from ..grammar.json_schema import json_schema_to_gbnf

        schema_to_gbnf = json_schema_to_gbnf

    args_key = "parameters" if fmt is ToolCallFormat.LLAMA3 else "arguments"
    rules: list[str] = []
    alternatives: list[str] = []
    for i, (name, schema) in enumerate(functions):
        prefix = f"t{i}-"
        sub = prefix_rules(schema_to_gbnf(schema), prefix)
        rules.append(sub.strip())
        call_rule = f"tc-call-{i}"
        alternatives.append(call_rule)
        rules.append(
            f'{call_rule} ::= "{{" {_SP} {json_string_literal("name")} {_SP} ":" {_SP} '
            f'{json_string_literal(name)} {_SP} "," {_SP} {json_string_literal(args_key)} {_SP} ":" {_SP} '
            f'{prefix}root {_SP} "}}"'
        )
    rules.append("tc-call ::= " + " | ".join(alternatives))
    rules.append(_SP_RULE)

    if fmt is ToolCallFormat.HERMES:
        one = f"{gbnf_literal(_HERMES_OPEN)} {_SP} tc-call {_SP} {gbnf_literal(_HERMES_CLOSE)}"
        root = f"root ::= tc-one ({_SP} tc-one)*" if parallel_tool_calls else "root ::= tc-one"
        head = [root, f"tc-one ::= {one}"]
        words: tuple[str, ...] = (_HERMES_OPEN,)
        patterns: tuple[str, ...] = (r"[\s\S]*?(" + re.escape(_HERMES_OPEN) + r")[\s\S]*",)
    elif fmt is ToolCallFormat.MISTRAL:
        calls = f'tc-call ({_SP} "," {_SP} tc-call)*' if parallel_tool_calls else "tc-call"
        head = [f'root ::= {gbnf_literal(_MISTRAL_OPEN)} "[" {_SP} {calls} {_SP} "]"']
        words = (_MISTRAL_OPEN,)
        patterns = (r"[\s\S]*?(" + re.escape(_MISTRAL_OPEN) + r")[\s\S]*",)
    elif fmt is ToolCallFormat.LLAMA3:
        more = f'({_SP} ";" {_SP} tc-call)*' if parallel_tool_calls else ""
        tag = f"({gbnf_literal(_PYTHON_TAG)} {_SP})? " if lazy else ""
        head = [f"root ::= {tag}tc-call {more}".rstrip()]
        words = (_PYTHON_TAG,)
        patterns = (
            r"[\s\S]*?(" + re.escape(_PYTHON_TAG) + r")[\s\S]*",
            _WS_RE + r"(\{" + _WS_RE + r'"name"' + _WS_RE + r":)[\s\S]*",
        )
    else:
        calls = f'tc-call ({_SP} "," {_SP} tc-call)*' if parallel_tool_calls else "tc-call"
        head = [
            f'root ::= "{{" {_SP} {json_string_literal("tool_calls")} {_SP} ":" {_SP} "[" {_SP} '
            f'{calls} {_SP} "]" {_SP} "}}"'
        ]
        words = ('{"tool_calls"',)
        patterns = (_WS_RE + r"(\{" + _WS_RE + r'"tool_calls")[\s\S]*',)

    grammar = "\n".join(head + rules) + "\n"
    if not lazy:
        return ToolGrammar(grammar=grammar, lazy=False)
    return ToolGrammar(grammar=grammar, lazy=True, trigger_patterns=patterns, trigger_words=words)
