"""`Batch`: tokens (with positions, sequence ids and logit flags) for one decode, bounds-checked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .._native.batch import BatchBuffers
from ..errors import BatchFullError

__all__ = ["Batch"]


class Batch:
    """A batch of up to ``capacity`` tokens, each in up to ``n_seq_max`` sequences.

    Adding more tokens or more sequence ids than allocated raises :class:`BatchFullError`
    (llama-cpp-rs writes past the end; we refuse).
    """

    def __init__(self, capacity: int, n_seq_max: int = 1, *, embd: int = 0) -> None:
        if capacity <= 0:
            raise ValueError("Batch capacity must be positive")
        if n_seq_max <= 0:
            raise ValueError("Batch n_seq_max must be positive")
        self._buf = BatchBuffers(capacity, n_seq_max, embd)
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self.n_tokens = 0
        self.n_outputs = 0

    def __len__(self) -> int:
        return self.n_tokens

    @property
    def free(self) -> int:
        return self.capacity - self.n_tokens

    def clear(self) -> None:
        self.n_tokens = 0
        self.n_outputs = 0

    def add(self, token: int, pos: int, seq_ids: Sequence[int] | int = 0, logits: bool = False) -> int:
        """Add one token; returns its index in the batch (the index to read logits at)."""
        i = self.n_tokens
        if i >= self.capacity:
            raise BatchFullError(f"batch is full ({self.capacity} tokens)")
        ids = (seq_ids,) if isinstance(seq_ids, int) else seq_ids
        n = len(ids)
        if n == 0 or n > self.n_seq_max:
            raise BatchFullError(f"a token may belong to 1..{self.n_seq_max} sequences, got {n}")
        b = self._buf
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = n
        b.seq_id[i, :n] = ids
        b.logits[i] = 1 if logits else 0
        self.n_tokens = i + 1
        if logits:
            self.n_outputs += 1
        return i

    def add_sequence(
        self,
        tokens: Sequence[int] | npt.NDArray[np.int32],
        start_pos: int,
        seq_id: int = 0,
        *,
        logits_last: bool = True,
    ) -> int:
        """Add consecutive tokens of one sequence; logits for the last one when ``logits_last``.

        Returns the batch index of the last token.
        """
        n = len(tokens)
        if n == 0:
            raise ValueError("add_sequence needs at least one token")
        i = self.n_tokens
        if i + n > self.capacity:
            raise BatchFullError(f"{n} tokens do not fit: batch holds {self.capacity}, {i} used")
        b = self._buf
        b.token[i : i + n] = tokens
        b.pos[i : i + n] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        b.n_seq_id[i : i + n] = 1
        b.seq_id[i : i + n, 0] = seq_id
        b.logits[i : i + n] = 0
        if logits_last:
            b.logits[i + n - 1] = 1
            self.n_outputs += 1
        self.n_tokens = i + n
        return i + n - 1

    def set_logits(self, index: int, on: bool = True) -> None:
        if not 0 <= index < self.n_tokens:
            raise IndexError(f"batch index {index} out of range [0, {self.n_tokens})")
        was = bool(self._buf.logits[index])
        self._buf.logits[index] = 1 if on else 0
        self.n_outputs += int(on) - int(was)

    # views for inspection and validation
    @property
    def tokens(self) -> npt.NDArray[np.int32]:
        return self._buf.token[: self.n_tokens]

    @property
    def positions(self) -> npt.NDArray[np.int32]:
        return self._buf.pos[: self.n_tokens]

    @property
    def logit_flags(self) -> npt.NDArray[np.int8]:
        return self._buf.logits[: self.n_tokens]

    def seq_ids_of(self, index: int) -> list[int]:
        n = int(self._buf.n_seq_id[index])
        return [int(x) for x in self._buf.seq_id[index, :n]]

    def max_seq_id(self) -> int:
        n = self.n_tokens
        if n == 0:
            return -1
        b = self._buf
        mask = np.arange(self.n_seq_max)[None, :] < b.n_seq_id[:n, None]
        return int(np.where(mask, b.seq_id[:n], -1).max())

    def min_seq_id(self) -> int:
        n = self.n_tokens
        if n == 0:
            return 0
        b = self._buf
        mask = np.arange(self.n_seq_max)[None, :] < b.n_seq_id[:n, None]
        return int(np.where(mask, b.seq_id[:n], 0).min())

    @classmethod
    def from_tokens(cls, tokens: Sequence[int], start_pos: int = 0, seq_id: int = 0) -> Batch:
        b = cls(max(len(tokens), 1))
        b.add_sequence(list(tokens), start_pos, seq_id)
        return b

    def extend(self, items: Iterable[tuple[int, int, Sequence[int] | int, bool]]) -> None:
        for token, pos, seq_ids, logits in items:
            self.add(token, pos, seq_ids, logits)
