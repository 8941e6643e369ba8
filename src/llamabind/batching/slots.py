"""Slots and their prefix caches: which slot a request goes to, and what of its KV it keeps.

Each slot (one sequence of the shared context) keeps its KV cache between requests. A new
request goes to the idle slot whose cache shares the longest prefix with its prompt (the least
recently used among equals); a longer prefix held by *another* slot is shared into it with
``memory.copy``, so a repeated system prompt is decoded once; a longer one held by the prompt
cache (:mod:`.cache_store`: states of conversations that lost their slot) is restored into it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core import Context, Sampler
from ..generation.closing import BudgetCloser
from ..generation.draft import Draft, Drafter
from ..generation.generator import common_prefix
from ..generation.output import OutputStream
from .cache_store import PromptStore
from .config import SchedulerConfig, SlotInfo
from .request import GenRequest, Usage

__all__ = ["PrefixCache", "Slot", "slot_infos"]


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
    closer: BudgetCloser | None = None  # closes a grammar's document before the budget runs out
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

    def release(self) -> None:
        """The request is over: free its sampler; ``cached`` stays (this slot's prefix cache)."""
        if self.sampler is not None:
            self.sampler.close()
        self.sampler = None
        self.closer = None
        self.out = None
        self.req = None
        self.state = "idle"
        self.prompt = []
        self.draft = None
        self.rows = []
        self.last_used = time.perf_counter()

    def usage(self, submitted_at: float) -> Usage:
        """The usage of the request this slot is finishing (times up to now)."""
        now = time.perf_counter()
        return Usage(
            prompt_tokens=len(self.prompt),
            completion_tokens=self.n_generated,
            cached_tokens=self.n_reused,
            prompt_ms=((self.t_prefill_done or now) - self.t_start) * 1000,
            generation_ms=(now - (self.t_prefill_done or now)) * 1000,
            ttft_ms=((self.t_first or now) - submitted_at) * 1000,
            queued_ms=(self.t_start - submitted_at) * 1000,
        )


def slot_infos(slots: Sequence[Slot]) -> list[SlotInfo]:
    """A snapshot of each slot for /slots."""
    out = []
    for s in slots:
        req = s.req
        out.append(
            SlotInfo(
                id=s.id,
                state=s.state,
                request_id=req.id if req is not None else None,
                n_cached=len(s.cached),
                n_prompt=len(s.prompt) if req is not None else 0,
                n_generated=s.n_generated if req is not None else 0,
            )
        )
    return out


class PrefixCache:
    """The slots' KV caches seen as one prefix cache over ``ctx``."""

    def __init__(
        self, ctx: Context, slots: Sequence[Slot], config: SchedulerConfig, store: PromptStore | None = None
    ) -> None:
        self.ctx = ctx
        self.slots = slots
        self.config = config
        self.store = store

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
        prefix come from another slot or the prompt cache (``store``). The last prompt token is
        always left to decode (its logits are needed) and a media chunk (``media``: a
        MediaPrompt) is kept whole or not at all. What the slot held is saved to the prompt cache
        before it is overwritten.
        """
        if self.store is not None:
            self.store.sync_namespace(list(self.slots))
        keep = common_prefix(slot.cached, prompt) if cache_prompt else 0
        if max_keep is not None:
            keep = min(keep, max_keep)
        donor, donor_keep = None, keep
        store = self.store if self.store is not None and self.store.enabled else None
        hit = None
        if cache_prompt and share:
            for other in self.slots:
                if other is slot:
                    continue
                k = common_prefix(other.cached, prompt)
                if k > donor_keep and k >= self.config.cache_reuse_min:
                    donor, donor_keep = other, k
            hit = store.lookup(prompt) if store is not None else None
        last = len(prompt) - 1
        keep, donor_keep = min(keep, last), min(donor_keep, last)
        hit_keep = min(hit.n, last) if hit is not None else 0
        if media is not None:  # a media chunk is reused whole or decoded again whole
            keep = media.safe_prefix(keep)
            donor_keep = media.safe_prefix(donor_keep)
            hit_keep = media.safe_prefix(hit_keep)
            if donor_keep <= keep:
                donor = None
        if store is not None and cache_prompt and share:
            if hit is not None and hit_keep >= max(keep, donor_keep) + store.min_tokens:
                store.save(slot, 0)
                return store.restore(hit, slot, hit_keep)
            store.stats.prompt_cache_misses_total += 1
        mem = self.ctx.memory
        if donor is not None and donor_keep > keep:
            if store is not None:
                store.save(slot, 0)
            mem.remove(slot.id, -1, -1)
            if self.config.kv_unified:
                mem.copy(donor.id, slot.id, 0, donor_keep)
            else:  # llama.cpp copies between streams only whole: copy, then trim the tail
                mem.copy(donor.id, slot.id, -1, -1)
                mem.remove(slot.id, donor_keep, -1)
            slot.cached = prompt[:donor_keep]
            keep = donor_keep
        elif keep < len(slot.cached):
            if store is not None:
                store.save(slot, keep)
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
                if self.store is not None:
                    self.store.save(s, 0)
                self.drop(s)
                evicted = True
        return evicted
