"""Raw context calls: creation, decode/encode, logits/embeddings views, memory, state, perf, abort."""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .lib import ll

__all__ = [
    "AbortFlag",
    "PerfData",
    "context_create",
    "context_free",
    "context_int",
    "decode",
    "embeddings_ith",
    "embeddings_seq",
    "encode",
    "logits_ith",
]

# llama.cpp reads LLAMA_ATTN_ROT_DISABLE when a context is created: one process-wide lock
# serialises the set/create/restore dance so two threads cannot race on it.
_ENV_LOCK = threading.Lock()
ATTN_ROT_ENV = "LLAMA_ATTN_ROT_DISABLE"

_CTX_INTS = {
    "n_ctx": "llama_n_ctx",
    "n_ctx_seq": "llama_n_ctx_seq",
    "n_batch": "llama_n_batch",
    "n_ubatch": "llama_n_ubatch",
    "n_seq_max": "llama_n_seq_max",
    "n_threads": "llama_n_threads",
    "n_threads_batch": "llama_n_threads_batch",
    "pooling_type": "llama_pooling_type",
}


def context_default_fields() -> dict[str, Any]:
    p = ll().llama_context_default_params()
    return {name: getattr(p, name) for name, _ in p._fields_}


def context_create(
    model: int, fields: dict[str, Any], *, attn_rotation: bool | None, ctx_other: int | None
) -> int | None:
    """Create a context. ``fields`` are llama_context_params field values (plain ints/floats/bools)."""
    raw = ll()
    p = raw.llama_context_default_params()
    for name, value in fields.items():
        setattr(p, name, value)
    if ctx_other:
        p.ctx_other = ctx_other
    with _ENV_LOCK:
        old = os.environ.get(ATTN_ROT_ENV)
        try:
            if attn_rotation is True:
                os.environ.pop(ATTN_ROT_ENV, None)
            elif attn_rotation is False:
                os.environ[ATTN_ROT_ENV] = "1"
            handle = raw.llama_init_from_model(model, p)
        finally:
            if old is None:
                os.environ.pop(ATTN_ROT_ENV, None)
            else:
                os.environ[ATTN_ROT_ENV] = old
    return int(handle) if handle else None


def context_free(ctx: int) -> None:
    ll().llama_free(ctx)


def context_int(ctx: int, name: str) -> int:
    return int(getattr(ll(), _CTX_INTS[name])(ctx))


def set_threads(ctx: int, n_threads: int, n_threads_batch: int) -> None:
    ll().llama_set_n_threads(ctx, n_threads, n_threads_batch)


def set_embeddings(ctx: int, on: bool) -> None:
    ll().llama_set_embeddings(ctx, on)


def set_causal_attn(ctx: int, on: bool) -> None:
    ll().llama_set_causal_attn(ctx, on)


def set_warmup(ctx: int, on: bool) -> None:
    ll().llama_set_warmup(ctx, on)


def synchronize(ctx: int) -> None:
    ll().llama_synchronize(ctx)


def decode(ctx: int, batch: Any) -> int:
    return int(ll().llama_decode(ctx, batch))


def decode_sync(ctx: int, batch: Any) -> int:
    """Decode and wait for the (possibly asynchronous) backends to finish."""
    raw = ll()
    rc = int(raw.llama_decode(ctx, batch))
    raw.llama_synchronize(ctx)
    return rc


def encode_sync(ctx: int, batch: Any) -> int:
    raw = ll()
    rc = int(raw.llama_encode(ctx, batch))
    raw.llama_synchronize(ctx)
    return rc


def encode(ctx: int, batch: Any) -> int:
    return int(ll().llama_encode(ctx, batch))


def _float_view(ptr: Any, n: int) -> npt.NDArray[np.float32] | None:
    if not ptr:
        return None
    return np.ctypeslib.as_array(ptr, shape=(n,))


def logits_ith(ctx: int, i: int, n_vocab: int) -> npt.NDArray[np.float32] | None:
    """A float32 view of the logits of output ``i`` (valid until the next decode); None if absent."""
    return _float_view(ll().llama_get_logits_ith(ctx, i), n_vocab)


