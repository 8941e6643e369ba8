"""Speculative drafts: the drafter interface shared by every strategy, and its counters.

It lives in ``generation`` (not ``speculative``) because the generation loops drive drafters;
the drafters themselves are in :mod:`llamabind.speculative`.

A *drafter* proposes up to ``n_max`` tokens that probably follow a sequence; the *target* model
verifies them all in one batch and keeps the longest prefix its own sampling agrees with, plus
one token of its own (so each verification round yields 1 … n_draft + 1 tokens).

One drafter instance serves one sequence of the target context. The caller (``Generator`` or
the batching ``Scheduler``) drives it:

* :meth:`Drafter.max_reuse` — how much of a new prompt the target may keep from its KV cache
  (drafters that mirror the target's hidden states need the target to re-decode what they lack);
* :meth:`Drafter.observe` — after every target decode that held tokens of this sequence;
* :meth:`Drafter.draft` — propose tokens after ``history + [last]``;
* :meth:`Drafter.rollback` — the target dropped its sequence after ``n_keep`` tokens.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ..core import Context
    from .sampling import SamplingParams

__all__ = ["Draft", "Drafter", "SpecStats"]


@dataclass
class Draft:
    """Proposed tokens; ``probs[i]`` is the drafter's distribution (``(ids, p)``) for token ``i``.

    ``probs`` is None for deterministic drafts (n-gram lookup, greedy drafting): the target then
    verifies by sampling and comparing, which is the rejection rule for a one-hot proposal.
    """

    tokens: list[int] = field(default_factory=list)
    probs: list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]] | None = None

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class SpecStats:
    """Counters of one drafter (cumulative) or one generation (see ``Timings``)."""

    rounds: int = 0  # verification batches
    drafted: int = 0  # tokens proposed
    accepted: int = 0  # proposed tokens the target kept
    generated: int = 0  # tokens emitted (accepted + one per round)
    draft_seconds: float = 0.0  # time spent drafting

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        return self.generated / self.rounds if self.rounds else 0.0

    def add(self, other: SpecStats) -> None:
        self.rounds += other.rounds
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.generated += other.generated
        self.draft_seconds += other.draft_seconds

    def as_dict(self) -> dict[str, float]:
        return {
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "generated": self.generated,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "tokens_per_round": round(self.tokens_per_round, 3),
            "draft_seconds": round(self.draft_seconds, 4),
        }


class Drafter(ABC):
    """Base of the draft-model, n-gram and MTP drafters (one sequence of the target each)."""

    #: short name: "draft", "ngram", "mtp"
    kind: str = "base"
    #: True when :meth:`observe` needs the target's next-n hidden states (MTP)
    needs_hidden_states: bool = False

    def __init__(self, n_draft: int) -> None:
        if n_draft < 0:
            raise ValueError("n_draft must be >= 0")
        self.n_draft = n_draft
        self.stats = SpecStats()

    # ---------------------------------------------------------------- hooks
    def configure(self, sampling: SamplingParams | None) -> None:  # noqa: B027 - optional hook
        """A new generation starts with these sampling settings (None: a custom sampler)."""

    def max_reuse(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` the target may reuse from its KV cache (default: all)."""
        return len(tokens)

    def observe(self, ctx: Context, tokens: Sequence[int], start_pos: int, first_index: int) -> None:  # noqa: B027
        """The target decoded ``tokens`` of this sequence at positions ``start_pos…``.

        They sit at batch indices ``first_index…`` of the decode that just ran on ``ctx``.
        """

    def rollback(self, n_keep: int) -> None:  # noqa: B027 - optional hook
        """The target's sequence now ends after ``n_keep`` tokens (rejected drafts removed)."""

    @abstractmethod
    def _draft(self, history: Sequence[int], last: int, n_max: int) -> Draft:
        """Propose up to ``n_max`` tokens following ``history + [last]``."""

    def draft(self, history: Sequence[int], last: int, n_max: int | None = None) -> Draft:
        """Propose up to ``min(n_max, n_draft)`` tokens following ``history + [last]``.

        ``history`` are the tokens in the target's KV cache (positions 0…), ``last`` the token
        just sampled (position ``len(history)``, not yet decoded).
        """
        n = self.n_draft if n_max is None else min(n_max, self.n_draft)
        if n <= 0:
            return Draft()
        t0 = time.perf_counter()
        d = self._draft(history, last, n)
        self.stats.draft_seconds += time.perf_counter() - t0
        return d

    def record(self, drafted: int, accepted: int, generated: int) -> None:
        """Count one verification round."""
        self.stats.rounds += 1
        self.stats.drafted += drafted
        self.stats.accepted += accepted
        self.stats.generated += generated

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget per-sequence state (the target's sequence was cleared)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the drafter owns (contexts it created)."""

    def __enter__(self) -> Drafter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
