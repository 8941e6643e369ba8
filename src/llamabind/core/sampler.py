"""`Sampler`: a llama.cpp sampler chain, composable in any order, seedable, cloneable."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._native import context as nctx
from .._native import sampler as nsmp
from ..errors import GrammarError
from ._owner import NativeOwner
from .context import Context
from .model import Model

__all__ = [
    "MAX_DRY_BREAKERS_TOTAL_CHARS",
    "MAX_DRY_BREAKER_CHARS",
    "MAX_DRY_SEQUENCE_BREAKERS",
    "LogitsProcessor",
    "Sampler",
    "SamplerPerf",
    "check_dry_sequence_breakers",
]

#: Most DRY sequence breakers. llama.cpp scans the whole vocabulary for every breaker when it
#: builds the sampler (tens of ms a breaker for a 49k-token vocabulary, up to ~0.2 s under load), so
#: thousands of them stall whatever thread builds the chain for minutes.
MAX_DRY_SEQUENCE_BREAKERS = 8
#: Longest DRY sequence breaker, in characters (llama.cpp silently truncates longer ones to 40).
MAX_DRY_BREAKER_CHARS = 40
#: Most characters over all DRY sequence breakers (the scan's cost grows with them too).
MAX_DRY_BREAKERS_TOTAL_CHARS = 64

#: ``fn(tokens_so_far, logits) -> logits`` — a Python logits processor (slow path, opt-in).
LogitsProcessor = Callable[[Sequence[int], npt.NDArray[np.float32]], npt.NDArray[np.float32]]

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed
#: samplers that select a token; ``sample`` needs one at the end of the chain
_SELECTORS = frozenset({"greedy", "dist", "mirostat", "mirostat_v2", "adaptive_p"})
#: samplers whose ``apply`` keeps no state (or only an RNG): a chain of these after a leading grammar
#: may be run once without the grammar before the grammar checks the chosen token
_DEFERRABLE = frozenset(
    {
        "greedy",
        "dist",
        "top_k",
        "top_p",
        "min_p",
        "typical",
        "temp",
        "temp_ext",
        "xtc",
        "top_n_sigma",
        "penalties",
        "dry",
        "logit_bias",
        "infill",
    }
)


def check_dry_sequence_breakers(breakers: Sequence[str]) -> list[str]:
    """The breakers as a list; ValueError beyond `MAX_DRY_SEQUENCE_BREAKERS` or
    `MAX_DRY_BREAKER_CHARS`, or for anything but strings."""
    if isinstance(breakers, str):
        raise ValueError("dry_sequence_breakers must be a list of strings, not one string")
    out = list(breakers)
    if len(out) > MAX_DRY_SEQUENCE_BREAKERS:
        raise ValueError(
            f"dry_sequence_breakers has {len(out)} entries; at most {MAX_DRY_SEQUENCE_BREAKERS} are allowed"
        )
    for b in out:
        if not isinstance(b, str):
            raise ValueError("dry_sequence_breakers must be strings")
        if len(b) > MAX_DRY_BREAKER_CHARS:
            raise ValueError(
                f"a DRY sequence breaker is {len(b)} characters long; at most {MAX_DRY_BREAKER_CHARS} are allowed"
            )
        if "\x00" in b:
            raise ValueError("a DRY sequence breaker must not contain NUL characters")
    if sum(len(b) for b in out) > MAX_DRY_BREAKERS_TOTAL_CHARS:
        raise ValueError(
            f"dry_sequence_breakers total {sum(len(b) for b in out)} characters; at most "
            f"{MAX_DRY_BREAKERS_TOTAL_CHARS} are allowed"
        )
    return out


@dataclass(frozen=True)
class SamplerPerf:
    t_sample_ms: float
    n_sample: int


class Sampler(NativeOwner):
    """A sampler chain. Build it fluently::

        s = Sampler(model).penalties(64, 1.1).top_k(40).top_p(0.95).temp(0.8).dist(seed=42)
        token = s.sample(ctx, idx)        # samples from the logits of batch index idx and accepts it

    Every llama.cpp sampler is available; order is the order of the calls. A chain must end in a
    selecting sampler (``greedy``, ``dist``, ``mirostat``/``mirostat_v2``) before ``sample``.

    A grammar that comes first is checked last, as llama.cpp's own common sampler does: ``sample``
    runs the rest of the chain over the full vocabulary, asks the grammar only whether the chosen
    token is allowed, and re-samples with the grammar applied first when it is not. Applying a
    grammar to every token of the vocabulary is what makes constrained sampling slow; a greedy
    chain selects the same token either way. Set ``grammar_first = True`` to always apply the
    grammar first (seeded sampled output then differs, as the RNG is drawn a different number of
    times; chains with mirostat or adaptive-p, whose ``apply`` updates state, always do).
    """

    def __init__(self, model: Model, *, no_perf: bool = False) -> None:
        model._ptr()  # ClosedError for a closed model (its child would never be freed with it)
        self.model = model
        self.grammar_first = False
        self._names: list[str] = []
        self._grammar: tuple[str, str] | None = None
        self._processors: list[LogitsProcessor] = []
        self._history: list[int] = []
        self._no_perf = no_perf
        self._extra_ms = 0.0  # time of grammar-last sampling passes, which llama.cpp does not time
        self._members: list[Any] | None = None
        self._candidates: nsmp.Candidates | None = None
        self._own(nsmp.chain_init(no_perf), nsmp.sampler_free, parent=model)

    # ---------------------------------------------------------- building
    def _add(self, name: str, handle: int | None) -> Sampler:
        if not handle:
            raise ValueError(f"llama.cpp could not create the {name} sampler with these parameters")
        nsmp.chain_add(self._ptr(), handle)  # the chain takes ownership
        self._names.append(name)
        self._members = None
        return self

    def _vocab(self) -> int:
        return self.model.vocab._v()

    def _last_n(self, last_n: int, what: str) -> int:
        # llama.cpp's C API clamps a negative window to 0, which silently turns the sampler off;
        # its "-1 = context size" convention lives in common/, so it is applied here. It also
        # allocates the whole window up front: a window of 2**31-1 tokens is 8 GiB and ends in
        # std::bad_alloc, which aborts the process. No more tokens than the model's training
        # context can be in view, so a wider window is clamped to it.
        last_n = int(last_n)
        if last_n < -1:
            raise ValueError(f"{what} must be -1 (the whole context), 0 (off) or a positive window")
        return self.model.n_ctx_train if last_n == -1 else min(last_n, self.model.n_ctx_train)

    def greedy(self) -> Sampler:
        return self._add("greedy", nsmp.sampler_init("greedy"))

    def dist(self, seed: int = DEFAULT_SEED) -> Sampler:
        return self._add("dist", nsmp.sampler_init("dist", seed & 0xFFFFFFFF))

    def top_k(self, k: int) -> Sampler:
        return self._add("top_k", nsmp.sampler_init("top_k", int(k)))

    def top_p(self, p: float, min_keep: int = 1) -> Sampler:
        return self._add("top_p", nsmp.sampler_init("top_p", float(p), int(min_keep)))

    def min_p(self, p: float, min_keep: int = 1) -> Sampler:
        return self._add("min_p", nsmp.sampler_init("min_p", float(p), int(min_keep)))

    def typical(self, p: float, min_keep: int = 1) -> Sampler:
        return self._add("typical", nsmp.sampler_init("typical", float(p), int(min_keep)))

    def temp(self, t: float) -> Sampler:
        return self._add("temp", nsmp.sampler_init("temp", float(t)))

    def temp_ext(self, t: float, delta: float, exponent: float = 1.0) -> Sampler:
        """Dynamic temperature: t ± delta scaled by entropy."""
        return self._add("temp_ext", nsmp.sampler_init("temp_ext", float(t), float(delta), float(exponent)))

    def xtc(
        self, probability: float, threshold: float, min_keep: int = 1, seed: int = DEFAULT_SEED
    ) -> Sampler:
        return self._add(
            "xtc",
            nsmp.sampler_init("xtc", float(probability), float(threshold), int(min_keep), seed & 0xFFFFFFFF),
        )

    def top_n_sigma(self, n: float) -> Sampler:
        return self._add("top_n_sigma", nsmp.sampler_init("top_n_sigma", float(n)))

    def adaptive_p(self, target: float, decay: float, seed: int = DEFAULT_SEED) -> Sampler:
        return self._add(
            "adaptive_p", nsmp.sampler_init("adaptive_p", float(target), float(decay), seed & 0xFFFFFFFF)
        )

    def mirostat(self, tau: float = 5.0, eta: float = 0.1, m: int = 100, seed: int = DEFAULT_SEED) -> Sampler:
        return self._add(
            "mirostat",
            nsmp.sampler_init(
                "mirostat", self.model.n_vocab, seed & 0xFFFFFFFF, float(tau), float(eta), int(m)
            ),
        )

    def mirostat_v2(self, tau: float = 5.0, eta: float = 0.1, seed: int = DEFAULT_SEED) -> Sampler:
        return self._add(
            "mirostat_v2", nsmp.sampler_init("mirostat_v2", seed & 0xFFFFFFFF, float(tau), float(eta))
        )

    def penalties(
        self, last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0, presence: float = 0.0
    ) -> Sampler:
        """Repeat/frequency/presence penalties over the last ``last_n`` accepted tokens
        (``-1``: the whole context, bounded by the model's training context; ``0``: off)."""
        if repeat <= 0:
            raise ValueError("repeat penalty must be > 0 (1.0 disables it)")
        return self._add(
            "penalties",
            nsmp.sampler_init(
                "penalties",
                self.model.n_vocab,
                self._last_n(last_n, "penalty last_n"),
                float(repeat),
                float(frequency),
                float(presence),
            ),
        )

    def dry(
        self,
        multiplier: float = 0.8,
        base: float = 1.75,
        allowed_length: int = 2,
        last_n: int = -1,
        sequence_breakers: Sequence[str] = ("\n", ":", '"', "*"),
    ) -> Sampler:
        """DRY ("don't repeat yourself") repetition penalty over the last ``last_n`` accepted
        tokens (``-1``: the whole context, bounded by the model's training context; ``0``: off).

        At most `MAX_DRY_SEQUENCE_BREAKERS` breakers of at most `MAX_DRY_BREAKER_CHARS`
        characters each and `MAX_DRY_BREAKERS_TOTAL_CHARS` in all (ValueError otherwise)."""
        breakers = check_dry_sequence_breakers(sequence_breakers)
        return self._add(
            "dry",
            nsmp.sampler_init(
                "dry",
                self._vocab(),
                float(multiplier),
                float(base),
                int(allowed_length),
                self._last_n(last_n, "DRY last_n"),
                breakers,
            ),
        )

    def logit_bias(self, biases: Mapping[int, float]) -> Sampler:
        self.model.vocab.check(biases.keys())
        return self._add(
            "logit_bias",
            nsmp.sampler_init(
                "logit_bias", self.model.n_vocab, [(int(t), float(b)) for t, b in biases.items()]
            ),
        )

    def infill(self) -> Sampler:
        return self._add("infill", nsmp.sampler_init("infill", self._vocab()))

    def grammar(
        self,
        grammar: str | Any,
        root: str = "root",
        *,
        lazy: bool = False,
        trigger_patterns: Sequence[str] = (),
        trigger_tokens: Sequence[int] = (),
    ) -> Sampler:
        """Constrain output with a GBNF grammar (a string or a ``llamabind.grammar.Grammar``).

        ``lazy=True`` leaves output free until a trigger pattern (regex on the generated text,
        matched from its start) or trigger token appears, then constrains from there.
        An invalid grammar raises :class:`GrammarError` before anything reaches llama.cpp.
        """
        from ..grammar import Grammar, validate_gbnf

        if isinstance(grammar, Grammar):
            text, root = grammar.text, grammar.root
        else:
            text = str(grammar)
            validate_gbnf(text, root)
        if lazy:
            if not trigger_patterns and not trigger_tokens:
                raise GrammarError("a lazy grammar needs trigger patterns or trigger tokens")
            self.model.vocab.check(trigger_tokens)
            handle = nsmp.sampler_init(
                "grammar_lazy_patterns",
                self._vocab(),
                text,
                root,
                list(trigger_patterns),
                list(trigger_tokens),
            )
        else:
            handle = nsmp.sampler_init("grammar", self._vocab(), text, root)
        if not handle:
            raise GrammarError(
                f"llama.cpp rejected the grammar (root rule {root!r}); see 'llamabind.native' logs"
            )
        self._grammar = (text, root)
        return self._add("grammar", handle)

    def logits_processor(self, fn: LogitsProcessor) -> Sampler:
        """Add a Python logits processor (opt-in slow path: copies n_vocab logits per token)."""
        self._processors.append(fn)
        return self

    # ---------------------------------------------------------- using
    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return nsmp.chain_n(self._ptr())

    def sample(self, ctx: Context, idx: int = -1) -> int:
        """Sample a token from the logits at batch index ``idx`` of ``ctx``'s last decode, and accept it."""
        if self._processors:
            return self._sample_python(ctx, idx)
        ptr = self._ptr()
        if not self._names or self._names[-1] not in _SELECTORS:
            # llama_sampler_sample asserts (aborts the process) when nothing was selected
            raise ValueError("the sampler chain selected no token (does it end in greedy/dist/mirostat?)")
        with ctx.exclusive() as cptr:
            if not nsmp.has_logits(cptr, idx):  # llama.cpp would assert on missing logits
                raise IndexError(f"no logits for batch index {idx}: decode it with logits=True")
            if self._grammar_last():
                token = self._sample_grammar_last(ptr, cptr, idx)
            elif self._grammar is not None:
                token = self._sample_checked(ptr, cptr, idx)
            else:
                token = nsmp.sampler_sample(ptr, cptr, idx)
        if token < 0:
            raise ValueError("the sampler chain selected no token (does it end in greedy/dist/mirostat?)")
        return token

    def _grammar_last(self) -> bool:
        names = self._names
        return (
            not self.grammar_first
            and len(names) > 1
            and names[0] == "grammar"
            and all(n in _DEFERRABLE for n in names[1:])
        )

    def _native_members(self, ptr: Any) -> tuple[list[Any], nsmp.Candidates]:
        if self._members is None:
            self._members = [nsmp.chain_get(ptr, i) for i in range(nsmp.chain_n(ptr))]
        if self._candidates is None:
            self._candidates = nsmp.Candidates(self.model.n_vocab)
        return self._members, self._candidates

    def _grammar_member(self, ptr: Any) -> Any:
        members, _ = self._native_members(ptr)
        return members[self._names.index("grammar")]

    def _check_grammar_allows(self, ptr: Any, token: int, logit: float) -> None:
        """Raise `GrammarError` unless the chain's grammar can accept ``token``.

        llama.cpp aborts the process when its grammar sampler is handed a token the grammar
        rejects, and every token is rejected once the chain leaves none the grammar allows (a
        ``logit_bias`` of -inf on the only allowed token, say): the selected token then still has
        a -inf logit, and it never reaches ``llama_sampler_accept``.
        """
        _, cand = self._native_members(ptr)
        if not math.isfinite(logit) or token < 0 or not cand.allows(self._grammar_member(ptr), token):
            raise GrammarError(
                "grammar exhausted: no token the grammar allows is left after the other samplers "
                "(logit_bias or banned tokens exclude every continuation the grammar permits)"
            )

    def _sample_checked(self, ptr: Any, cptr: Any, idx: int) -> int:
        """``llama_sampler_sample`` with a grammar check between selecting and accepting."""
        _, cand = self._native_members(ptr)
        logits = nctx.logits_ith(cptr, idx, cand.n_vocab)
        assert logits is not None  # checked by the caller
        cand.fill(logits)
        cand.apply(ptr)
        token = cand.selected()
        if token < 0:
            return token
        self._check_grammar_allows(ptr, token, cand.selected_logit())
        nsmp.sampler_accept(ptr, token)
        return token

    def _sample_grammar_last(self, ptr: Any, cptr: Any, idx: int) -> int:
        """llama.cpp common's grammar rejection sampling: sample without the leading grammar, keep
        the token if the grammar allows it, else sample again with the whole chain."""
        _, cand = self._native_members(ptr)
        assert self._members is not None
        logits = nctx.logits_ith(cptr, idx, cand.n_vocab)
        assert logits is not None  # checked by the caller
        t0 = time.perf_counter()
        cand.fill(logits)
        for smpl in self._members[1:]:
            cand.apply(smpl)
        token = cand.selected()
        allowed = token >= 0 and cand.allows(self._members[0], token)
        if not self._no_perf:
            self._extra_ms += (time.perf_counter() - t0) * 1000.0
        if not allowed:
            cand.fill(logits)
            cand.apply(ptr)  # the whole chain, grammar first (timed by llama.cpp's counters)
            token = cand.selected()
            if token < 0:
                return token
            self._check_grammar_allows(ptr, token, cand.selected_logit())
        nsmp.sampler_accept(ptr, token)
        return token

    def _sample_python(self, ctx: Context, idx: int) -> int:
        logits = ctx.logits(idx)
        for fn in self._processors:
            logits = np.asarray(fn(self._history, logits), dtype=np.float32)
        token = self.sample_logits(logits, accept=True)
        self._history.append(token)
        return token

    def sample_logits(self, logits: npt.NDArray[np.float32], *, accept: bool = True) -> int:
        """Apply the chain to a logits vector given from Python; returns the selected token."""
        data = np.empty(logits.shape[0], dtype=nsmp.TOKEN_DATA_DTYPE)
        data["id"] = np.arange(logits.shape[0], dtype=np.int32)
        data["logit"] = logits
        data["p"] = 0.0
        size, _sorted, selected = nsmp.sampler_apply(self._ptr(), data)
        if not 0 <= selected < size:
            raise ValueError("the sampler chain selected no token (does it end in greedy/dist/mirostat?)")
        token = int(data["id"][selected])
        if accept:
            if self._grammar is not None:
                self._check_grammar_allows(self._ptr(), token, float(data["logit"][selected]))
            nsmp.sampler_accept(self._ptr(), token)
        return token

    def apply(self, logits: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """Run the chain without selecting: the surviving (token ids, probabilities or logits)."""
        data = np.empty(logits.shape[0], dtype=nsmp.TOKEN_DATA_DTYPE)
        data["id"] = np.arange(logits.shape[0], dtype=np.int32)
        data["logit"] = logits
        data["p"] = 0.0
        size, _sorted, _sel = nsmp.sampler_apply(self._ptr(), data)
        kept = data[:size]
        return kept["id"].copy(), kept["p"].copy()

    def accept(self, token: int) -> None:
        """Tell stateful samplers (penalties, grammar, DRY, mirostat) a token was chosen elsewhere."""
        self.model.vocab.check((token,))
        if self._grammar is not None and not self._native_members(self._ptr())[1].allows(
            self._grammar_member(self._ptr()), token
        ):
            raise GrammarError(f"the grammar does not allow token {token} here")
        nsmp.sampler_accept(self._ptr(), token)
        if self._processors:
            self._history.append(token)

    def reset(self) -> None:
        nsmp.sampler_reset(self._ptr())
        self._history.clear()

    def clone(self) -> Sampler:
        """An independent copy with the same state (grammar position, penalty history, RNG)."""
        handle = nsmp.sampler_clone(self._ptr())
        if not handle:
            raise ValueError("this sampler chain cannot be cloned")
        twin = Sampler.__new__(Sampler)
        twin.model = self.model
        twin.grammar_first = self.grammar_first
        twin._no_perf = self._no_perf
        twin._extra_ms = 0.0
        twin._members = None
        twin._candidates = None
        twin._names = list(self._names)
        twin._grammar = self._grammar
        twin._processors = list(self._processors)
        twin._history = list(self._history)
        twin._own(handle, nsmp.sampler_free, parent=self.model)
        return twin

    @property
    def seed(self) -> int:
        return nsmp.sampler_get_seed(self._ptr())

    def perf(self) -> SamplerPerf:
        t, n = nsmp.perf_sampler(self._ptr())
        return SamplerPerf(t + self._extra_ms, n)

    def reset_perf(self) -> None:
        nsmp.perf_sampler_reset(self._ptr())
        self._extra_ms = 0.0

    def __repr__(self) -> str:
        return f"<Sampler {' → '.join(self._names) or '(empty)'}>"
