"""Anthropic Messages API answers: a parsed assistant turn as a ``message`` object, and chat deltas
as the stream of named SSE events (``message_start``, ``content_block_start`` / ``_delta`` /
``_stop``, ``message_delta``, ``message_stop``). The request side is :mod:`.anthropic`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from ..batching import DoneEvent, TokenEvent, Usage
from ..chat import ChatDelta, ChatMessage, PreparedChat
from .anthropic import anthropic_error_body, new_tool_use_id
from .errors import error_from_exception
from .state import RequestGroup

__all__ = ["MessageStream", "StreamEncoder", "message_response", "stop_reason"]


def stop_reason(finish_reason: str | None, stop: str | None, tool_calls: bool) -> tuple[str, str | None]:
    """(``stop_reason``, ``stop_sequence``) from the scheduler's finish reason and matched stop string."""
    if tool_calls or finish_reason == "tool_calls":
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if stop is not None:
        return "stop_sequence", stop
    return "end_turn", None


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": max(prompt_tokens - cached_tokens, 0),
        "output_tokens": completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached_tokens,
    }


def _tool_input(arguments: str) -> Any:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def message_response(
    msg: ChatMessage,
    *,
    id: str,
    model: str,
    finish_reason: str | None,
    stop: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    """A parsed assistant turn → the Messages API ``message`` object."""
    content: list[dict[str, Any]] = []
    if msg.reasoning_content:
        content.append({"type": "thinking", "thinking": msg.reasoning_content, "signature": ""})
    if msg.content:
        content.append({"type": "text", "text": msg.content})
    for call in msg.tool_calls:
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call.arguments)}
        )
    reason, sequence = stop_reason(finish_reason, stop, bool(msg.tool_calls))
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": _usage(prompt_tokens, completion_tokens, cached_tokens),
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps({"type": kind, **data}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n".encode()


class StreamEncoder:
    """Chat deltas → Messages API stream events: one content block at a time (thinking, text or
    tool_use), opened when its kind starts and closed when another begins or the turn ends."""

    def __init__(self, id: str, model: str) -> None:
        self.id = id
        self.model = model
        self._index = -1
        self._open: str | None = None  # the kind of the open block
        self._tool_calls = False

    def start(self, input_tokens: int) -> bytes:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(input_tokens, 0, 0),
        }
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [_event("content_block_stop", {"index": self._index})]

    def _begin(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(_event("content_block_start", {"index": self._index, "content_block": block}))
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"index": self._index, "delta": delta})

    def delta(self, d: ChatDelta) -> list[bytes]:
        out: list[bytes] = []
        if d.reasoning_content:
            if self._open != "thinking":
                out += self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": d.reasoning_content}))
        if d.content:
            if self._open != "text":
                out += self._begin("text", {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": d.content}))
        for call in d.tool_calls:
            if call.id is not None or self._open != "tool_use":
                self._tool_calls = True
                block = {
                    "type": "tool_use",
                    "id": call.id or new_tool_use_id(),
                    "name": call.name or "",
                    "input": {},
                }
                out += self._begin("tool_use", block)
            if call.arguments:
                out.append(self._delta({"type": "input_json_delta", "partial_json": call.arguments}))
        return out

    def finish(
        self, finish_reason: str | None, stop: str | None, usage: Usage | None, prompt_tokens: int
    ) -> list[bytes]:
        """Close the open block; ``message_delta`` (stop reason, final usage) and ``message_stop``."""
        out = self._close()
        reason, sequence = stop_reason(finish_reason, stop, self._tool_calls)
        out.append(
            _event(
                "message_delta",
                {
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": _usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
                    if usage is not None
                    else _usage(prompt_tokens, 0, 0),
                },
            )
        )
        out.append(_event("message_stop", {}))
        return out

    @staticmethod
    def error(exc: BaseException) -> bytes:
        err = error_from_exception(exc)
        body = anthropic_error_body(err)
        return _event("error", {"error": body["error"]})


class MessageStream:
    """The SSE events of a streamed message (one choice), for :func:`.sse.pump`."""

    def __init__(
        self,
        group: RequestGroup,
        prepared: PreparedChat,
        encoder: StreamEncoder,
        id_factory: Callable[[], str],
    ) -> None:
        self.parser = prepared.parser(id_factory)
        self.encoder = encoder
        self.n_prompt = len(group.requests[0].prompt)

    def start(self) -> Iterable[bytes]:
        return [self.encoder.start(self.n_prompt)]

    async def token(self, index: int, ev: TokenEvent) -> Iterable[bytes]:
        return [chunk for d in self.parser.feed(ev.text) for chunk in self.encoder.delta(d)]

    def done(self, index: int, ev: DoneEvent) -> Iterable[bytes]:
        tail, reason = self.parser.finish(ev.finish_reason)
        out = [chunk for d in tail for chunk in self.encoder.delta(d)]
        return out + self.encoder.finish(reason, ev.stop, ev.usage, self.n_prompt)

    def error(self, exc: BaseException) -> Iterable[bytes]:
        return [self.encoder.error(exc)]

    def end(self) -> Iterable[bytes]:
        return []
