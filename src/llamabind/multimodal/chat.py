"""Chat with images and audio: OpenAI-style content parts through the model's chat template.

    prompt = build_chat_prompt(model, mtmd, messages, resolver=MediaResolver())
    for chunk in MediaGenerator(ctx, mtmd).stream(prompt, max_tokens=128): ...

or in one call: :func:`chat_stream` / :func:`chat`. Content parts: ``text``, ``image_url`` (data
URLs, uploaded file ids, remote URLs when the resolver allows them), ``input_audio`` (base64 WAV /
MP3 / FLAC), and ``image_file`` / ``file`` parts carrying a ``file_id``. Each media part becomes
the projector's marker in the rendered prompt, then libmtmd replaces the marker with the media's
embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..chat import ChatTemplate, extract_media, render_chat, select_chat_template
from ..core import Model
from ..generation.generator import GenerationChunk, GenerationResult
from .context import Bitmap, MediaPrompt, MtmdContext, require_projector
from .errors import MediaError
from .generator import MediaGenerator
from .media import MediaResolver, canonicalize_media_parts

__all__ = [
    "ChatMedia",
    "build_chat_prompt",
    "chat",
    "chat_stream",
    "load_chat_media",
    "render_media_chat",
    "tokenize_chat_media",
]


class ChatMedia(list[Bitmap]):
    """The decoded media of a chat request, in marker order (closes them all on ``close()``)."""

    def close(self) -> None:
        for b in self:
            b.close()


def _token_text(model: Model, token: int | None) -> str:
    if token is None:
        return ""
    try:
        return model.vocab.token_text(token)
    except Exception:
        return ""


def render_media_chat(
    model: Model,
    mtmd: MtmdContext | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    template: ChatTemplate | None = None,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **template_vars: Any,
) -> tuple[str, list[Any], bool]:
    """(prompt text with markers, media parts in marker order, add_special) for ``messages``.

    A text-only model (``mtmd`` None) given media raises :class:`UnsupportedError`; media of a
    kind the projector cannot take raises :class:`MediaError`.
    """
    msgs = canonicalize_media_parts(messages)
    parts = extract_media(msgs)
    if parts:
        require_projector(mtmd, [p.kind for p in parts], model.name)
    tpl = template or select_chat_template(model.metadata, use_tools=bool(tools))
    bos = _token_text(model, model.vocab.bos) if model.vocab.add_bos else ""
    eos = _token_text(model, model.vocab.eos)
    text = render_chat(
        tpl,
        msgs,
        bos_token=bos,
        eos_token=eos,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        media_marker=mtmd.marker if mtmd is not None else None,
        **template_vars,
    )
    # the template may already start with the BOS text: do not add a second one
    add_special = not (bos and text.startswith(bos))
    return text, parts, add_special


def load_chat_media(mtmd: MtmdContext, parts: Sequence[Any], resolver: MediaResolver) -> ChatMedia:
    """Resolve and decode media parts (see :func:`render_media_chat`) into bitmaps."""
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


def tokenize_chat_media(
    mtmd: MtmdContext,
    prompt_text: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    resolver: MediaResolver | None = None,
    add_special: bool = True,
) -> MediaPrompt:
    """For a server that renders the chat itself: ``prompt_text`` (rendered with
    ``media_marker=mtmd.marker`` from :func:`canonicalize_media_parts` ``(messages)``) plus the
    media of ``messages``, resolved, decoded and tokenized. Blocking (remote fetches, decoding):
    run it in a worker thread from async code."""
    parts = extract_media(canonicalize_media_parts(messages))
    media = load_chat_media(mtmd, parts, resolver or MediaResolver())
    try:
        return mtmd.tokenize(prompt_text, media, add_special=add_special, parse_special=True)
    finally:
        media.close()


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
    text, parts, add_special = render_media_chat(
        model,
        mtmd,
        messages,
        template=template,
        add_generation_prompt=add_generation_prompt,
        tools=tools,
        **template_vars,
    )
    if mtmd is None:
        return model.tokenize(text, add_special=add_special, parse_special=True)
    media = load_chat_media(mtmd, parts, resolver or MediaResolver())
    try:
        return mtmd.tokenize(text, media, add_special=add_special, parse_special=True)
    finally:
        media.close()  # the chunks hold their own copy of the preprocessed media


def chat_stream(
    generator: MediaGenerator,
    messages: Sequence[Mapping[str, Any]],
    *,
    resolver: MediaResolver | None = None,
    template: ChatTemplate | None = None,
    **generate: Any,
) -> Iterator[GenerationChunk]:
    """Stream the assistant's reply to ``messages`` (``generate``: max_tokens, sampling, stop, …)."""
    prompt = build_chat_prompt(
        generator.model, generator.mtmd, messages, resolver=resolver, template=template
    )
    try:
        yield from generator.stream(prompt, add_special=False, parse_special=True, **generate)
    finally:
        if isinstance(prompt, MediaPrompt):
            prompt.close()


def chat(
    generator: MediaGenerator,
    messages: Sequence[Mapping[str, Any]],
    *,
    resolver: MediaResolver | None = None,
    template: ChatTemplate | None = None,
    **generate: Any,
) -> GenerationResult:
    """The assistant's whole reply to ``messages`` (see :func:`chat_stream`)."""
    prompt = build_chat_prompt(
        generator.model, generator.mtmd, messages, resolver=resolver, template=template
    )
    try:
        return generator.complete(prompt, add_special=False, parse_special=True, **generate)
    finally:
        if isinstance(prompt, MediaPrompt):
            prompt.close()
