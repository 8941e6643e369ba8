"""`BatchExt`: llama.cpp's extended batch (token ids with optional embedding rows), bounds-checked.

Decoded with :meth:`BatchExt.process` (``llama_process``) — e.g. to feed an MTP draft context each token together with
the target model's hidden state for the previous position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .._native import batch_ext as nbx
from ..errors import BatchFullError, TokenizeError
from ._owner import NativeOwner

if TYPE_CHECKING:
    from .context import Context

__all__ = ["BatchExt", "embeddings_nextn", "embeddings_nextn_rows", "nextn_supported", "set_embeddings_nextn"]


class BatchExt(NativeOwner):
    """An extended batch for one context (capacity ``ctx.n_batch`` entries).

    ``add(token, pos, seq_id, output=…, embd=…)`` returns the batch index. A full batch, a token
    or sequence id out of range, or an embedding row of the wrong width raise before anything
    reaches llama.cpp. The batch belongs to its context and is freed with it.
    """

    def __init__(self, ctx: Context) -> None:
        handle = ctx._call(nbx.batch_ext_init)
        if not handle:
            raise MemoryError("llama_batch_ext_init failed")
        self.ctx = ctx
        self.capacity = ctx.n_batch
        model = ctx.model
        # an MTP context takes the target's hidden state (n_embd_out) with each token
        mtp = str(ctx.params.ctx_type).strip().lower() == "mtp"
        self.n_embd_inp = (model.n_embd_out or model.n_embd) if mtp else model.n_embd
        self.n_tokens = 0
        self.n_outputs = 0
        self._tokens: list[int] = []
        self._seq: list[int] = []
        self._pos: list[int] = []
        self._own(handle, nbx.batch_ext_free, parent=ctx)

    def __len__(self) -> int:
        return self.n_tokens

    def clear(self) -> None:
        nbx.batch_ext_clear(self._ptr())
        self.n_tokens = 0
        self.n_outputs = 0
        self._tokens.clear()
        self._seq.clear()
        self._pos.clear()

    def add(
        self,
        token: int,
        pos: int,
        seq_id: int = 0,
        *,
        output: bool = False,
        embd: npt.NDArray[np.float32] | None = None,
    ) -> int:
        """Add one entry; ``embd`` is an optional embedding row (copied)."""
        if self.n_tokens >= self.capacity:
            raise BatchFullError(f"extended batch is full ({self.capacity} entries)")
        if not 0 <= token < self.ctx.n_vocab:
            raise TokenizeError(f"token id {token} out of range [0, {self.ctx.n_vocab})")
        if not 0 <= seq_id < self.ctx.n_seq_max:
            raise ValueError(f"sequence id {seq_id} out of range [0, {self.ctx.n_seq_max})")
        if pos < 0:
            raise ValueError(f"position must be >= 0, got {pos}")
        row = None
        if embd is not None:
            row = np.ascontiguousarray(embd, dtype=np.float32).reshape(-1)
            if row.shape[0] != self.n_embd_inp:
                raise ValueError(
                    f"embedding row of width {row.shape[0]}; this context takes {self.n_embd_inp}"
                )
        h = self._ptr()
        idx = nbx.batch_ext_add_token(h, seq_id, token)
        if idx < 0:
            raise BatchFullError(f"llama_batch_ext_add_token failed with code {idx}")
        nbx.batch_ext_set_pos(h, idx, pos)
        if row is not None and not nbx.batch_ext_set_embd(h, idx, row):
            self.clear()  # the entry went in without its row: start over rather than keep half of it
            raise ValueError(
                f"llama.cpp rejected an embedding row of width {row.shape[0]} (the batch was cleared)"
            )
        if output:
            nbx.batch_ext_set_output(h, idx, True)
            self.n_outputs += 1
        self.n_tokens = idx + 1
        self._tokens.append(token)
        self._seq.append(seq_id)
        self._pos.append(pos)
        return idx

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    @property
    def positions(self) -> list[int]:
        return list(self._pos)

    @property
    def seq_ids(self) -> list[int]:
        return list(self._seq)

    # ------------------------------------------------------------ process
    def process(self) -> None:
        """Run ``llama_process`` (decode) on this batch in its context.

        Raises NoKvSlotError / AbortedError / DecodeError like :meth:`Context.decode`.
        """
        n = self.n_tokens
        if n == 0:
            raise ValueError("cannot process an empty batch")
        bh = self._ptr()
        self.ctx.decode_native(
            lambda ptr: int(nbx.process(ptr, bh)), what="process", n_tokens=n, n_outputs=self.n_outputs
        )


# ------------------------------------------------------------ next-n (MTP)


def nextn_supported() -> bool:
    """True when this libllama exports the next-n hidden-state hooks that MTP drafting needs."""
    return nbx.nextn_available()


def set_embeddings_nextn(ctx: Context, on: bool, *, masked: bool = False) -> None:
    """Make decodes of ``ctx`` output next-n hidden states (the MTP head's input).

    ``masked=False``: one row per batch entry; ``masked=True``: rows only for output entries.
    Raises UnsupportedError when this libllama does not export the next-n hooks.
    """
    if not nbx.nextn_available():
        from ..errors import UnsupportedError

        raise UnsupportedError(
            "this libllama does not export the next-n embedding hooks "
            f"({', '.join(nbx.missing_nextn_symbols())}) that MTP drafting needs"
        )
    ctx._call(nbx.set_embeddings_nextn, on, masked)


def _n_embd(ctx: Context) -> int:
    return ctx.model.n_embd_out or ctx.model.n_embd


def embeddings_nextn(ctx: Context, i: int) -> npt.NDArray[np.float32]:
    """A copy of next-n row ``i`` of the last decode (the batch index when unmasked)."""
    if not 0 <= i < ctx.n_batch:
        raise IndexError(f"next-n row {i} out of range [0, {ctx.n_batch})")
    view = ctx._call(nbx.get_embeddings_nextn_ith, i, _n_embd(ctx))
    if view is None:
        raise IndexError(f"no next-n embeddings for row {i} (call set_embeddings_nextn first)")
    out: npt.NDArray[np.float32] = view.copy()
    return out


def embeddings_nextn_rows(ctx: Context, n_rows: int, start: int = 0) -> npt.NDArray[np.float32]:
    """A copy of unmasked next-n rows ``start … start + n_rows`` of the last decode: (n_rows, n_embd)."""
    if n_rows <= 0 or start < 0 or start + n_rows > ctx.n_batch:
        raise IndexError(f"next-n rows [{start}, {start + n_rows}) requested; n_batch={ctx.n_batch}")
    view = ctx._call(nbx.get_embeddings_nextn, start + n_rows, _n_embd(ctx))
    if view is None:
        raise IndexError("no next-n embeddings (call set_embeddings_nextn first)")
    out: npt.NDArray[np.float32] = view[start:].copy()
    return out
