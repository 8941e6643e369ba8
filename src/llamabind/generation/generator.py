"""`Generator`: streaming text generation on one sequence of a context, with prefix (KV) reuse."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..core import Batch, Context, Sampler
from ..errors import ContextOverflowError, UnsupportedError
from .closing import BudgetCloser, feed_closing
from .draft import Draft, Drafter
from .logprobs import TokenLogprob, token_logprobs
from .output import OutputStream
from .sampling import SamplingParams
from .verify import verify_draft

__all__ = ["GenerationChunk", "GenerationResult", "Generator", "Timings", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Timings:
    prompt_tokens: int = 0  # prompt tokens actually decoded (not reused)
    cached_tokens: int = 0  # prompt tokens reused from the KV cache
    prompt_ms: float = 0.0
    generated_tokens: int = 0
    generation_ms: float = 0.0
    ttft_ms: float = 0.0
    # speculative decoding (0 without a drafter)
    spec_rounds: int = 0  # verification batches
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / (self.generation_ms / 1000) if self.generation_ms > 0 else 0.0


@dataclass
class GenerationChunk:
    """One streaming step: new text (stop strings withheld), its token ids, optional logprobs."""

    text: str
    tokens: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # stop | length | cancelled
    #: on the last chunk: the grammar's document was closed before the token budget ran out
    #: (finish_reason "length", the text a complete sentence of the grammar)
    closed: bool = False


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    stop: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    closed: bool = False  # see GenerationChunk.closed


class Generator:
    """Generates on sequence ``seq_id`` of ``ctx`` and remembers which tokens are in its KV cache,
    so the next call decodes only the part of its prompt that differs (prefix reuse)."""

    def __init__(self, ctx: Context, seq_id: int = 0) -> None:
        self.ctx = ctx
        self.model = ctx.model
        self.seq_id = seq_id
        self.cached: list[int] = []  # tokens whose KV is in the cache for seq_id, in order
        self._batch = Batch(ctx.n_batch)
        self.last_timings = Timings()
        self._stopped: str | None = None
        self._render_special = False

    # ------------------------------------------------------------ prompt
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def reset(self) -> None:
        """Forget the KV cache of this sequence."""
        self.ctx.memory.remove(self.seq_id, -1, -1)
        self.cached = []

    def prefill(
        self,
        tokens: Sequence[int],
        *,
        cancel: threading.Event | None = None,
        max_keep: int | None = None,
        on_decode: Callable[[Sequence[int], int, int], None] | None = None,
    ) -> int:
        """Make the KV cache hold exactly ``tokens``, with logits for the last one.

        Reuses the common prefix with what is cached (at most ``max_keep`` tokens); returns how
        many tokens were reused. ``on_decode(chunk, start_pos, first_index)`` is called after
        each chunk is decoded (a speculative drafter mirrors the target's decodes with it).
        """
        n_ctx = self.ctx.n_ctx_per_seq
        if not tokens:
            raise ValueError("empty prompt")
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"prompt of {len(tokens)} tokens does not fit the context of {n_ctx} tokens "
                "(leave room for at least one generated token)",
                n_tokens=len(tokens),
                n_ctx=n_ctx,
            )
        self.model.vocab.check(tokens)
        if self.cached:
            # the KV cache may have been cut behind our back (ctx.memory used directly): trust only
            # what it still holds
            top = self.ctx.memory.pos_max(self.seq_id)
            if top < len(self.cached) - 1:
                del self.cached[top + 1 :]
        keep = common_prefix(self.cached, tokens)
        if max_keep is not None:
            keep = max(0, min(keep, max_keep))
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be decoded again to get its logits
        # always drop everything from ``keep`` on: the cache may hold a token that an interrupted
        # call decoded but never recorded
        if not self.ctx.memory.remove(self.seq_id, keep, -1):
            self.ctx.memory.remove(self.seq_id, -1, -1)
            keep = 0
        del self.cached[keep:]
        batch = self._batch
        pos = keep
        step = self.ctx.n_batch
        while pos < len(tokens):
            if cancel is not None and cancel.is_set():
                break
            chunk = tokens[pos : pos + step]
            batch.clear()
            batch.add_sequence(chunk, pos, self.seq_id, logits_last=pos + len(chunk) == len(tokens))
            self.ctx.decode(batch)
            self.cached.extend(chunk)
            if on_decode is not None:
                on_decode(chunk, pos, 0)
            pos += len(chunk)
        return keep

    # -------------------------------------------------------- generation
    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int | None = 256,
        sampling: SamplingParams | None = None,
        sampler: Sampler | None = None,
        stop: Sequence[str] = (),
        stop_tokens: Sequence[int] = (),
        logprobs: int | None = None,
        cancel: threading.Event | None = None,
        add_special: bool = True,
        parse_special: bool = True,
        ignore_eos: bool = False,
        draft: Drafter | None = None,
        render_special: bool = False,
    ) -> Iterator[GenerationChunk]:
        """Yield chunks as tokens are generated; the last chunk carries ``finish_reason``.

        ``logprobs=N`` attaches the sampled token's log-probability and the N best alternatives.
        ``cancel`` (a threading.Event) stops generation at the next token ("cancelled").
        ``draft``: a speculative drafter (``llamabind.speculative``): each round the target
        verifies its proposals in one batch. Greedy output is identical to plain decoding; sampled
        output has the target's distribution. Counters land in ``last_timings``.
        ``render_special`` puts the text of special tokens into the output (tool-call markers such
        as Mistral's ``[TOOL_CALLS]`` are special tokens).
        With a grammar in ``sampling`` (and ``close_on_budget``, the default), an output about to
        run out of ``max_tokens`` or context is closed validly (:mod:`.closing`): the last chunk
        has ``finish_reason="length"`` and ``closed=True``.
        """
        self._render_special = render_special
        tokens = (
            self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
            if isinstance(prompt, str)
            else list(prompt)
        )
        own_sampler = sampler is None
        sp = (sampling or SamplingParams()) if sampler is None else None
        smp = sampler if sampler is not None else (sampling or SamplingParams()).build(self.model)
        try:
            closer = BudgetCloser.for_sampling(self.model, sp)
            if draft is not None:
                draft.configure(sp)
                yield from self._run_spec(
                    tokens,
                    smp,
                    sp,
                    draft,
                    max_tokens,
                    stop,
                    stop_tokens,
                    logprobs,
                    cancel,
                    ignore_eos,
                    closer,
                )
            else:
                yield from self._run(
                    tokens, smp, max_tokens, stop, stop_tokens, logprobs, cancel, ignore_eos, closer
                )
        finally:
            if own_sampler:
                smp.close()

    def _output(
        self,
        n_prompt: int,
        max_tokens: int | None,
        stop: Sequence[str],
        stop_tokens: Sequence[int],
        ignore_eos: bool,
    ) -> OutputStream:
        return OutputStream(
            self.model.vocab,
            n_prompt=n_prompt,
            n_ctx=self.ctx.n_ctx_per_seq,
            max_tokens=max_tokens,
            stop=stop,
            stop_tokens=stop_tokens,
            ignore_eos=ignore_eos,
            render_special=self._render_special,
        )

    def _run(
        self,
        tokens: list[int],
        smp: Sampler,
        max_tokens: int | None,
        stop: Sequence[str],
        stop_tokens: Sequence[int],
        logprobs: int | None,
        cancel: threading.Event | None,
        ignore_eos: bool,
        closer: BudgetCloser | None = None,
    ) -> Iterator[GenerationChunk]:
        t0 = time.perf_counter()
        timings = Timings()
        self.last_timings = timings
        reused = self.prefill(tokens, cancel=cancel)
        timings.cached_tokens = reused
        timings.prompt_tokens = len(tokens) - reused
        t1 = time.perf_counter()
        timings.prompt_ms = (t1 - t0) * 1000
        if cancel is not None and cancel.is_set():
            yield GenerationChunk("", [], finish_reason="cancelled")
            return
        out = self._output(len(tokens), max_tokens, stop, stop_tokens, ignore_eos)
        batch = self._batch
        ctx = self.ctx
        seq = self.seq_id
        pos = len(tokens)
        cancelled = False
        while out.finish_reason is None:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            lp: list[TokenLogprob] = []
            if logprobs is not None:
                logits = ctx.logits(-1)
                token = smp.sample(ctx, -1)
                lp = [token_logprobs(logits, token, logprobs)]
            else:
                token = smp.sample(ctx, -1)
            if closer is not None and not closer.admit(token, out.remaining - 1):
                yield from self._close(out, closer, t0)
                break
            text = out.feed(token)
            if out.n_generated == 1:
                timings.ttft_ms = (time.perf_counter() - t0) * 1000
            if text is None:
                break
            if out.finish_reason is None:
                # decode the token now so the next step has logits (skipped when we stop here)
                batch.clear()
                batch.add(token, pos, seq, True)
                ctx.decode(batch)
                self.cached.append(token)
            pos += 1
            timings.generated_tokens = out.n_generated
            yield GenerationChunk(text, [token], lp)
        yield self._last_chunk(out, "cancelled" if cancelled else None, t1, closer)

    def _close(self, out: OutputStream, closer: BudgetCloser, t0: float) -> Iterator[GenerationChunk]:
        """Emit the closer's completion instead of the token it refused (nothing when it has none:
        the output then ends where it is)."""
        for token, text in feed_closing(closer, out):
            if out.n_generated == 1:
                self.last_timings.ttft_ms = (time.perf_counter() - t0) * 1000
            self.last_timings.generated_tokens = out.n_generated
            yield GenerationChunk(text, [token])

    def _last_chunk(
        self, out: OutputStream, finish: str | None, t1: float, closer: BudgetCloser | None = None
    ) -> GenerationChunk:
        """The final chunk: held-back text and the finish reason; completes ``last_timings``."""
        tail = out.finish()
        timings = self.last_timings
        timings.generated_tokens = out.n_generated
        timings.generation_ms = (time.perf_counter() - t1) * 1000
        self._stopped = out.stopped
        closed = closer is not None and closer.closed
        return GenerationChunk(tail, [], finish_reason=finish or out.finish_reason or "length", closed=closed)

    def _run_spec(
        self,
        tokens: list[int],
        smp: Sampler,
        sp: SamplingParams | None,
        drafter: Drafter,
        max_tokens: int | None,
        stop: Sequence[str],
        stop_tokens: Sequence[int],
        logprobs: int | None,
        cancel: threading.Event | None,
        ignore_eos: bool,
        closer: BudgetCloser | None = None,
    ) -> Iterator[GenerationChunk]:
        """Speculative decoding: draft, verify the draft in one batch, keep the agreed prefix."""
        import numpy as np

        t0 = time.perf_counter()
        timings = Timings()
        self.last_timings = timings
        ctx = self.ctx
        seq = self.seq_id
        n_ctx = ctx.n_ctx_per_seq

        def observe(chunk: Sequence[int], start: int, first: int) -> None:
            drafter.observe(ctx, chunk, start, first)

        reused = self.prefill(tokens, cancel=cancel, max_keep=drafter.max_reuse(tokens), on_decode=observe)
        drafter.rollback(len(self.cached))
        timings.cached_tokens = reused
        timings.prompt_tokens = len(tokens) - reused
        t1 = time.perf_counter()
        timings.prompt_ms = (t1 - t0) * 1000
        if cancel is not None and cancel.is_set():
            yield GenerationChunk("", [], finish_reason="cancelled")
            return
        # sampled verification of stochastic drafts needs an RNG of its own (seeded like the sampler)
        rng = None
        if sp is not None and not sp.greedy:
            rng = np.random.default_rng(None if sp.seed is None else int(sp.seed) & 0xFFFFFFFF)
        vocab = self.model.vocab
        out = self._output(len(tokens), max_tokens, stop, stop_tokens, ignore_eos)
        batch = self._batch
        cancelled = False
        # the first token comes from the prompt's logits (an empty draft, verified at row -1)
        verdict = verify_draft(ctx, smp, [-1], Draft(), logprobs=logprobs)
        while out.finish_reason is None:
            pending_lp = verdict.logprobs
            closing = False
            for j, token in enumerate(verdict.tokens):
                if closer is not None and not closer.admit(token, out.remaining - 1):
                    yield from self._close(out, closer, t0)
                    closing = True
                    break
                text = out.feed(token)
                if out.n_generated == 1:
                    timings.ttft_ms = (time.perf_counter() - t0) * 1000
                if text is None:
                    break
                timings.generated_tokens = out.n_generated
                yield GenerationChunk(text, [token], [pending_lp[j]] if j < len(pending_lp) else [])
                if out.finish_reason is not None:
                    break
            if closing or out.finish_reason is not None:
                break
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            last = verdict.tokens[-1]
            pos = len(self.cached)
            # draft at most what can still be emitted and what fits the context
            room = min(out.remaining, n_ctx - pos - 2, batch.capacity - 1)
            d = drafter.draft(self.cached, last, room) if room > 0 else Draft()
            if len(d.tokens) > room:
                d = Draft(d.tokens[:room], d.probs[:room] if d.probs is not None else None)
            vocab.check(d.tokens)
            batch.clear()
            batch.add(last, pos, seq, True)
            for i, t in enumerate(d.tokens):
                batch.add(t, pos + 1 + i, seq, True)
            ctx.decode(batch)
            sent = [last, *d.tokens]
            self.cached.extend(sent)
            drafter.observe(ctx, sent, pos, 0)
            verdict = verify_draft(ctx, smp, list(range(len(sent))), d, rng=rng, logprobs=logprobs)
            k = verdict.accepted
            keep = pos + 1 + k
            if keep < len(self.cached):
                if not ctx.memory.remove(seq, keep, -1):  # pragma: no cover - attention KV always can
                    raise UnsupportedError(
                        f"{self.model.path.name}: its memory cannot drop rejected draft tokens (recurrent "
                        "or hybrid models need rollback snapshots, not supported): use plain decoding"
                    )
                del self.cached[keep:]
            drafter.rollback(keep)
            drafter.record(len(d.tokens), k, len(verdict.tokens))
            timings.spec_rounds += 1
            timings.drafted_tokens += len(d.tokens)
            timings.accepted_tokens += k
        yield self._last_chunk(out, "cancelled" if cancelled else None, t1, closer)

    def complete(self, prompt: str | Sequence[int], **kwargs: object) -> GenerationResult:
        """Non-streaming: the whole generation as one result."""
        parts: list[str] = []
        toks: list[int] = []
        lps: list[TokenLogprob] = []
        finish = "length"
        closed = False
        self._stopped = None
        for chunk in self.stream(prompt, **kwargs):  # type: ignore[arg-type]
            parts.append(chunk.text)
            toks.extend(chunk.tokens)
            lps.extend(chunk.logprobs)
            if chunk.finish_reason:
                finish = chunk.finish_reason
                closed = chunk.closed
        t = self.last_timings
        n_prompt = t.prompt_tokens + t.cached_tokens
        return GenerationResult(
            text="".join(parts),
            tokens=toks,
            finish_reason=finish,
            prompt_tokens=n_prompt,
            completion_tokens=t.generated_tokens,
            stop=self._stopped,
            logprobs=lps,
            timings=t,
            closed=closed,
        )
