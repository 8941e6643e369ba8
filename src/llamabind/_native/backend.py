"""Process-wide backend init, llama.cpp logs into Python ``logging``, system info, devices, ggml type traits."""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any

from .lib import ggml, ll, load_side_library

__all__ = [
    "DeviceInfo",
    "backend_init",
    "devices",
    "error_mark",
    "errors_since",
    "ggml_type_info",
    "set_log_level",
    "supports_gpu_offload",
    "supports_mlock",
    "supports_mmap",
    "supports_rpc",
    "system_info",
]

native_log = logging.getLogger("llamabind.native")

_init_lock = threading.Lock()
_initialized = False
_log_cb: Any = None  # the ctypes callback object must outlive every log call: kept for the process
_pending: list[str] = []
_pending_level = logging.INFO
# ggml log levels: NONE=0 DEBUG=1 INFO=2 WARN=3 ERROR=4 CONT=5
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


# llama.cpp's recent error lines (sequence number, thread, text), so that an exception can say
# *why* a call failed even when nobody listens to the llamabind.native logger
_errors: collections.deque[tuple[int, int, str]] = collections.deque(maxlen=32)
_error_seq = 0


def error_mark() -> int:
    """A marker for :func:`errors_since`."""
    return _error_seq


def errors_since(mark: int) -> list[str]:
    """llama.cpp error lines logged by this thread after ``mark``."""
    tid = threading.get_ident()
    return [text for seq, t, text in list(_errors) if seq > mark and t == tid]


def _on_log(level: int, text: bytes | None, _user: Any) -> None:
    # Called from llama.cpp threads; never raise out of a ctypes callback.
    global _pending_level, _error_seq
    try:
        if level != 5:
            _pending_level = _LEVELS.get(level, logging.INFO)
        if _pending_level < logging.ERROR and not native_log.isEnabledFor(_pending_level):
            return  # the common case while loading: hundreds of lines nobody listens to
        piece = (text or b"").decode("utf-8", "replace")
        if _pending_level >= logging.ERROR and piece.strip():
            _error_seq += 1
            _errors.append((_error_seq, threading.get_ident(), piece.strip()))
        if not native_log.isEnabledFor(_pending_level):
            return
        _pending.append(piece)
        if piece.endswith("\n"):
            line = "".join(_pending).rstrip("\n")
            _pending.clear()
            if line:
                native_log.log(_pending_level, "%s", line)
    except Exception:  # pragma: no cover - must never propagate into C
        pass


def backend_init() -> None:
    """Initialise llama.cpp once per process (idempotent) and route its logs into ``logging``."""
    global _initialized, _log_cb
    if _initialized:
        return
    with _init_lock:
        if _initialized:
            return
        raw = ll()
        _log_cb = raw.llama_log_callback(_on_log)
        raw.llama_log_set(_log_cb, None)
        raw.llama_backend_init()
        _initialized = True


def set_log_level(level: int) -> None:
    """Shortcut: set the level of the ``llamabind.native`` logger."""
    native_log.setLevel(level)


def system_info() -> str:
    backend_init()
    return str(ll().llama_print_system_info().decode("utf-8", "replace"))


def supports_mmap() -> bool:
    return bool(ll().llama_supports_mmap())


def supports_mlock() -> bool:
    return bool(ll().llama_supports_mlock())


def supports_gpu_offload() -> bool:
    return bool(ll().llama_supports_gpu_offload())


def supports_rpc() -> bool:
    return bool(ll().llama_supports_rpc())


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    description: str
    type: str  # cpu, gpu, igpu, accel, meta
    memory_free: int
    memory_total: int
    handle: int


_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
_ggml_main: ctypes.CDLL | None = None


def _ggml_main_lib() -> ctypes.CDLL:
    global _ggml_main
    if _ggml_main is None:
        lib = load_side_library("ggml")
        if lib is None:
            raise OSError("libggml not found beside libllama")
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_name.restype = ctypes.c_char_p
        lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_description.restype = ctypes.c_char_p
        lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_memory.restype = None
        lib.ggml_backend_dev_memory.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        _ggml_main = lib
    return _ggml_main


def devices() -> list[DeviceInfo]:
    """Every ggml backend device registered in this process (CPU, GPUs, RPC workers, …)."""
    backend_init()
    lib = _ggml_main_lib()
    out: list[DeviceInfo] = []
    for i in range(int(lib.ggml_backend_dev_count())):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(
            DeviceInfo(
                index=i,
                name=(lib.ggml_backend_dev_name(dev) or b"").decode(),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(),
                type=_DEV_TYPES.get(int(lib.ggml_backend_dev_type(dev)), "unknown"),
                memory_free=int(free.value),
                memory_total=int(total.value),
                handle=int(dev),
            )
        )
    return out


@dataclass(frozen=True)
class GgmlTypeInfo:
    id: int
    name: str
    block_size: int
    type_size: int
    quantized: bool

    def row_size(self, n: int) -> int:
        """Bytes used by a row of ``n`` elements (``n`` must be a multiple of block_size)."""
        return int(_row_size(self.id, n))


def _row_size(type_id: int, n: int) -> int:
    lib = ggml()
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return int(lib.ggml_row_size(type_id, n))


def ggml_type_info(type_id: int) -> GgmlTypeInfo:
    """Traits of a ggml tensor type (name, block size, bytes per block) straight from ggml."""
    lib = ggml()
    lib.ggml_type_name.restype = ctypes.c_char_p
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_is_quantized.restype = ctypes.c_bool
    lib.ggml_is_quantized.argtypes = [ctypes.c_int]
    name = lib.ggml_type_name(type_id)
    return GgmlTypeInfo(
        id=type_id,
        name=(name or b"?").decode(),
        block_size=int(lib.ggml_blck_size(type_id)),
        type_size=int(lib.ggml_type_size(type_id)),
        quantized=bool(lib.ggml_is_quantized(type_id)),
    )
