"""Request limits: one :class:`Limits` object (``ServerConfig.limits``; each field a ``llamabind
serve`` flag) checked before any work is queued, so nothing a client sends can hold the engine, the
event loop or the memory for long.

Two layers:

* :class:`LimitsMiddleware` (ASGI, before any parsing) refuses a body over ``max_body`` bytes with
  413 — on its ``Content-Length`` or while it streams in, never holding more than the limit —, a
  body that is not ``application/json`` with 415 (so no cross-site "simple" request, e.g.
  ``text/plain``, reaches the engine), and JSON nested deeper than ``max_json_depth`` with 400
  (measured by a linear scan, so the parsers after it never recurse deeply);
* ``check_*`` functions, called by the routes on the parsed request: counts and sizes of the fields
  whose cost grows with their size (messages, stop strings, ``logit_bias``, DRY breakers, penalty
  windows, grammar, tools, ``chat_template_kwargs``, inputs), ``max_tokens: 0`` (400, as OpenAI),
  and a request that needs more generation slots than the server can ever hold (400; 503 stays
  for a busy server).

Every violation is an :class:`~.errors.APIError` naming the request field (``param``) at fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError

if TYPE_CHECKING:  # ServerConfig imports this module: keep it free of the server's other modules
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

__all__ = [
    "RESERVED_TEMPLATE_KWARGS",
    "Limits",
    "LimitsMiddleware",
    "check_capacity",
    "check_chat",
    "check_completion",
    "check_detokenize",
    "check_embeddings",
    "check_infill",
    "check_rerank",
    "check_tokenize",
    "json_depth",
]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Defaults are generous for real use and small enough that no
    request can stall the engine or the event loop (each is ``llamabind serve --max-…``)."""

    #: request body bytes (413 above; /v1/files uploads have their own ``--files-max-bytes``)
    max_body: int = 16 * MiB
    #: nesting of JSON objects/arrays in a body (and in tool-call ``arguments`` strings)
    max_json_depth: int = 64
    #: ``messages`` per chat request
    max_messages: int = 1024
    #: characters of text in one request (message texts, prompts, inputs, documents, tokenize content)
    max_input_chars: int = 4_000_000
    #: prompts, embeddings inputs or rerank documents per request
    max_inputs: int = 2048
    #: token ids per request (token prompts, /detokenize)
    max_input_tokens: int = 1_000_000
    #: ``stop`` strings (Anthropic ``stop_sequences``) and the characters of each
    max_stop: int = 16
    max_stop_chars: int = 256
    #: ``logit_bias`` entries and the characters of a text key
    max_logit_bias: int = 1024
    max_logit_bias_key_chars: int = 256
    #: ``dry_sequence_breakers`` and the characters of each (the library's own caps: llama.cpp scans
    #: the vocabulary once per breaker, and caps a breaker at 40 characters)
    max_dry_breakers: int = 8
    max_dry_breaker_chars: int = 40
    #: bytes of a GBNF ``grammar``
    max_grammar_bytes: int = 128 * 1024
    #: ``tools`` and the bytes of their JSON
    max_tools: int = 128
    max_tools_bytes: int = 1 * MiB
    #: bytes of the ``chat_template_kwargs`` JSON
    max_template_kwargs_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"Limits.{f.name} must be positive")


