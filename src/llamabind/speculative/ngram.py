"""N-gram / prompt-lookup drafting: no second model, drafts copied from earlier in the sequence.

When the last ``n`` tokens (``n`` from ``ngram_max`` down to ``ngram_min``) occurred before in the
prompt or the output, the tokens that followed that most recent earlier occurrence are proposed.
It shines when the output repeats the input (summaries, rewrites, code edits, quoting).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..generation.draft import Draft, Drafter

__all__ = ["NgramDrafter"]


class NgramDrafter(Drafter):
    """Prompt-lookup drafter with an incremental n-gram index (O(1) per token, not a rescan)."""

    kind = "ngram"

    def __init__(self, n_draft: int = 8, *, ngram_max: int = 4, ngram_min: int = 2) -> None:
        super().__init__(n_draft)
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError("need 1 <= ngram_min <= ngram_max")
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self._tokens: list[int] = []
        # n -> {n-gram: latest start index that has at least one following token}
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(ngram_min, ngram_max + 1)}

    def reset(self) -> None:
        self._tokens = []
        for table in self._index.values():
            table.clear()

    def _extend(self, seq: Sequence[int]) -> None:
        """Make the index describe ``seq`` (incrementally when it extends what is indexed)."""
        toks = self._tokens
        n_old = len(toks)
        if n_old > len(seq) or (n_old and (seq[n_old - 1] != toks[-1] or list(seq[:n_old]) != toks)):
            self.reset()
            n_old = 0
            toks = self._tokens
        for i in range(n_old, len(seq)):
            toks.append(int(seq[i]))
            # every n-gram ending just before i now has a follower (token i)
            for n, table in self._index.items():
                start = i - n
                if start >= 0:
                    table[tuple(toks[start:i])] = start

    def lookup(self, seq: Sequence[int], n_max: int) -> list[int]:
        """The continuation of the longest suffix n-gram of ``seq`` seen earlier (may be empty)."""
        self._extend(seq)
        toks = self._tokens
        total = len(toks)
        for n in range(self.ngram_max, self.ngram_min - 1, -1):
            if total < n + 1:
                continue
            start = self._index[n].get(tuple(toks[total - n :]))
            if start is None:
                continue
            begin = start + n
            return toks[begin : min(begin + n_max, total)]
        return []

    def _draft(self, history: Sequence[int], last: int, n_max: int) -> Draft:
        seq = list(history)
        seq.append(last)
        return Draft(self.lookup(seq, n_max))
