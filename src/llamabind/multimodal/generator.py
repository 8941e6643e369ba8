"""`MediaGenerator`: a :class:`~llamabind.generation.generator.Generator` whose prompts may hold
images and audio.

It prefills a :class:`MediaPrompt` chunk by chunk (text through the context's batches, media
through the projector), then generation continues exactly as for text. The KV cache is tracked
by the prompt's per-position cache keys, so a follow-up turn that repeats the same images reuses
their KV instead of encoding and decoding them again; a media chunk is never cut in half.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..core import Context
from ..errors import ContextOverflowError, UnsupportedError
from ..generation.generator import GenerationChunk, GenerationResult, Generator, common_prefix
from .context import MediaPrompt, MtmdContext

__all__ = ["MediaGenerator"]


class MediaGenerator(Generator):
    """Streaming generation on ``seq_id`` of ``ctx`` from prompts with media.

    ``stream`` / ``complete`` accept a :class:`MediaPrompt` (from :meth:`MtmdContext.tokenize`),
    plain text or token ids. ``mtmd`` may be None for a text-only model: media prompts then fail.
    """

    def __init__(self, ctx: Context, mtmd: MtmdContext | None, seq_id: int = 0) -> None:
        super().__init__(ctx, seq_id)
        if mtmd is not None and mtmd.model.n_embd != ctx.model.n_embd:
            raise ValueError("the projector was loaded for a different model than the context's")
        self.mtmd = mtmd
        self._media: MediaPrompt | None = None
        self._media_keys: list[int] | None = None
        self.last_media_reused = 0  # media chunks whose KV was reused by the last prefill

    # ------------------------------------------------------------ prompt
    def stream(self, prompt: MediaPrompt | str | Sequence[int], **kwargs: Any) -> Iterator[GenerationChunk]:  # type: ignore[override]
        """:meth:`Generator.stream` (same keyword arguments), also for a :class:`MediaPrompt`."""
        if not isinstance(prompt, MediaPrompt):
            yield from super().stream(prompt, **kwargs)
            return
        if self.mtmd is None or prompt.mtmd is not self.mtmd:
            raise ValueError("the media prompt was tokenized by another (or no) MtmdContext")
        if kwargs.get("draft") is not None:
            raise UnsupportedError("speculative decoding of prompts with images or audio is not supported")
        if not prompt.ends_with_text:
            raise ValueError(
                "the prompt ends with an image/audio: add text after the last media marker "
                "(generation needs a text token to predict from)"
            )
        keys = list(prompt.keys)
        self._media, self._media_keys = prompt, keys
        try:
            yield from super().stream(keys, **kwargs)
        finally:
            self._media, self._media_keys = None, None

    def complete(self, prompt: MediaPrompt | str | Sequence[int], **kwargs: object) -> GenerationResult:  # type: ignore[override]
        return super().complete(prompt, **kwargs)  # type: ignore[arg-type]

    def prefill(self, tokens: Sequence[int], **kwargs: Any) -> int:
        """:meth:`Generator.prefill`; for the keys of the media prompt being streamed, a chunk-aware
        prefill (text through batches, media through the projector, never half a media chunk)."""
        prompt = self._media
        if prompt is None or self._media_keys is None or list(tokens) != self._media_keys:
            self.last_media_reused = 0
            return super().prefill(tokens, **kwargs)
        if kwargs.get("on_decode") is not None:
            raise UnsupportedError("prefill callbacks are not supported for prompts with images or audio")
        cancel: threading.Event | None = kwargs.get("cancel")
        max_keep: int | None = kwargs.get("max_keep")
        assert self.mtmd is not None
        ctx = self.ctx
        n_ctx = ctx.n_ctx_per_seq
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"prompt of {len(tokens)} positions ({prompt.n_tokens} tokens incl. media) does not fit the "
                f"context of {n_ctx} tokens (leave room for at least one generated token)",
                n_tokens=len(tokens),
                n_ctx=n_ctx,
            )
        keep = common_prefix(self.cached, tokens)
        if max_keep is not None:
            keep = max(0, min(keep, max_keep))
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be decoded again for its logits (always text)
        keep = prompt.safe_prefix(keep)
        # always drop everything from ``keep`` on: an interrupted call may have left KV it never recorded
        if not ctx.memory.remove(self.seq_id, keep, -1):
            ctx.memory.remove(self.seq_id, -1, -1)
            keep = 0
        del self.cached[keep:]
        self.last_media_reused = sum(1 for c in prompt.media_chunks if c.end <= keep)
        last = prompt.chunks[-1]
        for chunk in prompt.chunks:
            if chunk.end <= keep:
                continue
            if cancel is not None and cancel.is_set():
                break
            if chunk.is_media:
                pos = self.mtmd.eval_chunk(ctx, prompt, chunk, chunk.start, self.seq_id)
                if pos != chunk.end:  # pragma: no cover - libmtmd and our key layout disagree
                    raise RuntimeError(f"media chunk ended at position {pos}, expected {chunk.end}")
                self.cached.extend(tokens[chunk.start : chunk.end])
                continue
            # text: decode what is not cached yet, logits only for the prompt's last token
            start = max(chunk.start, keep)
            toks = list(chunk.tokens[start - chunk.start :])
            step = ctx.n_batch
            for i in range(0, len(toks), step):
                if cancel is not None and cancel.is_set():
                    break
                part = toks[i : i + step]
                self._batch.clear()
                self._batch.add_sequence(
                    part, start + i, self.seq_id, logits_last=chunk is last and i + step >= len(toks)
                )
                ctx.decode(self._batch)
                self.cached.extend(part)
        return keep
