"""Generated text → an assistant message: content, ``reasoning_content`` and tool calls.

:class:`ChatStreamParser` turns text deltas into :class:`ChatDelta` s (reasoning split first with
:mod:`.reasoning`, then tool calls with :mod:`.tool_call_parser`) and gives the final
``finish_reason`` (``tool_calls`` when the turn called tools); :class:`ChatMessage` is a whole turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..grammar import CompiledSchema
from .native_output import NativeOutputParser, ReasoningText, native_output_parser
from .reasoning import ReasoningStreamSplitter
from .tool_blocks import BLOCK_FORMATS
from .tool_call_parser import ToolCallStreamParser
from .tool_calls import ToolCall, ToolCallFormat

__all__ = ["ChatDelta", "ChatMessage", "ChatStreamParser", "ToolCallDelta"]


@dataclass(frozen=True)
class ToolCallDelta:
    """A tool call in a stream: ``index`` counts the calls of the turn; ``id``/``name`` come once."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ChatDelta:
    """One piece of a streamed assistant turn (fields that did not change are None / empty)."""

    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    schema_errors: tuple[str, ...] = ()


@dataclass
class ChatMessage:
    """A parsed assistant turn."""

    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    schema_errors: list[str] | None = None  # set when the content is not valid for response_format's schema


class ChatStreamParser:
    """Generated text deltas → :class:`ChatDelta` s: reasoning split first, then tool calls.

    ``tool_format=None`` disables tool-call parsing (a request without tools, or
    ``tool_choice="none"``). ``reasoning_tags=None`` disables the reasoning split.
    ``native_format`` (harmony, functionary_v3_2: :mod:`.native_output`): that format's parser reads
    the whole output instead (``native_started``: the prompt opened its first segment;
    ``native_reasoning=False``: harmony's analysis channel is content).
    """

    def __init__(
        self,
        *,
        tool_format: ToolCallFormat | str | None = None,
        tool_names: Sequence[str] | None = None,
        reasoning_tags: tuple[str, str] | None = None,
        reasoning_started: bool = False,
        id_factory: Callable[[], str] | None = None,
        schema: CompiledSchema | None = None,
        native_format: ToolCallFormat | str | None = None,
        native_started: bool = False,
        native_reasoning: bool = True,
    ) -> None:
        self._schema = schema
        self._native: NativeOutputParser | None = None
        if native_format is not None:
            self._native = native_output_parser(
                native_format,
                tools=tool_format is not None,
                tool_names=tool_names,
                id_factory=id_factory,
                reasoning=native_reasoning,
                started=native_started,
            )
            reasoning_tags = tool_format = None
        self.schema_errors: list[str] | None = None
        # a marked-block format's call markers also end an unclosed reasoning block
        block = BLOCK_FORMATS.get(ToolCallFormat(tool_format)) if tool_format is not None else None
        self._reasoning = (
            ReasoningStreamSplitter(
                reasoning_tags[0],
                reasoning_tags[1],
                started=reasoning_started,
                end_markers=block.markers if block is not None else (),
            )
            if reasoning_tags is not None
            else None
        )
        self._tools = (
            ToolCallStreamParser(tool_format, tool_names=tool_names, id_factory=id_factory)
            if tool_format is not None
            else None
        )
        self._content: list[str] = []
        self._reasoning_text: list[str] = []
        self._calls: list[ToolCall] = []
        self._finished = False

    @property
    def content(self) -> str:
        return "".join(self._content)

    @property
    def reasoning_content(self) -> str | None:
        text = "".join(self._reasoning_text)
        return text or None

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, text: str) -> list[ChatDelta]:
        if self._finished:
            raise RuntimeError("ChatStreamParser.feed() after finish()")
        if not text:
            return []
        if self._native is not None:
            return self._native_route(self._native.feed(text))
        if self._reasoning is not None:
            d = self._reasoning.feed(text)
            return self._route(d.reasoning, d.content, final=False)
        return self._route("", text, final=False)

    def finish(self, finish_reason: str = "stop", *, closed: bool = False) -> tuple[list[ChatDelta], str]:
        """The deltas still held back, and the turn's finish reason (``tool_calls`` if it called any).

        ``closed``: the output ended with ``"length"`` but its grammar's document was closed
        (``llamabind.generation.closing``): it is parsed and validated as a complete output."""
        out: list[ChatDelta] = []
        if not self._finished:
            self._finished = True
            truncated = finish_reason == "length" and not closed
            if self._native is not None:
                out = self._native_route(self._native.finish(truncated=truncated))
            elif self._reasoning is not None:
                d = self._reasoning.finish()
                out = self._route(d.reasoning, d.content, final=True, truncated=truncated)
            else:
                out = self._route("", "", final=True, truncated=truncated)
            if self._schema is not None and not self._calls and (finish_reason != "length" or closed):
                # the grammar leaves some keywords to validation (or the output ended early)
                errors = self._schema.errors(self.content)
                if errors:
                    self.schema_errors = errors
                    out.append(ChatDelta(schema_errors=tuple(errors)))
        reason = finish_reason
        if self._calls and finish_reason == "stop":
            reason = "tool_calls"
        return out, reason

    def _route(
        self, reasoning: str, content: str, *, final: bool, truncated: bool = False
    ) -> list[ChatDelta]:
        out: list[ChatDelta] = []
        if reasoning:
            self._reasoning_text.append(reasoning)
            out.append(ChatDelta(reasoning_content=reasoning))
        if self._tools is None:
            if content:
                self._content.append(content)
                out.append(ChatDelta(content=content))
            return out
        events = self._tools.feed(content) if content else []
        if final:
            events = events + self._tools.finish(truncated=truncated)
        for ev in events:
            if isinstance(ev, str):
                if ev:
                    self._content.append(ev)
                    out.append(ChatDelta(content=ev))
            else:
                index = len(self._calls)
                self._calls.append(ev)
                out.append(ChatDelta(tool_calls=(ToolCallDelta(index, ev.id, ev.name, ev.arguments),)))
        return out

    def _native_route(self, events: Sequence[str | ToolCall | ReasoningText]) -> list[ChatDelta]:
        out: list[ChatDelta] = []
        for ev in events:
            if isinstance(ev, ReasoningText):
                out += self._route(ev.text, "", final=False)
            elif isinstance(ev, str):
                out += self._route("", ev, final=False)
            else:
                index = len(self._calls)
                self._calls.append(ev)
                out.append(ChatDelta(tool_calls=(ToolCallDelta(index, ev.id, ev.name, ev.arguments),)))
        return out

    def message(self, finish_reason: str = "stop", *, closed: bool = False) -> ChatMessage:
        """Finish (if not yet) and return the whole parsed message."""
        _, reason = self.finish(finish_reason, closed=closed)
        content: str | None = self.content
        if self._calls and not content:
            content = None
        return ChatMessage(
            content=content,
            reasoning_content=self.reasoning_content,
            tool_calls=self.tool_calls,
            finish_reason=reason,
            schema_errors=self.schema_errors,
        )
