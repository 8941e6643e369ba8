"""Speculative decoding: one drafter interface, three drafters, exact verification.

* :class:`DraftModelDrafter` — a second (small) model with the same vocabulary;
* :class:`NgramDrafter` — prompt lookup: continuations of n-grams already in the sequence;
* :class:`MtpDrafter` — the model's own next-n (MTP) layers in a paired context of type MTP.

Pass a drafter to ``Generator.stream/complete(..., draft=drafter)``; the batching ``Scheduler``
takes ``SchedulerConfig(spec="ngram" | "draft" | "mtp")``. Greedy output is identical to plain
decoding; sampled output keeps the target's distribution (rejection sampling).

    >>> gen = Generator(ctx)
    >>> r = gen.complete(prompt, max_tokens=128, sampling=SamplingParams(temperature=0),
    ...                  draft=NgramDrafter(n_draft=8))
    >>> r.timings.accepted_tokens / r.timings.drafted_tokens
"""

from __future__ import annotations

from ..generation.draft import Draft, Drafter, SpecStats
from ..generation.verify import Verdict, rejection_step, sample_residual, verify_draft
from .draft_model import DraftModelDrafter, check_vocab_compatible
from .mtp import MtpConfig, MtpDrafter, check_mtp_model
from .ngram import NgramDrafter
from .runner import Comparison, RunResult, compare, make_drafter

__all__ = [
    "Comparison",
    "Draft",
    "DraftModelDrafter",
    "Drafter",
    "MtpConfig",
    "MtpDrafter",
    "NgramDrafter",
    "RunResult",
    "SpecStats",
    "Verdict",
    "check_mtp_model",
    "check_vocab_compatible",
    "compare",
    "make_drafter",
    "rejection_step",
    "sample_residual",
    "verify_draft",
]
