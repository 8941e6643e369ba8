"""Multimodal input (images and audio) through llama.cpp's libmtmd.

Layer 3 (engines). :class:`MtmdContext` loads a projector (``mmproj``) for a text model, decodes
media into :class:`Bitmap` objects, tokenizes prompts with media markers into a
:class:`MediaPrompt` and evaluates it into a context sequence; :class:`MediaGenerator` generates
from such prompts with KV prefix reuse; :mod:`.chat` renders OpenAI-style content parts through
the chat template; :mod:`.media` resolves data URLs, uploaded file ids and (when allowed)
remote URLs without SSRF.
"""

from __future__ import annotations

from .chat import (
    ChatMedia,
    build_chat_prompt,
    chat,
    chat_stream,
    load_chat_media,
    render_media_chat,
    tokenize_chat_media,
)
from .context import (
    Bitmap,
    MediaChunk,
    MediaPrompt,
    MtmdContext,
    ProjectorInfo,
    default_marker,
    find_mmproj,
    media_keys,
    projector_info,
    require_projector,
)
from .errors import MediaError, MultimodalError, ProjectorError
from .generator import MediaGenerator
from .media import (
    MediaPolicy,
    MediaResolver,
    ResolvedMedia,
    canonicalize_media_parts,
    decode_data_url,
    fetch_remote,
    is_public_address,
    media_hash,
)
from .sniff import MediaInfo, sniff

__all__ = [
    "Bitmap",
    "ChatMedia",
    "MediaChunk",
    "MediaError",
    "MediaGenerator",
    "MediaInfo",
    "MediaPolicy",
    "MediaPrompt",
    "MediaResolver",
    "MtmdContext",
    "MultimodalError",
    "ProjectorError",
    "ProjectorInfo",
    "ResolvedMedia",
    "build_chat_prompt",
    "canonicalize_media_parts",
    "chat",
    "chat_stream",
    "decode_data_url",
    "default_marker",
    "fetch_remote",
    "find_mmproj",
    "is_public_address",
    "load_chat_media",
    "media_hash",
    "media_keys",
    "projector_info",
    "render_media_chat",
    "require_projector",
    "sniff",
    "tokenize_chat_media",
]
