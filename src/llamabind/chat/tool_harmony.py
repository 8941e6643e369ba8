"""gpt-oss's harmony output format: channels, reasoning, tool calls and the grammar that forces a call.

After the generation prompt ``<|start|>assistant`` the model writes one or more messages::

    <|channel|>analysis<|message|>The user wants the weather.<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>

or, for an answer, ``<|channel|>final<|message|>It is sunny.<|return|>``. A message header is an
optional ``<|start|>ROLE``, then ``<|channel|>NAME``, a recipient ``to=functions.NAME`` (before or
after the channel) and an optional content type (``<|constrain|>json`` or ``json``); ``<|message|>``
opens the body, which ``<|end|>``, ``<|call|>`` or ``<|return|>`` closes. In gpt-oss's vocabulary
``<|call|>`` and ``<|return|>`` end the generation (``<|end|>`` does not), so the last message usually
arrives without its terminator; any text after a terminator is read as further messages.

What goes where: the ``analysis`` channel is reasoning; a message with a recipient is a tool call
(its body the JSON arguments; ``functions.`` is dropped from the name); every other channel
(``final``, a ``commentary`` preamble) is content. Text outside any header (a model that ignores the
format) is content too. The text of each message is stripped of surrounding whitespace, and the
messages of one kind are joined with a newline. No markup ever reaches content or reasoning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._gbnf_compose import gbnf_literal, prefix_rules
from ._whitespace import WS, HeldWhitespace
from .tool_calls import ToolCall, _dump, new_tool_call_id

__all__ = [
    "HarmonyEvent",
    "HarmonyStreamParser",
    "ReasoningText",
    "harmony_answer_head",
    "harmony_grammar",
    "harmony_messages",
    "harmony_tools",
]

_START = "<|start|>"
_CHANNEL = "<|channel|>"
_MESSAGE = "<|message|>"
_CONSTRAIN = "<|constrain|>"
_END = "<|end|>"
_RETURN = "<|return|>"
_CALL = "<|call|>"
_TERMINATORS = (_END, _RETURN, _CALL)
_BODY_STOPS = (*_TERMINATORS, _START, _CHANNEL)  # a new header without a terminator also ends a body
_HEAD_OPENERS = (_START, _CHANNEL, "to=")
_HEAD_LIMIT = 512
_TOKEN = re.compile(r"<\|[a-z_]+\|>")
_RECIPIENT = re.compile(r"(?:^|\s)to=([^\s<]+)")
_CHANNEL_NAME = re.compile(re.escape(_CHANNEL) + r"([A-Za-z_]*)")
_ROLE = re.compile(re.escape(_START) + r"([^\s<]*)")
_NOT_TOOLS = frozenset({"assistant", "user", "all"})


@dataclass(frozen=True)
class ReasoningText:
    """Reasoning text (the ``analysis`` channel) in a stream of harmony events."""

    text: str


HarmonyEvent: TypeAlias = "str | ToolCall | ReasoningText"
"""What :class:`HarmonyStreamParser` yields: content text, a completed call, or reasoning text."""


def _first(text: str, markers: Sequence[str]) -> tuple[int, str]:
    """The position and marker of the first of ``markers`` in ``text`` ((-1, "") when none)."""
    best, found = -1, ""
    for m in markers:
        j = text.find(m)
        if j >= 0 and (best < 0 or j < best):
            best, found = j, m
    return best, found


def _partial_suffix(text: str, markers: Sequence[str]) -> int:
    longest = max(len(m) for m in markers) - 1
    for k in range(min(len(text), longest), 0, -1):
        tail = text[-k:]
        if any(m.startswith(tail) for m in markers):
            return k
    return 0


class _Sink:
    """One kind of text (content or reasoning): each message stripped, messages joined by a newline."""

    def __init__(self, wrap: Callable[[str], HarmonyEvent], out: list[HarmonyEvent]) -> None:
        self._wrap = wrap
        self._out = out
        self._any = False  # some text of this kind was emitted
        # each message: whitespace at its start dropped, at its end held back
        self._ws = HeldWhitespace(leading=True)

    def new_message(self) -> None:
        self._ws.leading = True
        self._ws.held = ""

    def write(self, text: str) -> None:
        first = self._ws.leading
        if piece := self._ws.feed(text):
            self._out.append(self._wrap("\n" + piece if first and self._any else piece))
            self._any = True


class HarmonyStreamParser:
    """Harmony output deltas → content, :class:`ReasoningText` and completed :class:`ToolCall` s.

    ``tools=False``: messages addressed to a tool are dropped (the request had no tools);
    ``tool_names``: a call to a built-in tool (a recipient outside ``functions.``, such as
    ``browser.search``) is kept only when its name is one of these. ``reasoning=False``: the analysis channel is content.
    """

    def __init__(
        self,
        *,
        tools: bool = True,
        tool_names: Iterable[str] | None = None,
        id_factory: Callable[[], str] | None = None,
        reasoning: bool = True,
    ) -> None:
        self._tools = tools
        self._names = None if tool_names is None else frozenset(tool_names)
        self._new_id = id_factory or new_tool_call_id
        self._out: list[HarmonyEvent] = []
        self._content = _Sink(lambda t: t, self._out)
        self._reasoning = _Sink(ReasoningText, self._out) if reasoning else self._content
        self._buf = ""
        self._in_head = True
        self._mode = "content"  # body of the current message: content | reasoning | call | drop
        self._call_name = ""
        self._call_body = ""
        self._finished = False

    def feed(self, text: str) -> list[HarmonyEvent]:
        if self._finished:
            raise RuntimeError("HarmonyStreamParser.feed() after finish()")
        if text:
            self._buf += text
            self._run(final=False, truncated=False)
        return self._drain()

    def finish(self, truncated: bool = False) -> list[HarmonyEvent]:
        """The rest; ``truncated`` (output cut by ``max_tokens``): an unfinished call is dropped."""
        if not self._finished:
            self._finished = True
            self._run(final=True, truncated=truncated)
        return self._drain()

    def _drain(self) -> list[HarmonyEvent]:
        merged: list[HarmonyEvent] = []
        for ev in self._out:
            last = merged[-1] if merged else None
            if isinstance(ev, str) and isinstance(last, str):
                merged[-1] = last + ev
            elif isinstance(ev, ReasoningText) and isinstance(last, ReasoningText):
                merged[-1] = ReasoningText(last.text + ev.text)
            else:
                merged.append(ev)
        self._out.clear()
        return merged

    def _run(self, final: bool, truncated: bool) -> None:
        while self._head(final) if self._in_head else self._body(final, truncated):
            pass

    # -- headers --------------------------------------------------------------------------------

    def _head(self, final: bool) -> bool:
        s = self._buf.lstrip(WS)
        self._buf = s
        if not s:
            return False
        if not any(s.startswith(o) or o.startswith(s) for o in _HEAD_OPENERS):
            self._open("content")  # no header: plain text is content
            return True
        window = s[: _HEAD_LIMIT + len(_MESSAGE)]
        i = window.find(_MESSAGE)
        cut, marker = _first(window, _TERMINATORS)
        if i >= 0 and (cut < 0 or i < cut):
            self._buf = s[i + len(_MESSAGE) :]
            self._open_header(s[:i])
            return True
        if cut < 0 and not final and len(s) <= len(window):
            return False  # the header may still complete
        # not a header after all: its text (without the markup) is content
        end = cut + len(marker) if cut >= 0 else len(window)
        self._content.new_message()
        self._content.write(_TOKEN.sub(" ", s[:end]))
        self._buf = s[end:]
        return bool(self._buf)

    def _open_header(self, header: str) -> None:
        role = _ROLE.match(header)
        if role is not None and role.group(1) not in ("", "assistant"):
            self._open("drop")  # a message of another role (a tool's result): not the assistant's
            return
        recipient = next((r for r in _RECIPIENT.findall(header) if r not in _NOT_TOOLS), None)
        if recipient is not None:
            name = recipient.removeprefix("functions.")
            builtin = name == recipient  # browser.search, python: kept only when the request has it
            keep = self._tools and (not builtin or self._names is None or name in self._names)
            self._open("call" if keep else "drop")
            self._call_name = name
            self._call_body = ""
            return
        channel = _CHANNEL_NAME.search(header)
        self._open("reasoning" if channel is not None and channel.group(1) == "analysis" else "content")

    def _open(self, mode: str) -> None:
        self._in_head = False
        self._mode = mode
        if mode == "content":
            self._content.new_message()
        elif mode == "reasoning":
            self._reasoning.new_message()

    # -- bodies ---------------------------------------------------------------------------------

    def _body(self, final: bool, truncated: bool) -> bool:
        s = self._buf
        stop, marker = _first(s, _BODY_STOPS)
        if stop >= 0:
            self._write(s[:stop])
            self._close(truncated=False)
            self._buf = s[stop + len(marker) :] if marker in _TERMINATORS else s[stop:]
            self._in_head = True
            return True
        if final:
            self._write(s)
            self._buf = ""
            self._close(truncated=truncated)
            return False
        hold = _partial_suffix(s, _BODY_STOPS)
        self._write(s[: len(s) - hold])
        self._buf = s[len(s) - hold :]
        return False

    def _write(self, text: str) -> None:
        if not text:
            return
        if self._mode == "content":
            self._content.write(text)
        elif self._mode == "reasoning":
            self._reasoning.write(text)
        elif self._mode == "call":
            self._call_body += text

    def _close(self, *, truncated: bool) -> None:
        if self._mode != "call":
            return
        body = self._call_body
        self._call_body = ""
        self._mode = "drop"
        try:
            args: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            args = None
        if isinstance(args, dict):
            call = ToolCall(self._call_name, _dump(args), self._new_id())
            self._out.append(call)
        elif not truncated and body.strip():
            self._content.new_message()
            self._content.write(body)  # not JSON arguments: show the text, without the markup


def harmony_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages for gpt-oss's template: an assistant message's ``reasoning_content`` is its
    ``thinking`` (the analysis channel the template renders before a call); next to tool calls it
    replaces the content (the template takes one or the other)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg = dict(m)
        reasoning = msg.get("reasoning_content")
        if msg.get("role") == "assistant" and isinstance(reasoning, str) and "thinking" not in msg:
            msg["thinking"] = reasoning
            if msg.get("tool_calls"):
                msg.pop("content", None)
        out.append(msg)
    return out


def harmony_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tools for gpt-oss's template, which writes each function's description: "" where none."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        fn = tool.get("function")
        if isinstance(fn, Mapping) and "description" not in fn:
            tool = {**tool, "function": {**fn, "description": ""}}
        out.append(dict(tool))
    return out


# ---------------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------------


# an analysis message (reasoning: any text without a special token) and the header that follows it
_ANALYSIS = (
    f"{gbnf_literal(_CHANNEL + 'analysis' + _MESSAGE)} tc-think {gbnf_literal(_END + _START + 'assistant')}"
)
_THINK_RULE = 'tc-think ::= ( [^<] | "<" [^|] )*'


def harmony_answer_head(answer_root: str) -> list[str]:
    """GBNF rules putting the rule ``answer_root`` in the ``final`` channel, after an optional
    analysis message (``<|start|>assistant`` was the prompt's end)."""
    final = f"{gbnf_literal(_CHANNEL + 'final')} tc-type {gbnf_literal(_MESSAGE)}"
    return [
        f"root ::= ( {_ANALYSIS} )? {final} {answer_root}",
        _THINK_RULE,
        f'tc-type ::= ( " " {gbnf_literal(_CONSTRAIN)}? "json" )?',
    ]


def harmony_grammar(
    functions: Sequence[tuple[str, Any]], *, lazy: bool, schema_to_gbnf: Callable[[Any], str]
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(GBNF, trigger patterns, trigger words) forcing one harmony tool call of ``functions``.

    Not lazy (``required`` / named): an optional analysis message, then the call message
    (``<|start|>assistant`` was the prompt's end). Lazy (``auto``): the grammar starts at the call's
    header (``<|channel|>commentary to=…`` or `` to=…`` after ``<|start|>assistant``). The call
    ends after its JSON arguments: ``<|call|>`` is an end-of-generation token, which only the
    sampler can choose, so one call per turn (``parallel_tool_calls`` has nothing to add).
    """
    rules: list[str] = []
    alternatives: list[str] = []
    for i, (name, schema) in enumerate(functions):
        prefix = f"t{i}-"
        rules.append(prefix_rules(schema_to_gbnf(schema), prefix).strip())
        recipient = gbnf_literal(f" to=functions.{name}")
        rule = f"tc-call-{i}"
        alternatives.append(rule)
        rules.append(
            f"{rule} ::= ( {gbnf_literal(_CHANNEL)} tc-channel {recipient} | {recipient} "
            f"{gbnf_literal(_CHANNEL)} tc-channel ) tc-type {gbnf_literal(_MESSAGE)} {prefix}root"
        )
    rules.append("tc-call ::= " + " | ".join(alternatives))
    rules.append('tc-channel ::= "commentary" | "analysis"')
    rules.append(f'tc-type ::= ( " " {gbnf_literal(_CONSTRAIN)}? "json" )?')
    if lazy:
        head = ["root ::= tc-call"]
    else:
        head = [f"root ::= ( {_ANALYSIS} )? tc-call", _THINK_RULE]
    channel = re.escape(_CHANNEL)
    patterns = (
        r"[\s\S]*?(" + channel + r"(?:commentary|analysis) to=)[\s\S]*",
        r"(?:[\s\S]*?" + re.escape(_START) + r"assistant)?( to=)[\s\S]*",
    )
    words = (" to=functions.",)
    return "\n".join(head + rules) + "\n", patterns, words
