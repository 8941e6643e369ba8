"""MTP (multi-token prediction) drafting with the model's own next-n layers.

Models converted with their MTP head (GLM-4.5 / glm4moe, DeepSeek-V3 / deepseek2, Qwen3.5 /
qwen35, MiMo-2, …) carry ``n_layer_nextn`` extra blocks that predict the token after next from the
current token and the trunk's hidden state. llama.cpp runs them in a second context of type MTP
over the same model, fed through ``llama_batch_ext`` entries that pair a token with a hidden-state
row, and decoded with ``llama_process``. The protocol, per sequence:

* the target context outputs its next-n hidden state ``h[p]`` for every token it decodes;
* after each target decode of tokens ``t[p0…]``, the MTP context decodes the same tokens, each
  paired with the target's hidden state of the *previous* position (``h[p-1]``), which builds its
  own KV cache;
* to draft after the last sampled token ``x`` at position ``p``: decode ``(x, h[p-1])`` in the MTP
  context, take its argmax as draft 1, then ``(draft 1, MTP's own hidden state)`` at ``p+1`` for
  draft 2, …; the MTP KV entries of the draft region are removed again afterwards;
* after verification the target keeps ``k`` drafts; the MTP context drops the same rejected tail.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ..core import Context, Model
from ..core.batch_ext import (
    BatchExt,
    embeddings_nextn,
    embeddings_nextn_rows,
    nextn_supported,
    set_embeddings_nextn,
)
from ..errors import UnsupportedError
from ..generation.draft import Draft, Drafter

__all__ = ["MtpConfig", "MtpDrafter", "check_mtp_model"]

#: hidden-state rows remembered per sequence, so a prompt that diverges from the cached one a
#: little before its end can resume MTP without the target re-decoding much
H_RING = 256
#: upstream drafts from the top-10 candidates: the confidence p_min is measured among those
TOP_K = 10


class MtpConfig:
    """Mirrors llama-cpp-rs' ``MtpSessionConfig`` (upstream ``common_params_speculative_draft``)."""

    def __init__(self, n_draft_max: int = 3, *, p_min: float = 0.0, n_min: int = 0) -> None:
        if n_draft_max < 1:
            raise ValueError("n_draft_max must be >= 1")
        if n_min < 0 or n_min > n_draft_max:
            raise ValueError("need 0 <= n_min <= n_draft_max")
        self.n_draft_max = n_draft_max
        self.p_min = float(p_min)
        self.n_min = n_min


def check_mtp_model(model: Model) -> None:
    """Raise UnsupportedError (naming the model and the reason) when ``model`` cannot draft with MTP."""
    name = f"{model.name} ({model.path.name}, architecture {model.architecture or 'unknown'})"
    if model.n_layer_nextn <= 0:
        raise UnsupportedError(
            f"MTP speculative decoding needs next-n (MTP) layers, but {name} has none "
            "(n_layer_nextn = 0). Use a GGUF converted with its MTP head (e.g. GLM-4.5, DeepSeek-V3, "
            "Qwen3.5 with the nextn tensors), or --draft MODEL / --ngram instead."
        )
    if not model.params.load_mtp:
        raise UnsupportedError(
            f"{name} has {model.n_layer_nextn} next-n layer(s) but was loaded without them: "
            "load it with Model(path, load_mtp=True)"
        )
    if not nextn_supported():
        raise UnsupportedError(
            "this libllama build does not export the next-n hidden-state hooks "
            "(llama_set_embeddings_nextn / llama_get_embeddings_nextn) that MTP drafting needs"
        )


