"""Ollama-compatible routes: ``POST /api/chat``, ``/api/generate``, ``/api/embed``,
``/api/embeddings`` (legacy), ``/api/show``, ``GET /api/tags``, ``/api/ps`` and ``/api/version``
(the conversions live in :mod:`..ollama_api`). Streams are NDJSON; errors are Ollama's
``{"error": "..."}`` with the HTTP status the other routes would answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ...batching import DoneEvent, TokenEvent
from ...chat import ChatStreamParser, PreparedChat, ToolCallFormat, detect_reasoning_tags
from ...chat.native_output import native_output_format
from .. import ollama_api as api
from ..common import Holder, collect
from ..errors import APIError, error_from_exception
from ..handlers import max_tokens_from_request, stop_from_request
from ..schemas import ChatCompletionRequest, CompletionRequest
from ..sse import SSEResponse, pump
from ..state import RequestGroup, ServerState
from .chat import start_chat
from .completions import prepare_completion
from .embeddings import tokenize_inputs

__all__ = ["router"]

NDJSON = "application/x-ndjson"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _error(exc: BaseException) -> JSONResponse:
    err = error_from_exception(exc)
    return JSONResponse({"error": err.message}, status_code=err.status)


async def _answer(call: Callable[[], Awaitable[Response]]) -> Response:
    """Run a route, answering any failure with Ollama's error body."""
    try:
        return await call()
    except Exception as exc:
        return _error(exc)


def _served(holder: Holder) -> list[tuple[str, ServerState]]:
    """The loaded models as (name, state): the one model, or every model a router has loaded."""
    if holder.router is not None:
        return holder.router.loaded()
    state = holder.get()
    return [(state.alias, state)]


async def _state(holder: Holder, name: str, *, generation: bool = False) -> ServerState:
    """The state serving Ollama's model name (``:latest`` dropped): the one model, or the router's."""
    return await holder.resolve(api.model_name(name), generation=generation)


