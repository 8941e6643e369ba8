"""The continuous-batching scheduler: N slots (sequences) of one context, one engine thread.

Every step is one ``llama_decode`` of one batch holding the next token of every generating slot
plus prompt chunks of slots in prefill (up to ``prefill_chunk`` prompt tokens per step, so
running streams keep flowing while a long prompt is read). New requests join at the next step.
Which slot a request gets and what of its KV cache it reuses: :mod:`.slots`; states of slots
overwritten by other conversations, restored when they return: :mod:`.cache_store`. Speculative
decoding (``SchedulerConfig.spec``): :mod:`.speculation`. What a sampled token means for the
client (text, stop strings, limits): :class:`~llamabind.generation.output.OutputStream`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..core import Batch, Context, Model
from ..errors import (
    GrammarError,
    LlamabindError,
    NoKvSlotError,
    QueueFullError,
    SlotActionError,
)
from ..generation.closing import BudgetCloser, feed_closing
from ..generation.logprobs import TokenLogprob, token_logprobs
from ..generation.output import OutputStream
from .cache_store import PromptStore
from .config import SchedulerConfig, SchedulerStats, SlotInfo
from .request import DoneEvent, ErrorEvent, GenRequest, TokenEvent, Usage, check_prompt_fits
from .slots import PrefixCache, Slot, slot_infos
from .speculation import SPEC_KINDS, SlotSpeculation

__all__ = ["QueueFullError", "Scheduler", "SchedulerConfig", "SchedulerStats", "SlotInfo"]

log = logging.getLogger("llamabind.batching")
T = TypeVar("T")

#: the prefill chunk is never halved below this after the KV cache ran full
MIN_PREFILL_CHUNK = 16


class _Job:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Scheduler:
    """Owns a Context over ``model`` in a dedicated engine thread.

    ``submit(req)`` is thread-safe and returns at once; events arrive through ``req.emit``
    (called in the engine thread — keep it cheap, e.g. ``loop.call_soon_threadsafe``).
    """

    def __init__(
        self, model: Model, config: SchedulerConfig | None = None, *, draft_model: Model | None = None
    ) -> None:
        self.model = model
        self.config = config or SchedulerConfig()
        cfg = self.config
        if cfg.parallel < 1:
            raise ValueError("parallel must be >= 1")
        if cfg.spec not in SPEC_KINDS:
            raise ValueError(f"spec must be ngram, draft or mtp, got {cfg.spec!r}")
        if cfg.spec is not None and cfg.n_draft < 1:
            raise ValueError("n_draft must be >= 1")
        self.ctx = Context(model, cfg.context_params())
        self.n_ctx_slot = cfg.ctx_per_slot
        self.slots = [Slot(i) for i in range(cfg.parallel)]
        self.draft_model = draft_model
        self.stats = SchedulerStats()
        try:
            self._spec = SlotSpeculation(model, self.ctx, cfg, self.slots, self.stats, draft_model)
            self._store = PromptStore(model, self.ctx, cfg, self.stats)
        except BaseException:
            self.ctx.close()
            raise
        self._cache = PrefixCache(self.ctx, self.slots, cfg, self._store)
        # prompt tokens decoded per step: starts at config.prefill_chunk, halved (here, never in
        # the caller's config) when the KV cache runs full
        self.prefill_chunk = cfg.prefill_chunk
        self._queue: collections.deque[GenRequest] = collections.deque()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self._batch = Batch(max(cfg.n_batch, cfg.parallel), 1)
        self._n_batch = self.ctx.n_batch
        #: ``time.monotonic()`` when the engine thread began its current iteration (engine jobs,
        #: admission, one decode step); None while it waits for work (read by watchdogs)
        self.busy_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="llamabind-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public
    def submit(self, req: GenRequest) -> None:
        """Queue a request. Raises ContextOverflowError / QueueFullError at once."""
        check_prompt_fits(req.prompt, self.n_ctx_slot)
        if req.media is None:
            self.model.vocab.check(req.prompt)
        with self._cv:
            if self._stop:
                raise LlamabindError("the scheduler is shut down")
            # requests not yet admitted count as waiting even while the engine is mid-step and has
            # not moved them into free slots yet: the bound is on everything outstanding
            busy = sum(1 for s in self.slots if s.req is not None)
            if len(self._queue) + busy >= self.config.max_queue + len(self.slots):
                raise QueueFullError(
                    f"server busy: {len(self._queue)} requests waiting (--max-queue {self.config.max_queue})"
                )
            self._queue.append(req)
            self.stats.requests_total += 1
            self._cv.notify()

    def run_in_engine(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` in the engine thread between two steps (for work that needs the context)."""
        job = _Job(fn)
        with self._cv:
            self._jobs.append(job)
            self._cv.notify()
        if not job.done.wait(timeout):
            raise TimeoutError("engine job timed out")
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy_slots(self) -> int:
        return sum(1 for s in self.slots if s.req is not None)

    def slot_info(self) -> list[SlotInfo]:
        return slot_infos(self.slots)

    def slot_action(self, slot_id: int, action: str, filename: str | None = None) -> dict[str, Any]:
        """``POST /slots/{id}?action=save|restore|erase``: runs in the engine between two steps."""
        if not 0 <= slot_id < len(self.slots):
            raise SlotActionError(f"no slot {slot_id} (there are {len(self.slots)})", status=404)
        slot = self.slots[slot_id]
        return self.run_in_engine(lambda: self._store.slot_action(slot, action, filename))

    @property
    def kv_used_cells(self) -> int:
        return self._cache.used_cells

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the engine: cancel everything, join the thread, free the context."""
        with self._cv:
            self._stop = True
            for req in self._queue:
                req.cancelled.set()
            for s in self.slots:
                if s.req is not None:
                    s.req.cancelled.set()
            self._cv.notify()
        self.ctx.abort()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            for s in self.slots:
                if s.sampler is not None:
                    s.sampler.close()
            self._store.close(self.slots)  # the slots' states go to the disk cache (if any)
            self._spec.close()
            self.ctx.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ----------------------------------------------------------- engine
    def _loop(self) -> None:
        while True:
            with self._cv:
                self.busy_since = None
                while not self._stop and not self._queue and not self._jobs and not self._active():
                    self._cv.wait()
                if self._stop:
                    break
                jobs = list(self._jobs)
                self._jobs.clear()
                self.busy_since = time.monotonic()
            for job in jobs:
                try:
                    job.result = job.fn()
                except BaseException as exc:
                    job.error = exc
                job.done.set()
            try:
                self._reap_cancelled()
                self._admit()
                if self._active():
                    self._step()
            except Exception as exc:  # never let the engine die: fail the active requests
                log.exception("engine step failed")
                for s in self.slots:
                    if s.req is not None:
                        self._fail(s, exc)
        # drain on shutdown
        for s in self.slots:
            if s.req is not None:
                self._finish(s, "cancelled")
        while self._queue:
            req = self._queue.popleft()
            req.emit(DoneEvent("cancelled", Usage(len(req.prompt), 0)))
        for job in self._jobs:
            job.error = LlamabindError("the scheduler is shut down")
            job.done.set()

    def _active(self) -> bool:
        return any(s.req is not None for s in self.slots)

    def _reap_cancelled(self) -> None:
        for s in self.slots:
            if s.req is not None and s.req.cancelled.is_set():
                self._finish(s, "cancelled")
        if any(r.cancelled.is_set() for r in self._queue):
            with self._cv:
                keep = collections.deque(r for r in self._queue if not r.cancelled.is_set())
                dropped = [r for r in self._queue if r.cancelled.is_set()]
                self._queue = keep
            for r in dropped:
                self.stats.requests_cancelled += 1
                r.emit(DoneEvent("cancelled", Usage(len(r.prompt), 0)))

    def _admit(self) -> None:
        while True:
            idle = [s for s in self.slots if s.req is None]
            if not idle:
                return
            with self._cv:
                if not self._queue:
                    return
                req = self._queue.popleft()
            prompt = list(req.prompt)
            slot = self._cache.pick(idle, prompt)
            try:
                self._start(slot, req, prompt)
            except Exception as exc:
                slot.req = req
                self._fail(slot, exc)

    def _start(self, slot: Slot, req: GenRequest, prompt: list[int]) -> None:
        slot.req = req
        slot.prompt = prompt
        slot.t_start = time.perf_counter()
        slot.t_first = 0.0
        slot.last_token = -1
        slot.logits_idx = -1
        slot.sampler = req.sampling.build(self.model)
        slot.closer = BudgetCloser.for_sampling(self.model, req.sampling)
        slot.out = OutputStream(
            self.model.vocab,
            n_prompt=len(prompt),
            n_ctx=self.n_ctx_slot,
            max_tokens=req.max_tokens,
            stop=req.stop,
            ignore_eos=req.ignore_eos,
            render_special=req.render_special,
        )
        drafter = slot.drafter
        # a drafter that mirrors this slot's decodes (MTP) limits what the slot may reuse, and its
        # slot takes no prefix from another slot (the mirror would lack it)
        mirror = drafter is not None and drafter.needs_hidden_states
        max_keep = None
        if drafter is not None:
            if mirror:
                max_keep = drafter.max_reuse(prompt)
            drafter.configure(req.sampling)
        keep = self._cache.claim(
            slot, prompt, cache_prompt=req.cache_prompt, media=req.media, max_keep=max_keep, share=not mirror
        )
        if drafter is not None:
            drafter.rollback(keep)
        slot.rows = []
        slot.draft = None
        slot.pending = keep
        slot.n_reused = keep
        slot.state = "prefill"

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        gen = [s for s in self.slots if s.req is not None and s.state == "generate"]
        pre = [s for s in self.slots if s.req is not None and s.state == "prefill"]
        cap = min(batch.capacity, self._n_batch)
        spec = self._spec
        for i, s in enumerate(gen):
            # leave one entry for each generating slot still to come
            d = spec.draft(s, cap - len(batch) - (len(gen) - i)) if s.drafter is not None else None
            pos = len(s.cached)
            s.logits_idx = batch.add(s.last_token, pos, s.id, True)
            s.draft = d
            if d is not None:
                rows = [s.logits_idx]
                for j, t in enumerate(d.tokens):
                    rows.append(batch.add(t, pos + 1 + j, s.id, True))
                s.rows = rows
        budget = min(self.prefill_chunk, cap - len(batch))
        chunks: list[tuple[Slot, int]] = []
        firsts: list[int] = []
        for s in sorted(pre, key=lambda s: s.t_start):
            s.logits_idx = -1
            s.draft = None
            if budget <= 0:
                continue
            remaining = len(s.prompt) - s.pending
            take = min(remaining, budget)
            media = s.req.media if s.req is not None else None
            if media is not None:
                mchunk, n = media.next_prefill(s.pending, budget)
                if mchunk is not None:
                    # an image / audio chunk: decoded alone, now; its text follows next step
                    try:
                        media.mtmd.eval_chunk(self.ctx, media, mchunk, len(s.cached), s.id)
                    except Exception as exc:
                        self._fail(s, exc)
                        continue
                    s.cached.extend(s.prompt[s.pending : s.pending + n])
                    s.pending += n
                    self.stats.prompt_tokens_total += mchunk.n_tokens
                    budget -= mchunk.n_tokens
                    continue
                take = min(take, n)
            last = take == remaining
            chunk = s.prompt[s.pending : s.pending + take]
            idx = batch.add_sequence(chunk, len(s.cached), s.id, logits_last=last)
            if last:
                s.logits_idx = idx
            chunks.append((s, take))
            firsts.append(idx - take + 1)
            budget -= take
        if len(batch) == 0:
            return
        t0 = time.perf_counter()
        try:
            self.ctx.decode(batch)
        except NoKvSlotError:
            self._on_kv_full(chunks)
            return
        self.stats.count_decode(time.perf_counter() - t0, sum(t for _, t in chunks), len(batch))
        for s in gen:
            pos = len(s.cached)
            mirror = s.drafter is not None and s.drafter.needs_hidden_states
            if s.draft is None:
                s.cached.append(s.last_token)
                if mirror:
                    spec.observe(s, (s.last_token,), pos, s.logits_idx)
            else:
                sent = [s.last_token, *s.draft.tokens]
                s.cached.extend(sent)
                if mirror:
                    spec.observe(s, sent, pos, s.logits_idx)
        for (s, take), first in zip(chunks, firsts, strict=True):
            chunk = s.prompt[s.pending : s.pending + take]
            pos = len(s.cached)
            s.cached.extend(chunk)
            s.pending += take
            if (
                s.drafter is not None
                and s.drafter.needs_hidden_states
                and (s.req is None or s.req.media is None)
            ):
                spec.observe(s, chunk, pos, first)
            if s.pending == len(s.prompt):
                s.state = "generate"
                s.t_prefill_done = time.perf_counter()
        for s in self.slots:
            if s.req is not None and s.state == "generate" and s.logits_idx >= 0:
                try:
                    self._sample(s)
                except GrammarError as exc:  # this request's grammar is exhausted: fail it alone
                    self._fail(s, exc)

    def _sample(self, s: Slot) -> None:
        req = s.req
        assert req is not None and s.sampler is not None
        idx = s.logits_idx
        s.logits_idx = -1
        d = s.draft
        if d is None:  # plain decoding: one token from this slot's logits
            if req.logprobs is not None:
                logits = self.ctx.logits(idx)
                token = s.sampler.sample(self.ctx, idx)
                lp: tuple[TokenLogprob, ...] = (token_logprobs(logits, token, req.logprobs),)
            else:
                token = s.sampler.sample(self.ctx, idx)
                lp = ()
            if not self._emit(s, token, lp):
                s.last_token = token
            return
        s.draft = None
        verdict = self._spec.verify(s, d, req.logprobs)
        s.rows = []
        for i, token in enumerate(verdict.tokens):
            lp = (verdict.logprobs[i],) if i < len(verdict.logprobs) else ()
            if self._emit(s, token, lp):
                return
        s.last_token = verdict.tokens[-1]

    def _emit(self, s: Slot, token: int, lp: tuple[TokenLogprob, ...]) -> bool:
        """Hand one sampled token to the client; True when the request finished with it."""
        req, out = s.req, s.out
        assert req is not None and out is not None
        if s.closer is not None and not s.closer.admit(token, out.remaining - 1):
            return self._close(s)
        text = out.feed(token)
        self.stats.generated_tokens_total += 1
        if out.n_generated == 1:
            s.t_first = time.perf_counter()
        if text is not None and (text or lp):
            req.emit(TokenEvent(text, (token,), lp))
        if out.finish_reason is not None:
            self._finish(s, out.finish_reason)
            return True
        return False

    def _close(self, s: Slot) -> bool:
        """Emit the closing instead of the token the slot's closer refused, and finish (True)."""
        assert s.req is not None and s.out is not None and s.closer is not None
        for token, text in feed_closing(s.closer, s.out):
            self.stats.generated_tokens_total += 1
            if text:
                s.req.emit(TokenEvent(text, (token,)))
        self._finish(s, s.out.finish_reason or "length")
        return True

    def _finish(self, s: Slot, reason: str) -> None:
        req = s.req
        if req is None:
            return
        out = s.out
        tail = out.finish() if out is not None and reason != "cancelled" else ""
        if tail:
            req.emit(TokenEvent(tail, ()))
        usage = s.usage(req.submitted_at)
        self.stats.cached_tokens_total += s.n_reused
        if reason == "cancelled":
            self.stats.requests_cancelled += 1
        else:
            self.stats.requests_done += 1
        stop = out.stopped if out is not None else None
        closed = s.closer is not None and s.closer.closed
        s.release()
        req.emit(DoneEvent(reason, usage, stop, closed))

    def _fail(self, s: Slot, exc: BaseException) -> None:
        req = s.req
        self.stats.requests_failed += 1
        # what is in the KV cache for this slot is uncertain after a failure: drop it
        try:
            self.ctx.memory.remove(s.id, -1, -1)
        except LlamabindError:
            pass
        s.cached = []
        if s.drafter is not None:
            try:
                s.drafter.reset()
            except LlamabindError:
                pass
        s.release()
        if req is not None:
            req.emit(ErrorEvent(exc))

    def _on_kv_full(self, chunks: list[tuple[Slot, int]]) -> None:
        """No KV room: evict idle slots' caches first, then shrink prefill, then fail the youngest."""
        self.stats.kv_evictions_total += 1
        if self._cache.evict_idle():
            return  # retried at the next step
        if chunks and self.prefill_chunk > MIN_PREFILL_CHUNK:
            self.prefill_chunk //= 2
            log.warning("KV cache full: prefill chunk reduced to %d", self.prefill_chunk)
            return
        active = [s for s in self.slots if s.req is not None]
        if not active:
            return
        youngest = max(active, key=lambda s: s.t_start)
        self._fail(
            youngest,
            NoKvSlotError(
                f"the KV cache is full ({self.ctx.n_ctx} cells shared by {len(self.slots)} slots); "
                "request dropped — retry later or raise --ctx-size",
                1,
            ),
        )
