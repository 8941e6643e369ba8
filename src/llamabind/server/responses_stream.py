"""The Responses API's stream: chat deltas → its semantic SSE events, each with a
``sequence_number``.

``response.created`` and ``response.in_progress`` open the stream; each output item is announced
(``response.output_item.added``), filled and closed (``response.output_item.done``): a reasoning
item with ``response.reasoning_text.delta`` / ``.done``, a message with
``response.content_part.added``, ``response.output_text.delta`` / ``.done`` and
``response.content_part.done``, a function call with ``response.function_call_arguments.delta`` /
``.done``. The stream ends with ``response.completed`` (``response.incomplete`` when
``max_output_tokens`` cut it short), or with an ``error`` event and ``response.failed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from ..batching import DoneEvent, TokenEvent
from ..chat import ChatDelta, PreparedChat
from .errors import error_from_exception
from .responses_api import (
    function_call_item,
    message_item,
    new_id,
    output_text_part,
    reasoning_item,
    usage_object,
)
from .state import RequestGroup

__all__ = ["EventEncoder", "ResponseBuilder", "ResponsesStream"]

#: (status, output items, usage, error) → the response object
ResponseBuilder = Callable[
    [str, list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None], dict[str, Any]
]


class EventEncoder:
    """Chat deltas → Responses stream events: one output item open at a time (reasoning, message
    or function call), opened when its kind starts and closed when another begins or the turn
    ends. ``output`` collects the finished items."""

    def __init__(self) -> None:
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self._item: dict[str, Any] | None = None  # the open item
        self._text: list[str] = []  # its text (reasoning, output text or arguments)

    def event(self, kind: str, data: dict[str, Any]) -> bytes:
        payload = {"type": kind, **data, "sequence_number": self.sequence}
        self.sequence += 1
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return f"event: {kind}\ndata: {text}\n\n".encode()

    def start(self, response: dict[str, Any]) -> list[bytes]:
        return [
            self.event("response.created", {"response": response}),
            self.event("response.in_progress", {"response": response}),
        ]

    @property
    def _index(self) -> int:
        return len(self.output)

    def _where(self) -> dict[str, Any]:
        assert self._item is not None
        return {"item_id": self._item["id"], "output_index": self._index}

    def _open(self, item: dict[str, Any]) -> list[bytes]:
        out = self.close()
        self._item = item
        self._text = []
        out.append(self.event("response.output_item.added", {"output_index": self._index, "item": item}))
        kind = item["type"]
        if kind == "message":
            part = output_text_part("")
            out.append(
                self.event("response.content_part.added", {**self._where(), "content_index": 0, "part": part})
            )
        elif kind == "reasoning":
            part = {"type": "reasoning_text", "text": ""}
            out.append(
                self.event("response.content_part.added", {**self._where(), "content_index": 0, "part": part})
            )
        return out

    def close(self, status: str = "completed") -> list[bytes]:
        """Close the open item (if any): its ``.done`` events, and it joins ``output``."""
        item = self._item
        if item is None:
            return []
        text = "".join(self._text)
        where = self._where()
        out: list[bytes] = []
        kind = item["type"]
        if kind == "message":
            done = message_item(item["id"], text, status)
            out.append(
                self.event(
                    "response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []}
                )
            )
            out.append(
                self.event(
                    "response.content_part.done", {**where, "content_index": 0, "part": done["content"][0]}
                )
            )
        elif kind == "reasoning":
            done = reasoning_item(item["id"], text, status)
            out.append(
                self.event("response.reasoning_text.done", {**where, "content_index": 0, "text": text})
            )
            part = {"type": "reasoning_text", "text": text}
            out.append(self.event("response.content_part.done", {**where, "content_index": 0, "part": part}))
        else:
            done = function_call_item(item["id"], item["call_id"], item["name"], text, status)
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    {**where, "name": item["name"], "arguments": text},
                )
            )
        out.append(self.event("response.output_item.done", {"output_index": self._index, "item": done}))
        self.output.append(done)
        self._item = None
        self._text = []
        return out

    def delta(self, d: ChatDelta) -> list[bytes]:
        out: list[bytes] = []
        open_kind = self._item["type"] if self._item is not None else None
        if d.reasoning_content:
            if open_kind != "reasoning":
                out += self._open(reasoning_item(new_id("rs"), "", "in_progress"))
                open_kind = "reasoning"
            self._text.append(d.reasoning_content)
            out.append(
                self.event(
                    "response.reasoning_text.delta",
                    {**self._where(), "content_index": 0, "delta": d.reasoning_content},
                )
            )
        if d.content:
            if open_kind != "message":
                out += self._open(message_item(new_id("msg"), None, "in_progress"))
                open_kind = "message"
            self._text.append(d.content)
            out.append(
                self.event(
                    "response.output_text.delta",
                    {**self._where(), "content_index": 0, "delta": d.content, "logprobs": []},
                )
            )
        for call in d.tool_calls:
            if call.id is not None or open_kind != "function_call":
                item = function_call_item(
                    new_id("fc"), call.id or new_id("call"), call.name or "", "", "in_progress"
                )
                out += self._open(item)
                open_kind = "function_call"
            if call.arguments:
                self._text.append(call.arguments)
                out.append(
                    self.event(
                        "response.function_call_arguments.delta", {**self._where(), "delta": call.arguments}
                    )
                )
        return out

    def finish(self, status: str) -> list[bytes]:
        """Close the open item; an empty turn still gets its (empty) message."""
        item_status = "incomplete" if status == "incomplete" else "completed"
        out = self.close(item_status)
        if not self.output:
            out += self._open(message_item(new_id("msg"), None, "in_progress"))
            out += self.close(item_status)
        return out


class ResponsesStream:
    """The SSE events of a streamed response, for :func:`.sse.pump`. ``build`` makes the response
    object; ``on_finish`` gets the final one (to store it)."""

    def __init__(
        self,
        group: RequestGroup,
        prepared: PreparedChat,
        build: ResponseBuilder,
        on_finish: Callable[[dict[str, Any]], None],
        id_factory: Callable[[], str],
    ) -> None:
        self.parser = prepared.parser(id_factory)
        self.build = build
        self.on_finish = on_finish
        self.encoder = EventEncoder()
        self.n_prompt = len(group.requests[0].prompt)
        self.reasoning_tokens = 0

    def start(self) -> Iterable[bytes]:
        return self.encoder.start(self.build("in_progress", [], None, None))

    async def token(self, index: int, ev: TokenEvent) -> Iterable[bytes]:
        deltas = self.parser.feed(ev.text)
        if deltas and all(d.reasoning_content and not d.content and not d.tool_calls for d in deltas):
            self.reasoning_tokens += len(ev.tokens)
        return [chunk for d in deltas for chunk in self.encoder.delta(d)]

    def done(self, index: int, ev: DoneEvent) -> Iterable[bytes]:
        tail, reason = self.parser.finish(ev.finish_reason)
        out = [chunk for d in tail for chunk in self.encoder.delta(d)]
        status = "incomplete" if reason == "length" else "completed"
        out += self.encoder.finish(status)
        u = ev.usage
        usage = usage_object(
            u.prompt_tokens if u is not None else self.n_prompt,
            u.completion_tokens if u is not None else 0,
            u.cached_tokens if u is not None else 0,
            self.reasoning_tokens,
        )
        response = self.build(status, self.encoder.output, usage, None)
        self.on_finish(response)
        out.append(self.encoder.event(f"response.{status}", {"response": response}))
        return out

    def error(self, exc: BaseException) -> Iterable[bytes]:
        err = error_from_exception(exc)
        code = "server_error" if err.status >= 500 else "invalid_prompt"
        enc = self.encoder
        out = enc.close("incomplete")
        out.append(enc.event("error", {"code": err.code or code, "message": err.message, "param": err.param}))
        response = self.build("failed", enc.output, None, {"code": code, "message": err.message})
        out.append(enc.event("response.failed", {"response": response}))
        return out

    def end(self) -> Iterable[bytes]:
        return []
