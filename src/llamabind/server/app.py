"""The FastAPI app: thin routes over :mod:`.handlers`, :mod:`.state` and the scheduler.

Routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models`` (and the
same without ``/v1``), ``/health`` (the one route without authentication), ``/tokenize``,
``/detokenize``, ``/metrics``, ``/slots``, and Anthropic's ``/v1/messages`` (see :mod:`.anthropic`). The event loop never calls llama.cpp: rendering and
tokenization run in worker threads, generation in the scheduler's engine thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..batching import DoneEvent, ErrorEvent, TokenEvent
from ..chat import extract_media
from ..core import Model
from ..engine import EngineSpec
from ..engine.process import model_reloader
from ..generation.chat import PreparedChat
from ..multimodal import canonicalize_media_parts, tokenize_chat_media
from . import anthropic
from .config import ServerConfig
from .errors import APIError, error_body, error_from_exception, sse_error
from .files import FileStore, create_files_router
from .handlers import (
    ChoiceOutput,
    ChunkEncoder,
    ResponseMeta,
    chat_logprobs,
    completion_logprobs,
    max_tokens_from_request,
    sampling_from_request,
    stop_from_request,
    usage_dict,
)
from .metrics import Metrics
from .schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    InfillRequest,
    RerankRequest,
    SamplingFields,
    TokenizeRequest,
)
from .state import RequestGroup, ServerState

__all__ = ["create_app"]

log = logging.getLogger("llamabind.server")

ModelSource = Model | Callable[[], Model]
_OPEN_PATHS = frozenset({"/health", "/v1/health"})
_KNOWN_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/v1/embeddings",
        "/embeddings",
        "/v1/models",
        "/models",
        "/health",
        "/v1/health",
        "/tokenize",
        "/detokenize",
        "/metrics",
        "/slots",
        "/v1/messages",
        "/messages",
        "/v1/messages/count_tokens",
        "/messages/count_tokens",
        "/v1/rerank",
        "/rerank",
        "/v1/reranking",
        "/infill",
        "/openapi.json",
        "/docs",
    }
)
_ANTHROPIC_PATHS = frozenset(
    {"/v1/messages", "/messages", "/v1/messages/count_tokens", "/messages/count_tokens"}
)
_FINGERPRINT = f"llamabind-{__version__}"


_SSE_DONE = b"data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------------
# app holder, middleware, SSE
# ------------------------------------------------------------------------------------------------


class _Holder:
    """The server state once the model is loaded (``/health`` reports loading until then)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state: ServerState | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.metrics = Metrics(lambda: self.state.scheduler if self.state is not None else None)

    def get(self) -> ServerState:
        if self.state is not None and self.state.engine_error is not None:
            raise APIError(
                503, f"the model failed to load: {self.state.engine_error}", code="model_load_failed"
            )
        if self.state is None:
            if self.error is not None:
                raise APIError(503, f"the model failed to load: {self.error}", code="model_load_failed")
            raise APIError(503, "the model is loading", code="model_loading")
        return self.state


