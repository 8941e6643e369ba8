"""Anthropic's Messages API (``POST /v1/messages``) over the chat machinery, as llama.cpp's server
offers it: a request is converted here to an OpenAI-style chat request (messages, tools,
tool_choice, sampling fields), run like ``/v1/chat/completions``, and answered as an Anthropic
``message`` or as its stream of named SSE events (:mod:`.anthropic_response`). Errors are
``{"type": "error", "error": {"type", "message"}}``.

Supported: system text (string or text blocks); text, image (base64 or URL), tool_use, tool_result and
thinking blocks; client tools (``input_schema``); ``tool_choice`` auto / any / tool / none and
``disable_parallel_tool_use``; ``max_tokens``, ``temperature``, ``top_p``, ``top_k``,
``stop_sequences``, ``thinking`` and llama.cpp's extra sampling fields.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, ValidationError

from .errors import APIError
from .schemas import SAMPLING_FIELDS, ChatCompletionRequest, SamplingFields

__all__ = [
    "CountTokensRequest",
    "MessagesRequest",
    "anthropic_error_body",
    "new_message_id",
    "new_tool_use_id",
    "parse_request",
    "to_chat_request",
    "to_openai_messages",
    "to_openai_tool_choice",
    "to_openai_tools",
]

# Anthropic's error types by HTTP status
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
# Anthropic request fields that are not OpenAI chat fields (everything else passes through, so
# llama.cpp's sampling extras — min_p, repeat_penalty, seed, grammar … — keep working)
_ANTHROPIC_ONLY = {
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "stream",
}


class MessagesRequest(SamplingFields):
    """A Messages API request body (unknown fields are kept, as for the OpenAI routes)."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(ge=1)  # type: ignore[assignment]  # required here
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(MessagesRequest):
    max_tokens: int = Field(default=1, ge=1)


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def new_tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


def anthropic_error_body(err: APIError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for an APIError."""
    kind = _ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def _validation_message(exc: ValidationError) -> str:
    errors = exc.errors()
    first: Mapping[str, Any] = errors[0] if errors else {}
    loc = ".".join(str(x) for x in first.get("loc", ()))
    text = str(first.get("msg", "invalid request"))
    if first.get("type") == "missing":
        text = "Field required"
    msg = f"{loc}: {text}" if loc else text
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return msg


def parse_request(raw: bytes, *, count_tokens: bool = False) -> MessagesRequest:
    """The request body → MessagesRequest; APIError(400) on malformed JSON or invalid fields."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise APIError(400, f"malformed JSON in the request body: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    cls = CountTokensRequest if count_tokens else MessagesRequest
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise APIError(400, _validation_message(exc)) from None


# ------------------------------------------------------------------------------------------------
# request → OpenAI-style chat request
# ------------------------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    """A string, or the text of a list of text blocks (other blocks are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a string or a list of content blocks")
    parts: list[str] = []
    for block in content:
        if not isinstance(block, Mapping) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
            raise APIError(400, f"{where}: only text blocks are supported here, not {kind!r}")
        parts.append(str(block.get("text", "")))
    return "\n".join(parts)


def _image_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise APIError(400, f"{where}.source must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type") or "image/png"
        url = f"data:{media_type};base64,{source.get('data', '')}"
    elif kind == "url":
        url = str(source.get("url", ""))
    else:
        raise APIError(400, f"{where}.source.type {kind!r} is not supported (use 'base64' or 'url')")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn → OpenAI tool messages (for tool_result blocks) then a user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of content blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if not isinstance(block, Mapping):
            raise APIError(400, f"{at} must be a content block object")
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            text = _text_of(block.get("content"), f"{at}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
        else:
            raise APIError(400, f"{at}: content blocks of type {kind!r} are not supported")
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of content blocks")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        if not isinstance(block, Mapping):
            raise APIError(400, f"{at} must be a content block object")
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_use":
            args = block.get("input", {})
            calls.append(
                {
                    "id": str(block.get("id") or new_tool_use_id()),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                    },
                }
            )
        else:
            raise APIError(400, f"{at}: content blocks of type {kind!r} are not supported")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thinking:
        msg["reasoning_content"] = "".join(thinking)
    if calls:
        msg["tool_calls"] = calls
    return msg


def to_openai_messages(
    messages: Sequence[Mapping[str, Any]], system: str | Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Anthropic ``system`` + ``messages`` → OpenAI chat messages."""
    out: list[dict[str, Any]] = []
    if system is not None:
        text = _text_of(list(system) if not isinstance(system, str) else system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        role = m.get("role")
        if role == "user":
            out.extend(_user_messages(m.get("content"), where))
        elif role == "assistant":
            out.append(_assistant_message(m.get("content"), where))
        else:
            raise APIError(400, f"{where}.role must be 'user' or 'assistant', not {role!r}")
    return out


def to_openai_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Anthropic client tools (``name``, ``description``, ``input_schema``) → OpenAI function tools."""
    if not tools:
        return None
    out: list[dict[str, Any]] = []
    for i, t in enumerate(tools):
        kind = t.get("type")
        if kind not in (None, "custom"):
            raise APIError(400, f"tools.{i}: server tools ({kind!r}) are not supported, only client tools")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(400, f"tools.{i}.name: Field required")
        schema = t.get("input_schema")
        if not isinstance(schema, Mapping):
            raise APIError(400, f"tools.{i}.input_schema: Field required")
        fn: dict[str, Any] = {"name": name, "parameters": dict(schema)}
        if isinstance(t.get("description"), str):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def to_openai_tool_choice(choice: Mapping[str, Any] | None) -> tuple[Any, bool]:
    """Anthropic ``tool_choice`` → (OpenAI tool_choice, parallel_tool_calls)."""
    if choice is None:
        return None, True
    parallel = not bool(choice.get("disable_parallel_tool_use", False))
    kind = choice.get("type")
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(400, "tool_choice.name: Field required")
        return {"type": "function", "function": {"name": name}}, parallel
    raise APIError(400, f"tool_choice.type must be 'auto', 'any', 'tool' or 'none', not {kind!r}")


def to_chat_request(body: MessagesRequest) -> ChatCompletionRequest:
    """The equivalent OpenAI chat request (llama.cpp extra fields carried over)."""
    extras = {k: v for k, v in (body.model_extra or {}).items() if k not in _ANTHROPIC_ONLY}
    tool_choice, parallel = to_openai_tool_choice(body.tool_choice)
    tools = to_openai_tools(body.tools)
    if tools is None and tool_choice not in (None, "auto", "none"):
        raise APIError(400, "tool_choice requires a non-empty tools list")
    if body.thinking is not None:
        kind = body.thinking.get("type")
        if kind in ("enabled", "adaptive"):
            extras.setdefault("reasoning_format", "auto")
        elif kind == "disabled":
            extras.setdefault("reasoning_format", "none")
    fields = body.model_dump(exclude_unset=True, include=set(SAMPLING_FIELDS))
    try:
        return ChatCompletionRequest.model_validate(
            {
                **extras,
                **fields,
                "model": body.model,
                "messages": to_openai_messages(body.messages, body.system),
                "max_tokens": body.max_tokens,
                "stop": list(body.stop_sequences or []),
                "tools": tools,
                "tool_choice": tool_choice,
                "parallel_tool_calls": parallel,
                "stream": False,
                "n": 1,
            }
        )
    except ValidationError as exc:
        raise APIError(400, _validation_message(exc)) from None
