"""Streaming and whole-turn parsing of tool calls out of generated text (formats: :mod:`.tool_calls`).

:class:`ToolCallStreamParser` turns text deltas into content deltas and completed calls, holding
back text that may still become call markup; :func:`parse_tool_calls` is that parser fed once.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

from ._events import EventBuffer
from ._whitespace import WS
from .native_output import NATIVE_OUTPUT_FORMATS, NativeOutputParser, native_output_parser
from .tool_blocks import BLOCK_FORMATS, read_tool_call_tag
from .tool_calls import (
    _FUNC_NAME,
    _HERMES_CLOSE,
    _HERMES_OPEN,
    _MARKERS,
    _MISTRAL_ARGS,
    _MISTRAL_CALL_ID,
    _MISTRAL_OPEN,
    ToolCall,
    ToolCallFormat,
    ToolCallResult,
    _calls_from_json,
    _dump,
    _python_tag_call,
    new_tool_call_id,
)

__all__ = ["StreamEvent", "ToolCallStreamParser", "parse_tool_calls"]


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
                if ch in WS:
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
        # a marked-block format (tool_blocks); None: <tool_call> bodies are read as hermes/XML/GLM
        self._block = BLOCK_FORMATS.get(self.format)
        self._markers = self._block.markers if self._block is not None else _MARKERS[self.format]
        self._drop = self._block.drop if self._block is not None else ()
        self._names = None if tool_names is None else frozenset(tool_names)
        self._new_id = id_factory or new_tool_call_id
        self._state = _S.START
        self._buf = ""
        self._out: EventBuffer[ToolCall] = EventBuffer()
        self._prefix = ""  # raw text of the current candidate call before its JSON (markers, names)
        self._json = ""  # raw JSON text of the current candidate call
        self._json_kind = ""
        self._scanner = _JsonScanner()
        self._tag_searched = 0
        self._pending_name = ""
        self._pending_id: str | None = None
        self._calls: list[ToolCall] = []
        self._finished = False
        self._truncated = False
        self._native: NativeOutputParser | None = None  # harmony / functionary: their own parser
        if self.format in NATIVE_OUTPUT_FORMATS:
            self._native = native_output_parser(
                self.format, tools=True, tool_names=tool_names, id_factory=id_factory
            )

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every call completed so far."""
        return list(self._calls)

    def feed(self, text: str) -> list[StreamEvent]:
        if self._finished:
            raise RuntimeError("ToolCallStreamParser.feed() after finish()")
        if self._native is not None:
            return self._native_events(self._native.feed(text))
        if text:
            self._buf += text
            self._run(final=False)
        return self._out.drain()

    def finish(self, truncated: bool = False) -> list[StreamEvent]:
        """The rest of the events. ``truncated``: the output was cut (``max_tokens``): a call still
        open is dropped rather than shown as content, keeping the calls it completed."""
        if self._native is not None:
            self._finished = True
            return self._native_events(self._native.finish(truncated))
        if not self._finished:
            self._finished = True
            self._truncated = truncated
            self._run(final=True)
            self._out.flush()
        return self._out.drain()

    # -- output ---------------------------------------------------------------------------------

    def _native_events(self, events: Sequence[object]) -> list[StreamEvent]:
        """A structured format's events without its reasoning (not content)."""
        out = [ev for ev in events if isinstance(ev, (str, ToolCall))]
        self._calls.extend(ev for ev in out if isinstance(ev, ToolCall))
        return out

    def _content(self, text: str) -> None:
        self._out.content(text)

    def _emit_calls(self, calls: list[ToolCall]) -> None:
        self._out.calls(calls)
        self._calls.extend(calls)

    def _cut(self) -> None:
        """Output cut inside a call: keep the calls completed inside it, drop the partial rest (and
        the whitespace before it)."""
        self._out.drop_held_whitespace()
        calls = _complete_calls(self._json, self._new_id)
        if calls and self._names_ok(calls):
            self._emit_calls(calls)
        self._prefix = ""
        self._json = ""
        self._state = _S.CONTENT

    def _fail(self) -> None:
        """The candidate was not a call: its raw text is content; continue scanning after it."""
        if self._truncated and self._state is not _S.CONTENT and (self._prefix or self._looks_like_call()):
            self._cut()
            return
        self._content(self._prefix + self._json)
        self._prefix = ""
        self._json = ""
        self._state = _S.CONTENT

    def _looks_like_call(self) -> bool:
        head = "".join(self._json.split())[:16]
        return head.startswith(('{"tool_call', '{"name"', '[{"name"', '{"function"', '[{"function"'))

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
        stripped = s.lstrip(WS)
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
            rest = s[1:].lstrip(WS)
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
            self._prefix = "" if marker in self._drop else marker
            self._buf = s[best + len(marker) :]
            if marker in self._drop:  # a wrapper around calls or content: removed
                return True
            if marker == _HERMES_OPEN or self._block is not None:
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
        """Inside a marked block (``<tool_call>`` or a :mod:`.tool_blocks` format's): up to its close."""
        close = self._block.close if self._block is not None else _HERMES_CLOSE
        s = self._buf
        j = s.find(close, self._tag_searched)
        if j < 0:
            if not final:
                self._tag_searched = max(0, len(s) - len(close) + 1)
                return False
            inner = s
            raw = s
            self._buf = ""
        else:
            inner = s[:j]
            raw = s[: j + len(close)]
            self._buf = s[j + len(close) :]
        self._json = raw
        read = self._block.read if self._block is not None else read_tool_call_tag
        calls = read(inner, self._new_id)
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
        stripped = s.lstrip(WS)
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


def _complete_calls(text: str, new_id: Callable[[], str]) -> list[ToolCall]:
    """The complete calls at the start of a cut call list: ``{"tool_calls": [c1, c2, <cut>`` or
    ``[c1, c2, <cut>``."""
    decoder = json.JSONDecoder()
    t = text.lstrip(WS)
    i = 0
    if t.startswith("{"):
        j = t.find("[")
        if j < 0 or "".join(t[:j].split()) not in ('{"tool_calls":',):
            return []
        i = j + 1
    elif t.startswith("["):
        i = 1
    else:
        return []
    calls: list[ToolCall] = []
    while i < len(t):
        while i < len(t) and (t[i] in WS or t[i] == ","):
            i += 1
        try:
            value, i = decoder.raw_decode(t, i)
        except ValueError:
            break
        got = _calls_from_json(value, bare=False, new_id=new_id)
        if got is None:
            break
        calls.extend(got)
    return calls


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
