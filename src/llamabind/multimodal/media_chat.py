"""Chat with images and audio: the media side of a chat request.

The chat itself goes through :func:`llamabind.chat.chat` / :func:`llamabind.chat.chat_stream`
(give them a :class:`MediaGenerator`); this module resolves, decodes and tokenizes the media of a
prompt prepared by :class:`~llamabind.chat.ChatFormatter`::

    prepared = ChatFormatter.for_model(model).prepare(msgs, media_marker=mtmd.marker, tokenize=False)
    prompt = tokenize_prepared_media(mtmd, prepared, extract_media(msgs), MediaResolver())

or in one call :func:`build_chat_prompt`. Content parts: ``text``, ``image_url`` (data URLs,
uploaded file ids, remote URLs when the resolver allows them), ``input_audio`` (base64 WAV / MP3 /
FLAC), and ``image_file`` / ``file`` parts carrying a ``file_id``
(:func:`~.media.canonicalize_media_parts`). Each media part becomes the projector's marker in the
rendered prompt, then libmtmd replaces the marker with the media's embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..chat.formatter import ChatFormatter, PreparedChat
from ..chat.messages import MediaPart, extract_media
from ..chat.template import ChatTemplate
from ..core import Model
from .context import Bitmap, MediaPrompt, MtmdContext, require_projector
from .errors import MediaError
from .media import MediaResolver, canonicalize_media_parts

__all__ = [
    "ChatMedia",
    "build_chat_prompt",
    "load_chat_media",
    "prepare_media_chat",
    "render_media_chat",
    "tokenize_prepared_media",
]


class ChatMedia(list[Bitmap]):
    """The decoded media of a chat request, in marker order (closes them all on ``close()``)."""

    def close(self) -> None:
        for b in self:
            b.close()


def prepare_media_chat(
    model: Model,
    mtmd: MtmdContext | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    template: ChatTemplate | str | None = None,
    formatter: ChatFormatter | None = None,
    tokenize: bool | None = None,
    **prepare: Any,
) -> tuple[PreparedChat, list[MediaPart]]:
    """Canonicalize ``messages`` once, check their media against the projector and prepare them
    (:meth:`ChatFormatter.prepare` keyword arguments): (prepared chat, media parts in marker order).

    ``formatter``: the one to prepare with (a server's, set up once); by default the model's
    cached formatter for ``template``.

    ``tokenize=None``: tokenize only a prompt without media (one with media is tokenized by
    :func:`tokenize_prepared_media`; ``tokens`` stays empty). A text-only model (``mtmd`` None) given media raises
    :class:`~llamabind.errors.UnsupportedError`; media of a kind the projector cannot take raise
    :class:`MediaError`.
    """
    msgs: Sequence[Mapping[str, Any]] = messages
    if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)):
        msgs = canonicalize_media_parts(messages)  # else prepare() rejects it
    parts = extract_media(msgs) if msgs else []
    if parts:
        require_projector(mtmd, [p.kind for p in parts], model.name)
    if formatter is None:
        formatter = ChatFormatter.for_model(model, template)
    elif template is not None:
        raise TypeError("prepare_media_chat: pass either formatter or template, not both")
    prepared = formatter.prepare(
        msgs,
        media_marker=mtmd.marker if mtmd is not None else None,
        tokenize=not parts if tokenize is None else tokenize,
        **prepare,
    )
    return prepared, parts


def render_media_chat(
    model: Model,
    mtmd: MtmdContext | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    template: ChatTemplate | None = None,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **template_vars: Any,
) -> tuple[str, list[MediaPart], bool]:
    """(prompt text with markers, media parts in marker order, add_special) for ``messages``;
    ``add_special`` is the formatter's BOS decision (see :func:`prepare_media_chat`)."""
    prepared, parts = prepare_media_chat(
        model,
        mtmd,
        messages,
        template=template,
        tokenize=False,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        template_kwargs=template_vars,
    )
    return prepared.prompt, parts, prepared.add_bos


def load_chat_media(mtmd: MtmdContext, parts: Sequence[Any], resolver: MediaResolver) -> ChatMedia:
    """Resolve and decode media parts (see :func:`prepare_media_chat`) into bitmaps."""
    out = ChatMedia()
    try:
        for i, part in enumerate(parts):
            resolved = resolver.resolve_part(part)
            if resolved.kind == "unknown":
                raise MediaError(
                    f"media #{i + 1} ({resolved.source}, {len(resolved.data)} bytes) is neither a supported "
                    "image (PNG, JPEG, GIF, BMP, WebP) nor audio (WAV, MP3, FLAC)",
                    status=415,
                )
            declared = getattr(part, "kind", None)
            if declared == "audio" and resolved.kind != "audio":
                raise MediaError(f"input_audio #{i + 1} holds {resolved.format} data, not audio", status=415)
            if (
                declared == "image"
                and resolved.kind != "image"
                and resolved.source not in ("file", "data-url")
            ):
                raise MediaError(f"image #{i + 1} holds {resolved.format} data, not an image", status=415)
            out.append(mtmd.media_from_bytes(resolved.data, resolved.kind))
    except BaseException:
        out.close()
        raise
    return out


def tokenize_prepared_media(
    mtmd: MtmdContext, prepared: PreparedChat, parts: Sequence[Any], resolver: MediaResolver
) -> MediaPrompt:
    """The prepared prompt (rendered with ``media_marker=mtmd.marker``) and its media ``parts``,
    resolved, decoded and tokenized once by libmtmd (BOS as the formatter decided). Blocking
    (remote fetches, decoding): run it in a worker thread from async code."""
    media = load_chat_media(mtmd, parts, resolver)
    try:
        return mtmd.tokenize(prepared.prompt, media, add_special=prepared.add_bos, parse_special=True)
    finally:
        media.close()  # the chunks hold their own copy of the preprocessed media


def build_chat_prompt(
    model: Model,
    mtmd: MtmdContext | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    resolver: MediaResolver | None = None,
    template: ChatTemplate | None = None,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **template_vars: Any,
) -> MediaPrompt | list[int]:
    """Render, resolve, decode and tokenize a chat request.

    Returns a :class:`MediaPrompt` when there is a projector, plain token ids otherwise (a
    text-only model given media raises :class:`~llamabind.errors.UnsupportedError`).
    """
    prepared, parts = prepare_media_chat(
        model,
        mtmd,
        messages,
        template=template,
        tokenize=mtmd is None,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        template_kwargs=template_vars,
    )
    if mtmd is None:
        return prepared.tokens
    return tokenize_prepared_media(mtmd, prepared, parts, resolver or MediaResolver())
