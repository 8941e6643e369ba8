"""Streaming detokenizer: never emits half a UTF-8 character."""

from __future__ import annotations

import codecs

from .vocab import Vocab

__all__ = ["StreamingDetokenizer"]


class StreamingDetokenizer:
    """Feed token ids one at a time, get text as soon as it is complete UTF-8.

    >>> d = StreamingDetokenizer(model.vocab)
    >>> text = "".join(d.feed(t) for t in tokens) + d.flush()
    """

    def __init__(self, vocab: Vocab, *, special: bool = False) -> None:
        self._vocab = vocab
        self._special = special
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.tokens: list[int] = []

    def feed(self, token: int) -> str:
        self.tokens.append(token)
        return self._decoder.decode(self._vocab.token_to_piece(token, special=self._special))

    def flush(self) -> str:
        """Whatever is left (an incomplete UTF-8 tail becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)

    @property
    def pending_bytes(self) -> int:
        return len(self._decoder.getstate()[0])

    def reset(self) -> None:
        self._decoder.reset()
        self.tokens.clear()
