"""OpenAI's Responses API (``/v1/responses``) over the chat machinery: the request body, its
conversion to an OpenAI-style chat request, and the ``response`` object built from a parsed
assistant turn. The stream's events live in :mod:`.responses_stream`, the store of past responses
(``previous_response_id``) in :mod:`.responses_store`.

Supported: ``input`` as a string or a list of items — messages (``input_text`` / ``output_text`` /
``refusal`` / ``input_image`` / ``input_file`` / ``input_audio`` parts), ``function_call``,
``function_call_output`` and ``reasoning`` items —; ``instructions``; function tools with
``tool_choice`` (``auto`` / ``required`` / ``none`` / a named function / ``allowed_tools``) and
``parallel_tool_calls``; ``text.format`` (``text``, ``json_object``, ``json_schema``);
``reasoning.effort`` (``none`` turns the split of ``<think>`` blocks off); ``max_output_tokens``,
``temperature``, ``top_p`` and llama.cpp's extra sampling fields (``seed``, ``top_k``, ``min_p`` …).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError

from ..chat import ChatMessage
from .errors import APIError
from .schemas import SAMPLING_FIELDS, ChatCompletionRequest, SamplingFields

__all__ = [
    "ResponsesRequest",
    "function_call_item",
    "input_item_list",
    "message_item",
    "new_id",
    "output_items",
    "reasoning_item",
    "response_object",
    "to_chat_request",
    "to_chat_tool_choice",
    "to_chat_tools",
    "to_messages",
    "usage_object",
]

# Responses fields that are not chat fields (every other extra passes through, so llama.cpp's
# sampling extras — top_k, min_p, repeat_penalty, seed, grammar … — keep working)
_RESPONSES_ONLY = {
    "input",
    "instructions",
    "max_output_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "previous_response_id",
    "store",
    "metadata",
    "include",
    "truncation",
    "background",
    "conversation",
    "prompt",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "safety_identifier",
    "service_tier",
    "max_tool_calls",
    "top_logprobs",
    "context_management",
    "stream",
    "stream_options",
}
# sampling fields copied into the chat request when the client set them (and the stop strings)
_SAMPLING = {*SAMPLING_FIELDS, "stop"}


class ResponsesRequest(SamplingFields):
    """A ``POST /v1/responses`` body (unknown fields are kept, as for the other routes)."""

    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    background: bool | None = None
    truncation: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------------------------
# input items → chat messages
# ------------------------------------------------------------------------------------------------


def input_item_list(inp: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message), each with its ``type``."""
    if isinstance(inp, str):
        return [{"type": "message", "role": "user", "content": inp}] if inp else []
    out: list[dict[str, Any]] = []
    for i, item in enumerate(inp):
        if not isinstance(item, Mapping):
            raise APIError(400, f"input.{i} must be an object", param="input")
        d = dict(item)
        if "type" not in d and "role" in d:
            d["type"] = "message"
        out.append(d)
    return out


def _text_of(content: Any, where: str) -> str:
    """The text of a string or a list of text parts (``output`` of a function_call_output)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a string or a list of content parts", param="input")
    texts: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") not in ("input_text", "output_text", "text"):
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise APIError(
                400, f"{where}.{j}: only text parts are supported here, not {kind!r}", param="input"
            )
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def _chat_part(part: Any, where: str) -> dict[str, Any]:
    """One Responses content part → a chat content part."""
    if not isinstance(part, Mapping):
        raise APIError(400, f"{where} must be a content part object", param="input")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        if isinstance(part.get("file_id"), str) and part["file_id"]:
            return {"type": "image_file", "image_file": {"file_id": part["file_id"]}}
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise APIError(400, f"{where}: input_image needs image_url or file_id", param="input")
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "input_file":
        ref = {k: part[k] for k in ("file_id", "file_data", "filename") if isinstance(part.get(k), str)}
        if "file_id" not in ref and "file_data" not in ref:
            raise APIError(400, f"{where}: input_file needs file_id or file_data", param="input")
        return {"type": "file", "file": ref}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    raise APIError(400, f"{where}: content parts of type {kind!r} are not supported", param="input")


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a string or a list of content parts", param="input")
    parts = [_chat_part(p, f"{where}.{j}") for j, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


class _Assistant:
    """The assistant turn being assembled from consecutive output items."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self.texts or self.reasoning or self.calls)

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.texts) if self.texts or not self.calls else None,
        }
        if self.reasoning:
            msg["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            msg["tool_calls"] = self.calls
        return msg


def _reasoning_text(item: Mapping[str, Any]) -> str:
    parts = item.get("content") or item.get("summary") or []
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping))


