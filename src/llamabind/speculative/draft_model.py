"""Draft-model drafting: a second (small) model with the same vocabulary proposes the tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ..core import Batch, Context, ContextParams, Model, Sampler
from ..errors import ContextOverflowError
from ..generation.draft import Draft, Drafter
from ..generation.generator import common_prefix
from ..generation.sampling import SamplingParams

__all__ = ["DraftModelDrafter", "check_vocab_compatible"]

#: llama.cpp's own speculative example tolerates this much difference in vocabulary size
MAX_VOCAB_DIFF = 128


def check_vocab_compatible(target: Model, draft: Model) -> None:
    """Raise ValueError when ``draft`` cannot draft for ``target`` (different tokenizers)."""
    vt, vd = target.vocab, draft.vocab
    if vt.type != vd.type:
        raise ValueError(
            f"draft model {draft.path.name} has a {vd.type} vocabulary, the target {target.path.name} {vt.type}"
        )
    nt, nd = vt.n_tokens, vd.n_tokens
    if abs(nt - nd) > MAX_VOCAB_DIFF:
        raise ValueError(
            f"draft model vocabulary ({nd} tokens) differs from the target's ({nt}) by more than {MAX_VOCAB_DIFF}"
        )
    n = min(nt, nd)
    for i in range(0, n, max(1, n // 257)):
        if vt.token_text(i) != vd.token_text(i):
            raise ValueError(
                f"token {i} is {vd.token_text(i)!r} in the draft model but {vt.token_text(i)!r} in the target: "
                "the models do not share a tokenizer"
            )
    if vt.bos != vd.bos or vt.eos != vd.eos:
        raise ValueError("draft and target models have different BOS/EOS tokens")


class DraftModelDrafter(Drafter):
    """Drafts with ``model`` in its own context (sequence ``seq_id`` of it).

    ``mode``: ``"greedy"`` proposes the draft model's argmax (deterministic drafts);
    ``"sample"`` samples from the draft model's distribution under the same sampling settings
    as the target and returns that distribution, for the standard rejection-sampling rule;
    ``"auto"`` (default) samples when the target samples (temperature > 0) and is greedy otherwise.
    ``draft_sampling`` replaces the target's settings on the draft side (any proposal
    distribution keeps the output exact; a closer one is accepted more often).
    ``p_min`` stops a draft early at a token the draft model is less sure of than that.

    A context can be shared by several drafters (one sequence each, e.g. one per server slot):
    pass ``ctx`` (with ``n_seq_max`` > ``seq_id``) instead of letting the drafter create one.
    """

    kind = "draft"

    def __init__(
        self,
        model: Model,
        n_draft: int = 8,
        *,
        ctx: Context | None = None,
        seq_id: int = 0,
        n_ctx: int = 4096,
        n_batch: int = 512,
        n_threads: int | None = None,
        p_min: float = 0.0,
        mode: str = "auto",
        target: Model | None = None,
        seed: int | None = None,
        draft_sampling: SamplingParams | None = None,
    ) -> None:
        super().__init__(n_draft)
        if mode not in ("auto", "greedy", "sample"):
            raise ValueError("mode must be auto, greedy or sample")
        if target is not None:
            check_vocab_compatible(target, model)
        self.model = model
        self.mode = mode
        self.p_min = float(p_min)
        self.seq_id = seq_id
        self._own_ctx = ctx is None
        self.ctx = ctx or Context(
            model, ContextParams(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, n_threads_batch=n_threads)
        )
        self.cached: list[int] = []
        self._batch = Batch(self.ctx.n_batch)
        self._sampler: Sampler | None = None  # sampling mode: the draft-side chain
        self._rng = np.random.default_rng(seed)
        self._draft_sampling = draft_sampling
        self._sampling = False

    # ------------------------------------------------------------ config
    def configure(self, sampling: SamplingParams | None) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        sampled = sampling is not None and not sampling.greedy
        self._sampling = self.mode == "sample" or (self.mode == "auto" and sampled)
        if self._draft_sampling is not None and self._draft_sampling.greedy:
            self._sampling = False
        if self._sampling:
            sp = sampling if sampling is not None and not sampling.greedy else SamplingParams()
            if self._draft_sampling is not None:
                sp = self._draft_sampling
            # the draft side has no grammar / processors: q only needs to be a distribution
            sp = sp.replace(grammar=None, logits_processors=(), mirostat=0, adaptive_target=-1.0)
            self._sampler = sp.build(self.model)
            seed = sp.seed if sp.seed is not None else (sampling.seed if sampling is not None else None)
            if seed is not None:  # a seeded generation drafts reproducibly too
                self._rng = np.random.default_rng(int(seed) ^ 0x5EED)

    # ------------------------------------------------------------ drafting
    def reset(self) -> None:
        self.ctx.memory.remove(self.seq_id, -1, -1)
        self.cached = []

    def _sync(self, seq: list[int]) -> None:
        """Make this context hold ``seq`` with logits for its last token (prefix reuse)."""
        n_ctx = self.ctx.n_ctx_per_seq
        if len(seq) >= n_ctx:
            raise ContextOverflowError(
                f"draft context of {n_ctx} tokens cannot hold {len(seq)} tokens",
                n_tokens=len(seq),
                n_ctx=n_ctx,
            )
        keep = common_prefix(self.cached, seq)
        if keep == len(seq):
            keep -= 1
        if keep < len(self.cached):
            if not self.ctx.memory.remove(self.seq_id, keep, -1):
                self.ctx.memory.remove(self.seq_id, -1, -1)
                keep = 0
            del self.cached[keep:]
        step = self.ctx.n_batch
        pos = keep
        while pos < len(seq):
            chunk = seq[pos : pos + step]
            self._batch.clear()
            self._batch.add_sequence(chunk, pos, self.seq_id, logits_last=pos + len(chunk) == len(seq))
            self.ctx.decode(self._batch)
            self.cached.extend(chunk)
            pos += len(chunk)

    def _draft(self, history: Sequence[int], last: int, n_max: int) -> Draft:
        seq = list(history)
        seq.append(last)
        n_ctx = self.ctx.n_ctx_per_seq
        n_max = min(n_max, n_ctx - len(seq) - 1)
        if n_max <= 0:
            return Draft()
        self._sync(seq)
        tokens: list[int] = []
        probs: list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]] | None = (
            [] if self._sampling else None
        )
        for i in range(n_max):
            logits = self.ctx.logits(-1)
            if self._sampling:
                assert self._sampler is not None and probs is not None
                ids, p = self._sampler.apply(logits)
                if ids.shape[0] == 0:
                    break
                tok = int(self._rng.choice(ids, p=p / p.sum()))
                conf = float(p[ids == tok][0]) if self.p_min > 0 else 1.0
            else:
                tok = int(np.argmax(logits))
                conf = _softmax_at(logits, tok) if self.p_min > 0 else 1.0
            if conf < self.p_min:
                break
            tokens.append(tok)
            if probs is not None:
                probs.append((ids.astype(np.int32), (p / p.sum()).astype(np.float32)))
            if i + 1 < n_max:
                self._batch.clear()
                self._batch.add(tok, len(self.cached), self.seq_id, True)
                self.ctx.decode(self._batch)
                self.cached.append(tok)
        return Draft(tokens, probs)

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
        if self._own_ctx:
            self.ctx.close()


def _softmax_at(logits: npt.NDArray[np.float32], tok: int) -> float:
    x = logits.astype(np.float64)
    m = float(x.max())
    return float(np.exp(x[tok] - m) / np.exp(x - m).sum())
