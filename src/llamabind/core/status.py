"""llama.cpp's decode-family return codes as llamabind exceptions: the one place they are mapped.

``llama_decode``, ``llama_encode``, ``llama_process`` (extended batches) and libmtmd's media decode
helper all answer with the same codes; :meth:`Context.decode_native` runs such a call and passes
its code through :func:`check_decode_status`.
"""

from __future__ import annotations

from ..errors import AbortedError, DecodeError, NoKvSlotError

__all__ = ["DECODE_ABORTED", "DECODE_INVALID", "DECODE_NO_KV_SLOT", "DECODE_OK", "check_decode_status"]

DECODE_OK = 0
#: no KV cache slot for the batch (the context is full)
DECODE_NO_KV_SLOT = 1
#: the abort callback stopped the computation
DECODE_ABORTED = 2
#: llama.cpp rejected the batch (bad positions, sequence ids, …)
DECODE_INVALID = -1


def check_decode_status(rc: int, what: str, *, n_tokens: int, n_ctx: int) -> None:
    """Return for :data:`DECODE_OK`; otherwise raise the matching :class:`DecodeError`.

    ``what`` names the call in the message ("decode", "encode", "image decode", …); ``n_tokens``
    and ``n_ctx`` describe the batch and the context for the no-slot message. The exception's
    ``code`` is ``rc``: :class:`NoKvSlotError` (1), :class:`AbortedError` (2), :class:`DecodeError`
    (-1: invalid batch; any other code).
    """
    if rc == DECODE_OK:
        return
    if rc == DECODE_NO_KV_SLOT:
        raise NoKvSlotError(
            f"{what}: no KV cache slot for a batch of {n_tokens} tokens (n_ctx={n_ctx}); "
            "free sequences or use a larger context",
            rc,
        )
    if rc == DECODE_ABORTED:
        raise AbortedError(f"{what} aborted", rc)
    if rc == DECODE_INVALID:
        raise DecodeError(f"{what}: invalid batch (llama.cpp rejected it; see 'llamabind.native' logs)", rc)
    raise DecodeError(f"{what} failed with code {rc}", rc)
