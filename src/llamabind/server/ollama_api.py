"""Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed`` …) over the same engines: request
bodies, their conversion to the OpenAI-style requests the other routes run, and Ollama's answers —
one JSON object, or newline-delimited JSON objects when streaming (``stream`` defaults to true).

``options`` carry the sampling settings (``temperature``, ``top_p``, ``top_k``, ``min_p``,
``typical_p``, ``repeat_penalty``, ``repeat_last_n``, ``presence_penalty``, ``frequency_penalty``,
``mirostat*``, ``seed``, ``stop``, ``num_predict``); load-time options (``num_ctx``, ``num_gpu`` …)
are fixed when the server starts and ignored here. ``format`` is ``"json"`` or a JSON schema.
Durations are nanoseconds; errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from ..chat import ChatDelta, ChatMessage
from ..core import Model
from .errors import APIError

__all__ = [
    "OLLAMA_VERSION",
    "ChatRequest",
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "ShowRequest",
    "chat_messages",
    "created_at",
    "delta_message",
    "done_fields",
    "message_object",
    "model_details",
    "model_entry",
    "model_info",
    "model_name",
    "modified_at",
    "parse_body",
    "request_fields",
    "tool_calls_of",
    "validation_message",
    "version",
]

#: the Ollama API version this server speaks (clients check it for features); ours follows it
OLLAMA_VERSION = "0.12.0"

# Ollama option → request field (the rest of the sampling fields keep their names)
_OPTION_FIELDS = {
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "seed",
    "stop",
}


_M = TypeVar("_M", bound=BaseModel)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Generating(_Open):
    model: str = Field(min_length=1)
    options: dict[str, Any] | None = None
    format: str | dict[str, Any] | None = None
    stream: bool = True
    think: bool | str | None = None
    keep_alive: float | str | None = None


class ChatRequest(_Generating):
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generating):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class EmbedRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = True
    options: dict[str, Any] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    keep_alive: float | str | None = None


class EmbeddingsRequest(_Open):
    model: str = Field(min_length=1)
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ShowRequest(_Open):
    model: str | None = None
    name: str | None = None  # the older field name
    verbose: bool = False


def parse_body(raw: bytes, cls: type[_M]) -> _M:
    """The request body → ``cls``; APIError(400) on malformed JSON or invalid fields."""
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise APIError(400, f"invalid JSON in the request body: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise APIError(400, validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """The first problem of a failed validation, as ``loc: message``."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = ".".join(str(x) for x in first["loc"])
    msg = "field required" if first["type"] == "missing" else first["msg"]
    return f"{loc}: {msg}" if loc else msg


