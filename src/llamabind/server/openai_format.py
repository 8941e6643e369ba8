"""OpenAI wire formats of the chat engine's plain data: the engines return dataclasses, the server
decides how they look on the wire (chat completion ``message``, chunk ``delta``, ``tool_calls``)."""

from __future__ import annotations

from typing import Any

from ..chat import ChatDelta, ChatMessage, ToolCall, ToolCallDelta

__all__ = ["openai_delta", "openai_message", "openai_tool_call", "openai_tool_call_delta"]


def openai_tool_call(call: ToolCall) -> dict[str, Any]:
    """The ``tool_calls`` entry of an OpenAI chat completion message."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def openai_tool_call_delta(delta: ToolCallDelta) -> dict[str, Any]:
    """The ``tool_calls`` entry of a chunk's ``delta``: ``id``/``type``/``name`` only when they come."""
    out: dict[str, Any] = {"index": delta.index}
    fn: dict[str, Any] = {}
    if delta.id is not None:
        out["id"] = delta.id
        out["type"] = "function"
    if delta.name is not None:
        fn["name"] = delta.name
    fn["arguments"] = delta.arguments
    out["function"] = fn
    return out


def openai_delta(delta: ChatDelta) -> dict[str, Any]:
    """The ``delta`` object of a ``chat.completion.chunk`` choice."""
    out: dict[str, Any] = {}
    if delta.content is not None:
        out["content"] = delta.content
    if delta.reasoning_content is not None:
        out["reasoning_content"] = delta.reasoning_content
    if delta.tool_calls:
        out["tool_calls"] = [openai_tool_call_delta(t) for t in delta.tool_calls]
    if delta.schema_errors:
        out["schema_errors"] = list(delta.schema_errors)
    return out


def openai_message(message: ChatMessage) -> dict[str, Any]:
    """The ``message`` object of a chat completion choice."""
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.reasoning_content is not None:
        out["reasoning_content"] = message.reasoning_content
    if message.schema_errors:
        out["schema_errors"] = list(message.schema_errors)
    if message.tool_calls:
        out["tool_calls"] = [openai_tool_call(c) for c in message.tool_calls]
    return out
