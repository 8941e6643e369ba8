"""`Generator`: streaming text generation on one sequence of a context, with prefix (KV) reuse."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..core import Batch, Context, Sampler, StreamingDetokenizer
from ..errors import ContextOverflowError
from .logprobs import TokenLogprob, token_logprobs
from .sampling import SamplingParams
from .stop import StopMatcher

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

    # ------------------------------------------------------------ prompt
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def reset(self) -> None:
        """Forget the KV cache of this sequence."""
        self.ctx.memory.remove(self.seq_id, -1, -1)
        self.cached = []

    def prefill(self, tokens: Sequence[int], *, cancel: threading.Event | None = None) -> int:
        """Make the KV cache hold exactly ``tokens``, with logits for the last one.

        Reuses the common prefix with what is cached; returns how many tokens were reused.
        """
        n_ctx = self.ctx.n_ctx_seq if self.ctx.n_seq_max > 1 else self.ctx.n_ctx
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
        keep = common_prefix(self.cached, tokens)
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be decoded again to get its logits
        if keep < len(self.cached):
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
    ) -> Iterator[GenerationChunk]:
        """Yield chunks as tokens are generated; the last chunk carries ``finish_reason``.

        ``logprobs=N`` attaches the sampled token's log-probability and the N best alternatives.
        ``cancel`` (a threading.Event) stops generation at the next token ("cancelled").
        """
        tokens = (
            self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
            if isinstance(prompt, str)
            else list(prompt)
        )
        own_sampler = sampler is None
        smp = sampler if sampler is not None else (sampling or SamplingParams()).build(self.model)
        try:
            yield from self._run(tokens, smp, max_tokens, stop, stop_tokens, logprobs, cancel, ignore_eos)
        finally:
            if own_sampler:
                smp.close()

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
    ) -> Iterator[GenerationChunk]:
        t0 = time.perf_counter()
        timings = Timings()
        self.last_timings = timings
        n_ctx = self.ctx.n_ctx_seq if self.ctx.n_seq_max > 1 else self.ctx.n_ctx
        reused = self.prefill(tokens, cancel=cancel)
        timings.cached_tokens = reused
        timings.prompt_tokens = len(tokens) - reused
        t1 = time.perf_counter()
        timings.prompt_ms = (t1 - t0) * 1000
        if cancel is not None and cancel.is_set():
            yield GenerationChunk("", [], finish_reason="cancelled")
            return
        vocab = self.model.vocab
        eog = frozenset() if ignore_eos else vocab.eog_tokens
        extra_stop = frozenset(stop_tokens)
        detok = StreamingDetokenizer(vocab)
        matcher = StopMatcher(stop)
        batch = self._batch
        ctx = self.ctx
        seq = self.seq_id
        pos = len(tokens)
        limit = max_tokens if max_tokens is not None and max_tokens >= 0 else n_ctx
        n = 0
        finish = "length"
        while True:
            if n >= limit or pos >= n_ctx:
                finish = "length"
                break
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            lp: list[TokenLogprob] = []
            if logprobs is not None:
                logits = ctx.logits(-1)
                token = smp.sample(ctx, -1)
                lp = [token_logprobs(logits, token, logprobs)]
            else:
                token = smp.sample(ctx, -1)
            n += 1
            if n == 1:
                timings.ttft_ms = (time.perf_counter() - t0) * 1000
            if token in eog or token in extra_stop:
                finish = "stop"
                break
            text = matcher.feed(detok.feed(token))
            if matcher.stopped is not None:
                timings.generated_tokens = n
                if text:
                    yield GenerationChunk(text, [token], lp)
                finish = "stop"
                break
            # decode the token now so the next step has logits (skipped when we stop here)
            if n < limit and pos + 1 < n_ctx:
                batch.clear()
                batch.add(token, pos, seq, True)
                ctx.decode(batch)
                self.cached.append(token)
            pos += 1
            timings.generated_tokens = n
            yield GenerationChunk(text, [token], lp)
        tail = matcher.flush() + (detok.flush() if matcher.stopped is None else "")
        if tail and matcher.stopped is None:
            tail = matcher.feed(tail) + matcher.flush()
        timings.generated_tokens = n
        timings.generation_ms = (time.perf_counter() - t1) * 1000
        yield GenerationChunk(tail, [], finish_reason=finish)
        self._stopped = matcher.stopped

    def complete(self, prompt: str | Sequence[int], **kwargs: object) -> GenerationResult:
        """Non-streaming: the whole generation as one result."""
        parts: list[str] = []
        toks: list[int] = []
        lps: list[TokenLogprob] = []
        finish = "length"
        self._stopped = None
        for chunk in self.stream(prompt, **kwargs):  # type: ignore[arg-type]
            parts.append(chunk.text)
            toks.extend(chunk.tokens)
            lps.extend(chunk.logprobs)
            if chunk.finish_reason:
                finish = chunk.finish_reason
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
        )
