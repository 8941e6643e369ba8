"""`MediaPrompt`: a prompt tokenized with its media, with a cache key for every position.

Text positions are keyed by their token id; media positions by negative keys derived from the
media's content hash, so "longest common prefix" KV reuse works unchanged across requests with
media.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..core.mtmd import Bitmap, MtmdChunks

if TYPE_CHECKING:
    from .context import MtmdContext

__all__ = ["MediaChunk", "MediaPrompt", "media_keys"]


def media_keys(media_id: str, n_pos: int, sub: int = 0) -> list[int]:
    """Cache keys for the ``n_pos`` positions of a media chunk: negative ints derived from the
    content hash (never equal to a token id, equal for equal media)."""
    base = int(hashlib.sha256(f"{media_id}#{sub}".encode()).hexdigest()[:15], 16)
    return [-1 - ((base + j) % (1 << 60)) for j in range(n_pos)]


@dataclass(frozen=True)
class MediaChunk:
    """One chunk of a tokenized prompt: text tokens or one image / audio clip."""

    index: int
    type: Literal["text", "image", "audio"]
    n_tokens: int  # KV cells it uses
    n_pos: int  # positions it advances (< n_tokens for images on M-RoPE models)
    id: str | None  # the media's content hash (None for text)
    tokens: tuple[int, ...]  # text tokens (empty for media)
    start: int  # first position (relative to the prompt start)

    @property
    def is_media(self) -> bool:
        return self.type != "text"

    @property
    def end(self) -> int:
        return self.start + self.n_pos


class MediaPrompt(MtmdChunks):
    """A prompt tokenized with its media: the libmtmd chunk list, and per-position cache keys."""

    def __init__(
        self,
        mtmd: MtmdContext,
        text: str,
        media: Sequence[Bitmap],
        *,
        add_special: bool = True,
        parse_special: bool = True,
    ) -> None:
        super().__init__(mtmd, text, media, add_special=add_special, parse_special=parse_special)
        self.mtmd = mtmd  # keeps the projector alive while the prompt exists
        self.text = text
        self.media_ids = tuple(b.id for b in media)
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        chunks: list[MediaChunk] = []
        keys: list[int] = []
        pos = 0
        last_id: str | None = None
        sub = 0
        for i in range(len(self._handles)):
            kind = self.kind(i)
            info = self.info(i)
            if kind == "text":
                toks = tuple(self.text_tokens(i))
                chunks.append(MediaChunk(i, "text", len(toks), len(toks), None, toks, pos))
                keys.extend(toks)
                pos += len(toks)
                last_id = None
            else:
                mid = info.id or ""
                sub = sub + 1 if mid == last_id else 0
                last_id = mid
                chunks.append(MediaChunk(i, kind, info.n_tokens, info.n_pos, mid, (), pos))
                keys.extend(media_keys(mid, info.n_pos, sub))
                pos += info.n_pos
        self.chunks: tuple[MediaChunk, ...] = tuple(chunks)
        self.keys: list[int] = keys
        self.n_pos = pos
        self.n_tokens = sum(c.n_tokens for c in chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[MediaChunk]:
        return iter(self.chunks)

    def check_chunk(self, chunk: MediaChunk) -> int:
        """The index of ``chunk`` (ClosedError once closed, ValueError for another prompt's chunk)."""
        self._ptr()
        if not 0 <= chunk.index < len(self.chunks) or self.chunks[chunk.index] != chunk:
            raise ValueError("chunk does not belong to this prompt")
        return chunk.index

    @property
    def media_chunks(self) -> list[MediaChunk]:
        return [c for c in self.chunks if c.is_media]

    @property
    def ends_with_text(self) -> bool:
        return bool(self.chunks) and self.chunks[-1].type == "text" and self.chunks[-1].n_tokens > 0

    def chunk_at(self, pos: int) -> MediaChunk | None:
        """The chunk holding prompt position ``pos``."""
        for c in self.chunks:
            if c.start <= pos < c.end:
                return c
        return None

    def safe_prefix(self, keep: int) -> int:
        """``keep`` moved back to the start of a media chunk it would cut through (a media chunk
        is decoded whole or not at all)."""
        c = self.chunk_at(keep)
        if c is not None and c.is_media and c.start < keep:
            return c.start
        return keep

    def next_prefill(self, pending: int, budget: int) -> tuple[MediaChunk | None, int]:
        """What a batching engine decodes next from prompt position ``pending``.

        ``(chunk, chunk.n_pos)`` when a media chunk starts at ``pending`` (decode it alone with
        :meth:`MtmdContext.eval_chunk`); otherwise ``(None, n)``: the next ``n`` (<= ``budget``)
        keys are text tokens that may go into a shared batch (it stops before the next media).
        """
        c = self.chunk_at(pending)
        if c is None:
            return None, 0
        if c.is_media:
            if c.start != pending:
                raise ValueError(f"position {pending} is inside an {c.type} chunk ({c.start}..{c.end})")
            return c, c.n_pos
        return None, max(0, min(budget, c.end - pending))

    def __repr__(self) -> str:
        if self.closed:
            return "<MediaPrompt (closed)>"
        kinds = ",".join(c.type for c in self.chunks)
        return (
            f"<MediaPrompt {len(self.chunks)} chunks [{kinds}] n_pos={self.n_pos} n_tokens={self.n_tokens}>"
        )
