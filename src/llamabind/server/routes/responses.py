"""OpenAI's Responses API: ``POST /v1/responses`` (plain or streamed), ``GET`` / ``DELETE
/v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` and ``POST
/v1/responses/input_tokens`` (the conversions live in :mod:`..responses_api`, the events in
:mod:`..responses_stream`). Finished responses are kept in a bounded in-memory store (unless the
request says ``store: false``) for ``previous_response_id``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ...chat import ChatMessage
from ..common import Holder, collect
from ..errors import APIError
from ..responses_api import (
    ResponsesRequest,
    input_item_list,
    new_id,
    output_items,
    response_object,
    to_chat_request,
    usage_object,
)
from ..responses_store import DEFAULT_MAX_RESPONSES, ResponseStore
from ..responses_stream import ResponsesStream
from ..sse import SSEResponse, pump
from ..state import ServerState
from .chat import prepare_chat, start_chat

__all__ = ["router"]


def _not_found(id: str, param: str | None = None) -> APIError:
    return APIError(404, f"Response with id '{id}' not found.", param=param, code="response_not_found")


def _history(store: ResponseStore, body: ResponsesRequest) -> tuple[Mapping[str, Any], ...]:
    """The conversation ``previous_response_id`` continues (empty without one)."""
    if body.previous_response_id is None:
        return ()
    entry = store.get(body.previous_response_id)
    if entry is None:
        raise APIError(
            404,
            f"Previous response with id '{body.previous_response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return entry.conversation


def _reasoning_tokens(state: ServerState, msg: ChatMessage) -> int:
    """Blocking (tokenizer): the tokens of the turn's reasoning text."""
    if not msg.reasoning_content:
        return 0
    return len(state.model.tokenize(msg.reasoning_content, add_special=False, parse_special=True))


async def create_response(
    request: Request, body: ResponsesRequest, holder: Holder, store: ResponseStore
) -> Response:
    state = await holder.resolve(body.model, generation=True)
    history = _history(store, body)
    chat_body = to_chat_request(body, history)
    input_items = [x if x.get("id") else {**x, "id": new_id("item")} for x in input_item_list(body.input)]
    id = new_id("resp")
    created_at = int(time.time())

    def build(
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return response_object(
            body,
            id=id,
            model=state.alias,
            created_at=created_at,
            status=status,
            output=list(output),
            usage=usage,
            error=error,
        )

    def keep(response: dict[str, Any]) -> None:
        if body.store is not False:
            store.put(response, input_items, history)

    prepared, group = await start_chat(state, chat_body)
    if body.stream:
        stream = ResponsesStream(group, prepared, build, keep, lambda: new_id("call"))
        return SSEResponse(pump(group, stream), group.cancel)
    (out,) = await collect(request, group, 1)
    parser = prepared.parser(lambda: new_id("call"))
    parser.feed(out.text)
    msg = parser.message(out.finish_reason or "stop")
    status = "incomplete" if msg.finish_reason == "length" else "completed"
    u = out.usage
    reasoning_tokens = await run_in_threadpool(_reasoning_tokens, state, msg)
    usage = usage_object(
        u.prompt_tokens if u is not None else len(group.requests[0].prompt),
        u.completion_tokens if u is not None else 0,
        u.cached_tokens if u is not None else 0,
        reasoning_tokens,
    )
    response = build(status, output_items(msg, status), usage, None)
    keep(response)
    return JSONResponse(response)


async def count_input_tokens(body: ResponsesRequest, holder: Holder, store: ResponseStore) -> Response:
    state = await holder.resolve(body.model, generation=True)
    chat_body = to_chat_request(body, _history(store, body))
    _, tokens, _ = await prepare_chat(state, chat_body)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": len(tokens)})


def _page(items: Sequence[Mapping[str, Any]], order: str, after: str | None, limit: int) -> dict[str, Any]:
    """A list page of input items (newest first for ``order=desc``)."""
    data = [dict(x) for x in items]
    if order == "desc":
        data.reverse()
    if after is not None:
        ids = [x["id"] for x in data]
        data = data[ids.index(after) + 1 :] if after in ids else []
    page = data[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(data) > limit,
    }


def router(holder: Holder, max_responses: int = DEFAULT_MAX_RESPONSES) -> APIRouter:
    r = APIRouter()
    store = ResponseStore(max_responses)

    @r.post("/v1/responses")
    @r.post("/responses", include_in_schema=False)
    async def responses(body: ResponsesRequest, request: Request) -> Response:
        """OpenAI's Responses API (non-streaming and streaming)."""
        return await create_response(request, body, holder, store)

    @r.post("/v1/responses/input_tokens")
    @r.post("/responses/input_tokens", include_in_schema=False)
    async def responses_input_tokens(body: ResponsesRequest) -> Response:
        """The number of prompt tokens a Responses request would use."""
        return await count_input_tokens(body, holder, store)

    @r.get("/v1/responses/{response_id}")
    @r.get("/responses/{response_id}", include_in_schema=False)
    async def get_response(response_id: str) -> Response:
        entry = store.get(response_id)
        if entry is None:
            raise _not_found(response_id)
        return JSONResponse(dict(entry.response))

    @r.delete("/v1/responses/{response_id}")
    @r.delete("/responses/{response_id}", include_in_schema=False)
    async def delete_response(response_id: str) -> Response:
        if not store.delete(response_id):
            raise _not_found(response_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    @r.get("/v1/responses/{response_id}/input_items")
    @r.get("/responses/{response_id}/input_items", include_in_schema=False)
    async def get_input_items(
        response_id: str, order: str = "desc", after: str | None = None, limit: int = 20
    ) -> Response:
        entry = store.get(response_id)
        if entry is None:
            raise _not_found(response_id)
        if order not in ("asc", "desc"):
            raise APIError(400, "order must be 'asc' or 'desc'", param="order")
        if not 1 <= limit <= 100:
            raise APIError(400, "limit must be between 1 and 100", param="limit")
        return JSONResponse(_page(entry.input_items, order, after, limit))

    return r
