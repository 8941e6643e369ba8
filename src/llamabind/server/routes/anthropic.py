"""Anthropic's ``POST /v1/messages`` and ``/v1/messages/count_tokens`` (the request conversion lives
in :mod:`..anthropic`, the answers and stream events in :mod:`..anthropic_response`), answered with
Anthropic error bodies."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .. import anthropic, anthropic_response
from ..common import Holder, collect
from ..errors import error_from_exception
from ..sse import SSEResponse, pump
from .chat import prepare_chat, start_chat

__all__ = ["answer_messages", "router"]


async def answer_messages(request: Request, holder: Holder, *, count_tokens: bool = False) -> Response:
    """``POST /v1/messages`` (and ``/v1/messages/count_tokens``), with Anthropic error bodies."""
    try:
        body = anthropic.parse_request(await request.body(), count_tokens=count_tokens)
        state = await holder.resolve(body.model, generation=True)
        chat_body = anthropic.to_chat_request(body)
        if count_tokens:
            _, tokens, _ = await prepare_chat(state, chat_body)
            return JSONResponse({"input_tokens": len(tokens)})
        prepared, group = await start_chat(state, chat_body)
        encoder = anthropic_response.StreamEncoder(anthropic.new_message_id(), state.alias)
        if body.stream:
            stream = anthropic_response.MessageStream(group, prepared, encoder, anthropic.new_tool_use_id)
            return SSEResponse(pump(group, stream), group.cancel)
        (out,) = await collect(request, group, 1)
        parser = prepared.parser(anthropic.new_tool_use_id)
        parser.feed(out.text)
        msg = parser.message(out.finish_reason or "stop")
        u = out.usage
        return JSONResponse(
            anthropic_response.message_response(
                msg,
                id=encoder.id,
                model=state.alias,
                finish_reason=msg.finish_reason,
                stop=out.stop,
                prompt_tokens=u.prompt_tokens if u is not None else len(group.requests[0].prompt),
                completion_tokens=u.completion_tokens if u is not None else 0,
                cached_tokens=u.cached_tokens if u is not None else 0,
            )
        )
    except Exception as exc:
        err = error_from_exception(exc)
        return JSONResponse(anthropic.anthropic_error_body(err), status_code=err.status)


def router(holder: Holder) -> APIRouter:
    r = APIRouter()

    @r.post("/v1/messages")
    @r.post("/messages", include_in_schema=False)
    async def messages(request: Request) -> Response:
        """Anthropic's Messages API (non-streaming and streaming)."""
        return await answer_messages(request, holder)

    @r.post("/v1/messages/count_tokens")
    @r.post("/messages/count_tokens", include_in_schema=False)
    async def messages_count_tokens(request: Request) -> Response:
        return await answer_messages(request, holder, count_tokens=True)

    return r
