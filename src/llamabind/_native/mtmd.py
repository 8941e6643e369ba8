"""Raw libmtmd calls (multimodal: images and audio) over llama-cpp-python's ``llama_cpp.mtmd_cpp``.

Handles are plain ints (``mtmd_context *``, ``mtmd_bitmap *``, ``mtmd_input_chunks *``,
``mtmd_input_chunk *``); ``llamabind.multimodal`` owns them. libmtmd reports failures only as
NULL / non-zero codes plus log lines, so :func:`capture_errors` collects the error lines logged
by the calling thread to turn them into exception messages. All libmtmd / CLIP logging is routed
into the ``llamabind.native`` logger.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import NativeLibraryError
from .lib import LIB_DIR_ENV, lib_dir, ll

__all__ = [
    "CHUNK_AUDIO",
    "CHUNK_IMAGE",
    "CHUNK_TEXT",
    "MtmdParams",
    "available",
    "bitmap_free",
    "bitmap_from_audio",
    "bitmap_from_buf",
    "bitmap_from_rgb",
    "bitmap_info",
    "bitmap_set_id",
    "caps_from_file",
    "capture_errors",
    "chunk_copy",
    "chunk_free",
    "chunk_info",
    "chunk_text_tokens",
    "chunks_free",
    "chunks_get",
    "chunks_init",
    "chunks_size",
    "context_free",
    "context_info",
    "decode_media_embd",
    "default_marker",
    "encode_chunk",
    "helper_eval_chunks",
    "init_from_file",
    "mtmd",
    "tokenize",
    "use_non_causal",
]

CHUNK_TEXT = 0
CHUNK_IMAGE = 1
CHUNK_AUDIO = 2

native_log = logging.getLogger("llamabind.native")
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}

_lock = threading.Lock()
_m: ModuleType | None = None
_log_cb: Any = None  # the ctypes callback must outlive every log call: kept for the process
_tls = threading.local()


# ------------------------------------------------------------------ loading + logs


def _on_log(level: int, text: bytes | None, _user: Any) -> None:
    # Called from C (any thread); never raise out of a ctypes callback.
    try:
        piece = (text or b"").decode("utf-8", "replace")
        if level != 5:
            _tls.level = _LEVELS.get(level, logging.INFO)
        lvl = getattr(_tls, "level", logging.INFO)
        pending: list[str] = getattr(_tls, "pending", None) or []
        pending.append(piece)
        _tls.pending = pending
        if not piece.endswith("\n"):
            return
        line = "".join(pending).rstrip("\n")
        pending.clear()
        if not line:
            return
        captured: list[str] | None = getattr(_tls, "captured", None)
        if captured is not None and lvl >= logging.WARNING:
            captured.append(line.strip())
        if native_log.isEnabledFor(lvl):
            native_log.log(lvl, "%s", line)
    except Exception:  # pragma: no cover - must never propagate into C
        pass


def mtmd() -> ModuleType:
    """The raw ``llama_cpp.mtmd_cpp`` module (libmtmd of the same build), loaded once."""
    global _m, _log_cb
    if _m is not None:
        return _m
    with _lock:
        if _m is not None:
            return _m
        raw = ll()
        if os.environ.get(LIB_DIR_ENV) and not os.environ.get("MTMD_CPP_LIB"):
            # llama_cpp.mtmd_cpp reads this at import time to locate libmtmd
            os.environ["MTMD_CPP_LIB"] = str(lib_dir())
        try:
            import llama_cpp.mtmd_cpp as module
        except (OSError, RuntimeError, FileNotFoundError) as exc:
            raise NativeLibraryError(
                f"libmtmd (multimodal support) could not be loaded from {lib_dir()}: {exc}"
            ) from exc
        except AttributeError as exc:
            raise NativeLibraryError(
                f"libmtmd in {lib_dir()} lacks a function llama-cpp-python declares ({exc})"
            ) from exc
        _log_cb = raw.llama_log_callback(_on_log)
        module.mtmd_helper_log_set(_log_cb, None)  # also sets mtmd_log_set
        _m = module
    return _m


def available() -> bool:
    """True when libmtmd can be loaded."""
    try:
        mtmd()
    except NativeLibraryError:
        return False
    return True


@contextlib.contextmanager
def capture_errors() -> Iterator[list[str]]:
    """Collect the warning/error lines libmtmd logs from this thread inside the block."""
    outer = getattr(_tls, "captured", None)
    lines: list[str] = []
    _tls.captured = lines
    try:
        yield lines
    finally:
        _tls.captured = outer
        if outer is not None:
            outer.extend(lines)


def default_marker() -> str:
    return str(mtmd().mtmd_default_marker().decode("utf-8"))


# ------------------------------------------------------------------ context


@dataclass
class MtmdParams:
    use_gpu: bool = True
    n_threads: int = 4
    media_marker: str | None = None
    flash_attn: int = -1  # llama_flash_attn_type: -1 auto, 0 off, 1 on
    warmup: bool = True
    image_min_tokens: int = -1
    image_max_tokens: int = -1
    batch_max_tokens: int | None = None
    device: int | None = None  # ggml_backend_dev_t
    print_timings: bool = False


def init_from_file(path: str, model: int, params: MtmdParams) -> int | None:
    """``mtmd_init_from_file``; None on failure (wrap in :func:`capture_errors` for the reason)."""
    m = mtmd()
    p = m.mtmd_context_params_default()
    p.use_gpu = bool(params.use_gpu)
    p.n_threads = int(params.n_threads)
    p.print_timings = bool(params.print_timings)
    if params.media_marker is not None:
        p.media_marker = params.media_marker.encode("utf-8")
    p.flash_attn_type = int(params.flash_attn)
    p.warmup = bool(params.warmup)
    p.image_min_tokens = int(params.image_min_tokens)
    p.image_max_tokens = int(params.image_max_tokens)
    if params.batch_max_tokens is not None:
        p.batch_max_tokens = int(params.batch_max_tokens)
    if params.device is not None:
        p.device = params.device
    handle = m.mtmd_init_from_file(path.encode(), model, p)
    return int(handle) if handle else None


def context_free(ctx: int) -> None:
    mtmd().mtmd_free(ctx)


@dataclass(frozen=True)
class ContextInfo:
    vision: bool
    audio: bool
    mrope: bool
    audio_sample_rate: int
    marker: str


def context_info(ctx: int) -> ContextInfo:
    m = mtmd()
    marker = m.mtmd_get_marker(ctx)
    return ContextInfo(
        vision=bool(m.mtmd_support_vision(ctx)),
        audio=bool(m.mtmd_support_audio(ctx)),
        mrope=bool(m.mtmd_decode_use_mrope(ctx)),
        audio_sample_rate=int(m.mtmd_get_audio_sample_rate(ctx)),
        marker=(marker or b"").decode("utf-8", "replace"),
    )


def use_non_causal(ctx: int, chunk: int) -> bool:
    return bool(mtmd().mtmd_decode_use_non_causal(ctx, chunk))


def caps_from_file(path: str) -> tuple[bool, bool]:
    """(vision, audio) of a projector file without loading its weights; (False, False) if unreadable."""
    caps = mtmd().mtmd_get_cap_from_file(path.encode())
    return bool(caps.inp_vision), bool(caps.inp_audio)


# ------------------------------------------------------------------ bitmaps


def bitmap_from_rgb(nx: int, ny: int, data: bytes) -> int | None:
    """An image bitmap from ``nx * ny * 3`` bytes of packed RGB."""
    if len(data) != nx * ny * 3:
        raise ValueError(f"RGB data has {len(data)} bytes, expected {nx}*{ny}*3 = {nx * ny * 3}")
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    h = mtmd().mtmd_bitmap_init(nx, ny, buf)
    return int(h) if h else None


def bitmap_from_audio(samples: npt.NDArray[np.float32]) -> int | None:
    """An audio bitmap from mono float32 PCM (already at the projector's sample rate)."""
    arr = np.ascontiguousarray(samples, dtype=np.float32).ravel()
    ptr = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    h = mtmd().mtmd_bitmap_init_from_audio(arr.size, ptr)  # copies the samples
    return int(h) if h else None


def bitmap_from_buf(ctx: int, data: bytes) -> int | None:
    """Decode an encoded image (stb_image: PNG, JPEG, BMP, GIF, …) or audio file (miniaudio: WAV,
    MP3, FLAC, resampled to the projector's rate); None when it cannot be decoded. The bitmap's id
    is the SHA-256 of ``data``."""
    m = mtmd()
    buf = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
    h = m.mtmd_helper_bitmap_init_from_buf(ctx, buf, len(data), False, m.mtmd_helper_init_opt_default())
    return int(h) if h else None


def bitmap_free(bitmap: int) -> None:
    mtmd().mtmd_bitmap_free(bitmap)


@dataclass(frozen=True)
class BitmapInfo:
    nx: int
    ny: int
    n_bytes: int
    is_audio: bool
    id: str | None


def bitmap_info(bitmap: int) -> BitmapInfo:
    m = mtmd()
    bid = m.mtmd_bitmap_get_id(bitmap)
    return BitmapInfo(
        nx=int(m.mtmd_bitmap_get_nx(bitmap)),
        ny=int(m.mtmd_bitmap_get_ny(bitmap)),
        n_bytes=int(m.mtmd_bitmap_get_n_bytes(bitmap)),
        is_audio=bool(m.mtmd_bitmap_is_audio(bitmap)),
        id=bid.decode("utf-8", "replace") if bid else None,
    )


def bitmap_data(bitmap: int) -> bytes:
    m = mtmd()
    n = int(m.mtmd_bitmap_get_n_bytes(bitmap))
    ptr = m.mtmd_bitmap_get_data(bitmap)
    return ctypes.string_at(ptr, n) if ptr and n else b""


def bitmap_set_id(bitmap: int, bitmap_id: str) -> None:
    mtmd().mtmd_bitmap_set_id(bitmap, bitmap_id.encode("utf-8"))


# ------------------------------------------------------------------ chunks


def chunks_init() -> int:
    h = mtmd().mtmd_input_chunks_init()
    if not h:
        raise MemoryError("mtmd_input_chunks_init failed")
    return int(h)


def chunks_free(chunks: int) -> None:
    mtmd().mtmd_input_chunks_free(chunks)


def chunks_size(chunks: int) -> int:
    return int(mtmd().mtmd_input_chunks_size(chunks))


def chunks_get(chunks: int, i: int) -> int:
    return int(mtmd().mtmd_input_chunks_get(chunks, i))


def tokenize(
    ctx: int, chunks: int, text: str, bitmaps: Sequence[int], *, add_special: bool, parse_special: bool
) -> int:
    """``mtmd_tokenize``: 0 ok, 1 marker/bitmap count mismatch, 2 media preprocessing error."""
    m = mtmd()
    raw = text.encode("utf-8")
    t = m.mtmd_input_text(raw, len(raw), add_special, parse_special)
    n = len(bitmaps)
    arr = (m.mtmd_bitmap_p_ctypes * max(n, 1))(*bitmaps)
    return int(m.mtmd_tokenize(ctx, chunks, ctypes.byref(t), arr, n))


@dataclass(frozen=True)
class ChunkInfo:
    type: int
    n_tokens: int
    n_pos: int
    id: str | None


def chunk_info(chunk: int) -> ChunkInfo:
    m = mtmd()
    cid = m.mtmd_input_chunk_get_id(chunk)
    return ChunkInfo(
        type=int(m.mtmd_input_chunk_get_type(chunk)),
        n_tokens=int(m.mtmd_input_chunk_get_n_tokens(chunk)),
        n_pos=int(m.mtmd_input_chunk_get_n_pos(chunk)),
        id=cid.decode("utf-8", "replace") if cid else None,
    )


def chunk_text_tokens(chunk: int) -> list[int]:
    m = mtmd()
    n = ctypes.c_size_t(0)
    ptr = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
    if not ptr or n.value == 0:
        return []
    return [int(x) for x in ptr[: n.value]]


def chunk_copy(chunk: int) -> int:
    h = mtmd().mtmd_input_chunk_copy(chunk)
    if not h:
        raise MemoryError("mtmd_input_chunk_copy failed")
    return int(h)


def chunk_free(chunk: int) -> None:
    mtmd().mtmd_input_chunk_free(chunk)


# ------------------------------------------------------------------ encode / decode


def encode_chunk(ctx: int, chunk: int, n_embd: int, n_tokens: int) -> npt.NDArray[np.float32] | None:
    """Run the encoder on a media chunk; a copy of its (n_tokens, n_embd) embeddings, None on failure."""
    m = mtmd()
    rc = int(m.mtmd_encode_chunk(ctx, chunk))
    if rc != 0:
        return None
    ptr = m.mtmd_get_output_embd(ctx)
    if not ptr:
        return None
    view = np.ctypeslib.as_array(ptr, shape=(n_tokens, n_embd))
    out: npt.NDArray[np.float32] = view.copy()
    return out


def decode_media_embd(
    mctx: int,
    lctx: int,
    chunk: int,
    embd: npt.NDArray[np.float32],
    n_past: int,
    seq_id: int,
    n_batch: int,
) -> tuple[int, int]:
    """Decode a media chunk's embeddings into ``seq_id`` from position ``n_past``.

    libmtmd's helper sets the positions (M-RoPE 2-D positions for images on M-RoPE models) and
    non-causal attention where the model needs it. Returns (llama.cpp code, new n_past).
    """
    m = mtmd()
    raw = ll()
    arr = np.ascontiguousarray(embd, dtype=np.float32)
    ptr = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    new_n_past = raw.llama_pos(n_past)
    rc = int(
        m.mtmd_helper_decode_image_chunk(
            mctx,
            lctx,
            chunk,
            ptr,
            n_past,
            seq_id,
            n_batch,
            ctypes.byref(new_n_past),
            m.mtmd_helper_post_decode_callback(),
            None,
        )
    )
    return rc, int(new_n_past.value)


def helper_eval_chunks(
    mctx: int, lctx: int, chunks: int, n_past: int, seq_id: int, n_batch: int, logits_last: bool
) -> tuple[int, int]:
    """libmtmd's own whole-prompt evaluation (``mtmd_helper_eval_chunks``): the reference the
    chunk-by-chunk path of ``llamabind.multimodal`` is tested against. (code, new n_past)."""
    m = mtmd()
    raw = ll()
    new_n_past = raw.llama_pos(n_past)
    rc = int(
        m.mtmd_helper_eval_chunks(
            mctx, lctx, chunks, n_past, seq_id, n_batch, logits_last, ctypes.byref(new_n_past)
        )
    )
    return rc, int(new_n_past.value)
