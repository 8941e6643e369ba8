"""Dequantize a GGUF model to an F16 copy (1-D tensors and norms stay F32), with the gguf package's
dequantizers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGUFValueType, LlamaFileType
from gguf.constants import GGMLQuantizationType, Keys
from gguf.quants import dequantize

from ._io import (
    GGUFToolError,
    KVEntry,
    OutTensor,
    PathLike,
    SrcTensor,
    kv_entries,
    open_gguf,
    reject_split,
    src_tensors,
    write_gguf,
)

__all__ = ["dequantize_to_f16"]

log = logging.getLogger("llamabind.gguf_tools")

_F16_MAX = float(np.finfo(np.float16).max)

# Tensors llama.cpp keeps in F32 whatever the file type (as its converter and quantizer do).
_KEEP_F32_SUBSTRINGS = ("position_embd.", "token_types.", "ffn_gate_inp.", "ssm_conv1d.", "_norm.")

_INT_TYPES = frozenset(
    {
        GGMLQuantizationType.I8,
        GGMLQuantizationType.I16,
        GGMLQuantizationType.I32,
        GGMLQuantizationType.I64,
    }
)

_FLOAT_SOURCE = frozenset({GGMLQuantizationType.F32, GGMLQuantizationType.F64, GGMLQuantizationType.BF16})


def _keeps_f32(t: SrcTensor) -> bool:
    return len(t.ne) <= 1 or any(s in t.name for s in _KEEP_F32_SUBSTRINGS)


def _as_f32(t: SrcTensor) -> npt.NDArray[np.float32]:
    shape = t.shape
    raw = np.asarray(t.data())
    if t.qtype == GGMLQuantizationType.F64:
        return raw.view(np.float64).astype(np.float32).reshape(shape)
    try:
        out = dequantize(raw, t.qtype)
    except NotImplementedError as exc:
        raise GGUFToolError(f"tensor {t.name!r}: cannot dequantize type {t.qtype.name}: {exc}") from exc
    return np.asarray(out, dtype=np.float32).reshape(shape)


def _to_f16(t: SrcTensor) -> npt.NDArray[np.float16]:
    arr = _as_f32(t)
    big = np.abs(arr) > _F16_MAX
    if np.any(big):
        log.warning("tensor %s: %d values exceed the F16 range and are clipped", t.name, int(big.sum()))
        arr = np.clip(arr, -_F16_MAX, _F16_MAX)
    return arr.astype(np.float16)


def _fits_f16(t: SrcTensor) -> bool:
    # cheap check for float sources (no dequantization needed): decides F16 vs F32 before writing
    arr = _as_f32(t)
    finite = arr[np.isfinite(arr)]
    return finite.size == 0 or float(np.abs(finite).max()) <= _F16_MAX


def _plan_tensor(t: SrcTensor) -> OutTensor:
    shape = t.shape
    n = t.n_elements
    if t.qtype in _INT_TYPES:
        target = t.qtype
    elif _keeps_f32(t) or (t.qtype in _FLOAT_SOURCE and not _fits_f16(t)):
        target = GGMLQuantizationType.F32
    else:
        target = GGMLQuantizationType.F16

    data: Callable[[], npt.NDArray[Any]]
    if target == t.qtype:
        data = t.data  # byte-for-byte copy
        nbytes = t.nbytes
    elif target == GGMLQuantizationType.F32:
        data = functools.partial(_as_f32, t)
        nbytes = n * 4
    else:
        data = functools.partial(_to_f16, t)
        nbytes = n * 2
    return OutTensor(name=t.name, shape=shape, qtype=target, nbytes=nbytes, data=data)


def dequantize_to_f16(src: PathLike, dst: PathLike, *, progress: bool = False) -> Path:
    """Write an F16 copy of the GGUF model `src` to `dst` and return `dst`.

    Every tensor is dequantized with ``gguf.quants.dequantize``; matrices are stored as F16,
    while 1-D tensors, norms, position/token-type embeddings and MoE routers stay F32 (as
    llama.cpp's converter keeps them), as do float tensors whose values exceed the F16 range.
    Integer tensors are copied unchanged. Metadata is preserved in order, except that
    ``general.file_type`` becomes MOSTLY_F16. Tensors are processed one at a time, so memory use
    stays around the size of the largest tensor.
    """
    reader = open_gguf(src)
    reject_split(reader, src, "dequantize")
    kv = kv_entries(reader)
    ftype = KVEntry(Keys.General.FILE_TYPE, int(LlamaFileType.MOSTLY_F16), GGUFValueType.UINT32)
    if any(e.key == ftype.key for e in kv):
        kv = [ftype if e.key == ftype.key else e for e in kv]
    else:
        kv.append(ftype)
    tensors = [_plan_tensor(t) for t in src_tensors(reader)]
    return write_gguf(
        dst,
        kv,
        tensors,
        alignment=int(reader.alignment),
        progress=progress,
        desc=f"F16 {Path(dst).name}",
    )
