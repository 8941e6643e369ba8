"""Raw model quantization: ``llama_model_quantize`` with every field of ``llama_model_quantize_params``.

llama.cpp reports quantization progress only through its log (one ``[  i/  n] name - [shape],
type = …`` line per tensor). While a quantization runs, this module installs a log callback of
its own that forwards every message to llamabind's normal log routing *and* hands the complete
lines written by the quantizing thread to the caller (for progress and dry-run size reports).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import backend as nbackend
from .lib import ll
from .model import kv_override_array

__all__ = ["GGML_TYPE_COUNT", "model_quantize", "quantize_default_fields"]

#: ``GGML_TYPE_COUNT``: "no override" for output_tensor_type / token_embedding_type.
GGML_TYPE_COUNT = 43

# llama_log_set is process-wide: one quantization at a time owns the log callback.
_QUANT_LOCK = threading.Lock()


def quantize_default_fields() -> dict[str, Any]:
    """The plain-value fields of ``llama_model_quantize_default_params()``."""
    p = ll().llama_model_quantize_default_params()
    return {
        name: getattr(p, name)
        for name, _ in p._fields_
        if name not in ("imatrix", "kv_overrides", "tt_overrides", "prune_layers")
    }


class _LogTap:
    """A temporary llama.cpp log callback: forwards to the normal handler, collects lines of one thread."""

    def __init__(self, on_line: Callable[[int, str], None]) -> None:
        self._on_line = on_line
        self._thread = threading.get_ident()
        self._parts: list[str] = []
        self._level = 2
        self.cfunc = ll().llama_log_callback(self._call)

    def _call(self, level: int, text: bytes | None, user: Any) -> None:
        try:
            nbackend._on_log(level, text, user)
            if threading.get_ident() != self._thread:
                return
            piece = (text or b"").decode("utf-8", "replace")
            if level != 5:  # 5 = continuation of the previous message
                self._level = level
            self._parts.append(piece)
            if piece.endswith("\n"):
                line = "".join(self._parts).rstrip("\n")
                self._parts.clear()
                for sub in line.split("\n"):
                    if sub.strip():
                        self._on_line(self._level, sub)
        except Exception:  # pragma: no cover - never propagate into C
            pass


def model_quantize(
    src: str,
    dst: str,
    *,
    ftype: int,
    nthread: int,
    output_tensor_type: int | None = None,
    token_embedding_type: int | None = None,
    allow_requantize: bool = False,
    quantize_output_tensor: bool = True,
    only_copy: bool = False,
    pure: bool = False,
    keep_split: bool = False,
    dry_run: bool = False,
    imatrix: Mapping[str, npt.NDArray[np.float32]] | None = None,
    kv_overrides: Sequence[tuple[str, int | float | bool | str]] = (),
    tt_overrides: Sequence[tuple[str, int]] = (),
    prune_layers: Sequence[int] = (),
    on_line: Callable[[int, str], None] | None = None,
) -> int:
    """Call ``llama_model_quantize``; returns its status (0 = success).

    ``on_line(level, text)`` receives every complete log line llama.cpp writes from this thread
    while quantizing (ggml log levels: 2 info, 3 warn, 4 error).
    """
    raw = ll()
    nbackend.backend_init()
    p = raw.llama_model_quantize_default_params()
    p.nthread = nthread
    p.ftype = ftype
    p.output_tensor_type = GGML_TYPE_COUNT if output_tensor_type is None else output_tensor_type
    p.token_embedding_type = GGML_TYPE_COUNT if token_embedding_type is None else token_embedding_type
    p.allow_requantize = allow_requantize
    p.quantize_output_tensor = quantize_output_tensor
    p.only_copy = only_copy
    p.pure = pure
    p.keep_split = keep_split
    p.dry_run = dry_run
    keep: list[Any] = []  # every buffer the params point into must outlive the call
    if imatrix:
        entries = (raw.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(imatrix.items()):
            arr = np.ascontiguousarray(values, dtype=np.float32).ravel()
            name_b = ctypes.create_string_buffer(name.encode())
            keep += [arr, name_b]
            entries[i].name = ctypes.cast(name_b, ctypes.c_char_p)
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(imatrix)].name = None  # terminator
        keep.append(entries)
        p.imatrix = entries
    if kv_overrides:
        kv = kv_override_array(raw, kv_overrides)
        keep.append(kv)
        p.kv_overrides = kv
    if tt_overrides:
        tt = (raw.llama_model_tensor_override * (len(tt_overrides) + 1))()
        for i, (pattern, type_id) in enumerate(tt_overrides):
            pat = ctypes.create_string_buffer(pattern.encode())
            keep.append(pat)
            tt[i].pattern = ctypes.cast(pat, ctypes.c_char_p)
            tt[i].type = type_id
        tt[len(tt_overrides)].pattern = None  # terminator
        tt[len(tt_overrides)].type = GGML_TYPE_COUNT
        keep.append(tt)
        p.tt_overrides = tt
    if prune_layers:
        pr = (ctypes.c_int32 * (len(prune_layers) + 1))(*prune_layers, -1)  # -1 terminates
        keep.append(pr)
        p.prune_layers = pr
    with _QUANT_LOCK:
        tap = _LogTap(on_line) if on_line is not None else None
        if tap is not None:
            raw.llama_log_set(tap.cfunc, None)
        try:
            rc = int(raw.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)))
        finally:
            if tap is not None:
                raw.llama_log_set(nbackend._log_cb, None)
    del keep
    return rc
