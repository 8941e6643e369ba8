"""``llama_batch`` built over numpy arrays we own (no llama_batch_init/free: nothing to leak)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

from .lib import ll

__all__ = ["BatchBuffers"]


class BatchBuffers:
    """Token/pos/seq/logit arrays for up to ``capacity`` entries and ``n_seq_max`` ids each.

    The core writes into the numpy arrays; :meth:`struct` returns the ``llama_batch`` pointing
    at them (valid while this object lives).
    """

    def __init__(self, capacity: int, n_seq_max: int, embd: int = 0) -> None:
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self.token: npt.NDArray[np.int32] = np.zeros(capacity, dtype=np.int32)
        self.pos: npt.NDArray[np.int32] = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id: npt.NDArray[np.int32] = np.zeros(capacity, dtype=np.int32)
        self.seq_id: npt.NDArray[np.int32] = np.zeros((capacity, n_seq_max), dtype=np.int32)
        self.logits: npt.NDArray[np.int8] = np.zeros(capacity, dtype=np.int8)
        self.embd: npt.NDArray[np.float32] | None = (
            np.zeros((capacity, embd), dtype=np.float32) if embd else None
        )
        base = self.seq_id.ctypes.data
        stride = self.seq_id.strides[0]
        self._seq_ptrs = (ctypes.POINTER(ctypes.c_int32) * capacity)(
            *[ctypes.cast(base + i * stride, ctypes.POINTER(ctypes.c_int32)) for i in range(capacity)]
        )
        raw = ll()
        b = raw.llama_batch()
        b.n_tokens = 0
        if self.embd is not None:
            b.token = None
            b.embd = self.embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        else:
            b.token = self.token.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
            b.embd = None
        b.pos = self.pos.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        b.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        b.seq_id = self._seq_ptrs
        b.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self._struct = b

    def struct(self, n_tokens: int) -> Any:
        self._struct.n_tokens = n_tokens
        return self._struct
