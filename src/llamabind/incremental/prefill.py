"""`IncrementalPrefill`: decode a prompt into the KV cache while it is still being typed.

Each :meth:`~IncrementalPrefill.update` re-tokenizes the text being edited, compares it with what
the KV cache holds, removes the cache from the first differing token on (an edit anywhere
invalidates only what follows it) and decodes the new tokens — except the last ``margin`` (2),
which byte-pair encoding may still merge with the next keystroke. When the text is final,
:meth:`~IncrementalPrefill.stream` (or :meth:`~IncrementalPrefill.flush`) decodes only that
withheld tail plus whatever the last update had not reached, so the first token follows almost
at once. The tokens are exactly those a normal full prefill of the final prompt would decode.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import Batch, Context
from ..errors import ContextOverflowError
from ..generation.generator import GenerationChunk, Generator, common_prefix

__all__ = ["IncrementalPrefill", "PrefillStats"]


@dataclass
class PrefillStats:
    """Counters (never times) for comparing against naive re-prefill on every keystroke."""

    updates: int = 0  # update() calls
    tokens_decoded: int = 0  # prompt tokens decoded while typing
    tokens_invalidated: int = 0  # cached tokens removed because an edit changed them
    tokens_flushed: int = 0  # tokens left to decode when the text became final
    naive_tokens: int = 0  # what re-decoding the whole prompt at every update + the final one costs

    @property
    def total_decoded(self) -> int:
        return self.tokens_decoded + self.tokens_flushed

    @property
    def savings(self) -> float:
        """Fraction of the naive decode work avoided (0 … 1)."""
        return 1.0 - self.total_decoded / self.naive_tokens if self.naive_tokens else 0.0


class IncrementalPrefill:
    """Prefill ``base + tokenize(before + text)`` while ``text`` changes; ``after`` joins at the end.

    ``gen``: the :class:`Generator` (or a Context, wrapped in one) whose sequence holds the
    prompt; ``base``: tokens that precede the edited text and stay fixed (system prompt and
    conversation history, usually already cached); ``before`` / ``after``: text around the
    edited text that the final prompt needs (a chat template's user-turn opening and the closing
    plus generation prompt). While typing only ``before + text`` is tokenized, so the withheld
    margin covers the end of what the user typed; the final prompt is ``before + text + after``
    tokenized as one string (special tokens parsed), exactly as a normal prefill would.
    """

    def __init__(
        self,
        gen: Generator | Context,
        *,
        base: Sequence[int] = (),
        before: str = "",
        after: str = "",
        margin: int = 2,
    ) -> None:
        if margin < 0:
            raise ValueError("margin must be >= 0")
        self.gen = gen if isinstance(gen, Generator) else Generator(gen)
        self.ctx = self.gen.ctx
        self.model = self.gen.model
        self.base = list(base)
        self.before = before
        self.after = after
        self.margin = margin
        self.stats = PrefillStats()
        self._batch = Batch(self.ctx.n_batch)

    # ------------------------------------------------------------ tokens
    @property
    def n_ctx(self) -> int:
        return self.ctx.n_ctx_per_seq

    def _render_tokens(self, text: str, *, final: bool) -> list[int]:
        # tokenized as one string with special tokens parsed, exactly like a rendered chat prompt
        suffix = self.before + text + (self.after if final else "")
        if not suffix:
            return list(self.base)
        return [*self.base, *self.model.tokenize(suffix, add_special=False, parse_special=True)]

    def tokens(self, text: str) -> list[int]:
        """The complete prompt for ``text`` (what :meth:`flush` makes the cache hold)."""
        return self._render_tokens(text, final=True)

    def rebase(self, base: Sequence[int], *, before: str | None = None, after: str | None = None) -> None:
        """Start editing a new text after ``base`` (e.g. the next chat turn)."""
        self.base = list(base)
        if before is not None:
            self.before = before
        if after is not None:
            self.after = after

    # ------------------------------------------------------------ decoding
    def _sync(self, target: Sequence[int], cancel: threading.Event | None, *, logits_last: bool) -> int:
        """Trim the cache to its common prefix with ``target`` and decode the rest; returns #decoded."""
        if len(target) >= self.n_ctx:
            raise ContextOverflowError(
                f"prompt of {len(target)} tokens does not fit the context of {self.n_ctx} tokens",
                n_tokens=len(target),
                n_ctx=self.n_ctx,
            )
        gen = self.gen
        keep = common_prefix(gen.cached, target)
        if logits_last and keep == len(target) and keep > 0:
            keep -= 1  # logits for the last token: decode it again
        if keep < len(gen.cached):
            self.stats.tokens_invalidated += len(gen.cached) - keep
            if not self.ctx.memory.remove(gen.seq_id, keep, -1):
                self.ctx.memory.remove(gen.seq_id, -1, -1)
                self.stats.tokens_invalidated += keep
                keep = 0
            del gen.cached[keep:]
        batch = self._batch
        step = self.ctx.n_batch
        pos = keep
        decoded = 0
        while pos < len(target):
            if cancel is not None and cancel.is_set():
                break
            chunk = list(target[pos : pos + step])
            batch.clear()
            last = pos + len(chunk) == len(target)
            batch.add_sequence(chunk, pos, gen.seq_id, logits_last=logits_last and last)
            self.ctx.decode(batch)
            gen.cached.extend(chunk)
            pos += len(chunk)
            decoded += len(chunk)
        return decoded

    def update(self, text: str, *, cancel: threading.Event | None = None) -> int:
        """The text being typed is now ``text``: trim and decode; returns how many tokens were decoded.

        ``cancel`` stops between batches (newer text arrived: the caller drops stale work).
        """
        toks = self._render_tokens(text, final=False)
        stable = toks[: max(len(self.base), len(toks) - self.margin)]
        self.stats.updates += 1
        self.stats.naive_tokens += len(self.tokens(text))
        n = self._sync(stable, cancel, logits_last=False) if stable else 0
        self.stats.tokens_decoded += n
        return n

    def pending(self, text: str) -> int:
        """Tokens a flush of ``text`` would still decode now."""
        toks = self.tokens(text)
        return len(toks) - common_prefix(self.gen.cached, toks)

    def flush(self, text: str) -> list[int]:
        """Decode everything left of the final prompt (the withheld tail included), with logits
        for its last token at batch index -1; returns the prompt tokens."""
        toks = self.tokens(text)
        self.stats.naive_tokens += len(toks)
        self.stats.tokens_flushed += self._sync(toks, None, logits_last=True)
        return toks

    def stream(self, text: str, **kwargs: Any) -> Iterator[GenerationChunk]:
        """Generate from the final prompt for ``text``: decodes only the not-yet-cached tail (one
        batch, logits on the last token), then streams like :meth:`Generator.stream`."""
        toks = self.tokens(text)
        self.stats.naive_tokens += len(toks)
        keep = common_prefix(self.gen.cached, toks)
        self.stats.tokens_flushed += len(toks) - min(keep, len(toks) - 1)
        return self.gen.stream(toks, **kwargs)
