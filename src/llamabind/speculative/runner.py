"""Building drafters by name, and timing a plain run against a speculative run (CLI, benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core import Context, Model
from ..generation.draft import Drafter, SpecStats
from ..generation.generator import GenerationResult, Generator
from ..generation.sampling import SamplingParams
from .draft_model import DraftModelDrafter
from .mtp import MtpConfig, MtpDrafter
from .ngram import NgramDrafter

__all__ = ["Comparison", "RunResult", "compare", "make_drafter"]

KINDS = ("draft", "ngram", "mtp")


def make_drafter(
    kind: str,
    target: Context,
    *,
    draft_model: Model | None = None,
    n_draft: int | None = None,
    p_min: float = 0.0,
    n_min: int = 0,
    ngram_min: int = 2,
    ngram_max: int = 4,
    n_threads: int | None = None,
) -> Drafter:
    """A drafter for one sequence of ``target``: ``"draft"`` (needs ``draft_model``), ``"ngram"``, ``"mtp"``."""
    if kind == "draft":
        if draft_model is None:
            raise ValueError("the draft-model drafter needs a draft model")
        return DraftModelDrafter(
            draft_model,
            n_draft if n_draft is not None else 8,
            n_ctx=target.n_ctx,
            n_batch=target.n_batch,
            n_threads=n_threads,
            p_min=p_min,
            target=target.model,
        )
    if kind == "ngram":
        return NgramDrafter(n_draft if n_draft is not None else 8, ngram_min=ngram_min, ngram_max=ngram_max)
    if kind == "mtp":
        return MtpDrafter(target, MtpConfig(n_draft if n_draft is not None else 3, p_min=p_min, n_min=n_min))
    raise ValueError(f"unknown drafter {kind!r} (choose from {', '.join(KINDS)})")


@dataclass
class RunResult:
    text: str
    tokens: list[int]
    seconds: float  # wall time of the whole call (prompt + generation)
    generation_seconds: float
    result: GenerationResult

    @property
    def tokens_per_second(self) -> float:
        n = len(self.tokens)
        return n / self.generation_seconds if self.generation_seconds > 0 else 0.0


@dataclass
class Comparison:
    plain: RunResult
    speculative: RunResult
    stats: SpecStats = field(default_factory=SpecStats)

    @property
    def identical(self) -> bool:
        return self.plain.tokens == self.speculative.tokens

    @property
    def speedup(self) -> float:
        a, b = self.plain.tokens_per_second, self.speculative.tokens_per_second
        return b / a if a > 0 else 0.0


def _run(gen: Generator, prompt: str | Sequence[int], drafter: Drafter | None, **kw: object) -> RunResult:
    gen.reset()
    if drafter is not None:
        drafter.reset()
    t0 = time.perf_counter()
    res = gen.complete(prompt, draft=drafter, **kw)
    dt = time.perf_counter() - t0
    return RunResult(res.text, res.tokens, dt, res.timings.generation_ms / 1000, res)


def compare(
    ctx: Context,
    prompt: str | Sequence[int],
    drafter: Drafter,
    *,
    max_tokens: int = 128,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    warmup: bool = True,
) -> Comparison:
    """Generate the same completion without and with ``drafter`` (cold KV cache both times)."""
    sp = sampling or SamplingParams(temperature=0.0)
    gen = Generator(ctx)
    if warmup:  # the first decode of a process pays one-off costs (graph allocation)
        gen.complete(prompt, max_tokens=2, sampling=sp)
    plain = _run(gen, prompt, None, max_tokens=max_tokens, sampling=sp, stop=stop)
    before = SpecStats()
    before.add(drafter.stats)
    spec = _run(gen, prompt, drafter, max_tokens=max_tokens, sampling=sp, stop=stop)
    after = drafter.stats
    stats = SpecStats(
        rounds=after.rounds - before.rounds,
        drafted=after.drafted - before.drafted,
        accepted=after.accepted - before.accepted,
        generated=after.generated - before.generated,
        draft_seconds=after.draft_seconds - before.draft_seconds,
    )
    gen.reset()
    return Comparison(plain, spec, stats)
