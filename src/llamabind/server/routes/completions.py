"""``POST /v1/completions`` (text completions, OpenAI's ``suffix`` insertion mode) and llama.cpp's
``POST /infill``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ...batching import DoneEvent, TokenEvent
from ...core import Model
from ...generation.infill import fim_prompt
from ...generation.sampling import SamplingParams
from ..common import FINGERPRINT, Holder, check_n, collect, usage_of
from ..errors import APIError, error_from_exception, sse_error
from ..handlers import (
    ChoiceOutput,
    ChunkEncoder,
    ResponseMeta,
    closed_field,
    completion_logprobs,
    max_tokens_from_request,
    sampling_from_request,
    stop_from_request,
)
from ..limits import check_capacity, check_completion, check_infill
from ..schemas import CompletionRequest, InfillRequest
from ..sse import SSE_DONE, SSEResponse, pump
from ..state import RequestGroup, ServerState

__all__ = [
    "CompletionStream",
    "complete",
    "completion_choices",
    "prepare_completion",
    "prompts_of",
    "router",
]


def prompts_of(body: CompletionRequest, model: Model) -> list[list[int]]:
    """The token prompts of a request (blocking: tokenizes)."""
    p = body.prompt
    if isinstance(p, str):
        raw: list[Any] = [p]
    elif p and all(isinstance(x, int) for x in p):
        raw = [p]
    else:
        raw = list(p)
    if not raw:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if body.suffix is not None:
        # OpenAI's insertion mode: the completion goes between the prompt and the suffix
        if not all(isinstance(item, str) for item in raw):
            raise APIError(400, "suffix needs text prompts, not token ids", param="suffix")
        return [fim_prompt(model, item, body.suffix) for item in raw]
    out: list[list[int]] = []
    for item in raw:
        if isinstance(item, str):
            toks = model.tokenize(item, add_special=True, parse_special=True)
        elif isinstance(item, list) and all(isinstance(x, int) for x in item):
            toks = list(item)
            model.vocab.check(toks)
        else:
            raise APIError(400, "prompt must be a string, a list of strings or token ids", param="prompt")
        if not toks:
            raise APIError(400, "prompt must not be empty", param="prompt")
        out.append(toks)
    return out


def prepare_completion(
    body: CompletionRequest, state: ServerState
) -> tuple[list[list[int]], list[SamplingParams], list[str]]:
    """Blocking (llama.cpp: tokenizer, grammar): (prompts, one SamplingParams per choice and
    prompt — ``body.n`` per prompt —, the detokenized prompts when ``echo``)."""
    try:
        prompts = prompts_of(body, state.model)
        grammar = None
        if body.grammar is not None:
            from ...grammar import Grammar

            grammar = Grammar.from_string(body.grammar)
        else:
            from ...chat import response_format_grammar

            extras = body.model_extra or {}
            rf = body.response_format
            if rf is None and isinstance(extras.get("json_schema"), dict):
                rf = {"type": "json_object", "schema": extras["json_schema"]}
            grammar = response_format_grammar(rf)
    except APIError:
        raise
    except Exception as exc:
        raise error_from_exception(exc, param="prompt") from None
    samplings: list[SamplingParams] = []
    for _ in prompts:
        for j in range(body.n):
            sp = sampling_from_request(body, state.config.sampling, state.model, seed_offset=j)
            samplings.append(sp.replace(grammar=grammar) if grammar is not None else sp)
    echo = [state.model.detokenize(t) for t in prompts] if body.echo else []
    return prompts, samplings, echo


def completion_choices(
    outs: Sequence[ChoiceOutput],
    model: Model,
    prompt_of_choice: Sequence[int],
    echo_texts: Sequence[str],
    logprobs: int | None,
) -> list[dict[str, Any]]:
    """The ``choices`` of a non-streamed text completion (blocking: logprob pieces)."""
    choices = []
    for out in outs:
        prefix = echo_texts[prompt_of_choice[out.index]] if echo_texts else ""
        choices.append(
            {
                "index": out.index,
                "text": prefix + out.text,
                "logprobs": completion_logprobs(out.logprobs, model, logprobs or 0, len(prefix))
                if logprobs is not None
                else None,
                "finish_reason": out.finish_reason or "stop",
                **closed_field(out.closed),
            }
        )
    return choices


class CompletionStream:
    """The text completion chunks of a streamed group (see :func:`..sse.pump`)."""

    def __init__(
        self,
        group: RequestGroup,
        meta: ResponseMeta,
        model: Model,
        prompt_of_choice: list[int],
        echo_texts: list[str],
        top_n: int,
        include_usage: bool,
    ) -> None:
        self.model = model
        self.n = len(group.requests)
        self.logprobs_on = group.requests[0].logprobs is not None
        self.outs = [ChoiceOutput(i) for i in range(self.n)]
        self.offsets = [0] * self.n
        self.enc = ChunkEncoder(meta, chat=False, include_usage=include_usage)
        self.prompt_of_choice = prompt_of_choice
        self.echo_texts = echo_texts
        self.top_n = top_n
        self.include_usage = include_usage

    def start(self) -> Iterable[bytes]:
        out = []
        if self.echo_texts:
            for i in range(self.n):
                text = self.echo_texts[self.prompt_of_choice[i]]
                self.offsets[i] = len(text)
                out.append(self.enc.text(i, text))
        return out

    async def token(self, i: int, ev: TokenEvent) -> Iterable[bytes]:
        out = []
        if self.logprobs_on and ev.logprobs:
            lps = await run_in_threadpool(
                completion_logprobs, ev.logprobs, self.model, self.top_n, self.offsets[i]
            )
            out.append(self.enc.chunk(i, text=ev.text, logprobs=lps))
        elif ev.text:
            out.append(self.enc.text(i, ev.text))
        self.offsets[i] += len(ev.text)
        return out

    def done(self, i: int, ev: DoneEvent) -> Iterable[bytes]:
        self.outs[i].usage = ev.usage
        return [self.enc.chunk(i, finish_reason=ev.finish_reason, closed=ev.closed)]

    def error(self, exc: BaseException) -> Iterable[bytes]:
        return [sse_error(exc), SSE_DONE]

    def end(self) -> Iterable[bytes]:
        usage = [self.enc.usage(usage_of(self.outs, self.prompt_of_choice))] if self.include_usage else []
        return [*usage, SSE_DONE]


async def complete(request: Request, body: CompletionRequest, holder: Holder) -> Response:
    state = await holder.resolve(body.model, generation=True)
    check_n(state, body)
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(400, "best_of other than n is not supported", param="best_of", code="unsupported")
    sched = state.config.scheduler
    n_prompts = check_completion(state.config.limits, body, sched.ctx_per_slot)
    check_capacity(sched.parallel, sched.max_queue, body.n * n_prompts, "n" if n_prompts == 1 else "prompt")
    prompts, samplings, echo_texts = await run_in_threadpool(prepare_completion, body, state)
    max_tokens = max_tokens_from_request(
        body, 16 if state.config.max_tokens is None else state.config.max_tokens
    )
    stop = stop_from_request(body.stop)
    group = RequestGroup(asyncio.get_running_loop())
    group.test_hook = (body.model_extra or {}).get("__test_engine")
    prompt_of_choice: list[int] = []
    for pi, toks in enumerate(prompts):
        for j in range(body.n):
            group.add(
                toks,
                samplings[pi * body.n + j],
                max_tokens=max_tokens,
                stop=stop,
                logprobs=body.logprobs,
                ignore_eos=body.ignore_eos,
                cache_prompt=body.cache_prompt,
            )
            prompt_of_choice.append(pi)
    try:
        group.submit(state.scheduler)
    except Exception as exc:
        raise error_from_exception(exc, param="prompt") from None
    meta = ResponseMeta(state.alias, "cmpl", system_fingerprint=FINGERPRINT)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        top_n = body.logprobs or 0
        stream = CompletionStream(
            group, meta, state.model, prompt_of_choice, echo_texts, top_n, include_usage
        )
        return SSEResponse(pump(group, stream), group.cancel)
    outs = await collect(request, group, len(group.requests))
    choices = await run_in_threadpool(
        completion_choices, outs, state.model, prompt_of_choice, echo_texts, body.logprobs
    )
    return JSONResponse(
        {
            "id": meta.id,
            "object": "text_completion",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": meta.system_fingerprint,
            "choices": choices,
            "usage": usage_of(outs, prompt_of_choice),
        }
    )


def router(holder: Holder) -> APIRouter:
    r = APIRouter()

    @r.post("/infill")
    async def infill(body: InfillRequest, request: Request) -> Response:
        """llama.cpp's fill-in-the-middle route: ``input_prefix`` + ``input_suffix`` (``prompt``: the
        start of the middle), answered like /v1/completions."""
        state = await holder.resolve(body.model, generation=True)
        check_infill(state.config.limits, body, state.config.scheduler.ctx_per_slot)
        try:
            tokens = await run_in_threadpool(
                fim_prompt, state.model, body.input_prefix, body.input_suffix, body.prompt
            )
        except Exception as exc:
            raise error_from_exception(exc, param="input_prefix") from None
        data = body.model_dump(exclude={"input_prefix", "input_suffix", "prompt"})
        return await complete(request, CompletionRequest(prompt=tokens, **data), holder)

    @r.post("/v1/completions")
    @r.post("/completions", include_in_schema=False)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await complete(request, body, holder)

    return r