def to_messages(instructions: str | None, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``instructions`` + input items → OpenAI chat messages (consecutive assistant output —
    reasoning, text, function calls — becomes one assistant message)."""
    out: list[dict[str, Any]] = []
    if instructions:
        out.append({"role": "system", "content": instructions})
    turn = _Assistant()

    def flush() -> None:
        nonlocal turn
        if turn:
            out.append(turn.message())
        turn = _Assistant()

    for i, item in enumerate(items):
        where = f"input.{i}"
        kind = item.get("type")
        if kind == "message":
            role = item.get("role")
            if role == "assistant":
                text = _content(item.get("content"), f"{where}.content")
                turn.texts.append(text if isinstance(text, str) else _text_of(text, where))
                continue
            flush()
            if role not in ("user", "system", "developer"):
                raise APIError(
                    400,
                    f"{where}.role must be 'user', 'assistant', 'system' or 'developer', not {role!r}",
                    param="input",
                )
            out.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content(item.get("content"), f"{where}.content"),
                }
            )
        elif kind == "function_call":
            args = item.get("arguments", "")
            turn.calls.append(
                {
                    "id": str(item.get("call_id") or item.get("id") or new_id("call")),
                    "type": "function",
                    "function": {
                        "name": str(item.get("name", "")),
                        "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                    },
                }
            )
        elif kind == "reasoning":
            if turn.texts or turn.calls:
                flush()
            text = _reasoning_text(item)
            if text:
                turn.reasoning.append(text)
        elif kind == "function_call_output":
            flush()
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id", "")),
                    "content": _text_of(item.get("output"), f"{where}.output"),
                }
            )
        elif kind == "item_reference":
            raise APIError(
                400, f"{where}: item_reference is not supported (send the item itself)", param="input"
            )
        else:
            raise APIError(400, f"{where}: input items of type {kind!r} are not supported", param="input")
    flush()
    return out


# ------------------------------------------------------------------------------------------------
# tools, tool_choice, text.format
# ------------------------------------------------------------------------------------------------


def to_chat_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Responses function tools (``name``, ``description``, ``parameters``, ``strict``) → chat tools."""
    if not tools:
        return None
    out: list[dict[str, Any]] = []
    for i, t in enumerate(tools):
        if t.get("type") != "function":
            raise APIError(
                400,
                f"tools.{i}: tools of type {t.get('type')!r} are not supported, only 'function'",
                param="tools",
            )
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(400, f"tools.{i}.name: Field required", param="tools")
        params = t.get("parameters")
        fn: dict[str, Any] = {
            "name": name,
            "parameters": dict(params)
            if isinstance(params, Mapping)
            else {"type": "object", "properties": {}},
        }
        if isinstance(t.get("description"), str):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def to_chat_tool_choice(
    choice: str | Mapping[str, Any] | None, tools: list[dict[str, Any]] | None
) -> tuple[Any, list[dict[str, Any]] | None]:
    """Responses ``tool_choice`` → (chat tool_choice, the tools it allows)."""
    if choice is None or isinstance(choice, str):
        return choice, tools
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(400, "tool_choice.name: Field required", param="tool_choice")
        return {"type": "function", "function": {"name": name}}, tools
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise APIError(400, "tool_choice.mode must be 'auto' or 'required'", param="tool_choice")
        allowed = {str(t.get("name")) for t in choice.get("tools") or [] if isinstance(t, Mapping)}
        kept = [t for t in tools or [] if t["function"]["name"] in allowed]
        if not kept:
            raise APIError(400, "tool_choice.tools names none of the request's tools", param="tool_choice")
        return mode, kept
    raise APIError(
        400,
        f"tool_choice.type {kind!r} is not supported (use 'function' or 'allowed_tools')",
        param="tool_choice",
    )


def to_response_format(text: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``text.format`` → the chat ``response_format``."""
    fmt = text.get("format") if text else None
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping):
        raise APIError(400, "text.format must be an object", param="text")
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping):
            raise APIError(400, "text.format.schema: Field required", param="text")
        spec = {"name": fmt.get("name") or "response", "schema": dict(schema), "strict": fmt.get("strict")}
        return {"type": "json_schema", "json_schema": spec}
    raise APIError(
        400, f"text.format.type must be 'text', 'json_object' or 'json_schema', not {kind!r}", param="text"
    )


def _validation_message(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    loc = ".".join(str(x) for x in errors[0]["loc"])
    text = errors[0]["msg"]
    return f"{loc}: {text}" if loc else text


def to_chat_request(body: ResponsesRequest, history: Sequence[Mapping[str, Any]]) -> ChatCompletionRequest:
    """The equivalent chat request: ``instructions``, then the stored conversation ``history``
    (the items of the previous responses), then this request's input items."""
    if body.background:
        raise APIError(400, "background responses are not supported", param="background")
    if body.n != 1:
        raise APIError(400, "n is not a Responses API field (one output per response)", param="n")
    items = [*history, *input_item_list(body.input)]
    messages = to_messages(body.instructions, items)
    if not messages:
        raise APIError(400, "input must not be empty", param="input")
    tools = to_chat_tools(body.tools)
    tool_choice, tools = to_chat_tool_choice(body.tool_choice, tools)
    if tools is None and tool_choice not in (None, "auto", "none"):
        raise APIError(400, "tool_choice requires a non-empty tools list", param="tool_choice")
    extras = {k: v for k, v in (body.model_extra or {}).items() if k not in _RESPONSES_ONLY}
    effort = body.reasoning.get("effort") if body.reasoning else None
    if effort == "none":
        extras.setdefault("reasoning_format", "none")
    fields = body.model_dump(exclude_unset=True, include=_SAMPLING)
    max_tokens = body.max_output_tokens if body.max_output_tokens is not None else body.max_tokens
    try:
        return ChatCompletionRequest.model_validate(
            {
                **extras,
                **fields,
                "model": body.model,
                "messages": messages,
                "max_tokens": max_tokens,
                "n_predict": body.n_predict,
                "tools": tools,
                "tool_choice": tool_choice,
                "parallel_tool_calls": body.parallel_tool_calls is not False,
                "response_format": to_response_format(body.text),
                "stream": False,
                "n": 1,
            }
        )
    except ValidationError as exc:
        raise APIError(400, _validation_message(exc)) from None


# ------------------------------------------------------------------------------------------------
# output items and the response object
# ------------------------------------------------------------------------------------------------


def reasoning_item(id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": id, "type": "reasoning", "summary": [], "content": content, "status": status}


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [output_text_part(text)] if text is not None else []
    return {"id": id, "type": "message", "role": "assistant", "status": status, "content": content}


def function_call_item(
    id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(msg: ChatMessage, status: str = "completed") -> list[dict[str, Any]]:
    """A parsed assistant turn → output items: reasoning, then the message, then function calls."""
    items: list[dict[str, Any]] = []
    if msg.reasoning_content:
        items.append(reasoning_item(new_id("rs"), msg.reasoning_content, status))
    if msg.content or not msg.tool_calls:
        items.append(message_item(new_id("msg"), msg.content or "", status))
    for call in msg.tool_calls:
        items.append(function_call_item(new_id("fc"), call.id, call.name, call.arguments, status))
    return items


def usage_object(
    input_tokens: int, output_tokens: int, cached_tokens: int, reasoning_tokens: int
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    body: ResponsesRequest,
    *,
    id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` object (``status``: in_progress, completed, incomplete or failed)."""
    fmt = (body.text or {}).get("format") or {"type": "text"}
    reasoning = body.reasoning or {}
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.store is not False,
        "temperature": body.temperature,
        "text": {"format": fmt},
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": body.tools or [],
        "top_p": body.top_p,
        "truncation": body.truncation or "disabled",
        "usage": usage,
        "user": body.user,
        "metadata": body.metadata or {},
    }