def model_name(name: str) -> str:
    """A client's model name without Ollama's default ``:latest`` tag."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


def created_at() -> str:
    """Now, as Ollama writes it (RFC 3339, UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------
# requests → OpenAI-style fields
# ------------------------------------------------------------------------------------------------


def request_fields(
    options: Mapping[str, Any] | None, fmt: str | Mapping[str, Any] | None, think: Any
) -> dict[str, Any]:
    """The OpenAI-style request fields for Ollama's ``options``, ``format`` and ``think``."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key in _OPTION_FIELDS:
            out[key] = value
        elif key == "num_predict":
            if not isinstance(value, int) or isinstance(value, bool):
                raise APIError(400, "options.num_predict must be an integer")
            out["max_tokens"] = None if value < 0 else value
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, Mapping):
        out["response_format"] = {"type": "json_object", "schema": dict(fmt)}
    elif fmt not in (None, ""):
        raise APIError(400, f"format must be 'json' or a JSON schema, not {fmt!r}")
    if think is False:
        out["reasoning_format"] = "none"
    elif think is not None:
        out["reasoning_format"] = "auto"
    return out


def _image_url(data: str) -> str:
    """A base64 image (Ollama's ``images``) → a data URL (its media type sniffed from the bytes)."""
    if data.startswith("data:"):
        return data
    kinds = {"iVBOR": "image/png", "/9j/": "image/jpeg", "R0lG": "image/gif", "UklGR": "image/webp"}
    mime = next((m for prefix, m in kinds.items() if data.startswith(prefix)), "image/png")
    return f"data:{mime};base64,{data}"


def _with_images(text: str, images: Sequence[Any] | None) -> str | list[dict[str, Any]]:
    if not images:
        return text
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": _image_url(str(img))}} for img in images
    ]
    if text:
        parts.append({"type": "text", "text": text})
    return parts


def chat_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ollama messages → OpenAI chat messages (``images``, ``thinking``, ``tool_name`` and tool
    calls with object arguments)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise APIError(400, f"messages.{i} must be an object")
        role = m.get("role")
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise APIError(400, f"messages.{i}.content must be a string")
        msg: dict[str, Any] = {"role": role, "content": _with_images(content, m.get("images"))}
        if role == "assistant":
            if isinstance(m.get("thinking"), str) and m["thinking"]:
                msg["reasoning_content"] = m["thinking"]
            calls = m.get("tool_calls")
            if calls:
                msg["tool_calls"] = [
                    {
                        **({"id": c["id"]} if isinstance(c, Mapping) and c.get("id") else {}),
                        "type": "function",
                        "function": c.get("function") if isinstance(c, Mapping) else c,
                    }
                    for c in calls
                ]
                if not content:
                    msg["content"] = None
        elif role == "tool" and isinstance(m.get("tool_name"), str):
            msg["name"] = m["tool_name"]
        out.append(msg)
    return out


# ------------------------------------------------------------------------------------------------
# answers
# ------------------------------------------------------------------------------------------------


def _arguments(text: str) -> Any:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def tool_calls_of(calls: Sequence[Any], start: int = 0) -> list[dict[str, Any]]:
    """Tool calls (``.id``, ``.name``, ``.arguments`` JSON text) → Ollama's (arguments as an object)."""
    return [
        {"id": c.id, "function": {"index": start + k, "name": c.name, "arguments": _arguments(c.arguments)}}
        for k, c in enumerate(calls)
    ]


def message_object(msg: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": msg.content or ""}
    if msg.reasoning_content:
        out["thinking"] = msg.reasoning_content
    if msg.tool_calls:
        out["tool_calls"] = tool_calls_of(msg.tool_calls)
    return out


def delta_message(d: ChatDelta) -> dict[str, Any] | None:
    """One streamed chat delta → the ``message`` of a chunk (None if it carries nothing)."""
    out: dict[str, Any] = {"role": "assistant", "content": d.content or ""}
    if d.reasoning_content:
        out["thinking"] = d.reasoning_content
    if d.tool_calls:
        out["tool_calls"] = [
            {
                "id": t.id,
                "function": {"index": t.index, "name": t.name or "", "arguments": _arguments(t.arguments)},
            }
            for t in d.tool_calls
        ]
    if not d.content and not d.reasoning_content and not d.tool_calls:
        return None
    return out


def done_fields(
    finish_reason: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    prompt_ms: float,
    generation_ms: float,
    total_ns: int,
) -> dict[str, Any]:
    """The fields of the last object: ``done``, ``done_reason`` and the counts and durations (ns)."""
    return {
        "done": True,
        "done_reason": "length" if finish_reason == "length" else "stop",
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": int(prompt_ms * 1e6),
        "eval_count": completion_tokens,
        "eval_duration": int(generation_ms * 1e6),
    }


def model_details(model: Model) -> dict[str, Any]:
    arch = model.architecture
    size = model.meta("general.size_label") or _params_label(model.n_params)
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": size,
        "quantization_level": model.ftype,
    }


def _params_label(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}".replace(".0", "")
    return str(n)


def _digest(model: Model) -> str:
    """A stable identifier of the model file (sha256 of its path, size and modification time — not
    of its contents, which would mean reading gigabytes)."""
    st = model.path.stat()
    key = f"{model.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()


def modified_at(model: Model) -> str:
    mtime = datetime.datetime.fromtimestamp(model.path.stat().st_mtime, datetime.timezone.utc)
    return mtime.isoformat().replace("+00:00", "Z")


def model_entry(model: Model, alias: str) -> dict[str, Any]:
    """One model of ``/api/tags`` (``name`` carries Ollama's ``:latest`` tag)."""
    name = alias if ":" in alias else f"{alias}:latest"
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at(model),
        "size": model.size,
        "digest": _digest(model),
        "details": model_details(model),
    }


def _typed(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    if value in ("true", "false"):
        return value == "true"
    return value


def model_info(model: Model) -> dict[str, Any]:
    """``/api/show``'s ``model_info``: the GGUF metadata (numbers typed), without the template."""
    info = {k: _typed(v) for k, v in model.metadata.items() if k != "tokenizer.chat_template"}
    info["general.parameter_count"] = model.n_params
    return info


def version() -> dict[str, Any]:
    return {"version": OLLAMA_VERSION, "llamabind": __version__}
