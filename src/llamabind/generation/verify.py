"""Verifying a draft against the target's logits: greedy / sample-and-compare, and rejection sampling.

Both keep the output distribution exactly the target's:

* **Deterministic drafts** (n-gram lookup, greedy drafting, MTP): the target samples its own token
  at each drafted position with its normal sampler chain and keeps going while it agrees with
  the draft. With greedy sampling this reproduces plain greedy decoding token for token; with
  random sampling it is the rejection rule for a one-hot proposal.
* **Stochastic drafts** carrying their proposal distribution ``q`` (a draft model that samples):
  the standard speculative-sampling rule — accept draft token ``x`` with probability
  ``min(1, p(x) / q(x))``; at the first rejection sample from ``norm(max(p - q, 0))``; when every
  draft token is accepted, sample one more token from ``p`` at the next position. ``p`` is the
  distribution after the target's whole sampler chain (temperature, top-k/p, penalties, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..core import Context, Sampler
from .draft import Draft
from .logprobs import TokenLogprob, token_logprobs

__all__ = ["Verdict", "rejection_step", "sample_residual", "supports_rejection", "verify_draft"]

Dist = tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]


@dataclass
class Verdict:
    """What one verification round produced: ``tokens`` = accepted drafts + the target's own token."""

    tokens: list[int]
    accepted: int
    logprobs: list[TokenLogprob] = field(default_factory=list)


def supports_rejection(sampler: Sampler) -> bool:
    """True when the chain ends in ``dist``: its distribution can be read with ``Sampler.apply``."""
    names = sampler.names
    return bool(names) and names[-1] == "dist" and not sampler._processors


def _dense(dist: Dist, n_vocab: int) -> npt.NDArray[np.float64]:
    ids, p = dist
    out = np.zeros(n_vocab, dtype=np.float64)
    out[ids] = p
    s = out.sum()
    if s > 0:
        out /= s
    return out


def sample_residual(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64], rng: np.random.Generator) -> int:
    """Sample from ``norm(max(p - q, 0))`` (from ``p`` when that is all zero)."""
    r = np.maximum(p - q, 0.0)
    s = r.sum()
    if s <= 1e-12:
        r, s = p, p.sum()
    return int(rng.choice(r.shape[0], p=r / s))


def rejection_step(
    p: npt.NDArray[np.float64], q: npt.NDArray[np.float64], x: int, rng: np.random.Generator
) -> tuple[bool, int]:
    """One position of speculative sampling: ``(accepted, token)`` for draft token ``x``.

    ``p`` (target) and ``q`` (draft) are dense probability vectors over the same vocabulary.
    """
    px, qx = float(p[x]), float(q[x])
    if qx <= 0.0:  # the drafter could not have proposed x: treat as a rejection
        return False, sample_residual(p, q, rng)
    if px >= qx or rng.random() < px / qx:
        return True, x
    return False, sample_residual(p, q, rng)


def verify_draft(
    ctx: Context,
    sampler: Sampler,
    rows: Sequence[int],
    draft: Draft,
    *,
    rng: np.random.Generator | None = None,
    logprobs: int | None = None,
) -> Verdict:
    """Verify ``draft`` against the logits at batch indices ``rows`` of ``ctx``'s last decode.

    ``rows[i]`` holds the target's logits *after* draft token ``i - 1`` (``rows[0]``: after the
    last accepted token), so ``len(rows) == len(draft) + 1``. Every emitted token is accepted
    into ``sampler`` (stateful samplers stay in step). With ``rng`` and a draft carrying
    ``probs``, the rejection rule is used; otherwise sample-and-compare.
    """
    n = len(draft.tokens)
    if len(rows) != n + 1:
        raise ValueError(f"{n} draft tokens need {n + 1} logit rows, got {len(rows)}")
    out: list[int] = []
    lps: list[TokenLogprob] = []
    use_rejection = rng is not None and draft.probs is not None and n > 0 and supports_rejection(sampler)
    if not use_rejection:
        for i, row in enumerate(rows):
            logits = ctx.logits(row) if logprobs is not None else None
            token = sampler.sample(ctx, row)
            out.append(token)
            if logits is not None:
                lps.append(token_logprobs(logits, token, logprobs or 0))
            if i >= n or token != draft.tokens[i]:
                return Verdict(out, i, lps)
        return Verdict(out, n, lps)  # pragma: no cover - the loop always returns
    assert rng is not None and draft.probs is not None
    n_vocab = ctx.n_vocab
    for i, row in enumerate(rows):
        logits = ctx.logits(row)
        p = _dense(sampler.apply(logits), n_vocab)
        if i < n:
            ok, token = rejection_step(p, _dense(draft.probs[i], n_vocab), draft.tokens[i], rng)
        else:
            ok, token = False, int(rng.choice(n_vocab, p=p))
        sampler.accept(token)
        out.append(token)
        if logprobs is not None:
            lps.append(token_logprobs(logits, token, logprobs))
        if not ok:
            return Verdict(out, i, lps)
    return Verdict(out, n, lps)  # pragma: no cover - the bonus row always ends the loop
