"""Library-level chat: :func:`chat` / :func:`chat_stream` — one assistant turn on a context.

The one chat entry point: it prepares the request with :class:`~.formatter.ChatFormatter`, generates
with a :class:`~llamabind.generation.generator.Generator` (KV prefix reuse across turns) and parses
the output with :class:`~.stream_parser.ChatStreamParser` (content, ``reasoning_content``, tool
calls). With a :class:`~llamabind.multimodal.MediaGenerator` the messages may carry images and
audio: the prepared prompt is tokenized once, by libmtmd, with the formatter's BOS decision.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core import Context
from ..generation.generator import GenerationChunk, Generator, Timings
from ..generation.logprobs import TokenLogprob
from ..generation.sampling import SamplingParams
from .stream_parser import ChatDelta, ChatMessage
from .template import ChatTemplate
from .tool_calls import ToolCall

if TYPE_CHECKING:
    from ..generation.draft import Drafter
    from ..multimodal.context import MediaPrompt
    from ..multimodal.media import MediaResolver

__all__ = ["ChatChunk", "ChatResult", "chat", "chat_stream"]


@dataclass(frozen=True)
class ChatChunk:
    """One step of :func:`chat_stream`: parsed deltas, the token ids and logprobs behind them;
    the last chunk carries ``finish_reason`` (``stop`` | ``length`` | ``tool_calls`` | ``cancelled``)."""

    deltas: tuple[ChatDelta, ...]
    tokens: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None
    #: on the last chunk: the grammar's document was closed before the budget ran out
    #: (``finish_reason`` "length"; see ``llamabind.generation.closing``)
    closed: bool = False

    @property
    def content(self) -> str:
        return "".join(d.content or "" for d in self.deltas)


@dataclass
class ChatResult:
    """A whole assistant turn from :func:`chat`."""

    message: ChatMessage
    tokens: list[int]
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    closed: bool = False  # see ChatChunk.closed

    @property
    def content(self) -> str | None:
        return self.message.content

    @property
    def reasoning_content(self) -> str | None:
        return self.message.reasoning_content

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls

    @property
    def finish_reason(self) -> str:
        return self.message.finish_reason


def _generator(target: Context | Generator) -> Generator:
    if isinstance(target, Generator):
        return target
    gen: Generator | None = getattr(target, "_lb_chat_generator", None)
    if gen is None:
        gen = Generator(target)
        target._lb_chat_generator = gen  # type: ignore[attr-defined]
    return gen


def chat_stream(
    target: Context | Generator,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
    response_format: Mapping[str, Any] | None = None,
    grammar: Any = None,
    template: ChatTemplate | str | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
    reasoning: bool | None = None,
    max_tokens: int | None = 256,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    logprobs: int | None = None,
    cancel: threading.Event | None = None,
    draft: Drafter | None = None,
    resolver: MediaResolver | None = None,
) -> Iterator[ChatChunk]:
    """Stream one assistant turn for ``messages`` on a context (or a :class:`Generator`).

    Repeated calls on the same context reuse the KV cache of the common prompt prefix (a growing
    conversation decodes only its new messages). ``draft``: a speculative drafter
    (``llamabind.speculative``), as for :meth:`Generator.stream`. ``reasoning=False`` keeps
    ``<think>`` blocks in the content. Messages with image / audio content parts need a
    :class:`~llamabind.multimodal.MediaGenerator` as ``target``; ``resolver`` resolves their
    references (default: data URLs only).
    """
    # multimodal imports the chat package (the formatter): import it when the chat runs
    from ..multimodal.generator import MediaGenerator
    from ..multimodal.media import MediaResolver
    from ..multimodal.media_chat import prepare_media_chat, tokenize_prepared_media

    gen = _generator(target)
    mtmd = gen.mtmd if isinstance(gen, MediaGenerator) else None
    prepared, parts = prepare_media_chat(
        gen.model,
        mtmd,
        messages,
        template=template,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        response_format=response_format,
        grammar=grammar,
        template_kwargs=template_kwargs,
        reasoning=reasoning,
    )
    media: MediaPrompt | None = None
    if parts:
        assert mtmd is not None
        media = tokenize_prepared_media(mtmd, prepared, parts, resolver or MediaResolver())
    parser = prepared.parser()
    options: dict[str, Any] = {
        "max_tokens": max_tokens,
        "sampling": prepared.sampling(sampling),
        "stop": stop,
        "logprobs": logprobs,
        "cancel": cancel,
        "render_special": prepared.render_special,
        "draft": draft,
    }
    stream: Iterator[GenerationChunk]
    if media is not None and isinstance(gen, MediaGenerator):
        stream = gen.stream(media, **options)
    else:
        stream = gen.stream(prepared.tokens, **options)
    try:
        for chunk in stream:
            deltas = parser.feed(chunk.text)
            if chunk.finish_reason is not None:
                tail, reason = parser.finish(chunk.finish_reason, closed=chunk.closed)
                yield ChatChunk(
                    tuple(deltas + tail), tuple(chunk.tokens), tuple(chunk.logprobs), reason, chunk.closed
                )
                return
            if deltas or chunk.tokens:
                yield ChatChunk(tuple(deltas), tuple(chunk.tokens), tuple(chunk.logprobs))
    finally:
        if media is not None:
            media.close()


def chat(
    target: Context | Generator,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
    response_format: Mapping[str, Any] | None = None,
    grammar: Any = None,
    template: ChatTemplate | str | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
    reasoning: bool | None = None,
    max_tokens: int | None = 256,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    logprobs: int | None = None,
    cancel: threading.Event | None = None,
    draft: Drafter | None = None,
    resolver: MediaResolver | None = None,
) -> ChatResult:
    """One assistant turn: content, ``reasoning_content``, parsed ``tool_calls`` and usage
    (the arguments of :func:`chat_stream`).

    >>> r = chat(ctx, [{"role": "user", "content": "Hi!"}], sampling=SamplingParams(temperature=0))
    >>> r.content, r.finish_reason
    """
    gen = _generator(target)
    content: list[str] = []
    reasoning_parts: list[str] = []
    calls: list[ToolCall] = []
    tokens: list[int] = []
    lps: list[TokenLogprob] = []
    finish = "stop"
    closed = False
    for chunk in chat_stream(
        gen,
        messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        response_format=response_format,
        grammar=grammar,
        template=template,
        template_kwargs=template_kwargs,
        reasoning=reasoning,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=stop,
        logprobs=logprobs,
        cancel=cancel,
        draft=draft,
        resolver=resolver,
    ):
        tokens.extend(chunk.tokens)
        lps.extend(chunk.logprobs)
        for d in chunk.deltas:
            if d.content:
                content.append(d.content)
            if d.reasoning_content:
                reasoning_parts.append(d.reasoning_content)
            for tc in d.tool_calls:
                if tc.id is not None and tc.name is not None:
                    calls.append(ToolCall(tc.name, tc.arguments, tc.id))
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
            closed = chunk.closed
    text: str | None = "".join(content)
    if calls and not text:
        text = None
    t = gen.last_timings
    return ChatResult(
        message=ChatMessage(text, "".join(reasoning_parts) or None, calls, finish),
        tokens=tokens,
        prompt_tokens=t.prompt_tokens + t.cached_tokens,
        completion_tokens=t.generated_tokens,
        logprobs=lps,
        timings=t,
        closed=closed,
    )
