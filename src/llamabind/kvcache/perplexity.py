"""Perplexity of a model (with a given context configuration) on a text.

The text is cut into chunks of ``chunk_size`` tokens. Each chunk is evaluated from an empty KV
cache; the first ``score_from`` tokens only provide context and the rest are scored, each by the
log-probability the model gave it at the previous position (the same scheme as llama.cpp's
perplexity tool: a chunk's first token is replaced by BOS for models that add one). Perplexity
is ``exp(mean negative log-likelihood)`` over all scored tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core import Batch, Context

__all__ = ["PerplexityResult", "perplexity", "token_logprobs"]


@dataclass
class PerplexityResult:
    ppl: float
    nll: float  # mean negative log-likelihood (nats per token)
    n_scored: int
    n_chunks: int
    chunk_ppl: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.n_scored / self.seconds if self.seconds else 0.0


def _log_softmax_at(logits: np.ndarray, token: int) -> float:
    x = logits.astype(np.float64)
    m = float(x.max())
    return float(x[token] - m - math.log(float(np.exp(x - m).sum())))


def token_logprobs(ctx: Context, tokens: Sequence[int], score_from: int = 1) -> list[float]:
    """Log-probabilities of ``tokens[score_from:]``, each given all tokens before it.

    Clears the context's KV cache first and decodes ``tokens`` as sequence 0 in ``n_batch`` pieces.
    """
    n = len(tokens)
    if n < 2:
        raise ValueError("need at least two tokens")
    if not 1 <= score_from < n:
        raise ValueError(f"score_from must be in [1, {n - 1}], got {score_from}")
    if n > ctx.n_ctx:
        raise ValueError(f"{n} tokens do not fit in the context (n_ctx={ctx.n_ctx})")
    ctx.memory.clear()
    step = ctx.n_batch
    batch = Batch(min(step, n))
    out: list[float] = []
    for start in range(0, n, step):
        piece = list(tokens[start : start + step])
        batch.clear()
        want: list[tuple[int, int]] = []  # (batch index, position of the predicted token)
        for j, tok in enumerate(piece):
            pos = start + j
            flag = score_from - 1 <= pos < n - 1
            idx = batch.add(tok, pos, 0, flag)
            if flag:
                want.append((idx, pos + 1))
        ctx.decode(batch)
        for idx, target in want:
            out.append(_log_softmax_at(ctx.logits(idx), int(tokens[target])))
    return out


def perplexity(
    ctx: Context,
    text: str | Sequence[int],
    *,
    chunk_size: int | None = None,
    score_from: int | None = None,
    max_chunks: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> PerplexityResult:
    """Perplexity of ``ctx``'s model, with ``ctx``'s KV types and rotation, on ``text``.

    ``chunk_size`` defaults to ``min(ctx.n_ctx, 512)`` and ``score_from`` to half of it.
    """
    model = ctx.model
    tokens = model.tokenize(text, add_special=False) if isinstance(text, str) else list(text)
    size = chunk_size or min(ctx.n_ctx, 512)
    if size > ctx.n_ctx:
        raise ValueError(f"chunk_size {size} exceeds the context (n_ctx={ctx.n_ctx})")
    first = size // 2 if score_from is None else score_from
    n_chunks = len(tokens) // size
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1:
        raise ValueError(f"the text has {len(tokens)} tokens: at least chunk_size={size} are needed")
    bos = model.vocab.bos if model.vocab.add_bos else None
    t0 = time.perf_counter()
    total = 0.0
    count = 0
    per_chunk: list[float] = []
    for c in range(n_chunks):
        chunk = tokens[c * size : (c + 1) * size]
        if bos is not None:
            chunk = [bos, *chunk[1:]]
        lps = token_logprobs(ctx, chunk, max(first, 1))
        nll = -sum(lps)
        total += nll
        count += len(lps)
        per_chunk.append(math.exp(nll / len(lps)))
        if progress is not None:
            progress(c + 1, n_chunks)
    mean = total / count
    return PerplexityResult(
        ppl=math.exp(mean),
        nll=mean,
        n_scored=count,
        n_chunks=n_chunks,
        chunk_ppl=per_chunk,
        seconds=time.perf_counter() - t0,
    )
