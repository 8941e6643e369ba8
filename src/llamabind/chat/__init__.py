"""Chat: the model's Jinja chat template, message normalisation, tool calls and reasoning.

Layer 3 (engines); pure Python except :meth:`ChatTemplate.builtin`, which uses llama.cpp's
built-in templates through ``llamabind._native.chat``.
"""

from __future__ import annotations

from .messages import ROLES, MediaPart, MessageError, extract_media, normalize_messages
from .reasoning import (
    DEFAULT_REASONING_TAGS,
    KNOWN_REASONING_TAGS,
    ReasoningDelta,
    ReasoningResult,
    ReasoningStreamSplitter,
    detect_reasoning_tags,
    prompt_opens_reasoning,
    split_reasoning,
)
from .template import (
    CHAT_TEMPLATE_KEY,
    DEFAULT_CHATML_TEMPLATE,
    ChatTemplate,
    ChatTemplateError,
    chat_template_variants,
    render_chat,
    select_chat_template,
)
from .tools import (
    StreamEvent,
    ToolCall,
    ToolCallFormat,
    ToolCallResult,
    ToolCallStreamParser,
    ToolChoiceError,
    ToolGrammar,
    detect_tool_call_format,
    new_tool_call_id,
    parse_tool_calls,
    tool_call_grammar,
)

__all__ = [
    "CHAT_TEMPLATE_KEY",
    "DEFAULT_CHATML_TEMPLATE",
    "DEFAULT_REASONING_TAGS",
    "KNOWN_REASONING_TAGS",
    "ROLES",
    "ChatTemplate",
    "ChatTemplateError",
    "MediaPart",
    "MessageError",
    "ReasoningDelta",
    "ReasoningResult",
    "ReasoningStreamSplitter",
    "StreamEvent",
    "ToolCall",
    "ToolCallFormat",
    "ToolCallResult",
    "ToolCallStreamParser",
    "ToolChoiceError",
    "ToolGrammar",
    "chat_template_variants",
    "detect_reasoning_tags",
    "detect_tool_call_format",
    "extract_media",
    "new_tool_call_id",
    "normalize_messages",
    "parse_tool_calls",
    "prompt_opens_reasoning",
    "render_chat",
    "select_chat_template",
    "split_reasoning",
    "tool_call_grammar",
]