class _AuthAndMetricsMiddleware:
    """API-key check (constant time, every route but /health) and the HTTP request counter."""

    def __init__(self, app: ASGIApp, holder: _Holder, keys: Sequence[str]) -> None:
        self.app = app
        self.holder = holder
        self.keys = [k.encode() for k in keys if k]

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
                break
            if name == b"x-api-key" and not given:
                given = value.strip()
        ok = False
        for key in self.keys:  # no early exit: the time does not depend on which key matched
            ok |= hmac.compare_digest(given, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in _KNOWN_ROUTES else "other"
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            if (
                self.keys
                and path not in _OPEN_PATHS
                and scope.get("method") != "OPTIONS"
                and not self._authorized(scope)
            ):
                err = APIError(401, "invalid or missing API key", code="invalid_api_key")
                body = anthropic.anthropic_error_body(err) if path in _ANTHROPIC_PATHS else err.body()
                resp = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            self.holder.metrics.http_requests.labels(route, str(status[0])).inc()


class _SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect even while no data flows, and calls
    ``on_close`` however the stream ends (so the requests behind it are cancelled)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
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


async def _cancel_on_disconnect(request: Request, group: RequestGroup) -> None:
    """For non-streaming requests: cancel the generation if the client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            group.cancel()
            return


# ------------------------------------------------------------------------------------------------
# shared request plumbing
# ------------------------------------------------------------------------------------------------


def _check_model(state: ServerState, name: str | None) -> None:
    if name is not None and name not in state.names:
        raise APIError(
            404,
            f"the model {name!r} does not exist (this server serves {state.alias!r})",
            param="model",
            code="model_not_found",
        )


def _check_n(state: ServerState, body: SamplingFields) -> None:
    if body.n > state.config.max_n:
        raise APIError(400, f"n must be at most {state.config.max_n}", param="n", code="invalid_value")


async def _collect(request: Request, group: RequestGroup, n: int) -> list[ChoiceOutput]:
    outs = [ChoiceOutput(i) for i in range(n)]
    watcher = asyncio.create_task(_cancel_on_disconnect(request, group))
    try:
        async for i, ev in group.events():
            out = outs[i]
            if isinstance(ev, TokenEvent):
                out.text_parts.append(ev.text)
                out.tokens.extend(ev.tokens)
                out.logprobs.extend(ev.logprobs)
            elif isinstance(ev, DoneEvent):
                out.finish_reason = ev.finish_reason
                out.usage = ev.usage
                out.stop = ev.stop
            elif isinstance(ev, ErrorEvent):
                raise error_from_exception(ev.error)
    finally:
        watcher.cancel()
        group.cancel()
    return outs


def _usage_of(outs: Sequence[ChoiceOutput], prompts_per_choice: Sequence[int]) -> dict[str, Any]:
    """Prompt tokens counted once per distinct prompt, completion tokens summed over choices."""
    seen: set[int] = set()
    prompt = cached = completion = 0
    for out, p in zip(outs, prompts_per_choice, strict=True):
        u = out.usage
        if u is None:
            continue
        completion += u.completion_tokens
        if p not in seen:
            seen.add(p)
            prompt += u.prompt_tokens
            cached += u.cached_tokens
    return usage_dict(prompt, completion, cached)


# ------------------------------------------------------------------------------------------------
# chat completions
# ------------------------------------------------------------------------------------------------


async def _chat(request: Request, body: ChatCompletionRequest, holder: _Holder) -> Response:
    state = holder.get()
    _check_model(state, body.model)
    _check_n(state, body)
    prepared, group = await _start_chat(state, body)
    top_n = body.top_logprobs or 0
    meta = ResponseMeta(state.alias, "chatcmpl", system_fingerprint=_FINGERPRINT)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _SSEResponse(
            _chat_stream(group, prepared, meta, state, body.n, top_n, include_usage), group.cancel
        )
    outs = await _collect(request, group, body.n)
    choices = []
    for out in outs:
        msg = prepared.parse(out.text, out.finish_reason or "stop")
        choice: dict[str, Any] = {
            "index": out.index,
            "message": msg.to_openai(),
            "logprobs": {"content": chat_logprobs(out.logprobs, state.model, top_n), "refusal": None}
            if body.logprobs
            else None,
            "finish_reason": msg.finish_reason,
        }
        choices.append(choice)
    return JSONResponse(
        {
            "id": meta.id,
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": meta.system_fingerprint,
            "choices": choices,
            "usage": _usage_of(outs, [0] * len(outs)),
        }
    )


async def _prepare_chat(
    state: ServerState, body: ChatCompletionRequest
) -> tuple[PreparedChat, list[int], Any]:
    """Render and tokenize a chat request: (prepared, prompt tokens, media prompt or None)."""
    extras = body.model_extra or {}
    reasoning = None
    if body.reasoning_format is not None:
        reasoning = body.reasoning_format not in ("none", "disabled")
    json_schema = extras.get("json_schema")
    response_format = body.response_format
    if response_format is None and isinstance(json_schema, dict):
        response_format = {"type": "json_object", "schema": json_schema}
    mtmd = state.mtmd
    messages = canonicalize_media_parts(body.messages)
    try:
        media_parts = extract_media(messages)
    except Exception as exc:
        raise error_from_exception(exc, param="messages") from None
    if media_parts and mtmd is None:
        kinds = " and ".join(sorted({p.kind for p in media_parts}))
        raise APIError(
            400,
            f"the model {state.alias} is text-only: it cannot take {kinds} input "
            "(start the server with --mmproj to enable images/audio)",
            param="messages",
            code="unsupported_media",
        )
    try:
        prepared: PreparedChat = await run_in_threadpool(
            lambda: state.formatter.prepare(
                messages,
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
                media_marker=mtmd.marker if mtmd is not None else None,
            )
        )
        media_prompt = None
        tokens: list[int] = prepared.tokens
        if media_parts and mtmd is not None:
            add_special = not (
                state.formatter.bos_token and prepared.prompt.startswith(state.formatter.bos_token)
            )
            media_prompt = await run_in_threadpool(
                lambda: tokenize_chat_media(
                    mtmd, prepared.prompt, messages, resolver=state.media, add_special=add_special
                )
            )
            tokens = media_prompt.keys
    except Exception as exc:
        raise error_from_exception(exc) from None
    return prepared, tokens, media_prompt


async def _start_chat(state: ServerState, body: ChatCompletionRequest) -> tuple[PreparedChat, RequestGroup]:
    """Render, tokenize and submit a chat request (``body.n`` choices)."""
    prepared, tokens, media_prompt = await _prepare_chat(state, body)
    max_tokens = max_tokens_from_request(body, state.config.max_tokens, body.max_completion_tokens)
    stop = stop_from_request(body.stop)
    top_n = body.top_logprobs or 0
    logprobs = top_n if body.logprobs else None
    group = RequestGroup(asyncio.get_running_loop())
    group.test_hook = (body.model_extra or {}).get("__test_engine")
    for i in range(body.n):
        sp = sampling_from_request(body, state.config.sampling, state.model, seed_offset=i)
        group.add(
            tokens,
            prepared.sampling(sp),
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


async def _chat_stream(
    group: RequestGroup,
    prepared: PreparedChat,
    meta: ResponseMeta,
    state: ServerState,
    n: int,
    top_n: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    model = state.model
    logprobs_on = group.requests[0].logprobs is not None
    parsers = [prepared.parser() for _ in range(n)]
    outs = [ChoiceOutput(i) for i in range(n)]
    enc = ChunkEncoder(meta, chat=True, include_usage=include_usage)
    queue = group.queue
    try:
        for i in range(n):
            yield enc.chunk(i, delta={"role": "assistant", "content": ""})
        pending = group.submitted
        while pending:
            i, ev = await queue.get()
            if isinstance(ev, TokenEvent):
                deltas = parsers[i].feed(ev.text)
                if not logprobs_on:
                    for d in deltas:
                        if d.reasoning_content is None and not d.tool_calls and d.content is not None:
                            yield enc.text(i, d.content)  # the per-token fast path
                        else:
                            yield enc.chunk(i, delta=d.to_openai())
                    continue
                lps = chat_logprobs(ev.logprobs, model, top_n) if ev.logprobs else None
                if not deltas and lps:
                    yield enc.chunk(i, logprobs=lps)
                for k, d in enumerate(deltas):
                    yield enc.chunk(i, delta=d.to_openai(), logprobs=lps if k == 0 else None)
            elif isinstance(ev, DoneEvent):
                pending -= 1
                outs[i].usage = ev.usage
                tail, reason = parsers[i].finish(ev.finish_reason)
                for d in tail:
                    yield enc.chunk(i, delta=d.to_openai())
                yield enc.chunk(i, finish_reason=reason)
            elif isinstance(ev, ErrorEvent):
                group.cancel()
                yield sse_error(ev.error)
                yield _SSE_DONE
                return
        if include_usage:
            yield enc.usage(_usage_of(outs, [0] * n))
        yield _SSE_DONE
    finally:
        group.cancel()


# ------------------------------------------------------------------------------------------------
# Anthropic Messages API (the conversions live in .anthropic)
# ------------------------------------------------------------------------------------------------


async def _messages(request: Request, holder: _Holder, *, count_tokens: bool = False) -> Response:
    """``POST /v1/messages`` (and ``/v1/messages/count_tokens``), with Anthropic error bodies."""
    try:
        body = anthropic.parse_request(await request.body(), count_tokens=count_tokens)
        state = holder.get()
        _check_model(state, body.model)
        chat_body = anthropic.to_chat_request(body)
        if count_tokens:
            _, tokens, _ = await _prepare_chat(state, chat_body)
            return JSONResponse({"input_tokens": len(tokens)})
        prepared, group = await _start_chat(state, chat_body)
        encoder = anthropic.StreamEncoder(anthropic.new_message_id(), state.alias)
        if body.stream:
            events = anthropic.stream_events(group, prepared, encoder, anthropic.new_tool_use_id)
            return _SSEResponse(events, group.cancel)
        (out,) = await _collect(request, group, 1)
        parser = prepared.parser(anthropic.new_tool_use_id)
        parser.feed(out.text)
        msg = parser.message(out.finish_reason or "stop")
        u = out.usage
        return JSONResponse(
            anthropic.message_response(
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


# ------------------------------------------------------------------------------------------------
# text completions
# ------------------------------------------------------------------------------------------------


def _prompts_of(body: CompletionRequest, state: ServerState) -> list[list[int]]:
    p = body.prompt
    model = state.model
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
        from ..generation.infill import fim_prompt

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


async def _completions(request: Request, body: CompletionRequest, holder: _Holder) -> Response:
    state = holder.get()
    _check_model(state, body.model)
    _check_n(state, body)
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(400, "best_of other than n is not supported", param="best_of", code="unsupported")
    try:
        prompts = await run_in_threadpool(_prompts_of, body, state)

        def compile_grammar() -> Any:  # schema → GBNF → checked grammar: off the event loop
            if body.grammar is not None:
                from ..grammar import Grammar

                return Grammar.from_string(body.grammar)
            from ..generation.chat import response_format_grammar

            extras = body.model_extra or {}
            rf = body.response_format
            if rf is None and isinstance(extras.get("json_schema"), dict):
                rf = {"type": "json_object", "schema": extras["json_schema"]}
            return response_format_grammar(rf)

        grammar = await run_in_threadpool(compile_grammar)
    except APIError:
        raise
    except Exception as exc:
        raise error_from_exception(exc, param="prompt") from None
    max_tokens = max_tokens_from_request(
        body, 16 if state.config.max_tokens is None else state.config.max_tokens
    )
    stop = stop_from_request(body.stop)
    top_n = body.logprobs or 0
    logprobs = body.logprobs
    group = RequestGroup(asyncio.get_running_loop())
    group.test_hook = (body.model_extra or {}).get("__test_engine")
    prompt_of_choice: list[int] = []
    for pi, toks in enumerate(prompts):
        for j in range(body.n):
            sp = sampling_from_request(body, state.config.sampling, state.model, seed_offset=j)
            if grammar is not None:
                sp = sp.replace(grammar=grammar)
            group.add(
                toks,
                sp,
                max_tokens=max_tokens,
                stop=stop,
                logprobs=logprobs,
                ignore_eos=body.ignore_eos,
                cache_prompt=body.cache_prompt,
            )
            prompt_of_choice.append(pi)
    try:
        group.submit(state.scheduler)
    except Exception as exc:
        raise error_from_exception(exc, param="prompt") from None
    meta = ResponseMeta(state.alias, "cmpl", system_fingerprint=_FINGERPRINT)
    echo_texts: list[str] = []
    if body.echo:
        echo_texts = [state.model.detokenize(t) for t in prompts]
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _SSEResponse(
            _completion_stream(group, meta, state, prompt_of_choice, echo_texts, top_n, include_usage),
            group.cancel,
        )
    outs = await _collect(request, group, len(group.requests))
    choices = []
    for out in outs:
        prefix = echo_texts[prompt_of_choice[out.index]] if body.echo else ""
        choices.append(
            {
                "index": out.index,
                "text": prefix + out.text,
                "logprobs": completion_logprobs(out.logprobs, state.model, top_n, len(prefix))
                if logprobs is not None
                else None,
                "finish_reason": out.finish_reason or "stop",
            }
        )
    return JSONResponse(
        {
            "id": meta.id,
            "object": "text_completion",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": meta.system_fingerprint,
            "choices": choices,
            "usage": _usage_of(outs, prompt_of_choice),
        }
    )


async def _completion_stream(
    group: RequestGroup,
    meta: ResponseMeta,
    state: ServerState,
    prompt_of_choice: list[int],
    echo_texts: list[str],
    top_n: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    model = state.model
    n = len(group.requests)
    logprobs_on = group.requests[0].logprobs is not None
    outs = [ChoiceOutput(i) for i in range(n)]
    offsets = [0] * n
    enc = ChunkEncoder(meta, chat=False, include_usage=include_usage)
    queue = group.queue
    try:
        for i in range(n):
            if echo_texts:
                text = echo_texts[prompt_of_choice[i]]
                offsets[i] = len(text)
                yield enc.text(i, text)
        pending = group.submitted
        while pending:
            i, ev = await queue.get()
            if isinstance(ev, TokenEvent):
                if logprobs_on and ev.logprobs:
                    lps = completion_logprobs(ev.logprobs, model, top_n, offsets[i])
                    yield enc.chunk(i, text=ev.text, logprobs=lps)
                elif ev.text:
                    yield enc.text(i, ev.text)
                offsets[i] += len(ev.text)
            elif isinstance(ev, DoneEvent):
                pending -= 1
                outs[i].usage = ev.usage
                yield enc.chunk(i, finish_reason=ev.finish_reason)
            elif isinstance(ev, ErrorEvent):
                group.cancel()
                yield sse_error(ev.error)
                yield _SSE_DONE
                return
        if include_usage:
            yield enc.usage(_usage_of(outs, prompt_of_choice))
        yield _SSE_DONE
    finally:
        group.cancel()


# ------------------------------------------------------------------------------------------------
# embeddings, tokenize, detokenize
# ------------------------------------------------------------------------------------------------


async def _embeddings(body: EmbeddingRequest, holder: _Holder) -> Response:
    state = holder.get()
    _check_model(state, body.model)
    svc = state.embeddings
    if body.dimensions is not None and body.dimensions != svc.dim:
        raise APIError(
            400,
            f"dimensions={body.dimensions} is not supported: this model's embeddings have {svc.dim} "
            "dimensions (omit the field)",
            param="dimensions",
            code="unsupported",
        )
    inp = body.input
    items: list[Any]
    if isinstance(inp, str):
        items = [inp]
    elif inp and all(isinstance(x, int) for x in inp):
        items = [inp]
    else:
        items = list(inp)
    if not items:
        raise APIError(400, "input must not be empty", param="input")

    def tokenize_all() -> list[list[int]]:
        out: list[list[int]] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                if not item:
                    raise APIError(400, f"input[{i}] is an empty string", param="input")
                out.append(svc.tokenize(item))
            else:
                out.append(list(item))
        return out

    try:
        seqs = await run_in_threadpool(tokenize_all)
        vecs = await run_in_threadpool(svc.embed, seqs)
    except APIError:
        raise
    except Exception as exc:
        raise error_from_exception(exc, param="input") from None
    data = []
    for i, v in enumerate(vecs):
        arr = np.asarray(v, dtype="<f4")
        emb: Any = (
            base64.b64encode(arr.tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else [float(x) for x in arr]
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    n_tokens = sum(len(s) for s in seqs)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": state.alias,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }
    )


async def _rerank(body: RerankRequest, holder: _Holder) -> Response:
    state = holder.get()
    _check_model(state, body.model)
    if not body.query:
        raise APIError(400, "query must not be empty", param="query")
    try:
        results, n_tokens = await run_in_threadpool(state.embeddings.rerank, body.query, body.documents)
    except Exception as exc:
        raise error_from_exception(exc, param="documents") from None
    if body.top_n is not None:
        results = results[: body.top_n]
    out = []
    for r in results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if body.return_documents:
            item["document"] = {"text": r.document}
        out.append(item)
    return JSONResponse(
        {
            "object": "list",
            "model": state.alias,
            "results": out,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }
    )


def _piece_json(model: Model, token: int) -> str | list[int]:
    raw = model.vocab.token_to_piece(token, special=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)  # llama.cpp: a piece that is not valid UTF-8 comes as its bytes


# ------------------------------------------------------------------------------------------------
# the app
# ------------------------------------------------------------------------------------------------


def create_app(model: ModelSource, config: ServerConfig | None = None) -> FastAPI:
    """The OpenAI-compatible app over ``model`` (a loaded Model, which the caller keeps owning, or a
    zero-argument loader run in a background thread at startup, whose Model the app closes).

    The scheduler (one context, ``config.scheduler.parallel`` slots) starts with the app's lifespan
    and stops with it.
    """
    cfg = config or ServerConfig()
    holder = _Holder(cfg)
    if cfg.engine == "process" and not isinstance(model, Model) and cfg.vocab_loader is None:
        raise ValueError("engine='process' with a model loader needs config.vocab_loader")

    def engine_spec(m: Model) -> EngineSpec | None:
        """The engine process's recipe (None: the engine runs in this process)."""
        if cfg.engine != "process":
            return None
        loader = model if not isinstance(model, Model) else model_reloader(m)
        return EngineSpec(
            loader,
            cfg.scheduler,
            draft_model=cfg.draft_model,
            draft_n_gpu_layers=cfg.draft_n_gpu_layers,
            embeddings_n_ctx=cfg.embeddings_n_ctx,
            embeddings_n_seq=cfg.embeddings_n_seq,
        )

    files = FileStore(
        max_file_bytes=cfg.files_max_bytes,
        max_total_bytes=cfg.files_max_total_bytes,
        max_files=cfg.files_max_count,
    )

    def build(m: Model, owns: bool) -> None:
        try:
            state = ServerState(m, cfg, owns_model=owns, files=files, engine_spec=engine_spec(m))
        except BaseException as exc:
            holder.error = exc
            log.error("server start failed: %s", exc)
            if owns:
                m.close()
            return
        if holder.closed:
            state.close()
            return
        holder.state = state

    def load() -> None:
        assert callable(model) and not isinstance(model, Model)
        try:
            m = cfg.vocab_loader() if cfg.engine == "process" else model()
        except BaseException as exc:
            holder.error = exc
            log.error("model load failed: %s", exc)
            return
        build(m, True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader: threading.Thread | None = None
        if isinstance(model, Model):
            if holder.state is None and holder.error is None:
                build(model, False)
        else:
            loader = threading.Thread(target=load, name="llamabind-load", daemon=True)
            loader.start()
        try:
            yield
        finally:
            holder.closed = True
            if loader is not None:
                await run_in_threadpool(loader.join)
            if holder.state is not None:
                st, holder.state = holder.state, None
                await run_in_threadpool(st.close)

    app = FastAPI(
        title="llamabind",
        version=__version__,
        description="OpenAI-compatible API over llama.cpp with continuous batching",
        lifespan=lifespan,
    )
    app.state.holder = holder

    # ---------------------------------------------------------------- errors
    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            detail = ctx.get("error") if isinstance(ctx, dict) else None
            msg = "malformed JSON in the request body" + (f": {detail}" if detail else "")
            return JSONResponse(error_body(msg, "invalid_request_error", None, "invalid_json"), 400)
        param = loc[0] if loc else None  # the top-level field (deeper parts name union members)
        text = str(first.get("msg", "invalid request"))
        where = ".".join(x for x in loc if x.isidentifier() or x.isdigit())
        msg = f"{where or param}: {text}" if param else text
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return JSONResponse(error_body(msg, "invalid_request_error", param, "invalid_value"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        err = error_from_exception(exc)
        return JSONResponse(err.body(), status_code=err.status)

    # ---------------------------------------------------------------- routes
    @app.get("/health")
    @app.get("/v1/health", include_in_schema=False)
    async def health() -> JSONResponse:
        if holder.state is not None and holder.state.ready:
            return JSONResponse({"status": "ok"})
        error = holder.error or (holder.state.engine_error if holder.state is not None else None)
        if error is not None:
            body = error_body(
                f"the model failed to load: {error}", "unavailable_error", None, "model_load_failed"
            )
            return JSONResponse({"status": "error", **body}, status_code=503)
        body = error_body("the model is loading", "unavailable_error", None, "model_loading")
        return JSONResponse({"status": "loading", **body}, status_code=503)

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions", include_in_schema=False)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await _chat(request, body, holder)

    @app.post("/v1/messages")
    @app.post("/messages", include_in_schema=False)
    async def messages(request: Request) -> Response:
        """Anthropic's Messages API (non-streaming and streaming)."""
        return await _messages(request, holder)

    @app.post("/v1/messages/count_tokens")
    @app.post("/messages/count_tokens", include_in_schema=False)
    async def messages_count_tokens(request: Request) -> Response:
        return await _messages(request, holder, count_tokens=True)

    @app.post("/infill")
    async def infill(body: InfillRequest, request: Request) -> Response:
        """llama.cpp's fill-in-the-middle route: ``input_prefix`` + ``input_suffix`` (``prompt``: the
        start of the middle), answered like /v1/completions."""
        from ..generation.infill import fim_prompt

        state = holder.get()
        try:
            tokens = await run_in_threadpool(
                fim_prompt, state.model, body.input_prefix, body.input_suffix, body.prompt
            )
        except Exception as exc:
            raise error_from_exception(exc, param="input_prefix") from None
        data = body.model_dump(exclude={"input_prefix", "input_suffix", "prompt"})
        return await _completions(request, CompletionRequest(prompt=tokens, **data), holder)

    @app.post("/v1/completions")
    @app.post("/completions", include_in_schema=False)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _completions(request, body, holder)

    app.include_router(create_files_router(files))
    app.state.files = files

    @app.post("/v1/embeddings")
    @app.post("/embeddings", include_in_schema=False)
    async def embeddings(body: EmbeddingRequest) -> Response:
        return await _embeddings(body, holder)

    @app.post("/v1/rerank")
    @app.post("/rerank", include_in_schema=False)
    @app.post("/v1/reranking", include_in_schema=False)
    async def rerank(body: RerankRequest) -> Response:
        return await _rerank(body, holder)

    @app.get("/v1/models")
    @app.get("/models", include_in_schema=False)
    async def models() -> JSONResponse:
        state = holder.get()
        m = state.model
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": state.alias,
                        "object": "model",
                        "created": state.created,
                        "owned_by": "llamabind",
                        "meta": {
                            "file": m.path.name,
                            "n_vocab": m.n_vocab,
                            "n_ctx_train": m.n_ctx_train,
                            "n_ctx_slot": state.scheduler.n_ctx_slot,
                            "n_embd": m.n_embd,
                            "n_params": m.n_params,
                            "size": m.size,
                        },
                    }
                ],
            }
        )

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> JSONResponse:
        state = holder.get()
        m = state.model

        def run() -> dict[str, Any]:
            toks = m.tokenize(body.content, add_special=body.add_special, parse_special=body.parse_special)
            if body.with_pieces:
                return {"tokens": [{"id": t, "piece": _piece_json(m, t)} for t in toks]}
            return {"tokens": toks}

        return JSONResponse(await run_in_threadpool(run))

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> JSONResponse:
        state = holder.get()
        try:
            text = await run_in_threadpool(state.model.detokenize, body.tokens)
        except Exception as exc:
            raise error_from_exception(exc, param="tokens") from None
        return JSONResponse({"content": text})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(holder.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/slots")
    async def slots() -> JSONResponse:
        state = holder.get()
        sched = state.scheduler
        return JSONResponse(
            [
                {
                    "id": s.id,
                    "state": s.state,
                    "is_processing": s.request_id is not None,
                    "request_id": s.request_id,
                    "n_ctx": sched.n_ctx_slot,
                    "n_cached": s.n_cached,
                    "n_prompt_tokens": s.n_prompt,
                    "n_decoded": s.n_generated,
                }
                for s in sched.slot_info()
            ]
        )

    # ---------------------------------------------------------------- middleware (last = outermost)
    app.add_middleware(_AuthAndMetricsMiddleware, holder=holder, keys=list(cfg.api_keys))
    if cfg.cors_origins:
        origins = list(cfg.cors_origins)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app
