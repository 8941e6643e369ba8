"""The continuous-batching scheduler: N slots (sequences) of one context, one engine thread.

Every step is one ``llama_decode`` of one batch holding the next token of every generating slot
plus prompt chunks of slots in prefill (up to ``prefill_chunk`` prompt tokens per step, so
running streams keep flowing while a long prompt is read). New requests join at the next step.
Each slot keeps its KV cache between requests; a new request goes to the idle slot whose cache
shares the longest prefix with its prompt, and a longer prefix held by *another* slot is
shared into it with ``memory.copy`` (a repeated system prompt is decoded once).

Speculative decoding (``SchedulerConfig.spec``): every generating slot has its own drafter
(n-gram lookup, a draft model sharing one draft context with a sequence per slot, or the
model's MTP head in a paired MTP context). Its draft rides in the same step's batch right after
the slot's last token, with logits on every drafted position; after the decode each slot keeps
the prefix its sampler agrees with (plus one token of its own) and the rejected tail leaves the
KV cache. Greedy requests produce exactly the tokens they would without speculation.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core import Batch, Context, ContextParams, Model, Sampler, StreamingDetokenizer
from ..errors import (
    ContextOverflowError,
    GrammarError,
    LlamabindError,
    NoKvSlotError,
    QueueFullError,
    UnsupportedError,
)
from ..generation.generator import common_prefix
from ..generation.logprobs import TokenLogprob
from ..generation.stop import StopMatcher
from ..speculative.base import Draft, Drafter
from ..speculative.verify import verify_draft
from .request import DoneEvent, ErrorEvent, GenRequest, TokenEvent, Usage

__all__ = ["QueueFullError", "Scheduler", "SchedulerConfig", "SchedulerStats", "SlotInfo"]

log = logging.getLogger("llamabind.batching")
T = TypeVar("T")


@dataclass
class SchedulerConfig:
    parallel: int = 4  # slots = sequences in the shared context
    ctx_per_slot: int = 4096  # the most tokens (prompt + output) one request may use
    n_batch: int = 2048
    n_ubatch: int = 512
    prefill_chunk: int = 512  # prompt tokens decoded per step (keeps streams flowing)
    max_queue: int = 64  # waiting requests beyond the busy slots; more → QueueFullError
    n_threads: int | None = None
    n_threads_batch: int | None = None
    type_k: str = "f16"
    type_v: str = "f16"
    attn_rotation: bool | None = None
    flash_attn: str = "auto"
    cache_reuse_min: int = 1  # shortest prefix worth copying from another slot
    # False (llama-server's default for -np N): each slot has its own KV stream, so a request's
    # cells are always in position order and its output does not depend on what other slots do
    # (greedy output under load equals the output alone); a prefix shared from another slot is
    # a whole-stream copy. True: one KV pool shared by all slots (prefix sharing copies only cell
    # metadata, but where a sequence's cells land depends on the other slots' history, and
    # llama.cpp's attention sums in cell order, so results vary slightly with the load).
    kv_unified: bool = False
    # speculative decoding: None | "ngram" | "draft" (Scheduler(draft_model=…)) | "mtp"
    spec: str | None = None
    n_draft: int = 8  # most tokens drafted per slot per step (MTP: 1–3 is typical)
    spec_p_min: float = 0.0  # draft/MTP: stop a draft at a token less probable than this
    spec_ngram_min: int = 2
    spec_ngram_max: int = 4

    def context_params(self) -> ContextParams:
        return ContextParams(
            n_ctx=self.ctx_per_slot * self.parallel,
            n_batch=self.n_batch,
            n_ubatch=self.n_ubatch,
            n_seq_max=self.parallel,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads_batch,
            type_k=self.type_k,
            type_v=self.type_v,
            attn_rotation=self.attn_rotation,
            flash_attn=self.flash_attn,
            kv_unified=self.kv_unified,
        )


@dataclass
class SchedulerStats:
    """Counters the engine updates; read by /metrics."""

    requests_total: int = 0
    requests_done: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    prompt_tokens_total: int = 0  # prompt tokens decoded
    cached_tokens_total: int = 0  # prompt tokens reused from cache
    generated_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    generation_seconds_total: float = 0.0
    decode_calls_total: int = 0
    decode_seconds_total: float = 0.0
    kv_evictions_total: int = 0
    spec_rounds_total: int = 0  # slot-steps that verified a non-empty draft
    spec_drafted_total: int = 0  # tokens proposed by drafters
    spec_accepted_total: int = 0  # proposed tokens the target kept

    @property
    def spec_acceptance_rate(self) -> float:
        return self.spec_accepted_total / self.spec_drafted_total if self.spec_drafted_total else 0.0


@dataclass(frozen=True)
class SlotInfo:
    id: int
    state: str  # idle | prefill | generate
    request_id: int | None
    n_cached: int
    n_prompt: int
    n_generated: int


@dataclass(eq=False)
class _Slot:
    id: int
    cached: list[int] = field(default_factory=list)  # tokens in this sequence's KV, in order
    req: GenRequest | None = None
    state: str = "idle"
    prompt: list[int] = field(default_factory=list)
    pending: int = 0  # index in prompt of the next token to decode
    sampler: Sampler | None = None
    detok: StreamingDetokenizer | None = None
    stop: StopMatcher | None = None
    last_token: int = -1  # sampled, not yet decoded
    n_generated: int = 0
    n_reused: int = 0
    logits_idx: int = -1
    last_used: float = 0.0
    t_start: float = 0.0
    t_first: float = 0.0
    t_prefill_done: float = 0.0
    drafter: Drafter | None = None
    rows: list[int] = field(default_factory=list)  # batch indices of [last, draft…] logits
    draft: Draft = field(default_factory=Draft)


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
        if cfg.spec not in (None, "ngram", "draft", "mtp"):
            raise ValueError(f"spec must be ngram, draft or mtp, got {cfg.spec!r}")
        if cfg.spec is not None and cfg.n_draft < 1:
            raise ValueError("n_draft must be >= 1")
        self.ctx = Context(model, cfg.context_params())
        self.n_ctx_slot = cfg.ctx_per_slot
        self.slots = [_Slot(i) for i in range(cfg.parallel)]
        self.draft_model = draft_model
        self._draft_ctx: Context | None = None
        try:
            self._setup_spec()
        except BaseException:
            self._close_spec()
            self.ctx.close()
            raise
        self.stats = SchedulerStats()
        self._queue: collections.deque[GenRequest] = collections.deque()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self._batch = Batch(max(cfg.n_batch, cfg.parallel), 1)
        self._n_batch = self.ctx.n_batch
        self._eog = model.vocab.eog_tokens
        self._thread = threading.Thread(target=self._loop, name="llamabind-engine", daemon=True)
        self._thread.start()

    # ---------------------------------------------------- speculative setup
    def _setup_spec(self) -> None:
        cfg = self.config
        if cfg.spec is None:
            return
        if cfg.spec == "ngram":
            from ..speculative.ngram import NgramDrafter

            for s in self.slots:
                s.drafter = NgramDrafter(
                    cfg.n_draft, ngram_min=cfg.spec_ngram_min, ngram_max=cfg.spec_ngram_max
                )
        elif cfg.spec == "draft":
            from ..speculative.draft_model import DraftModelDrafter, check_vocab_compatible

            if self.draft_model is None:
                raise ValueError("spec='draft' needs Scheduler(..., draft_model=Model(...))")
            check_vocab_compatible(self.model, self.draft_model)
            self._draft_ctx = Context(
                self.draft_model,
                ContextParams(
                    n_ctx=cfg.ctx_per_slot * cfg.parallel,
                    n_batch=cfg.n_batch,
                    n_ubatch=cfg.n_ubatch,
                    n_seq_max=cfg.parallel,
                    n_threads=cfg.n_threads,
                    n_threads_batch=cfg.n_threads_batch,
                    kv_unified=True,
                ),
            )
            for s in self.slots:
                s.drafter = DraftModelDrafter(
                    self.draft_model,
                    cfg.n_draft,
                    ctx=self._draft_ctx,
                    seq_id=s.id,
                    p_min=cfg.spec_p_min,
                    mode="greedy",
                )
        elif cfg.spec == "mtp":
            from ..speculative.mtp import MtpConfig, MtpDrafter, check_mtp_model

            check_mtp_model(self.model)
            self._draft_ctx = Context(
                self.model, cfg.context_params().replace(ctx_type="mtp"), other=self.ctx
            )
            mcfg = MtpConfig(cfg.n_draft, p_min=cfg.spec_p_min)
            for s in self.slots:
                s.drafter = MtpDrafter(self.ctx, mcfg, ctx=self._draft_ctx, seq_id=s.id)

    def _close_spec(self) -> None:
        for s in self.slots:
            if s.drafter is not None:
                s.drafter.close()
                s.drafter = None
        if self._draft_ctx is not None:
            self._draft_ctx.close()
            self._draft_ctx = None

    # ------------------------------------------------------------ public
    def submit(self, req: GenRequest) -> None:
        """Queue a request. Raises ContextOverflowError / QueueFullError at once."""
        n = len(req.prompt)
        if n == 0:
            raise ValueError("empty prompt")
        if n >= self.n_ctx_slot:
            raise ContextOverflowError(
                f"the prompt has {n} tokens but a slot holds at most {self.n_ctx_slot} "
                "(prompt + at least one generated token)",
                n_tokens=n,
                n_ctx=self.n_ctx_slot,
            )
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
        out = []
        for s in self.slots:
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

    @property
    def kv_used_cells(self) -> int:
        return sum(len(s.cached) for s in self.slots)

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
            self._close_spec()
            self.ctx.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ----------------------------------------------------------- engine
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._queue and not self._jobs and not self._active():
                    self._cv.wait()
                if self._stop:
                    break
                jobs = list(self._jobs)
                self._jobs.clear()
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
            # the idle slot with the longest cached prefix, else the least recently used
            slot = max(idle, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))
            try:
                self._start(slot, req, prompt)
            except Exception as exc:
                slot.req = req
                self._fail(slot, exc)

    def _start(self, slot: _Slot, req: GenRequest, prompt: list[int]) -> None:
        now = time.perf_counter()
        slot.req = req
        slot.prompt = prompt
        slot.t_start = now
        slot.t_first = 0.0
        slot.n_generated = 0
        slot.last_token = -1
        slot.logits_idx = -1
        slot.sampler = req.sampling.build(self.model)
        slot.detok = StreamingDetokenizer(self.model.vocab, special=req.render_special)
        slot.stop = StopMatcher(req.stop)
        keep = common_prefix(slot.cached, prompt) if req.cache_prompt else 0
        mirror = slot.drafter is not None and slot.drafter.needs_hidden_states
        if mirror:
            assert slot.drafter is not None
            keep = min(keep, slot.drafter.max_reuse(prompt))
        if slot.drafter is not None:
            slot.drafter.configure(req.sampling)
        # a longer prefix held by another slot is shared into this one (no re-decode); not with
        # an MTP drafter, whose own cache mirrors this slot's decodes
        donor, donor_keep = None, keep
        if req.cache_prompt and not mirror:
            for other in self.slots:
                if other is slot:
                    continue
                k = common_prefix(other.cached, prompt)
                if k > donor_keep and k >= self.config.cache_reuse_min:
                    donor, donor_keep = other, k
        if keep == len(prompt) or donor_keep == len(prompt):
            keep = min(keep, len(prompt) - 1)
            donor_keep = min(donor_keep, len(prompt) - 1)
        if req.media is not None:  # a media chunk is reused whole or decoded again whole
            keep = req.media.safe_prefix(keep)
            donor_keep = req.media.safe_prefix(donor_keep)
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
        if slot.drafter is not None:
            slot.drafter.rollback(keep)
        slot.rows = []
        slot.draft = Draft()
        slot.pending = keep
        slot.n_reused = keep
        slot.state = "prefill"

    def _draft_for(self, s: _Slot, room: int) -> Draft:
        """The slot's draft for this step (empty without a drafter, or when drafting fails)."""
        req = s.req
        if s.drafter is None or req is None or not req.speculative or room <= 0:
            return Draft()
        limit = req.max_tokens if req.max_tokens is not None and req.max_tokens >= 0 else self.n_ctx_slot
        room = min(room, limit - s.n_generated, self.n_ctx_slot - len(s.cached) - 2)
        if room <= 0:
            return Draft()
        try:
            d = s.drafter.draft(s.cached, s.last_token, room)
        except LlamabindError as exc:  # e.g. the draft context is full: go on without a draft
            log.warning("slot %d: drafting failed (%s); continuing without a draft", s.id, exc)
            s.drafter.reset()
            return Draft()
        if len(d.tokens) > room:
            d = Draft(d.tokens[:room])
        try:
            self.model.vocab.check(d.tokens)
        except LlamabindError:
            return Draft()
        return d

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        gen = [s for s in self.slots if s.req is not None and s.state == "generate"]
        pre = [s for s in self.slots if s.req is not None and s.state == "prefill"]
        cap = min(batch.capacity, self._n_batch)
        for i, s in enumerate(gen):
            # leave one entry for each generating slot still to come
            room = cap - len(batch) - (len(gen) - i)
            s.draft = self._draft_for(s, room)
            pos = len(s.cached)
            s.rows = [batch.add(s.last_token, pos, s.id, True)]
            for j, t in enumerate(s.draft.tokens):
                s.rows.append(batch.add(t, pos + 1 + j, s.id, True))
            s.logits_idx = s.rows[0]
        budget = min(self.config.prefill_chunk, cap - len(batch))
        chunks: list[tuple[_Slot, int]] = []
        firsts: list[int] = []
        for s in sorted(pre, key=lambda s: s.t_start):
            if budget <= 0:
                s.logits_idx = -1
                s.rows = []
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
                    s.logits_idx = -1
                    s.rows = []
                    s.draft = Draft()
                    continue
                take = min(take, n)
            last = take == remaining
            start_pos = len(s.cached)
            chunk = s.prompt[s.pending : s.pending + take]
            idx = batch.add_sequence(chunk, start_pos, s.id, logits_last=last)
            s.logits_idx = idx if last else -1
            s.rows = [idx] if last else []
            s.draft = Draft()
            chunks.append((s, take))
            firsts.append(idx - take + 1)
            budget -= take
        if len(batch) == 0:
            return
        t0 = time.perf_counter()
        try:
            self.ctx.decode(batch)
        except NoKvSlotError:
            self._on_kv_full(gen, chunks)
            return
        dt = time.perf_counter() - t0
        st = self.stats
        st.decode_calls_total += 1
        st.decode_seconds_total += dt
        n_pre = sum(t for _, t in chunks)
        total = len(batch)
        if total:
            st.prompt_seconds_total += dt * n_pre / total
            st.generation_seconds_total += dt * (total - n_pre) / total
        st.prompt_tokens_total += n_pre
        for s in gen:
            sent = [s.last_token, *s.draft.tokens]
            pos = len(s.cached)
            s.cached.extend(sent)
            if s.drafter is not None and s.drafter.needs_hidden_states:
                self._observe(s, sent, pos, s.rows[0])
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
                self._observe(s, chunk, pos, first)
            if s.pending == len(s.prompt):
                s.state = "generate"
                s.t_prefill_done = time.perf_counter()
        for s in self.slots:
            if s.req is not None and s.state == "generate" and s.rows:
                try:
                    self._sample(s)
                except GrammarError as exc:  # this request's grammar is exhausted: fail it alone
                    self._fail(s, exc)

    def _observe(self, s: _Slot, tokens: list[int], pos: int, first: int) -> None:
        assert s.drafter is not None
        try:
            s.drafter.observe(self.ctx, tokens, pos, first)
        except LlamabindError as exc:  # the mirror is lost: drafts get worse, output stays exact
            log.warning("slot %d: drafter could not follow the decode (%s)", s.id, exc)
            s.drafter.reset()

    def _sample(self, s: _Slot) -> None:
        req = s.req
        assert req is not None and s.sampler is not None and s.detok is not None and s.stop is not None
        rows, d = s.rows, s.draft
        s.rows = []
        s.draft = Draft()
        verdict = verify_draft(self.ctx, s.sampler, rows, d, logprobs=req.logprobs)
        if d.tokens:
            k = verdict.accepted
            keep = len(s.cached) - len(d.tokens) + k
            if keep < len(s.cached):
                if not self.ctx.memory.remove(s.id, keep, -1):
                    raise UnsupportedError(
                        "this model's memory cannot drop rejected draft tokens (recurrent or hybrid "
                        "models need rollback snapshots): run the server without speculation"
                    )
                del s.cached[keep:]
            assert s.drafter is not None
            s.drafter.rollback(keep)
            s.drafter.record(len(d.tokens), k, len(verdict.tokens))
            st = self.stats
            st.spec_rounds_total += 1
            st.spec_drafted_total += len(d.tokens)
            st.spec_accepted_total += k
        for i, token in enumerate(verdict.tokens):
            lp = (verdict.logprobs[i],) if i < len(verdict.logprobs) else ()
            if self._emit(s, token, lp):
                return
        s.last_token = verdict.tokens[-1]

    def _emit(self, s: _Slot, token: int, lp: tuple[TokenLogprob, ...]) -> bool:
        """Hand one sampled token to the client; True when the request finished with it."""
        req = s.req
        assert req is not None and s.detok is not None and s.stop is not None
        s.n_generated += 1
        self.stats.generated_tokens_total += 1
        if s.n_generated == 1:
            s.t_first = time.perf_counter()
        if token in self._eog and not req.ignore_eos:
            self._finish(s, "stop")
            return True
        text = s.stop.feed(s.detok.feed(token))
        if s.stop.stopped is not None:
            if text:
                req.emit(TokenEvent(text, (token,), lp))
            self._finish(s, "stop")
            return True
        if text or lp:
            req.emit(TokenEvent(text, (token,), lp))
        limit = req.max_tokens if req.max_tokens is not None and req.max_tokens >= 0 else self.n_ctx_slot
        if s.n_generated >= limit or len(s.cached) + 1 >= self.n_ctx_slot:
            self._finish(s, "length")
            return True
        return False

    def _finish(self, s: _Slot, reason: str) -> None:
        req = s.req
        if req is None:
            return
        tail = ""
        if reason != "cancelled" and s.stop is not None and s.detok is not None and s.stop.stopped is None:
            tail = s.stop.feed(s.detok.flush()) + s.stop.flush()
        if tail:
            req.emit(TokenEvent(tail, ()))
        now = time.perf_counter()
        usage = Usage(
            prompt_tokens=len(s.prompt),
            completion_tokens=s.n_generated,
            cached_tokens=s.n_reused,
            prompt_ms=((s.t_prefill_done or now) - s.t_start) * 1000,
            generation_ms=(now - (s.t_prefill_done or now)) * 1000,
            ttft_ms=((s.t_first or now) - req.submitted_at) * 1000,
            queued_ms=(s.t_start - req.submitted_at) * 1000,
        )
        self.stats.cached_tokens_total += s.n_reused
        if reason == "cancelled":
            self.stats.requests_cancelled += 1
        else:
            self.stats.requests_done += 1
        stop = s.stop.stopped if s.stop is not None else None
        self._release(s)
        req.emit(DoneEvent(reason, usage, stop))

    def _fail(self, s: _Slot, exc: BaseException) -> None:
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
        self._release(s)
        if req is not None:
            req.emit(ErrorEvent(exc))

    def _release(self, s: _Slot) -> None:
        if s.sampler is not None:
            s.sampler.close()
        s.sampler = None
        s.detok = None
        s.stop = None
        s.req = None
        s.state = "idle"
        s.prompt = []
        s.last_used = time.perf_counter()  # s.cached stays: it is this slot's prefix cache

    def _on_kv_full(self, gen: list[_Slot], chunks: list[tuple[_Slot, int]]) -> None:
        """No KV room: evict idle slots' caches first, then shrink prefill, then fail the youngest."""
        self.stats.kv_evictions_total += 1
        evicted = False
        for s in self.slots:
            if s.req is None and s.cached:
                self.ctx.memory.remove(s.id, -1, -1)
                s.cached = []
                if s.drafter is not None:
                    s.drafter.reset()
                evicted = True
        if evicted:
            return  # retried at the next step
        if chunks and self.config.prefill_chunk > 16:
            self.config.prefill_chunk //= 2
            log.warning("KV cache full: prefill chunk reduced to %d", self.config.prefill_chunk)
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