# ------------------------------------------------------------------------------------------------
# JSON nesting, measured without recursion
# ------------------------------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes | str) -> int:
    """The deepest nesting of ``[`` / ``{`` in JSON text (strings skipped), in linear time and
    without recursion. Malformed text gives a number too (its parse fails later anyway)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if b"[" not in raw and b"{" not in raw:
        return 0
    kept = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not kept:
        return 0
    arr = np.frombuffer(kept, dtype=np.uint8)
    steps = np.where((arr == ord("[")) | (arr == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


# ------------------------------------------------------------------------------------------------
# the ASGI layer: body size, content type, nesting
# ------------------------------------------------------------------------------------------------

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class LimitsMiddleware:
    """Body size (413), content type (415) and JSON nesting (400) of every JSON route, before the
    body is parsed. ``label`` maps a request to its route template (``"other"``: no such route,
    left to the router's 404); ``exempt`` templates read their bodies themselves (multipart
    uploads); ``anthropic`` templates answer with Anthropic error bodies, Ollama's ``/api/`` routes
    with its ``{"error": "..."}``."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Limits,
        label: Callable[[Scope], str],
        exempt: Iterable[str] = (),
        anthropic: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.limits = limits
        self.label = label
        self.exempt = frozenset(exempt)
        self.anthropic = frozenset(anthropic)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, err: APIError, route: str) -> None:
        from .anthropic import anthropic_error_body

        if route in self.anthropic:
            body: dict[str, Any] = anthropic_error_body(err)
        elif route.startswith("/api/"):  # Ollama's routes answer {"error": "..."}
            body = {"error": err.message}
        else:
            body = err.body()
        await JSONResponse(body, status_code=err.status)(scope, receive, send)

    def _too_large(self) -> APIError:
        limit = self.limits.max_body
        return APIError(
            413,
            f"the request body exceeds the limit of {limit} bytes (--max-body)",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        route = self.label(scope)
        if route == "other" or route in self.exempt:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > self.limits.max_body:
            await self._refuse(scope, receive, send, self._too_large(), route)
            return
        has_body = bool(declared) or "transfer-encoding" in headers
        ctype = headers.get("content-type")
        if has_body and not _is_json(ctype):
            err = APIError(
                415,
                f"send the request body as application/json (got {ctype or 'no Content-Type'})",
                code="unsupported_media_type",
            )
            await self._refuse(scope, receive, send, err, route)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body
            piece = message.get("body", b"")
            size += len(piece)
            if size > self.limits.max_body:
                await self._refuse(scope, receive, send, self._too_large(), route)
                return
            chunks.append(piece)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        if body and not _is_json(ctype):
            err = APIError(415, "send the request body as application/json", code="unsupported_media_type")
            await self._refuse(scope, receive, send, err, route)
            return
        depth = json_depth(body) if body else 0
        if depth > self.limits.max_json_depth:
            err = APIError(
                400,
                f"the request body nests JSON {depth} levels deep; at most {self.limits.max_json_depth} "
                "are allowed (--max-json-depth)",
                code="json_too_deep",
            )
            await self._refuse(scope, receive, send, err, route)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)


# ------------------------------------------------------------------------------------------------
# request fields
# ------------------------------------------------------------------------------------------------

#: variables the chat formatter sets itself: ``chat_template_kwargs`` may not override them (their
#: own request fields say what they mean: ``messages``, ``tools``, ``add_generation_prompt`` …)
RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "messages",
        "tools",
        "bos_token",
        "eos_token",
        "add_generation_prompt",
        "continue_final_message",
        "media_marker",
        "arguments_as_dict",
        "template",
    }
)

# penalty windows (request names): -1 means the slot context, 0 off
_WINDOWS = ("repeat_last_n", "penalty_last_n", "dry_penalty_last_n")


