"""Normalise OpenAI-style chat messages into the dicts Hugging Face chat templates expect.

* ``content`` may be a string, ``None`` (assistant messages with tool calls) or a list of parts;
  text parts are joined, image/audio parts become a caller-chosen marker string (the multimodal
  layer later replaces each marker with the media's embeddings, in the order of
  :func:`extract_media`).
* assistant ``tool_calls`` keep the OpenAI shape ``{"id", "type": "function", "function": {"name",
  "arguments"}}`` but ``arguments`` (a JSON string on the wire) becomes a dict, as Hugging Face
  templates expect (``tool_call.arguments | tojson``).
* ``tool`` messages keep ``tool_call_id``; when they lack ``name`` it is filled in from the
  assistant call they answer (several templates print the function name).
* ``developer`` becomes ``system``; the legacy ``function`` role becomes ``tool``.

Invalid input raises :class:`MessageError`, a ``ValueError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ChatRequestError, MessageError

__all__ = [
    "ROLES",
    "ChatRequestError",
    "MediaPart",
    "MessageError",
    "extract_media",
    "normalize_messages",
]

#: Roles accepted on input (``developer`` and ``function`` are rewritten, see the module doc).
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_AUDIO_PARTS = frozenset({"input_audio", "audio"})


@dataclass(frozen=True)
class MediaPart:
    """An image or audio content part, in the order its marker appears in the rendered prompt."""

    kind: Literal["image", "audio"]
    message_index: int
    #: Image URL (``https://…`` or a ``data:`` URL); None for audio.
    url: str | None = None
    #: Base64 audio data; None for images.
    data: str | None = None
    #: Audio format (``wav``, ``mp3``); None for images.
    format: str | None = None


def _part_text(part: Mapping[str, Any], index: int, p: int) -> str:
    for key in ("text", "refusal"):
        value = part.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise MessageError(f"content[{p}].{key} must be a string", index)
            return value
    raise MessageError(f"content[{p}] is a text part without 'text'", index)


def _media_part(part: Mapping[str, Any], kind: str, index: int, p: int) -> MediaPart:
    if kind == "image":
        ref = part.get("image_url", part.get("image"))
        if isinstance(ref, Mapping):
            ref = ref.get("url")
        if not isinstance(ref, str) or not ref:
            raise MessageError(f"content[{p}] is an image part without a URL string", index)
        return MediaPart("image", index, url=ref)
    audio = part.get("input_audio", part.get("audio"))
    if not isinstance(audio, Mapping) or not isinstance(audio.get("data"), str):
        raise MessageError(f"content[{p}] is an audio part without input_audio.data", index)
    fmt = audio.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise MessageError(f"content[{p}].input_audio.format must be a string", index)
    return MediaPart("audio", index, data=audio["data"], format=fmt)


def _part_kind(part: Any, index: int, p: int) -> str:
    if isinstance(part, str):
        return "str"
    if not isinstance(part, Mapping):
        raise MessageError(f"content[{p}] must be an object with a 'type'", index)
    ptype = part.get("type")
    if ptype is None:
        ptype = "text" if "text" in part else None
    if ptype in _TEXT_PARTS or ptype == "refusal":
        return "text"
    if ptype in _IMAGE_PARTS:
        return "image"
    if ptype in _AUDIO_PARTS:
        return "audio"
    raise MessageError(f"content[{p}] has unsupported part type {ptype!r}", index)


def _content_text(
    content: Any,
    index: int,
    *,
    media_marker: str | None,
    separator: str,
    media: list[MediaPart] | None,
) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence) or isinstance(content, (bytes, bytearray)):
        raise MessageError(
            f"content must be a string, null or a list of parts, not {type(content).__name__}", index
        )
    pieces: list[str] = []
    for p, part in enumerate(content):
        kind = _part_kind(part, index, p)
        if kind == "str":
            pieces.append(part)
        elif kind == "text":
            pieces.append(_part_text(part, index, p))
        else:
            item = _media_part(part, kind, index, p)
            if media is not None:
                media.append(item)
            if media_marker is None:
                raise MessageError(
                    f"content[{p}] is an {kind} part, but no media marker was given "
                    "(this model/pipeline has no multimodal support)",
                    index,
                )
            pieces.append(media_marker)
    return separator.join(pieces)


def _arguments(value: Any, index: int, c: int, as_dict: bool) -> Any:
    if value is None:
        return {} if as_dict else "{}"
    if isinstance(value, Mapping):
        return dict(value) if as_dict else json.dumps(value, ensure_ascii=False)
    if not isinstance(value, str):
        raise MessageError(f"tool_calls[{c}].function.arguments must be a JSON string or an object", index)
    if not as_dict:
        return value
    try:
        parsed = json.loads(value) if value.strip() else {}
    except ValueError:
        # A malformed earlier call (echoed back by the client): keep the text rather than fail.
        return value
    return parsed if isinstance(parsed, dict) else value


def _tool_calls(raw: Any, index: int, as_dict: bool) -> list[dict[str, Any]]:
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes, bytearray)):
        raise MessageError("tool_calls must be a list", index)
    calls: list[dict[str, Any]] = []
    for c, call in enumerate(raw):
        if not isinstance(call, Mapping):
            raise MessageError(f"tool_calls[{c}] must be an object", index)
        ctype = call.get("type", "function")
        if ctype != "function":
            raise MessageError(f"tool_calls[{c}].type must be 'function', not {ctype!r}", index)
        fn = call.get("function")
        if fn is None and "name" in call:
            fn = call  # tolerate the flat {"name", "arguments"} shape
        if not isinstance(fn, Mapping):
            raise MessageError(f"tool_calls[{c}].function must be an object", index)
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise MessageError(f"tool_calls[{c}].function.name must be a non-empty string", index)
        out: dict[str, Any] = {}
        call_id = call.get("id")
        if call_id is not None:
            if not isinstance(call_id, str):
                raise MessageError(f"tool_calls[{c}].id must be a string", index)
            out["id"] = call_id
        out["type"] = "function"
        out["function"] = {"name": name, "arguments": _arguments(fn.get("arguments"), index, c, as_dict)}
        calls.append(out)
    return calls


def _normalize(
    messages: Sequence[Mapping[str, Any]],
    *,
    media_marker: str | None,
    part_separator: str,
    arguments_as_dict: bool,
    media: list[MediaPart] | None,
) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise MessageError("messages must be a list of message objects")
    call_names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise MessageError(f"must be an object, not {type(message).__name__}", index)
        role = message.get("role")
        if not isinstance(role, str):
            raise MessageError("'role' is required and must be a string", index)
        if role not in ROLES:
            raise MessageError(f"unknown role {role!r} (expected one of {', '.join(sorted(ROLES))})", index)
        result: dict[str, Any] = {k: v for k, v in message.items() if isinstance(k, str)}
        if role == "developer":
            role = "system"
        elif role == "function":
            role = "tool"
        result["role"] = role

        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise MessageError("'name' must be a string", index)

        content = message.get("content")
        if content is None:
            if role not in ("assistant", "tool") and "content" not in message:
                raise MessageError(f"'content' is required for {role} messages", index)
            if role not in ("assistant", "tool"):
                raise MessageError(f"'content' of a {role} message must not be null", index)
            result["content"] = ""
        else:
            result["content"] = _content_text(
                content, index, media_marker=media_marker, separator=part_separator, media=media
            )

        if role == "assistant":
            raw_calls = message.get("tool_calls")
            if raw_calls is not None:
                calls = _tool_calls(raw_calls, index, arguments_as_dict)
                if calls:
                    result["tool_calls"] = calls
                    for call in calls:
                        if "id" in call:
                            call_names[call["id"]] = call["function"]["name"]
                else:
                    result.pop("tool_calls", None)
            legacy = message.get("function_call")
            if legacy is not None and "tool_calls" not in result:
                result["tool_calls"] = _tool_calls([{"function": legacy}], index, arguments_as_dict)
            result.pop("function_call", None)
        elif "tool_calls" in result:
            raise MessageError(f"only assistant messages may carry tool_calls, not {role}", index)

        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id is not None and not isinstance(call_id, str):
                raise MessageError("'tool_call_id' must be a string", index)
            if name is None and call_id is not None and call_id in call_names:
                result["name"] = call_names[call_id]
        out.append(result)
    return out


def normalize_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    media_marker: str | None = None,
    part_separator: str = "\n",
    arguments_as_dict: bool = True,
) -> list[dict[str, Any]]:
    """Template-ready copies of OpenAI-style ``messages`` (see the module doc for the rules).

    ``media_marker``: the string each image/audio part becomes; without one, media parts are an
    error. ``part_separator`` joins the parts of list content. ``arguments_as_dict=False`` keeps
    tool-call arguments as JSON strings, for templates that print them verbatim.
    """
    return _normalize(
        messages,
        media_marker=media_marker,
        part_separator=part_separator,
        arguments_as_dict=arguments_as_dict,
        media=None,
    )


def extract_media(messages: Sequence[Mapping[str, Any]]) -> list[MediaPart]:
    """The image/audio parts of ``messages``, in the order their markers appear after normalisation."""
    media: list[MediaPart] = []
    _normalize(messages, media_marker="", part_separator="", arguments_as_dict=False, media=media)
    return media
