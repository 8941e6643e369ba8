"""`SamplingParams`: the fields an OpenAI request or CLI flag maps onto, built into a Sampler chain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..core import Model, Sampler
from ..core.sampler import LogitsProcessor, check_dry_sequence_breakers

__all__ = ["SamplingParams"]


@dataclass
class SamplingParams:
    """Sampling settings. ``temperature <= 0`` is greedy decoding.

    :meth:`build` makes the chain in llama.cpp's default order: logit bias → penalties → DRY →
    top-n-sigma → top-k → typical → top-p → min-p → XTC → temperature (dynamic if
    ``dynatemp_range > 0``) → dist (or mirostat / adaptive-p). A grammar, when given, comes first
    so that every later sampler only sees tokens the grammar allows (``Sampler.sample`` checks it
    after the rest of the chain and re-samples with it only when it rejects the token, as
    llama.cpp's common sampler does). ``repeat_last_n`` and ``dry_penalty_last_n`` of ``-1`` mean
    the whole context; windows wider than the model's training context are clamped to it.
    ``dry_sequence_breakers``: at most 8, each at most 40 characters, 64 in all. A grammar that the other
    samplers leave no token for (a ``logit_bias`` of -inf on every token it allows) makes
    ``Sampler.sample`` raise ``GrammarError`` ("grammar exhausted") instead of crashing llama.cpp.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    top_n_sigma: float = -1.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: Sequence[str] = ("\n", ":", '"', "*")
    mirostat: int = 0  # 0 off, 1 v1, 2 v2
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    adaptive_target: float = -1.0  # < 0 disabled
    adaptive_decay: float = 0.9
    min_keep: int = 1
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    seed: int | None = None  # None: random
    grammar: Any = None  # GBNF text or llamabind.grammar.Grammar
    grammar_root: str = "root"
    grammar_lazy: bool = False
    grammar_trigger_patterns: Sequence[str] = ()
    grammar_trigger_tokens: Sequence[int] = ()
    #: a (non-lazy) grammar's output that is about to run out of ``max_tokens`` or context is
    #: closed validly instead of cut (``llamabind.generation.closing``); the finish reason stays
    #: ``"length"`` and the result says ``closed``
    close_on_budget: bool = True
    logits_processors: Sequence[LogitsProcessor] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def replace(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def validate(self) -> None:
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError("top_p must be in [0, 1]")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError("min_p must be in [0, 1]")
        if self.repeat_penalty <= 0:
            raise ValueError("repeat_penalty must be > 0 (1.0 disables it)")
        if self.mirostat not in (0, 1, 2):
            raise ValueError("mirostat must be 0, 1 or 2")
        if not -2.0 <= self.frequency_penalty <= 2.0 or not -2.0 <= self.presence_penalty <= 2.0:
            raise ValueError("frequency_penalty and presence_penalty must be in [-2, 2]")
        if self.repeat_last_n < -1:
            raise ValueError("repeat_last_n must be -1 (the whole context), 0 (off) or a positive window")
        if self.dry_penalty_last_n < -1:
            raise ValueError(
                "dry_penalty_last_n must be -1 (the whole context), 0 (off) or a positive window"
            )
        check_dry_sequence_breakers(self.dry_sequence_breakers)

    def build(self, model: Model, *, no_perf: bool = True) -> Sampler:
        """A fresh Sampler chain for ``model``."""
        self.validate()
        s = Sampler(model, no_perf=no_perf)
        seed = 0xFFFFFFFF if self.seed is None else int(self.seed) & 0xFFFFFFFF
        try:
            if self.grammar is not None:
                s.grammar(
                    self.grammar,
                    self.grammar_root,
                    lazy=self.grammar_lazy,
                    trigger_patterns=self.grammar_trigger_patterns,
                    trigger_tokens=self.grammar_trigger_tokens,
                )
            if self.logit_bias:
                s.logit_bias(self.logit_bias)
            if self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0:
                s.penalties(
                    self.repeat_last_n, self.repeat_penalty, self.frequency_penalty, self.presence_penalty
                )
            if self.dry_multiplier > 0.0:
                s.dry(
                    self.dry_multiplier,
                    self.dry_base,
                    self.dry_allowed_length,
                    self.dry_penalty_last_n,
                    self.dry_sequence_breakers,
                )
            for proc in self.logits_processors:
                s.logits_processor(proc)
            if self.greedy:
                return s.greedy()
            if self.mirostat == 1:
                return s.temp(self.temperature).mirostat(self.mirostat_tau, self.mirostat_eta, seed=seed)
            if self.mirostat == 2:
                return s.temp(self.temperature).mirostat_v2(self.mirostat_tau, self.mirostat_eta, seed=seed)
            if self.top_n_sigma > 0:
                s.top_n_sigma(self.top_n_sigma)
            if self.top_k > 0:
                s.top_k(self.top_k)
            if self.typical_p < 1.0:
                s.typical(self.typical_p, self.min_keep)
            if self.top_p < 1.0:
                s.top_p(self.top_p, self.min_keep)
            if self.min_p > 0.0:
                s.min_p(self.min_p, self.min_keep)
            if self.xtc_probability > 0.0:
                s.xtc(self.xtc_probability, self.xtc_threshold, self.min_keep, seed)
            if self.dynatemp_range > 0.0:
                s.temp_ext(self.temperature, self.dynatemp_range, self.dynatemp_exponent)
            else:
                s.temp(self.temperature)
            if self.adaptive_target >= 0.0:
                return s.adaptive_p(self.adaptive_target, self.adaptive_decay, seed)
            return s.dist(seed)
        except BaseException:
            s.close()
            raise