def _bad(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def _too_many(what: str, n: int, limit: int, flag: str, param: str) -> APIError:
    return _bad(f"{param}: {n} {what} exceed the limit of {limit} ({flag})", param, "limit_exceeded")


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def _check_chars(limits: Limits, n: int, param: str) -> None:
    if n > limits.max_input_chars:
        raise _too_many("characters", n, limits.max_input_chars, "--max-input-chars", param)


def _check_stop(limits: Limits, stop: Any, param: str = "stop") -> None:
    items = [stop] if isinstance(stop, str) else list(stop or ())
    if len(items) > limits.max_stop:
        raise _too_many("stop strings", len(items), limits.max_stop, "--max-stop", param)
    for s in items:
        if isinstance(s, str) and len(s) > limits.max_stop_chars:
            raise _bad(
                f"{param}: a stop string of {len(s)} characters exceeds the limit of "
                f"{limits.max_stop_chars} (--max-stop-chars)",
                param,
                "limit_exceeded",
            )


def _check_logit_bias(limits: Limits, raw: Any) -> None:
    if not isinstance(raw, (Mapping, list)):
        return
    if len(raw) > limits.max_logit_bias:
        raise _too_many("entries", len(raw), limits.max_logit_bias, "--max-logit-bias", "logit_bias")
    keys = raw.keys() if isinstance(raw, Mapping) else (p[0] for p in raw if isinstance(p, list) and p)
    for key in keys:
        if isinstance(key, str) and len(key) > limits.max_logit_bias_key_chars:
            raise _bad(
                f"logit_bias: a text key of {len(key)} characters exceeds the limit of "
                f"{limits.max_logit_bias_key_chars} (--max-logit-bias-key-chars)",
                "logit_bias",
                "limit_exceeded",
            )


def _check_window(name: str, value: Any, n_ctx_slot: int) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # the type check of sampling_from_request answers wrong types
    if value < -1 or value > n_ctx_slot:
        raise _bad(
            f"{name} must be -1 (the slot context), 0 (off) or at most the slot context of "
            f"{n_ctx_slot} tokens, got {value}",
            name,
        )


def _check_max_tokens(body: SamplingFields, *extra: tuple[str, int | None]) -> None:
    for name, value in (*extra, ("max_tokens", body.max_tokens), ("n_predict", body.n_predict)):
        if value == 0:
            raise _bad(f"{name} must be at least 1 (or -1: until the end of the turn or context)", name)


def check_sampling(limits: Limits, body: SamplingFields, n_ctx_slot: int) -> None:
    """The fields chat and text completions share (typed and llama.cpp extras)."""
    extras = body.model_extra or {}
    _check_max_tokens(body)
    if body.stop is not None:
        _check_stop(limits, body.stop)
    _check_logit_bias(limits, body.logit_bias)
    _check_window("repeat_last_n", body.repeat_last_n, n_ctx_slot)
    for name in _WINDOWS[1:]:
        _check_window(name, extras.get(name), n_ctx_slot)
    breakers = extras.get("dry_sequence_breakers")
    if isinstance(breakers, list):
        if len(breakers) > limits.max_dry_breakers:
            raise _too_many(
                "sequence breakers",
                len(breakers),
                limits.max_dry_breakers,
                "--max-dry-breakers",
                "dry_sequence_breakers",
            )
        for b in breakers:
            if isinstance(b, str) and len(b) > limits.max_dry_breaker_chars:
                raise _bad(
                    f"dry_sequence_breakers: a breaker of {len(b)} characters exceeds the limit of "
                    f"{limits.max_dry_breaker_chars} (--max-dry-breaker-chars)",
                    "dry_sequence_breakers",
                    "limit_exceeded",
                )
    grammar = body.grammar if body.grammar is not None else extras.get("grammar")
    if isinstance(grammar, str):
        n = len(grammar.encode("utf-8", "surrogatepass"))
        if n > limits.max_grammar_bytes:
            raise _too_many("bytes", n, limits.max_grammar_bytes, "--max-grammar-bytes", "grammar")


def _message_chars(limits: Limits, messages: list[dict[str, Any]]) -> int:
    """The characters of text in ``messages`` (media parts not counted: ``--media-max-bytes``
    bounds them); tool-call ``arguments`` strings must also nest no deeper than the JSON limit."""
    total = 0
    for i, msg in enumerate(messages):
        for key in ("content", "reasoning_content", "name", "tool_call_id"):
            value = msg.get(key)
            if isinstance(value, str):
                total += len(value)
            elif isinstance(value, list):
                for part in value:
                    text = part.get("text") if isinstance(part, Mapping) else None
                    if isinstance(text, str):
                        total += len(text)
        calls = msg.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function", call) if isinstance(call, Mapping) else None
            args = fn.get("arguments") if isinstance(fn, Mapping) else None
            if isinstance(args, str):
                total += len(args)
                depth = json_depth(args)
                if depth > limits.max_json_depth:
                    raise _bad(
                        f"messages.{i}.tool_calls: the arguments nest JSON {depth} levels deep; at most "
                        f"{limits.max_json_depth} are allowed (--max-json-depth)",
                        "messages",
                        "json_too_deep",
                    )
            elif args is not None:
                total += _json_bytes(args)
    return total


def check_chat(limits: Limits, body: ChatCompletionRequest, n_ctx_slot: int) -> None:
    """A chat request (also Anthropic's, converted): messages, tools, template kwargs, sampling."""
    if len(body.messages) > limits.max_messages:
        raise _too_many("messages", len(body.messages), limits.max_messages, "--max-messages", "messages")
    _check_chars(limits, _message_chars(limits, body.messages), "messages")
    _check_max_tokens(body, ("max_completion_tokens", body.max_completion_tokens))
    check_sampling(limits, body, n_ctx_slot)
    if body.tools:
        if len(body.tools) > limits.max_tools:
            raise _too_many("tools", len(body.tools), limits.max_tools, "--max-tools", "tools")
        n = _json_bytes(body.tools)
        if n > limits.max_tools_bytes:
            raise _too_many("bytes", n, limits.max_tools_bytes, "--max-tools-bytes", "tools")
    kwargs = body.chat_template_kwargs
    if kwargs:
        n = _json_bytes(kwargs)
        if n > limits.max_template_kwargs_bytes:
            raise _too_many(
                "bytes",
                n,
                limits.max_template_kwargs_bytes,
                "--max-template-kwargs-bytes",
                "chat_template_kwargs",
            )
        clash = sorted(RESERVED_TEMPLATE_KWARGS.intersection(kwargs))
        if clash:
            raise _bad(
                f"chat_template_kwargs may not set {', '.join(clash)}: the server sets "
                f"{'it' if len(clash) == 1 else 'them'} (use the request's own fields)",
                "chat_template_kwargs",
            )


def _count_prompts(prompt: Any) -> int:
    if isinstance(prompt, str) or not prompt or all(isinstance(x, int) for x in prompt):
        return 1
    return len(prompt)


def check_completion(limits: Limits, body: CompletionRequest, n_ctx_slot: int) -> int:
    """A text completion (also /infill's): prompts, sampling. Returns how many prompts it has."""
    n_prompts = _count_prompts(body.prompt)
    if n_prompts > limits.max_inputs:
        raise _too_many("prompts", n_prompts, limits.max_inputs, "--max-inputs", "prompt")
    p = body.prompt
    items: list[Any] = [p] if isinstance(p, str) or (p and isinstance(p[0], int)) else list(p)
    chars = sum(len(x) for x in items if isinstance(x, str)) + len(body.suffix or "")
    _check_chars(limits, chars, "prompt")
    tokens = sum(len(x) if isinstance(x, list) else 1 for x in items if not isinstance(x, str))
    if tokens > limits.max_input_tokens:
        raise _too_many("tokens", tokens, limits.max_input_tokens, "--max-input-tokens", "prompt")
    check_sampling(limits, body, n_ctx_slot)
    return n_prompts


def check_infill(limits: Limits, body: InfillRequest, n_ctx_slot: int) -> None:
    """/infill's texts and sampling fields (checked before its prompt is built)."""
    _check_chars(limits, len(body.input_prefix) + len(body.input_suffix) + len(body.prompt), "input_prefix")
    check_sampling(limits, body, n_ctx_slot)


def check_capacity(parallel: int, max_queue: int, n_requests: int, param: str) -> None:
    """A request of ``n_requests`` generations (``n`` × prompts) that the server could never hold at
    once (``--parallel`` slots + ``--max-queue`` waiting) is a 400, not a 503 — it would be refused
    even on an idle server. (A busy server still answers 503 when the rest does not fit.)"""
    capacity = parallel + max_queue
    if n_requests > capacity:
        raise _bad(
            f"this request needs {n_requests} generations (n × prompts) but the server holds at most "
            f"{capacity} at once (--parallel {parallel} + --max-queue {max_queue})",
            param,
            "limit_exceeded",
        )


def _check_items(limits: Limits, items: Any, param: str, what: str) -> None:
    if isinstance(items, str):
        _check_chars(limits, len(items), param)
        return
    seq = list(items or ())
    if seq and all(isinstance(x, int) for x in seq):
        seq = [seq]
    if len(seq) > limits.max_inputs:
        raise _too_many(what, len(seq), limits.max_inputs, "--max-inputs", param)
    _check_chars(limits, sum(len(x) for x in seq if isinstance(x, str)), param)
    tokens = sum(len(x) for x in seq if isinstance(x, list))
    if tokens > limits.max_input_tokens:
        raise _too_many("tokens", tokens, limits.max_input_tokens, "--max-input-tokens", param)


def check_embeddings(limits: Limits, body: EmbeddingRequest) -> None:
    _check_items(limits, body.input, "input", "inputs")


def check_rerank(limits: Limits, body: RerankRequest) -> None:
    _check_items(limits, body.documents, "documents", "documents")
    _check_chars(limits, len(body.query) + sum(len(d) for d in body.documents), "documents")


def check_tokenize(limits: Limits, body: TokenizeRequest) -> None:
    _check_chars(limits, len(body.content), "content")


def check_detokenize(limits: Limits, body: DetokenizeRequest) -> None:
    if len(body.tokens) > limits.max_input_tokens:
        raise _too_many("tokens", len(body.tokens), limits.max_input_tokens, "--max-input-tokens", "tokens")