class MtpDrafter(Drafter):
    """Drafts with the target model's next-n layers in a paired context of type MTP.

    ``target`` is the context the generation runs in (its next-n outputs are switched on here).
    ``ctx``: an existing MTP context to share (several sequences, e.g. server slots); by default
    one is created over the target's model with ``other=target``.
    """

    kind = "mtp"
    needs_hidden_states = True

    def __init__(
        self,
        target: Context,
        config: MtpConfig | None = None,
        *,
        ctx: Context | None = None,
        seq_id: int = 0,
    ) -> None:
        cfg = config or MtpConfig()
        super().__init__(cfg.n_draft_max)
        model = target.model
        check_mtp_model(model)
        self.config = cfg
        self.target = target
        self.seq_id = seq_id
        self._own_ctx = ctx is None
        if ctx is None:
            ctx = Context(
                model,
                target.params.replace(ctx_type="mtp", n_seq_max=1, n_ctx=target.n_ctx, kv_unified=None),
                other=target,
            )
        self.ctx = ctx
        self.n_embd = model.n_embd_out or model.n_embd
        # the target outputs a next-n row for every batch entry; the MTP context only for outputs
        set_embeddings_nextn(target, True, masked=False)
        set_embeddings_nextn(ctx, True, masked=True)
        self._batch = BatchExt(ctx)
        self.cached: list[int] = []  # tokens whose MTP KV entries are in ctx (positions 0…)
        self._h: collections.OrderedDict[int, npt.NDArray[np.float32]] = collections.OrderedDict()

    # ------------------------------------------------------------ helpers
    def _remember(self, pos: int, row: npt.NDArray[np.float32]) -> None:
        self._h[pos] = row
        self._h.move_to_end(pos)
        while len(self._h) > H_RING:
            self._h.popitem(last=False)

    def _hidden(self, pos: int) -> npt.NDArray[np.float32]:
        """The target's next-n row at ``pos`` (zeros before the sequence start or when forgotten)."""
        row = self._h.get(pos)
        return row if row is not None else np.zeros(self.n_embd, dtype=np.float32)

    def _truncate(self, n_keep: int) -> None:
        if n_keep < len(self.cached):
            self.ctx.memory.remove(self.seq_id, n_keep, -1)
            del self.cached[n_keep:]
        for pos in [p for p in self._h if p >= n_keep]:
            del self._h[pos]

    # ------------------------------------------------------------ Drafter
    def reset(self) -> None:
        self.ctx.memory.remove(self.seq_id, -1, -1)
        self.cached = []
        self._h.clear()

    def max_reuse(self, tokens: Sequence[int]) -> int:
        """The target may keep only what this context mirrors and whose last hidden row is known."""
        n = 0
        lim = min(len(self.cached), len(tokens))
        while n < lim and self.cached[n] == tokens[n] and self.cached[n] >= 0:
            n += 1
        while n > 0 and (n - 1) not in self._h:
            n -= 1
        return n

    def observe(self, ctx: Context, tokens: Sequence[int], start_pos: int, first_index: int) -> None:
        if not tokens:
            return
        n = len(tokens)
        rows = embeddings_nextn_rows(ctx, n, first_index)
        self._truncate(start_pos)
        if len(self.cached) < start_pos:
            # positions the MTP context never saw (the target reused more than max_reuse allowed):
            # they stay holes (-1, never matching a token); drafts may be worse, the output is exact
            self.cached.extend([-1] * (start_pos - len(self.cached)))
        b = self._batch
        step = self.ctx.n_batch
        for off in range(0, n, step):
            b.clear()
            for k in range(off, min(off + step, n)):
                pos = start_pos + k
                prev = self._hidden(pos - 1) if k == 0 else rows[k - 1]
                b.add(int(tokens[k]), pos, self.seq_id, embd=prev)
            b.process()
        self.cached.extend(int(t) for t in tokens)
        for k in range(n):
            self._remember(start_pos + k, rows[k].copy())

    def rollback(self, n_keep: int) -> None:
        self._truncate(n_keep)

    def _draft(self, history: Sequence[int], last: int, n_max: int) -> Draft:
        pos0 = len(history)
        if len(self.cached) != pos0:
            self._truncate(min(len(self.cached), pos0))
        n_ctx = self.ctx.n_ctx_per_seq
        n_max = min(n_max, n_ctx - pos0 - 1)
        if n_max <= 0:
            return Draft()
        b = self._batch
        b.clear()
        b.add(int(last), pos0, self.seq_id, output=True, embd=self._hidden(pos0 - 1))
        out: list[int] = []
        try:
            for i in range(n_max):
                b.process()
                logits = self.ctx.logits(0)
                tok, conf = _top(logits)
                if conf < self.config.p_min:
                    break
                out.append(tok)
                if i + 1 >= n_max:
                    break
                h = embeddings_nextn(self.ctx, 0)
                b.clear()
                b.add(tok, pos0 + i + 1, self.seq_id, output=True, embd=h)
        finally:
            # the draft region is rebuilt from the target's own hidden states after verification
            self.ctx.memory.remove(self.seq_id, pos0, -1)
        if len(out) < self.config.n_min:
            out = []
        return Draft(out)

    def close(self) -> None:
        self._batch.close()
        if self._own_ctx:
            self.ctx.close()


def _top(logits: npt.NDArray[np.float32]) -> tuple[int, float]:
    """The argmax and its probability among the top-k candidates (upstream's p_min measure)."""
    k = min(TOP_K, logits.shape[0])
    idx = np.argpartition(-logits, k - 1)[:k]
    x = logits[idx].astype(np.float64)
    best = int(np.argmax(x))
    e = np.exp(x - x[best])
    return int(idx[best]), float(1.0 / e.sum())
