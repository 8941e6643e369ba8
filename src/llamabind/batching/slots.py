"""Slots and their prefix caches: which slot a request goes to, and what of its KV it keeps.

Each slot (one sequence of the shared context) keeps its KV cache between requests. A new
request goes to the idle slot whose cache shares the longest prefix with its prompt (the least
recently used among equals); a longer prefix held by *another* slot is shared into it with
``memory.copy``, so a repeated system prompt is decoded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core import Context, Sampler
from ..generation.draft import Draft, Drafter
from ..generation.generator import common_prefix
from ..generation.output import OutputStream
from .config import SchedulerConfig
from .request import GenRequest

__all__ = ["PrefixCache", "Slot"]


@dataclass(eq=False)
class Slot:
    """One sequence of the scheduler's context and the request it is serving (if any)."""

    id: int
    cached: list[int] = field(default_factory=list)  # tokens in this sequence's KV, in order
    req: GenRequest | None = None
    state: str = "idle"  # idle | prefill | generate
    prompt: list[int] = field(default_factory=list)
    pending: int = 0  # index in prompt of the next token to decode
    sampler: Sampler | None = None
    out: OutputStream | None = None
    last_token: int = -1  # sampled, not yet decoded
    n_reused: int = 0
    logits_idx: int = -1  # batch index of this step's logits to sample from (-1: none)
    last_used: float = 0.0
    t_start: float = 0.0
    t_first: float = 0.0
    t_prefill_done: float = 0.0
    drafter: Drafter | None = None
    draft: Draft | None = None  # riding in this step's batch right after last_token
    rows: list[int] = field(default_factory=list)  # with a draft: batch indices of [last, draft…]

    @property
    def n_generated(self) -> int:
        return self.out.n_generated if self.out is not None else 0


class PrefixCache:
    """The slots' KV caches seen as one prefix cache over ``ctx``."""

    def __init__(self, ctx: Context, slots: Sequence[Slot], config: SchedulerConfig) -> None:
        self.ctx = ctx
        self.slots = slots
        self.config = config

    @property
    def used_cells(self) -> int:
        return sum(len(s.cached) for s in self.slots)

    def pick(self, idle: Sequence[Slot], prompt: Sequence[int]) -> Slot:
        """The idle slot with the longest cached prefix of ``prompt``, else the least recently used."""
        return max(idle, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))

    def claim(
        self,
        slot: Slot,
        prompt: list[int],
        *,
        cache_prompt: bool = True,
        media: Any = None,
        max_keep: int | None = None,
        share: bool = True,
    ) -> int:
        """Make ``slot``'s KV hold the longest reusable prefix of ``prompt``; how many tokens it kept.

        At most ``max_keep`` tokens of the slot's own cache are kept; ``share`` lets a longer
        prefix come from another slot. The last prompt token is always left to decode (its logits
        are needed) and a media chunk (``media``: a MediaPrompt) is kept whole or not at all.
        """
        keep = common_prefix(slot.cached, prompt) if cache_prompt else 0
        if max_keep is not None:
            keep = min(keep, max_keep)
        donor, donor_keep = None, keep
        if cache_prompt and share:
            for other in self.slots:
                if other is slot:
                    continue
                k = common_prefix(other.cached, prompt)
                if k > donor_keep and k >= self.config.cache_reuse_min:
                    donor, donor_keep = other, k
        if keep == len(prompt) or donor_keep == len(prompt):
            keep = min(keep, len(prompt) - 1)
            donor_keep = min(donor_keep, len(prompt) - 1)
        if media is not None:  # a media chunk is reused whole or decoded again whole
            keep = media.safe_prefix(keep)
            donor_keep = media.safe_prefix(donor_keep)
            if donor_keep <= keep:
                donor = None
        mem = self.ctx.memory
        if donor is not None and donor_keep > keep:
            mem.remove(slot.id, -1, -1)
            if self.config.kv_unified:
                mem.copy(donor.id, slot.id, 0, donor_keep)
            else:  # llama.cpp copies between streams only whole: copy, then trim the tail
                mem.copy(donor.id, slot.id, -1, -1)
                mem.remove(slot.id, donor_keep, -1)
            slot.cached = prompt[:donor_keep]
            keep = donor_keep
        elif keep < len(slot.cached):
            if not mem.remove(slot.id, keep, -1):
                mem.remove(slot.id, -1, -1)
                keep = 0
            del slot.cached[keep:]
        return keep

    def drop(self, slot: Slot) -> None:
        """Forget ``slot``'s cache (its KV and its drafter's mirror of it)."""
        self.ctx.memory.remove(slot.id, -1, -1)
        slot.cached = []
        if slot.drafter is not None:
            slot.drafter.reset()

    def evict_idle(self) -> bool:
        """Free the KV of every idle slot's cache; True when anything was freed."""
        evicted = False
        for s in self.slots:
            if s.req is None and s.cached:
                self.drop(s)
                evicted = True
        return evicted
