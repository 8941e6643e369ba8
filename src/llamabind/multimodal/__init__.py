"""Multimodal input (images and audio) through llama.cpp's libmtmd.

Layer 3 (engines). :class:`MtmdContext` loads a projector (``mmproj``) for a text model, decodes
media into :class:`Bitmap` objects, tokenizes prompts with media markers into a
:class:`MediaPrompt` and evaluates it into a context sequence; :class:`MediaGenerator` generates
from such prompts with KV prefix reuse (chat with media: :func:`llamabind.chat.chat` on a
MediaGenerator); :mod:`.media_chat` resolves, decodes and tokenizes the media of a prepared chat; :mod:`.media` resolves data URLs, uploaded file ids and (when allowed)
remote URLs without SSRF.
"""

from __future__ import annotations

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
from .errors import MediaError, MultimodalError, NoProjectorError, ProjectorError
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
from .media_chat import (
    ChatMedia,
    build_chat_prompt,
    load_chat_media,
    prepare_media_chat,
    render_media_chat,
    tokenize_prepared_media,
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
    "NoProjectorError",
    "ProjectorError",
    "ProjectorInfo",
    "ResolvedMedia",
    "build_chat_prompt",
    "canonicalize_media_parts",
    "decode_data_url",
    "default_marker",
    "fetch_remote",
    "find_mmproj",
    "is_public_address",
    "load_chat_media",
    "media_hash",
    "media_keys",
    "prepare_media_chat",
    "projector_info",
    "render_media_chat",
    "require_projector",
    "sniff",
    "tokenize_prepared_media",
]
