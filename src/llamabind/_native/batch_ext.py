"""Raw ``llama_batch_ext`` / ``llama_process`` calls and the next-n (MTP) embedding hooks.

``llama_batch_ext`` is the extended batch of the pinned llama.cpp: entries carry a token id *and*
an optional embedding row, which is how an MTP draft context receives the target's hidden state.

The next-n hooks (``llama_set_embeddings_nextn`` / ``llama_get_embeddings_nextn[_ith]``) live in
llama.cpp's *staging* header ``src/llama-ext.h``: libllama exports them, but with C++ linkage, so
on Itanium-ABI platforms (Linux, macOS) they are found under their mangled names. Where neither
the plain nor the mangled name exists, :func:`nextn_available` is False and MTP is unsupported.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

from .lib import ll

__all__ = [
    "batch_ext_add_token",
    "batch_ext_clear",
    "batch_ext_free",
    "batch_ext_init",
    "batch_ext_set_embd",
    "batch_ext_set_output",
    "batch_ext_set_pos",
    "get_embeddings_nextn",
    "get_embeddings_nextn_ith",
    "nextn_available",
    "process",
    "set_embeddings_nextn",
]

PROCESS_ENCODE = 0
PROCESS_DECODE = 1

# name -> (plain C name, Itanium-mangled C++ name, argtypes, restype)
_STAGING: dict[str, tuple[str, str, list[Any], Any]] = {
    "set_embeddings_nextn": (
        "llama_set_embeddings_nextn",
        "_Z26llama_set_embeddings_nextnP13llama_contextbb",
        [ctypes.c_void_p, ctypes.c_bool, ctypes.c_bool],
        None,
    ),
    "set_nextn_layer_offset": (
        "llama_set_nextn_layer_offset",
        "_Z28llama_set_nextn_layer_offsetP13llama_contexti",
        [ctypes.c_void_p, ctypes.c_int32],
        None,
    ),
    "get_embeddings_nextn": (
        "llama_get_embeddings_nextn",
        "_Z26llama_get_embeddings_nextnP13llama_context",
        [ctypes.c_void_p],
        ctypes.POINTER(ctypes.c_float),
    ),
    "get_embeddings_nextn_ith": (
        "llama_get_embeddings_nextn_ith",
        "_Z30llama_get_embeddings_nextn_ithP13llama_contexti",
        [ctypes.c_void_p, ctypes.c_int32],
        ctypes.POINTER(ctypes.c_float),
    ),
}
_staging_fns: dict[str, Any] | None = None


def _staging() -> dict[str, Any]:
    global _staging_fns
    if _staging_fns is None:
        lib = ll()._lib
        found: dict[str, Any] = {}
        for key, (plain, mangled, argtypes, restype) in _STAGING.items():
            for name in (plain, mangled):
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.argtypes = argtypes
                    fn.restype = restype
                    found[key] = fn
                    break
        _staging_fns = found
    return _staging_fns


def nextn_available() -> bool:
    """True when this libllama exports the next-n embedding hooks MTP needs."""
    fns = _staging()
    return all(k in fns for k in ("set_embeddings_nextn", "get_embeddings_nextn", "get_embeddings_nextn_ith"))


def missing_nextn_symbols() -> list[str]:
    fns = _staging()
    return [plain for key, (plain, *_rest) in _STAGING.items() if key not in fns]


def set_embeddings_nextn(ctx: int, value: bool, masked: bool) -> None:
    _staging()["set_embeddings_nextn"](ctx, value, masked)


def set_nextn_layer_offset(ctx: int, offset: int) -> None:
    fn = _staging().get("set_nextn_layer_offset")
    if fn is not None:
        fn(ctx, offset)


def get_embeddings_nextn(ctx: int, n_rows: int, n_embd: int) -> npt.NDArray[np.float32] | None:
    """A (n_rows, n_embd) view of the unmasked next-n rows of the last decode (valid until the next)."""
    ptr = _staging()["get_embeddings_nextn"](ctx)
    if not ptr:
        return None
    return np.ctypeslib.as_array(ptr, shape=(n_rows, n_embd))


def get_embeddings_nextn_ith(ctx: int, i: int, n_embd: int) -> npt.NDArray[np.float32] | None:
    ptr = _staging()["get_embeddings_nextn_ith"](ctx, i)
    if not ptr:
        return None
    return np.ctypeslib.as_array(ptr, shape=(n_embd,))


# ------------------------------------------------------------- batch_ext


def batch_ext_init(ctx: int) -> int | None:
    h = ll().llama_batch_ext_init(ctx)
    return int(h) if h else None


def batch_ext_free(batch: int) -> None:
    ll().llama_batch_ext_free(batch)


def batch_ext_clear(batch: int) -> None:
    ll().llama_batch_ext_clear(batch)


def batch_ext_add_token(batch: int, seq_id: int, token: int) -> int:
    """Returns the batch index, or -1 (full), -2 (invalid token), -3 (invalid sequence id)."""
    return int(ll().llama_batch_ext_add_token(batch, seq_id, token))


def batch_ext_add_seq(batch: int, idx: int, seq_id: int) -> bool:
    return bool(ll().llama_batch_ext_add_seq(batch, idx, seq_id))


def batch_ext_set_pos(batch: int, idx: int, pos: int) -> bool:
    raw = ll()
    arr = (raw.llama_pos * 4)(pos, 0, 0, 0)
    return bool(raw.llama_batch_ext_set_pos(batch, idx, arr))


def batch_ext_set_embd(batch: int, idx: int, row: npt.NDArray[np.float32]) -> bool:
    """Attach one embedding row (copied by llama.cpp) to the entry at ``idx``."""
    raw = ll()
    data = np.ascontiguousarray(row, dtype=np.float32)
    e = raw.llama_embd()
    e.data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    e.n_rows = 1
    e.n_embd = data.shape[-1]
    return bool(raw.llama_batch_ext_set_embd_token(batch, idx, e))


def batch_ext_set_output(batch: int, idx: int, value: bool) -> bool:
    return bool(ll().llama_batch_ext_set_output_logits(batch, idx, value))


def process(ctx: int, batch: int, *, decode: bool = True) -> int:
    """``llama_process``: same return codes as llama_decode."""
    return int(ll().llama_process(ctx, PROCESS_DECODE if decode else PROCESS_ENCODE, batch))