def embeddings_ith(ctx: int, i: int, n_embd: int) -> npt.NDArray[np.float32] | None:
    return _float_view(ll().llama_get_embeddings_ith(ctx, i), n_embd)


def embeddings_seq(ctx: int, seq_id: int, n: int) -> npt.NDArray[np.float32] | None:
    return _float_view(ll().llama_get_embeddings_seq(ctx, seq_id), n)


# ------------------------------------------------------------------ abort


def _find_strlen() -> Any:
    try:  # the process's own symbols: libc's on POSIX (no ``ctypes.util``, which runs ldconfig)
        return ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
    except (OSError, AttributeError, TypeError):
        pass
    from ctypes.util import find_library

    name = find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        return ctypes.cast(libc.strlen, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None


_STRLEN = _find_strlen()


class AbortFlag:
    """A cancellation flag llama.cpp polls during compute, without calling back into Python.

    The abort callback is libc's ``strlen`` applied to a two-byte buffer we own: it returns 1
    (true: abort) once the first byte is set and 0 otherwise. No GIL, no Python per graph node.
    Falls back to a Python callback when libc's strlen cannot be found.
    """

    def __init__(self) -> None:
        self._buf = ctypes.create_string_buffer(2)
        raw = ll()
        if _STRLEN is not None:
            self._cb: Any = ctypes.cast(_STRLEN, raw.ggml_abort_callback)
        else:  # pragma: no cover
            self._cb = raw.ggml_abort_callback(lambda _data: self._buf.raw[0] != 0)

    def install(self, ctx: int) -> None:
        ll().llama_set_abort_callback(ctx, self._cb, ctypes.cast(self._buf, ctypes.c_void_p))

    def set(self) -> None:
        self._buf[0] = b"\x01"

    def clear(self) -> None:
        self._buf[0] = b"\x00"

    def is_set(self) -> bool:
        return self._buf.raw[0] != 0


# ----------------------------------------------------------------- memory


def _mem(ctx: int) -> int | None:
    # NULL for models without a KV cache (BERT-style encoders); every llama_memory_* call accepts it
    mem = ll().llama_get_memory(ctx)
    return int(mem) if mem else None


def memory_clear(ctx: int, data: bool) -> None:
    ll().llama_memory_clear(_mem(ctx), data)


def memory_seq_rm(ctx: int, seq: int, p0: int, p1: int) -> bool:
    return bool(ll().llama_memory_seq_rm(_mem(ctx), seq, p0, p1))


def memory_seq_cp(ctx: int, src: int, dst: int, p0: int, p1: int) -> None:
    ll().llama_memory_seq_cp(_mem(ctx), src, dst, p0, p1)


def memory_seq_keep(ctx: int, seq: int) -> None:
    ll().llama_memory_seq_keep(_mem(ctx), seq)


def memory_seq_add(ctx: int, seq: int, p0: int, p1: int, delta: int) -> None:
    ll().llama_memory_seq_add(_mem(ctx), seq, p0, p1, delta)


def memory_seq_div(ctx: int, seq: int, p0: int, p1: int, d: int) -> None:
    ll().llama_memory_seq_div(_mem(ctx), seq, p0, p1, d)


def memory_seq_pos_min(ctx: int, seq: int) -> int:
    return int(ll().llama_memory_seq_pos_min(_mem(ctx), seq))


def memory_seq_pos_max(ctx: int, seq: int) -> int:
    return int(ll().llama_memory_seq_pos_max(_mem(ctx), seq))


def memory_can_shift(ctx: int) -> bool:
    return bool(ll().llama_memory_can_shift(_mem(ctx)))


# ------------------------------------------------------------------ state


def state_get(ctx: int) -> bytes:
    raw = ll()
    size = int(raw.llama_state_get_size(ctx))
    buf = (ctypes.c_uint8 * size)()
    n = int(raw.llama_state_get_data(ctx, buf, size))
    return bytes(buf)[:n]


def state_set(ctx: int, data: bytes) -> int:
    raw = ll()
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    return int(raw.llama_state_set_data(ctx, buf, len(data)))


def state_seq_get(ctx: int, seq: int) -> bytes:
    raw = ll()
    size = int(raw.llama_state_seq_get_size(ctx, seq))
    buf = (ctypes.c_uint8 * size)()
    n = int(raw.llama_state_seq_get_data(ctx, buf, size, seq))
    return bytes(buf)[:n]


def state_seq_set(ctx: int, data: bytes, seq: int) -> int:
    raw = ll()
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    return int(raw.llama_state_seq_set_data(ctx, buf, len(data), seq))


def state_save_file(ctx: int, path: str, tokens: Sequence[int]) -> bool:
    arr = (ctypes.c_int32 * max(len(tokens), 1))(*tokens)
    return bool(ll().llama_state_save_file(ctx, path.encode(), arr, len(tokens)))


def state_load_file(ctx: int, path: str, capacity: int) -> list[int] | None:
    arr = (ctypes.c_int32 * max(capacity, 1))()
    n = ctypes.c_size_t(0)
    ok = ll().llama_state_load_file(ctx, path.encode(), arr, capacity, ctypes.byref(n))
    return list(arr[: n.value]) if ok else None


def state_seq_save_file(ctx: int, path: str, seq: int, tokens: Sequence[int]) -> int:
    arr = (ctypes.c_int32 * max(len(tokens), 1))(*tokens)
    return int(ll().llama_state_seq_save_file(ctx, path.encode(), seq, arr, len(tokens)))


def state_seq_load_file(ctx: int, path: str, seq: int, capacity: int) -> list[int] | None:
    arr = (ctypes.c_int32 * max(capacity, 1))()
    n = ctypes.c_size_t(0)
    read = ll().llama_state_seq_load_file(ctx, path.encode(), seq, arr, capacity, ctypes.byref(n))
    return list(arr[: n.value]) if read else None


# ------------------------------------------------------------------- perf


@dataclass(frozen=True)
class PerfData:
    t_start_ms: float
    t_load_ms: float
    t_p_eval_ms: float
    t_eval_ms: float
    n_p_eval: int
    n_eval: int
    n_reused: int


def perf_context(ctx: int) -> PerfData:
    d = ll().llama_perf_context(ctx)
    return PerfData(
        float(d.t_start_ms),
        float(d.t_load_ms),
        float(d.t_p_eval_ms),
        float(d.t_eval_ms),
        int(d.n_p_eval),
        int(d.n_eval),
        int(d.n_reused),
    )


def perf_context_reset(ctx: int) -> None:
    ll().llama_perf_context_reset(ctx)


# ------------------------------------------------------------- adapters


def lora_init(model: int, path: str) -> Any:
    """Adapter handles are ``POINTER(c_void_p)`` objects (opaque to the core); None when NULL."""
    h = ll().llama_adapter_lora_init(model, path.encode())
    return h if h else None


def lora_free(adapter: Any) -> None:
    ll().llama_adapter_lora_free(adapter)


def lora_meta(adapter: Any) -> dict[str, str]:
    raw = ll()
    from .model import _by_index, _read_string

    out: dict[str, str] = {}
    for i in range(int(raw.llama_adapter_meta_count(adapter))):
        key = _read_string(functools.partial(_by_index, raw.llama_adapter_meta_key_by_index, adapter, i))
        out[key] = _read_string(
            functools.partial(_by_index, raw.llama_adapter_meta_val_str_by_index, adapter, i)
        )
    return out


def set_adapters_lora(ctx: int, adapters: Sequence[Any], scales: Sequence[float]) -> int:
    raw = ll()
    n = len(adapters)
    arr = (raw.llama_adapter_lora_p_ctypes * max(n, 1))(*adapters)
    sc = (ctypes.c_float * max(n, 1))(*scales)
    return int(ll().llama_set_adapters_lora(ctx, arr if n else None, n, sc if n else None))


def set_adapter_cvec(
    ctx: int, data: npt.NDArray[np.float32] | None, n_embd: int, il_start: int, il_end: int
) -> int:
    raw = ll()
    if data is None:
        return int(raw.llama_set_adapter_cvec(ctx, None, 0, n_embd, il_start, il_end))
    flat = np.ascontiguousarray(data, dtype=np.float32).ravel()
    ptr = flat.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    return int(raw.llama_set_adapter_cvec(ctx, ptr, flat.size, n_embd, il_start, il_end))