def _chat_request(fields: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate({**fields, "stream": False, "n": 1})
    except ValidationError as exc:
        raise APIError(400, api.validation_message(exc)) from None


class OllamaStream:
    """The NDJSON objects of a streamed ``/api/chat`` or ``/api/generate`` (see :func:`..sse.pump`).
    ``parser`` splits reasoning and tool calls off (None: raw text)."""

    def __init__(self, model: str, parser: ChatStreamParser | None, chat: bool, t0: int) -> None:
        self.model = model
        self.parser = parser
        self.chat = chat
        self.t0 = t0

    def _chunk(self, content: str, thinking: str | None = None, msg: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {"model": self.model, "created_at": api.created_at()}
        if self.chat:
            obj["message"] = msg if msg is not None else {"role": "assistant", "content": content}
        else:
            obj["response"] = content
            if thinking:
                obj["thinking"] = thinking
        obj["done"] = False
        return _line(obj)

    def _text(self, text: str, finish_reason: str | None = None) -> list[bytes]:
        """The lines for generated ``text``; with ``finish_reason``, the parser's held-back tail (a
        tool call cut by the token limit is dropped, never sent as content)."""
        if self.parser is None:
            return [self._chunk(text)] if text else []
        deltas = self.parser.finish(finish_reason)[0] if finish_reason is not None else self.parser.feed(text)
        out = []
        for d in deltas:
            if self.chat:
                msg = api.delta_message(d)
                if msg is not None:
                    out.append(self._chunk("", msg=msg))
            elif d.content or d.reasoning_content:
                out.append(self._chunk(d.content or "", d.reasoning_content))
        return out

    def start(self) -> Iterable[bytes]:
        return []

    async def token(self, index: int, ev: TokenEvent) -> Iterable[bytes]:
        return self._text(ev.text)

    def done(self, index: int, ev: DoneEvent) -> Iterable[bytes]:
        out = self._text("", finish_reason=ev.finish_reason)
        u = ev.usage
        last: dict[str, Any] = {"model": self.model, "created_at": api.created_at()}
        if self.chat:
            last["message"] = {"role": "assistant", "content": ""}
        else:
            last["response"] = ""
        last.update(
            api.done_fields(
                ev.finish_reason,
                u.prompt_tokens,
                u.completion_tokens,
                u.prompt_ms,
                u.generation_ms,
                time.perf_counter_ns() - self.t0,
            )
        )
        out.append(_line(last))
        return out

    def error(self, exc: BaseException) -> Iterable[bytes]:
        return [_line({"error": error_from_exception(exc).message})]

    def end(self) -> Iterable[bytes]:
        return []


def _loaded(model: str, chat: bool) -> JSONResponse:
    """Ollama's answer to a request without input: the model is loaded (it always is here)."""
    obj: dict[str, Any] = {"model": model, "created_at": api.created_at()}
    if chat:
        obj["message"] = {"role": "assistant", "content": ""}
    else:
        obj["response"] = ""
    obj.update({"done": True, "done_reason": "load"})
    return JSONResponse(obj)


async def _run(
    request: Request,
    group: RequestGroup,
    prepared: PreparedChat | None,
    model: str,
    stream: bool,
    chat: bool,
    t0: int,
) -> Response:
    """Stream or collect a submitted request as Ollama's chat / generate answer."""
    if stream:
        parser = prepared.parser() if prepared is not None else None
        handler = OllamaStream(model, parser, chat, t0)
        return SSEResponse(pump(group, handler), group.cancel, media_type=NDJSON)
    (out,) = await collect(request, group, 1)
    obj: dict[str, Any] = {"model": model, "created_at": api.created_at()}
    if prepared is not None:
        msg = prepared.parse(out.text, out.finish_reason or "stop")
        if chat:
            obj["message"] = api.message_object(msg)
        else:
            obj["response"] = msg.content or ""
            if msg.reasoning_content:
                obj["thinking"] = msg.reasoning_content
    else:
        obj["response"] = out.text
    u = out.usage
    obj.update(
        api.done_fields(
            out.finish_reason,
            u.prompt_tokens if u is not None else len(group.requests[0].prompt),
            u.completion_tokens if u is not None else 0,
            u.prompt_ms if u is not None else 0.0,
            u.generation_ms if u is not None else 0.0,
            time.perf_counter_ns() - t0,
        )
    )
    return JSONResponse(obj)


async def chat(request: Request, holder: Holder) -> Response:
    t0 = time.perf_counter_ns()
    body = api.parse_body(await request.body(), api.ChatRequest)
    state = await _state(holder, body.model, generation=True)
    if not body.messages:
        return _loaded(body.model, chat=True)
    fields = api.request_fields(body.options, body.format, body.think)
    # tool_choice and parallel_tool_calls are not Ollama's: OpenAI-style extensions (tool_choice
    # auto / required / none / a named function; parallel_tool_calls false: at most one call)
    extra = body.model_extra or {}
    tool_fields: dict[str, Any] = {"tools": body.tools, "tool_choice": extra.get("tool_choice")}
    if isinstance(extra.get("parallel_tool_calls"), bool):
        tool_fields["parallel_tool_calls"] = extra["parallel_tool_calls"]
    chat_body = _chat_request(
        {**fields, "messages": api.chat_messages(body.messages), **(tool_fields if body.tools else {})}
    )
    prepared, group = await start_chat(state, chat_body)
    return await _run(request, group, prepared, body.model, body.stream, True, t0)


async def _start_raw(state: ServerState, body: CompletionRequest) -> RequestGroup:
    """Submit a plain text completion (raw prompt, or fill-in-the-middle with ``suffix``)."""
    prompts, samplings, _ = await run_in_threadpool(prepare_completion, body, state)
    group = RequestGroup(asyncio.get_running_loop())
    group.add(
        prompts[0],
        samplings[0],
        max_tokens=max_tokens_from_request(body, state.config.max_tokens),
        stop=stop_from_request(body.stop),
        logprobs=None,
        ignore_eos=body.ignore_eos,
        cache_prompt=body.cache_prompt,
    )
    try:
        group.submit(state.scheduler)
    except Exception as exc:
        raise error_from_exception(exc, param="prompt") from None
    return group


async def generate(request: Request, holder: Holder) -> Response:
    t0 = time.perf_counter_ns()
    body = api.parse_body(await request.body(), api.GenerateRequest)
    state = await _state(holder, body.model, generation=True)
    if body.template:
        raise APIError(400, "template is not supported: the server renders with the model's own template")
    if body.context:
        raise APIError(400, "context is not supported: send the conversation to /api/chat instead")
    if not body.prompt and not body.images and body.suffix is None:
        return _loaded(body.model, chat=False)
    fields = api.request_fields(body.options, body.format, body.think)
    if body.raw or body.suffix is not None:
        if body.images:
            raise APIError(400, "images need the chat template: leave raw off and suffix unset")
        fields.pop("reasoning_format", None)
        fields.setdefault("max_tokens", state.config.max_tokens)
        try:
            completion = CompletionRequest.model_validate(
                {**fields, "prompt": body.prompt, "suffix": body.suffix}
            )
        except ValidationError as exc:
            raise APIError(400, api.validation_message(exc)) from None
        group = await _start_raw(state, completion)
        return await _run(request, group, None, body.model, body.stream, False, t0)
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": body.system})
    messages.append(api.chat_messages([{"role": "user", "content": body.prompt, "images": body.images}])[0])
    prepared, group = await start_chat(state, _chat_request({**fields, "messages": messages}))
    return await _run(request, group, prepared, body.model, body.stream, False, t0)


def _resize(vec: Any, dimensions: int | None) -> list[float]:
    """An embedding as floats, cut to ``dimensions`` and normalised again (as Ollama does)."""
    arr = np.asarray(vec, dtype=np.float32)
    if dimensions is not None and dimensions < arr.shape[0]:
        arr = arr[:dimensions]
        norm = float(np.linalg.norm(arr))
        if norm > 0:
            arr = arr / norm
    return [float(x) for x in arr]


async def _embed(state: ServerState, texts: list[str], truncate: bool) -> tuple[list[Any], int]:
    svc = state.embeddings
    seqs = await run_in_threadpool(tokenize_inputs, svc, texts)
    if truncate:
        seqs = [s[: svc.n_ctx] for s in seqs]
    try:
        vecs = await run_in_threadpool(svc.embed, seqs)
    except Exception as exc:
        raise error_from_exception(exc, param="input") from None
    return list(vecs), sum(len(s) for s in seqs)


async def embed(request: Request, holder: Holder) -> Response:
    t0 = time.perf_counter_ns()
    body = api.parse_body(await request.body(), api.EmbedRequest)
    state = await _state(holder, body.model)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        return JSONResponse({"model": body.model, "embeddings": []})
    if body.dimensions is not None and body.dimensions > state.embeddings.dim:
        raise APIError(400, f"dimensions must be at most {state.embeddings.dim}")
    vecs, n_tokens = await _embed(state, texts, body.truncate)
    return JSONResponse(
        {
            "model": body.model,
            "embeddings": [_resize(v, body.dimensions) for v in vecs],
            "total_duration": time.perf_counter_ns() - t0,
            "load_duration": 0,
            "prompt_eval_count": n_tokens,
        }
    )


async def embeddings(request: Request, holder: Holder) -> Response:
    body = api.parse_body(await request.body(), api.EmbeddingsRequest)
    state = await _state(holder, body.model)
    if not body.prompt:
        return JSONResponse({"embedding": []})
    vecs, _ = await _embed(state, [body.prompt], truncate=True)
    return JSONResponse({"embedding": _resize(vecs[0], None)})


async def show(request: Request, holder: Holder) -> Response:
    body = api.parse_body(await request.body(), api.ShowRequest)
    name = body.model or body.name
    if not name:
        raise APIError(400, "model is required")
    state = await _state(holder, name)
    model = state.model
    template = state.formatter.template.source
    capabilities = ["completion", "tools"]
    if state.mtmd is not None:
        capabilities.append("vision")
    if (
        detect_reasoning_tags(template) is not None
        or native_output_format(template) is ToolCallFormat.HARMONY
    ):
        capabilities.append("thinking")
    sampling = state.config.sampling
    parameters = "\n".join(
        f"{k:<15} {v}"
        for k, v in (
            ("temperature", sampling.temperature),
            ("top_k", sampling.top_k),
            ("top_p", sampling.top_p),
        )
    )
    return JSONResponse(
        {
            "license": model.meta("general.license") or "",
            "modelfile": f"# served by llamabind\nFROM {model.path}\n",
            "parameters": parameters,
            "template": template,
            "details": api.model_details(model),
            "model_info": api.model_info(model),
            "capabilities": capabilities,
            "modified_at": api.modified_at(model),
        }
    )


def router(holder: Holder) -> APIRouter:
    r = APIRouter()

    @r.post("/api/chat", tags=["ollama"])
    async def ollama_chat(request: Request) -> Response:
        """Ollama's chat (NDJSON stream unless ``stream`` is false)."""
        return await _answer(lambda: chat(request, holder))

    @r.post("/api/generate", tags=["ollama"])
    async def ollama_generate(request: Request) -> Response:
        """Ollama's generate: the prompt through the chat template (``raw``: as it is)."""
        return await _answer(lambda: generate(request, holder))

    @r.post("/api/embed", tags=["ollama"])
    async def ollama_embed(request: Request) -> Response:
        return await _answer(lambda: embed(request, holder))

    @r.post("/api/embeddings", tags=["ollama"])
    async def ollama_embeddings(request: Request) -> Response:
        """Ollama's legacy single-prompt embeddings."""
        return await _answer(lambda: embeddings(request, holder))

    @r.post("/api/show", tags=["ollama"])
    async def ollama_show(request: Request) -> Response:
        return await _answer(lambda: show(request, holder))

    @r.get("/api/tags", tags=["ollama"])
    async def ollama_tags() -> Response:
        async def tags() -> Response:
            return JSONResponse({"models": [api.model_entry(st.model, name) for name, st in _served(holder)]})

        return await _answer(tags)

    @r.get("/api/ps", tags=["ollama"])
    async def ollama_ps() -> Response:
        async def ps() -> Response:
            entries = []
            for name, state in _served(holder):
                entry = api.model_entry(state.model, name)
                entry.update(
                    {
                        "expires_at": "2999-12-31T23:59:59Z",
                        "size_vram": 0,
                        "context_length": state.config.scheduler.ctx_per_slot,
                    }
                )
                entries.append(entry)
            return JSONResponse({"models": entries})

        return await _answer(ps)

    @r.get("/api/version", tags=["ollama"])
    async def ollama_version() -> Response:
        return JSONResponse(api.version())

    return r
