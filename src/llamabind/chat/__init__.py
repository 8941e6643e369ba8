"""Chat: one home for everything between OpenAI-style messages and an assistant message.

* :mod:`.template` — the model's Jinja chat template (:class:`ChatTemplate`, :func:`render_chat`);
  :mod:`.messages` — message normalisation, media parts, request errors.
* :mod:`.formatter` — :class:`ChatFormatter`: render + tokenize a request (the one BOS decision)
  and work out its sampler constraints → :class:`PreparedChat`; :mod:`.response_format` — JSON
  ``response_format`` → grammar.
* :mod:`.tool_calls` (types, format detection), :mod:`.tool_call_parser` (streaming parser),
  :mod:`.tool_call_grammar` (grammars forcing calls); :mod:`.reasoning` — ``<think>`` blocks.
* :mod:`.stream_parser` — generated text → :class:`ChatDelta` s / :class:`ChatMessage`.
* :mod:`.session` — :func:`chat` / :func:`chat_stream`: one assistant turn on a context (with
  images and audio on a :class:`~llamabind.multimodal.MediaGenerator`).

Layer 3 (engines); pure Python except :meth:`ChatTemplate.builtin`, which uses llama.cpp's
built-in templates through ``llamabind._native.chat``.
"""

from __future__ import annotations

from .formatter import ChatFormatter, PreparedChat, model_chat_template
from .messages import ROLES, ChatRequestError, MediaPart, MessageError, extract_media, normalize_messages
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
from .response_format import (
    closed_schema,
    response_format_grammar,
    response_format_schema,
    tool_arguments_gbnf,
)
from .session import ChatChunk, ChatResult, chat, chat_stream
from .stream_parser import ChatDelta, ChatMessage, ChatStreamParser, ToolCallDelta
from .template import (
    CHAT_TEMPLATE_KEY,
    DEFAULT_CHATML_TEMPLATE,
    ChatTemplate,
    ChatTemplateError,
    chat_template_variants,
    render_chat,
    select_chat_template,
)
from .tool_call_grammar import ToolGrammar, tool_call_grammar
from .tool_call_parser import StreamEvent, ToolCallStreamParser, parse_tool_calls
from .tool_calls import (
    ToolCall,
    ToolCallFormat,
    ToolCallResult,
    ToolChoiceError,
    detect_tool_call_format,
    new_tool_call_id,
)

__all__ = [
    "CHAT_TEMPLATE_KEY",
    "DEFAULT_CHATML_TEMPLATE",
    "DEFAULT_REASONING_TAGS",
    "KNOWN_REASONING_TAGS",
    "ROLES",
    "ChatChunk",
    "ChatDelta",
    "ChatFormatter",
    "ChatMessage",
    "ChatRequestError",
    "ChatResult",
    "ChatStreamParser",
    "ChatTemplate",
    "ChatTemplateError",
    "MediaPart",
    "MessageError",
    "PreparedChat",
    "ReasoningDelta",
    "ReasoningResult",
    "ReasoningStreamSplitter",
    "StreamEvent",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFormat",
    "ToolCallResult",
    "ToolCallStreamParser",
    "ToolChoiceError",
    "ToolGrammar",
    "chat",
    "chat_stream",
    "chat_template_variants",
    "closed_schema",
    "detect_reasoning_tags",
    "detect_tool_call_format",
    "extract_media",
    "model_chat_template",
    "new_tool_call_id",
    "normalize_messages",
    "parse_tool_calls",
    "prompt_opens_reasoning",
    "render_chat",
    "response_format_grammar",
    "response_format_schema",
    "select_chat_template",
    "split_reasoning",
    "tool_arguments_gbnf",
    "tool_call_grammar",
]
