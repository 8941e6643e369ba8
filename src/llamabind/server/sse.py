"""Server-sent events: the one pump that drains a :class:`~.state.RequestGroup`'s event queue into
a stream (used by chat completions, text completions and Anthropic's messages), and the streaming
response that cancels the requests when the client goes away."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Protocol

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..batching import DoneEvent, ErrorEvent, TokenEvent
from .state import RequestGroup

__all__ = ["SSE_DONE", "SSEResponse", "StreamHandler", "pump"]

SSE_DONE = b"data: [DONE]\n\n"


class StreamHandler(Protocol):
    """What one stream format makes of the events of a request group (each returns the chunks to
    send, in order). ``token`` is async so that it can move llama.cpp calls (logprob pieces) off
    the event loop."""

    def start(self) -> Iterable[bytes]: ...

    async def token(self, index: int, ev: TokenEvent) -> Iterable[bytes]: ...

    def done(self, index: int, ev: DoneEvent) -> Iterable[bytes]: ...

    def error(self, exc: BaseException) -> Iterable[bytes]: ...

    def end(self) -> Iterable[bytes]: ...


async def pump(group: RequestGroup, handler: StreamHandler) -> AsyncIterator[bytes]:
    """The SSE body of a submitted group: ``handler.start()``, then each event's chunks until every
    request finished (``handler.end()``) or one failed (``handler.error()``, the rest cancelled).
    The requests are cancelled however the stream ends."""
    queue = group.queue
    try:
        for chunk in handler.start():
            yield chunk
        pending = group.submitted
        while pending:
            i, ev = await queue.get()
            if isinstance(ev, TokenEvent):
                for chunk in await handler.token(i, ev):
                    yield chunk
            elif isinstance(ev, DoneEvent):
                pending -= 1
                for chunk in handler.done(i, ev):
                    yield chunk
            elif isinstance(ev, ErrorEvent):
                group.cancel()
                for chunk in handler.error(ev.error):
                    yield chunk
                return
        for chunk in handler.end():
            yield chunk
    finally:
        group.cancel()


class SSEResponse(StreamingResponse):
    """A streaming response (SSE, or another ``media_type`` such as Ollama's NDJSON) that notices
    a client disconnect even while no data flows, and calls ``on_close`` however the stream ends
    (so the requests behind it are cancelled)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        on_close: Callable[[], None],
        media_type: str = "text/event-stream",
    ) -> None:
        super().__init__(
            content,
            media_type=media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    await self.listen_for_disconnect(receive)
                    self._on_close()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                tg.cancel_scope.cancel()
        finally:
            self._on_close()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
