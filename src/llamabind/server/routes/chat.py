"""``POST /v1/chat/completions``: render + tokenize (worker thread), submit, then collect or stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ...batching import DoneEvent, TokenEvent
from ...chat import PreparedChat
from ...core import Model
from ...generation.sampling import SamplingParams
from ...multimodal import MediaPrompt, prepare_media_chat, tokenize_prepared_media
from ..common import FINGERPRINT, Holder, check_n, collect, usage_of
from ..errors import error_from_exception, sse_error
from ..handlers import (
    ChoiceOutput,
    ChunkEncoder,
    ResponseMeta,
    chat_logprobs,
    closed_field,
    max_tokens_from_request,
    sampling_from_request,
    stop_from_request,
)
from ..limits import check_capacity, check_chat
from ..openai_format import openai_delta, openai_message
from ..schemas import ChatCompletionRequest
from ..sse import SSE_DONE, SSEResponse, pump
from ..state import RequestGroup, ServerState

__all__ = ["ChatStream", "chat_choices", "prepare_chat", "router", "start_chat"]


async def prepare_chat(
    state: ServerState, body: ChatCompletionRequest
) -> tuple[PreparedChat, list[int], MediaPrompt | None]:
    """Render and tokenize a chat request: (prepared, prompt tokens, media prompt or None)."""
    check_chat(state.config.limits, body, state.config.scheduler.ctx_per_slot)
    extras = body.model_extra or {}
    reasoning = None
    if body.reasoning_format is not None:
        reasoning = body.reasoning_format not in ("none", "disabled")
    json_schema = extras.get("json_schema")
    response_format = body.response_format
    if response_format is None and isinstance(json_schema, dict):
        response_format = {"type": "json_object", "schema": json_schema}
    mtmd = state.mtmd

    def prepare() -> tuple[PreparedChat, MediaPrompt | None]:
        prepared, parts = prepare_media_chat(
            state.model,
            mtmd,
            body.messages,
            formatter=state.formatter,
            tools=body.tools,
            tool_choice=body.tool_choice,
            parallel_tool_calls=body.parallel_tool_calls,
            response_format=response_format,
            grammar=body.grammar,
            add_generation_prompt=agp
            if isinstance(agp := extras.get("add_generation_prompt"), bool)
            else None,
            template_kwargs=body.chat_template_kwargs,
            reasoning=reasoning,
        )
        if not parts or mtmd is None:
            return prepared, None
        return prepared, tokenize_prepared_media(mtmd, prepared, parts, state.media)

    try:
        prepared, media_prompt = await run_in_threadpool(prepare)
    except Exception as exc:
        raise error_from_exception(exc) from None
    tokens = media_prompt.keys if media_prompt is not None else prepared.tokens
    return prepared, tokens, media_prompt


def _samplings(
    state: ServerState, body: ChatCompletionRequest, prepared: PreparedChat
) -> list[SamplingParams]:
    """One SamplingParams per choice (blocking: text ``logit_bias`` keys are tokenized)."""
    return [
        prepared.sampling(sampling_from_request(body, state.config.sampling, state.model, seed_offset=i))
        for i in range(body.n)
    ]


async def start_chat(state: ServerState, body: ChatCompletionRequest) -> tuple[PreparedChat, RequestGroup]:
    """Render, tokenize and submit a chat request (``body.n`` choices)."""
    sched = state.config.scheduler
    check_capacity(sched.parallel, sched.max_queue, body.n, "n")
    prepared, tokens, media_prompt = await prepare_chat(state, body)
    max_tokens = max_tokens_from_request(body, state.config.max_tokens, body.max_completion_tokens)
    stop = stop_from_request(body.stop)
    top_n = body.top_logprobs or 0
    logprobs = top_n if body.logprobs else None
    samplings = await run_in_threadpool(_samplings, state, body, prepared)
    group = RequestGroup(asyncio.get_running_loop())
    group.test_hook = (body.model_extra or {}).get("__test_engine")
    for sp in samplings:
        group.add(
            tokens,
            sp,
            max_tokens=max_tokens,
            stop=stop,
            logprobs=logprobs,
            ignore_eos=body.ignore_eos,
            cache_prompt=body.cache_prompt,
            media=media_prompt,
            render_special=prepared.render_special,
        )
    try:
        group.submit(state.scheduler)
    except Exception as exc:
        raise error_from_exception(exc, param="messages") from None
    return prepared, group


def chat_choices(
    outs: Sequence[ChoiceOutput], prepared: PreparedChat, model: Model, logprobs: bool, top_n: int
) -> list[dict[str, Any]]:
    """The ``choices`` of a non-streamed chat completion (blocking: logprob pieces)."""
    choices = []
    for out in outs:
        msg = prepared.parse(out.text, out.finish_reason or "stop", closed=out.closed)
        choices.append(
            {
                "index": out.index,
                "message": openai_message(msg),
                "logprobs": {"content": chat_logprobs(out.logprobs, model, top_n), "refusal": None}
                if logprobs
                else None,
                "finish_reason": msg.finish_reason,
                **closed_field(out.closed),
            }
        )
    return choices


class ChatStream:
    """The chat completion chunks of a streamed group (see :func:`..sse.pump`)."""

    def __init__(
        self,
        group: RequestGroup,
        prepared: PreparedChat,
        meta: ResponseMeta,
        model: Model,
        n: int,
        top_n: int,
        include_usage: bool,
    ) -> None:
        self.model = model
        self.n = n
        self.top_n = top_n
        self.logprobs_on = group.requests[0].logprobs is not None
        self.parsers = [prepared.parser() for _ in range(n)]
        self.outs = [ChoiceOutput(i) for i in range(n)]
        self.enc = ChunkEncoder(meta, chat=True, include_usage=include_usage)
        self.include_usage = include_usage

    def start(self) -> Iterable[bytes]:
        return [self.enc.chunk(i, delta={"role": "assistant", "content": ""}) for i in range(self.n)]

    async def token(self, i: int, ev: TokenEvent) -> Iterable[bytes]:
        enc = self.enc
        deltas = self.parsers[i].feed(ev.text)
        if not self.logprobs_on:
            out = []
            for d in deltas:
                if d.reasoning_content is None and not d.tool_calls and d.content is not None:
                    out.append(enc.text(i, d.content))  # the per-token fast path
                else:
                    out.append(enc.chunk(i, delta=openai_delta(d)))
            return out
        lps = (
            await run_in_threadpool(chat_logprobs, ev.logprobs, self.model, self.top_n)
            if ev.logprobs
            else None
        )
        if not deltas and lps:
            return [enc.chunk(i, logprobs=lps)]
        return [
            enc.chunk(i, delta=openai_delta(d), logprobs=lps if k == 0 else None)
            for k, d in enumerate(deltas)
        ]

    def done(self, i: int, ev: DoneEvent) -> Iterable[bytes]:
        self.outs[i].usage = ev.usage
        tail, reason = self.parsers[i].finish(ev.finish_reason, closed=ev.closed)
        return [
            *(self.enc.chunk(i, delta=openai_delta(d)) for d in tail),
            self.enc.chunk(i, finish_reason=reason, closed=ev.closed),
        ]

    def error(self, exc: BaseException) -> Iterable[bytes]:
        return [sse_error(exc), SSE_DONE]

    def end(self) -> Iterable[bytes]:
        usage = [self.enc.usage(usage_of(self.outs, [0] * self.n))] if self.include_usage else []
        return [*usage, SSE_DONE]


async def chat(request: Request, body: ChatCompletionRequest, holder: Holder) -> Response:
    state = await holder.resolve(body.model, generation=True)
    check_n(state, body)
    prepared, group = await start_chat(state, body)
    top_n = body.top_logprobs or 0
    meta = ResponseMeta(state.alias, "chatcmpl", system_fingerprint=FINGERPRINT)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = ChatStream(group, prepared, meta, state.model, body.n, top_n, include_usage)
        return SSEResponse(pump(group, stream), group.cancel)
    outs = await collect(request, group, body.n)
    choices = await run_in_threadpool(chat_choices, outs, prepared, state.model, bool(body.logprobs), top_n)
    return JSONResponse(
        {
            "id": meta.id,
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": meta.system_fingerprint,
            "choices": choices,
            "usage": usage_of(outs, [0] * len(outs)),
        }
    )


def router(holder: Holder) -> APIRouter:
    r = APIRouter()

    @r.post("/v1/chat/completions")
    @r.post("/chat/completions", include_in_schema=False)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await chat(request, body, holder)

    return r
