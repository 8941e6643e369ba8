"""Speculative decoding per scheduler slot (``SchedulerConfig.spec``).

Every slot gets its own drafter: n-gram lookup, a draft model sharing one draft context with a
sequence per slot, or the model's MTP head in a paired MTP context. A slot's draft rides in the
same step's batch right after its last token, with logits on every drafted position; after the
decode the slot keeps the prefix its sampler agrees with (plus one token of its own) and the
rejected tail leaves the KV cache. Greedy requests produce exactly the tokens they would without
speculation. Slots without a draft in a step never come here: they sample directly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..core import Context, ContextParams, Model
from ..errors import LlamabindError, UnsupportedError
from ..generation.draft import Draft
from ..generation.verify import Verdict, verify_draft
from .config import SchedulerConfig, SchedulerStats
from .slots import Slot

__all__ = ["SPEC_KINDS", "SlotSpeculation"]

log = logging.getLogger("llamabind.batching")

SPEC_KINDS = (None, "ngram", "draft", "mtp")


class SlotSpeculation:
    """Builds the slots' drafters (and the draft context they share) and runs their rounds."""

    def __init__(
        self,
        model: Model,
        ctx: Context,
        config: SchedulerConfig,
        slots: Sequence[Slot],
        stats: SchedulerStats,
        draft_model: Model | None = None,
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.slots = slots
        self.stats = stats
        self.n_ctx_slot = config.ctx_per_slot
        self.draft_ctx: Context | None = None
        try:
            self._setup(config, draft_model)
        except BaseException:
            self.close()
            raise

    def _setup(self, cfg: SchedulerConfig, draft_model: Model | None) -> None:
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

            if draft_model is None:
                raise ValueError("spec='draft' needs Scheduler(..., draft_model=Model(...))")
            check_vocab_compatible(self.model, draft_model)
            self.draft_ctx = Context(
                draft_model,
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
                    draft_model,
                    cfg.n_draft,
                    ctx=self.draft_ctx,
                    seq_id=s.id,
                    p_min=cfg.spec_p_min,
                    mode="greedy",
                )
        elif cfg.spec == "mtp":
            from ..speculative.mtp import MtpConfig, MtpDrafter, check_mtp_model

            check_mtp_model(self.model)
            self.draft_ctx = Context(self.model, cfg.context_params().replace(ctx_type="mtp"), other=self.ctx)
            mcfg = MtpConfig(cfg.n_draft, p_min=cfg.spec_p_min)
            for s in self.slots:
                s.drafter = MtpDrafter(self.ctx, mcfg, ctx=self.draft_ctx, seq_id=s.id)

    def close(self) -> None:
        for s in self.slots:
            if s.drafter is not None:
                s.drafter.close()
                s.drafter = None
        if self.draft_ctx is not None:
            self.draft_ctx.close()
            self.draft_ctx = None

    def draft(self, s: Slot, room: int) -> Draft | None:
        """The slot's draft for this step (None without a drafter, or when it has nothing)."""
        req, out, drafter = s.req, s.out, s.drafter
        if drafter is None or req is None or out is None or not req.speculative or room <= 0:
            return None
        # draft at most what can still be emitted and what fits the slot
        room = min(room, out.remaining, self.n_ctx_slot - len(s.cached) - 2)
        if room <= 0:
            return None
        try:
            d = drafter.draft(s.cached, s.last_token, room)
        except LlamabindError as exc:  # e.g. the draft context is full: go on without a draft
            log.warning("slot %d: drafting failed (%s); continuing without a draft", s.id, exc)
            drafter.reset()
            return None
        if not d.tokens:
            return None
        if len(d.tokens) > room:
            d = Draft(d.tokens[:room])
        try:
            self.model.vocab.check(d.tokens)
        except LlamabindError:
            return None
        return d

    def observe(self, s: Slot, tokens: Sequence[int], pos: int, first: int) -> None:
        """Tell a drafter that mirrors the target (MTP) what the last decode held for its slot."""
        assert s.drafter is not None
        try:
            s.drafter.observe(self.ctx, tokens, pos, first)
        except LlamabindError as exc:  # the mirror is lost: drafts get worse, output stays exact
            log.warning("slot %d: drafter could not follow the decode (%s)", s.id, exc)
            s.drafter.reset()

    def verify(self, s: Slot, draft: Draft, logprobs: int | None) -> Verdict:
        """Keep the part of ``draft`` the slot's sampler agrees with; drop the rest from the KV."""
        assert s.sampler is not None and s.drafter is not None
        verdict = verify_draft(self.ctx, s.sampler, s.rows, draft, logprobs=logprobs)
        k = verdict.accepted
        keep = len(s.cached) - len(draft.tokens) + k
        if keep < len(s.cached):
            if not self.ctx.memory.remove(s.id, keep, -1):
                raise UnsupportedError(
                    "this model's memory cannot drop rejected draft tokens (recurrent or hybrid "
                    "models need rollback snapshots): run the server without speculation"
                )
            del s.cached[keep:]
        s.drafter.rollback(keep)
        s.drafter.record(len(draft.tokens), k, len(verdict.tokens))
        st = self.stats
        st.spec_rounds_total += 1
        st.spec_drafted_total += len(draft.tokens)
        st.spec_accepted_total += k
        return verdict
