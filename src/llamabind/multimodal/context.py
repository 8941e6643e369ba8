"""`MtmdContext`: a multimodal projector (mmproj) loaded for a text model, over libmtmd.

    mtmd = MtmdContext(model, "mmproj.gguf")
    img = mtmd.image_from_file("cat.png")
    prompt = mtmd.tokenize(f"Describe this: {mtmd.marker}", [img])
    n_past = mtmd.eval(ctx, prompt)          # text + image embeddings into sequence 0

A prompt is tokenized into *chunks*: runs of text tokens and media chunks (one per image, or
per audio clip). :class:`MediaPrompt` also gives every prompt **position** a cache key — the
token id for text, and negative keys derived from the media's content hash for media — so
the usual "longest common prefix" KV reuse works unchanged across requests with media.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .._native import mtmd as nm
from ..core import Batch, Context, Model, default_threads
from ..core._owner import NativeOwner
from ..core.gguf_file import check_gguf_magic
from ..errors import AbortedError, ContextOverflowError, DecodeError, NoKvSlotError, UnsupportedError
from .errors import MediaError, ProjectorError
from .sniff import MediaInfo, sniff

__all__ = [
    "Bitmap",
    "MediaChunk",
    "MediaPrompt",
    "MtmdContext",
    "ProjectorInfo",
    "default_marker",
    "find_mmproj",
    "media_keys",
    "projector_info",
]

PathLike = str | os.PathLike[str]
_FLASH = {"auto": -1, "off": 0, "on": 1, "disabled": 0, "enabled": 1}
_CHUNK_TYPES: dict[int, Literal["text", "image", "audio"]] = {
    nm.CHUNK_TEXT: "text",
    nm.CHUNK_IMAGE: "image",
    nm.CHUNK_AUDIO: "audio",
}
#: Default ceiling on the pixels an image header may declare (about 8K × 6K).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
#: Default ceiling on the length of an audio clip.
DEFAULT_MAX_AUDIO_SECONDS = 600.0


def default_marker() -> str:
    """libmtmd's default media marker (``<__media__>``)."""
    return nm.default_marker()


@dataclass(frozen=True)
class ProjectorInfo:
    """What a projector file supports, read without loading its weights."""

    vision: bool
    audio: bool


def projector_info(path: PathLike) -> ProjectorInfo:
    p = Path(path)
    _check_gguf(p)
    vision, audio = nm.caps_from_file(str(p))
    if not vision and not audio:
        raise ProjectorError(
            f"{p} is not a multimodal projector (no vision or audio encoder in its metadata)"
        )
    return ProjectorInfo(vision, audio)


def find_mmproj(model_path: PathLike) -> Path | None:
    """A projector beside a model: ``mmproj*.gguf`` in the model's directory (the one whose name
    shares the longest prefix with the model's, when there are several); None if there is none."""
    model = Path(model_path)
    candidates = sorted(
        p for p in model.parent.glob("*.gguf") if p.name.lower().startswith("mmproj") and p != model
    )
    if not candidates:
        return None

    def score(p: Path) -> int:
        a, b = p.name.lower().removeprefix("mmproj-"), model.name.lower()
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    return max(candidates, key=score)


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ProjectorError(f"projector file not found: {path}")
    check_gguf_magic(path, error=ProjectorError)


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def media_keys(media_id: str, n_pos: int, sub: int = 0) -> list[int]:
    """Cache keys for the ``n_pos`` positions of a media chunk: negative ints derived from the
    content hash (never equal to a token id, equal for equal media)."""
    base = int(hashlib.sha256(f"{media_id}#{sub}".encode()).hexdigest()[:15], 16)
    return [-1 - ((base + j) % (1 << 60)) for j in range(n_pos)]


# ---------------------------------------------------------------------- bitmaps


class Bitmap(NativeOwner):
    """Decoded media ready for :meth:`MtmdContext.tokenize`: an RGB image or mono float PCM.

    ``id`` is a content hash (SHA-256 hex) used as the chunk id and for KV prefix caching.
    """

    def __init__(self, handle: int, kind: Literal["image", "audio"], source_format: str = "raw") -> None:
        self._own(handle, nm.bitmap_free)
        info = nm.bitmap_info(handle)
        self.kind: Literal["image", "audio"] = kind
        self.format = source_format
        self.width = info.nx
        self.height = info.ny
        self.n_bytes = info.n_bytes
        self._id = info.id

    @property
    def id(self) -> str:
        return self._id or ""

    @id.setter
    def id(self, value: str) -> None:
        nm.bitmap_set_id(self._ptr(), value)
        self._id = value

    @property
    def n_samples(self) -> int:
        """Audio samples (0 for images)."""
        return self.n_bytes // 4 if self.kind == "audio" else 0

    def data(self) -> bytes:
        """A copy of the raw data (packed RGB, or float32 PCM)."""
        return nm.bitmap_data(self._ptr())

    def __repr__(self) -> str:
        if self.closed:
            return "<Bitmap (closed)>"
        if self.kind == "audio":
            return f"<Bitmap audio {self.n_samples} samples id={self.id[:12]}>"
        return f"<Bitmap image {self.width}x{self.height} id={self.id[:12]}>"


# ---------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class MediaChunk:
    """One chunk of a tokenized prompt: text tokens or one image / audio clip."""

    index: int
    type: Literal["text", "image", "audio"]
    n_tokens: int  # KV cells it uses
    n_pos: int  # positions it advances (< n_tokens for images on M-RoPE models)
    id: str | None  # the media's content hash (None for text)
    tokens: tuple[int, ...]  # text tokens (empty for media)
    start: int  # first position (relative to the prompt start)

    @property
    def is_media(self) -> bool:
        return self.type != "text"

    @property
    def end(self) -> int:
        return self.start + self.n_pos


class MediaPrompt(NativeOwner):
    """A prompt tokenized with its media: the libmtmd chunk list, and per-position cache keys."""

    def __init__(self, mtmd: MtmdContext, handle: int, text: str, media: Sequence[Bitmap]) -> None:
        self._own(handle, nm.chunks_free)
        self.mtmd = mtmd  # keeps the projector alive while the prompt exists
        self.text = text
        self.media_ids = tuple(b.id for b in media)
        chunks: list[MediaChunk] = []
        keys: list[int] = []
        self._handles: list[int] = []
        pos = 0
        last_id: str | None = None
        sub = 0
        for i in range(nm.chunks_size(handle)):
            ch = nm.chunks_get(handle, i)
            info = nm.chunk_info(ch)
            kind = _CHUNK_TYPES.get(info.type)
            if kind is None:
                raise MediaError(f"libmtmd produced a chunk of unknown type {info.type}")
            if kind == "text":
                toks = tuple(nm.chunk_text_tokens(ch))
                chunks.append(MediaChunk(i, "text", len(toks), len(toks), None, toks, pos))
                keys.extend(toks)
                pos += len(toks)
                last_id = None
            else:
                mid = info.id or ""
                sub = sub + 1 if mid == last_id else 0
                last_id = mid
                chunks.append(MediaChunk(i, kind, info.n_tokens, info.n_pos, mid, (), pos))
                keys.extend(media_keys(mid, info.n_pos, sub))
                pos += info.n_pos
            self._handles.append(ch)
        self.chunks: tuple[MediaChunk, ...] = tuple(chunks)
        self.keys: list[int] = keys
        self.n_pos = pos
        self.n_tokens = sum(c.n_tokens for c in chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[MediaChunk]:
        return iter(self.chunks)

    def _chunk_handle(self, chunk: MediaChunk) -> int:
        self._ptr()  # ClosedError once closed
        if not 0 <= chunk.index < len(self._handles) or self.chunks[chunk.index] != chunk:
            raise ValueError("chunk does not belong to this prompt")
        return self._handles[chunk.index]

    @property
    def media_chunks(self) -> list[MediaChunk]:
        return [c for c in self.chunks if c.is_media]

    @property
    def ends_with_text(self) -> bool:
        return bool(self.chunks) and self.chunks[-1].type == "text" and self.chunks[-1].n_tokens > 0

    def chunk_at(self, pos: int) -> MediaChunk | None:
        """The chunk holding prompt position ``pos``."""
        for c in self.chunks:
            if c.start <= pos < c.end:
                return c
        return None

    def safe_prefix(self, keep: int) -> int:
        """``keep`` moved back to the start of a media chunk it would cut through (a media chunk
        is decoded whole or not at all)."""
        c = self.chunk_at(keep)
        if c is not None and c.is_media and c.start < keep:
            return c.start
        return keep

    def next_prefill(self, pending: int, budget: int) -> tuple[MediaChunk | None, int]:
        """What a batching engine decodes next from prompt position ``pending``.

        ``(chunk, chunk.n_pos)`` when a media chunk starts at ``pending`` (decode it alone with
        :meth:`MtmdContext.eval_chunk`); otherwise ``(None, n)``: the next ``n`` (<= ``budget``)
        keys are text tokens that may go into a shared batch (it stops before the next media).
        """
        c = self.chunk_at(pending)
        if c is None:
            return None, 0
        if c.is_media:
            if c.start != pending:
                raise ValueError(f"position {pending} is inside an {c.type} chunk ({c.start}..{c.end})")
            return c, c.n_pos
        return None, max(0, min(budget, c.end - pending))

    def __repr__(self) -> str:
        if self.closed:
            return "<MediaPrompt (closed)>"
        kinds = ",".join(c.type for c in self.chunks)
        return (
            f"<MediaPrompt {len(self.chunks)} chunks [{kinds}] n_pos={self.n_pos} n_tokens={self.n_tokens}>"
        )


# ---------------------------------------------------------------------- context


@contextlib.contextmanager
def _context_ptr(ctx: Context) -> Iterator[Any]:
    """The raw llama_context of ``ctx`` under its single-thread lock (ConcurrentUseError otherwise)."""
    ptr = ctx._acquire()
    try:
        yield ptr
    finally:
        ctx._lock.release()


class MtmdContext(NativeOwner):
    """A multimodal projector loaded for ``model``.

    ``use_gpu`` offloads the encoder to the GPU when the build has one; ``n_threads`` are the CPU
    threads of the encoder; ``warmup`` runs one encode at load time (slower load, no first-image
    stall); ``image_min_tokens`` / ``image_max_tokens`` bound dynamic-resolution encoders.
    ``embd_cache_bytes`` keeps encoded media embeddings by content hash (0: off). ``device``
    (a :class:`~llamabind.DeviceInfo` from :func:`~llamabind.devices`) picks the encoder's device.

    Raises :class:`ProjectorError` when the file is not a projector or does not match the model
    (its output width differs from the model's embedding width).
    """

    def __init__(
        self,
        model: Model,
        mmproj: PathLike,
        *,
        use_gpu: bool = True,
        n_threads: int | None = None,
        media_marker: str | None = None,
        flash_attn: str = "auto",
        warmup: bool = True,
        image_min_tokens: int | None = None,
        image_max_tokens: int | None = None,
        batch_max_tokens: int | None = None,
        print_timings: bool = False,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
        embd_cache_bytes: int = 0,
        device: Any = None,
    ) -> None:
        path = Path(mmproj)
        _check_gguf(path)
        if flash_attn not in _FLASH:
            raise ValueError(f"flash_attn must be one of {sorted(_FLASH)}")
        if media_marker is not None and not media_marker:
            raise ValueError("media_marker must not be empty")
        if n_threads is not None and n_threads <= 0:
            raise ValueError("n_threads must be positive")
        self.model = model  # strong reference: the model outlives the projector
        self.path = path
        params = nm.MtmdParams(
            use_gpu=use_gpu,
            n_threads=n_threads or default_threads(),
            media_marker=media_marker,
            flash_attn=_FLASH[flash_attn],
            warmup=warmup,
            image_min_tokens=-1 if image_min_tokens is None else int(image_min_tokens),
            image_max_tokens=-1 if image_max_tokens is None else int(image_max_tokens),
            batch_max_tokens=batch_max_tokens,
            print_timings=print_timings,
            device=getattr(device, "handle", device),
        )
        with nm.capture_errors() as errors:
            handle = nm.init_from_file(str(path), model._ptr(), params)
        if not handle:
            raise ProjectorError(_load_failure(path, model, errors))
        self._own(handle, nm.context_free, parent=model)
        info = nm.context_info(handle)
        self.supports_vision = info.vision
        self.supports_audio = info.audio
        self.uses_mrope = info.mrope
        self.audio_sample_rate = info.audio_sample_rate if info.audio else 0
        self.marker = info.marker
        self.n_embd = model.n_embd
        self.max_image_pixels = max_image_pixels
        self.max_audio_seconds = max_audio_seconds
        self._lock = threading.Lock()  # encode is not thread-safe
        self._embd_cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._embd_cache_bytes = 0
        self.embd_cache_limit = max(0, int(embd_cache_bytes))

    # ------------------------------------------------------------------ info
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, on in (("image", self.supports_vision), ("audio", self.supports_audio)) if on)

    def __repr__(self) -> str:
        if self.closed:
            return f"<MtmdContext {self.path.name} (closed)>"
        return f"<MtmdContext {self.path.name} {'+'.join(self.modalities)} marker={self.marker!r}>"

    def _require(self, kind: str) -> None:
        self._ptr()  # ClosedError once closed (or once its model is closed)
        if kind == "image" and not self.supports_vision:
            raise MediaError(
                f"the projector {self.path.name} has no vision encoder: it cannot take images "
                f"(it supports: {', '.join(self.modalities) or 'nothing'})"
            )
        if kind == "audio" and not self.supports_audio:
            raise MediaError(
                f"the projector {self.path.name} has no audio encoder: it cannot take audio "
                f"(it supports: {', '.join(self.modalities) or 'nothing'})"
            )

    # --------------------------------------------------------------- bitmaps
    def image_from_rgb(self, rgb: npt.ArrayLike) -> Bitmap:
        """An image from an (height, width, 3) uint8 array (or (h, w, 4) RGBA: alpha dropped)."""
        self._require("image")
        arr = np.asarray(rgb)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise MediaError(f"an RGB image must have shape (height, width, 3), got {arr.shape}")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        arr = np.ascontiguousarray(arr[:, :, :3])
        h, w = int(arr.shape[0]), int(arr.shape[1])
        if h == 0 or w == 0:
            raise MediaError("an image must be at least 1x1 pixels")
        if h * w > self.max_image_pixels:
            raise MediaError(
                f"image of {w}x{h} pixels exceeds the limit of {self.max_image_pixels} pixels", status=413
            )
        data = arr.tobytes()
        handle = nm.bitmap_from_rgb(w, h, data)
        if not handle:
            raise MediaError(f"libmtmd could not create a {w}x{h} image bitmap")
        bmp = Bitmap(handle, "image", "rgb")
        bmp.id = _sha256(b"rgb", w.to_bytes(4, "little"), h.to_bytes(4, "little"), data)
        return bmp

    def audio_from_pcm(self, samples: npt.ArrayLike, sample_rate: int | None = None) -> Bitmap:
        """Audio from float PCM in [-1, 1]: mono (n,), or (n, channels) averaged to mono.

        ``sample_rate`` (default: the projector's) is converted to :attr:`audio_sample_rate`.
        """
        self._require("audio")
        pcm = np.asarray(samples, dtype=np.float32)
        if pcm.ndim == 2:
            pcm = pcm.mean(axis=1)
        if pcm.ndim != 1:
            raise MediaError(f"PCM must have shape (n,) or (n, channels), got {pcm.shape}")
        if pcm.size == 0:
            raise MediaError("audio has no samples")
        if not np.all(np.isfinite(pcm)):
            raise MediaError("audio contains NaN or infinite samples")
        rate = sample_rate or self.audio_sample_rate
        if rate <= 0:
            raise MediaError(f"invalid sample rate {rate}")
        if pcm.size / rate > self.max_audio_seconds:
            raise MediaError(
                f"audio of {pcm.size / rate:.1f} s exceeds the limit of {self.max_audio_seconds:.0f} s",
                status=413,
            )
        if rate != self.audio_sample_rate:
            pcm = resample(pcm, rate, self.audio_sample_rate)
        handle = nm.bitmap_from_audio(pcm)
        if not handle:
            raise MediaError("libmtmd could not create an audio bitmap")
        bmp = Bitmap(handle, "audio", "pcm")
        bmp.id = _sha256(b"pcm", self.audio_sample_rate.to_bytes(4, "little"), pcm.tobytes())
        return bmp

    def media_from_bytes(self, data: bytes, kind: str | None = None) -> Bitmap:
        """Decode an encoded image (PNG, JPEG, GIF, BMP; WebP with Pillow) or audio file (WAV, MP3,
        FLAC), recognised by content. ``kind`` ("image"/"audio") makes any other content an error.

        Raises :class:`MediaError` when the bytes cannot be decoded, the header declares more than
        :attr:`max_image_pixels`, or the projector lacks the encoder for this kind of media.
        """
        data = bytes(data)
        if not data:
            raise MediaError("empty media data")
        info = sniff(data)
        if kind is not None and info.kind != "unknown" and info.kind != kind:
            raise MediaError(f"expected {kind} data but got {info.format} ({info.kind})", status=415)
        if info.kind == "unknown":
            raise MediaError(
                f"unrecognised media data ({len(data)} bytes, starts with {data[:8]!r}): expected an image "
                "(PNG, JPEG, GIF, BMP, WebP) or audio (WAV, MP3, FLAC)",
                status=415,
            )
        self._require(info.kind)
        if info.kind == "image":
            return self._decode_image(data, info)
        return self._decode_audio(data, info)

    def image_from_bytes(self, data: bytes) -> Bitmap:
        return self.media_from_bytes(data, "image")

    def audio_from_bytes(self, data: bytes) -> Bitmap:
        return self.media_from_bytes(data, "audio")

    def media_from_file(self, path: PathLike, kind: str | None = None) -> Bitmap:
        p = Path(path)
        if not p.is_file():
            raise MediaError(f"media file not found: {p}")
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise MediaError(f"cannot read {p}: {exc}") from exc
        try:
            return self.media_from_bytes(data, kind)
        except MediaError as exc:
            raise MediaError(f"{p}: {exc}", status=exc.status) from exc

    def image_from_file(self, path: PathLike) -> Bitmap:
        return self.media_from_file(path, "image")

    def audio_from_file(self, path: PathLike) -> Bitmap:
        return self.media_from_file(path, "audio")

    def _decode_image(self, data: bytes, info: MediaInfo) -> Bitmap:
        px = info.pixels
        if px is not None and px > self.max_image_pixels:
            raise MediaError(
                f"{info.format} image of {info.width}x{info.height} pixels exceeds the limit of "
                f"{self.max_image_pixels} pixels",
                status=413,
            )
        if px == 0:
            raise MediaError(f"{info.format} image with zero size")
        handle = None
        if info.format != "webp" and px is not None:
            with nm.capture_errors():
                handle = nm.bitmap_from_buf(self._ptr(), data)
        if handle:
            return Bitmap(handle, "image", info.format)
        rgb = _pillow_decode(data, self.max_image_pixels)
        if rgb is None:
            hint = " (install Pillow to decode WebP)" if info.format == "webp" and not _has_pillow() else ""
            raise MediaError(f"could not decode the {info.format} image ({len(data)} bytes){hint}")
        bmp = self.image_from_rgb(rgb)
        bmp.format = info.format
        bmp.id = _sha256(data)
        return bmp

    def _decode_audio(self, data: bytes, info: MediaInfo) -> Bitmap:
        with nm.capture_errors():
            handle = nm.bitmap_from_buf(self._ptr(), data)
        if not handle:
            raise MediaError(f"could not decode the {info.format} audio ({len(data)} bytes)")
        bmp = Bitmap(handle, "audio", info.format)
        seconds = bmp.n_samples / max(self.audio_sample_rate, 1)
        if seconds > self.max_audio_seconds:
            bmp.close()
            raise MediaError(
                f"audio of {seconds:.1f} s exceeds the limit of {self.max_audio_seconds:.0f} s", status=413
            )
        if bmp.n_samples == 0:
            bmp.close()
            raise MediaError("audio has no samples")
        return bmp

    # -------------------------------------------------------------- tokenize
    def tokenize(
        self,
        text: str,
        media: Sequence[Bitmap] = (),
        *,
        add_special: bool = True,
        parse_special: bool = True,
    ) -> MediaPrompt:
        """Split ``text`` at each :attr:`marker` and put ``media[i]`` at the i-th marker.

        Raises :class:`MediaError` when the number of markers and media differ, a medium is of a
        kind the projector cannot take, or preprocessing fails.
        """
        n_markers = text.count(self.marker)
        if n_markers != len(media):
            raise MediaError(
                f"the prompt has {n_markers} media marker(s) {self.marker!r} but {len(media)} image/audio "
                "input(s) were given"
            )
        for b in media:
            if not isinstance(b, Bitmap):
                raise TypeError(f"media must be Bitmap objects, not {type(b).__name__}")
            self._require(b.kind)
        handles = [b._ptr() for b in media]
        chunks = nm.chunks_init()
        try:
            with nm.capture_errors() as errors:
                rc = nm.tokenize(
                    self._ptr(), chunks, text, handles, add_special=add_special, parse_special=parse_special
                )
            if rc == 1:
                raise MediaError(
                    f"libmtmd found a different number of markers than the {len(media)} media given"
                )
            if rc != 0:
                detail = f": {errors[-1]}" if errors else ""
                raise MediaError(f"media preprocessing failed (code {rc}){detail}")
            return MediaPrompt(self, chunks, text, media)
        except BaseException:
            nm.chunks_free(chunks)
            raise

    # -------------------------------------------------------------- encode
    def encode(self, prompt: MediaPrompt, chunk: MediaChunk) -> npt.NDArray[np.float32]:
        """The (n_tokens, n_embd) embeddings of a media chunk (cached by content hash when enabled)."""
        if prompt.mtmd is not self:
            raise ValueError("the prompt was tokenized by another MtmdContext")
        if not chunk.is_media:
            raise ValueError("only media chunks can be encoded")
        handle = prompt._chunk_handle(chunk)
        key = f"{chunk.id}|{chunk.n_tokens}|{chunk.index if not chunk.id else ''}"
        with self._lock:
            cached = self._embd_cache.get(key) if chunk.id else None
            if cached is not None:
                self._embd_cache.move_to_end(key)
                return cached
            with nm.capture_errors() as errors:
                embd = nm.encode_chunk(self._ptr(), handle, self.n_embd, chunk.n_tokens)
            if embd is None:
                detail = f": {errors[-1]}" if errors else ""
                raise MediaError(f"encoding the {chunk.type} failed{detail}")
            if chunk.id and self.embd_cache_limit and embd.nbytes <= self.embd_cache_limit:
                self._embd_cache[key] = embd
                self._embd_cache_bytes += embd.nbytes
                while self._embd_cache_bytes > self.embd_cache_limit:
                    _, old = self._embd_cache.popitem(last=False)
                    self._embd_cache_bytes -= old.nbytes
            return embd

    def clear_cache(self) -> None:
        with self._lock:
            self._embd_cache.clear()
            self._embd_cache_bytes = 0

    # ---------------------------------------------------------------- eval
    def _check_context(self, ctx: Context) -> None:
        if ctx.model.n_embd != self.n_embd:
            raise ProjectorError(
                f"the context's model has n_embd={ctx.model.n_embd}, the projector was loaded for "
                f"n_embd={self.n_embd}"
            )

    def eval_chunk(
        self,
        ctx: Context,
        prompt: MediaPrompt,
        chunk: MediaChunk,
        n_past: int,
        seq_id: int = 0,
        *,
        logits_last: bool = False,
        batch: Batch | None = None,
    ) -> int:
        """Decode one chunk into ``seq_id`` of ``ctx`` starting at position ``n_past``; returns the
        position after it. Text chunks may ask for logits on their last token; media chunks never
        produce logits."""
        self._check_context(ctx)
        n_ctx = ctx.n_ctx_per_seq
        if n_past + chunk.n_pos > n_ctx:
            raise ContextOverflowError(
                f"the {chunk.type} chunk of {chunk.n_pos} positions at position {n_past} does not fit "
                f"the context of {n_ctx}",
                n_tokens=n_past + chunk.n_pos,
                n_ctx=n_ctx,
            )
        if chunk.type == "text":
            toks = list(chunk.tokens)
            if not toks:
                return n_past
            b = batch if batch is not None else Batch(ctx.n_batch)
            step = min(b.capacity, ctx.n_batch)
            pos = n_past
            for i in range(0, len(toks), step):
                part = toks[i : i + step]
                b.clear()
                b.add_sequence(part, pos, seq_id, logits_last=logits_last and i + step >= len(toks))
                ctx.decode(b)
                pos += len(part)
            return pos
        embd = self.encode(prompt, chunk)
        return self.decode_embeddings(ctx, prompt, chunk, embd, n_past, seq_id)

    def decode_embeddings(
        self,
        ctx: Context,
        prompt: MediaPrompt,
        chunk: MediaChunk,
        embd: npt.NDArray[np.float32],
        n_past: int,
        seq_id: int = 0,
    ) -> int:
        """Decode already-encoded media embeddings (from :meth:`encode`) into ``seq_id``."""
        self._check_context(ctx)
        handle = prompt._chunk_handle(chunk)
        if embd.shape != (chunk.n_tokens, self.n_embd):
            raise ValueError(
                f"embeddings must have shape ({chunk.n_tokens}, {self.n_embd}), got {embd.shape}"
            )
        if not 0 <= seq_id < ctx.n_seq_max:
            raise ValueError(f"sequence id {seq_id} out of range [0, {ctx.n_seq_max})")
        n_batch = ctx.n_batch
        if nm.use_non_causal(self._ptr(), handle):
            # non-causal attention over the media needs it in one micro-batch (llama.cpp aborts otherwise)
            if chunk.n_tokens > ctx.n_ubatch:
                raise ContextOverflowError(
                    f"this model attends to an {chunk.type} all at once: its {chunk.n_tokens} tokens need "
                    f"n_ubatch >= {chunk.n_tokens} (the context has n_ubatch={ctx.n_ubatch})",
                    n_tokens=chunk.n_tokens,
                    n_ctx=ctx.n_ubatch,
                )
            n_batch = max(n_batch, chunk.n_tokens)
        with _context_ptr(ctx) as lctx, nm.capture_errors():
            rc, new_n_past = nm.decode_media_embd(self._ptr(), lctx, handle, embd, n_past, seq_id, n_batch)
        ctx._n_outputs = 0  # media batches have no outputs
        if rc == 1:
            raise NoKvSlotError(
                f"no KV cache slot for the {chunk.n_tokens} tokens of the {chunk.type} (n_ctx={ctx.n_ctx})",
                rc,
            )
        if rc == 2:
            ctx.clear_abort()
            raise AbortedError(f"decoding the {chunk.type} was aborted", rc)
        if rc != 0:
            raise DecodeError(f"decoding the {chunk.type} failed with code {rc}", rc)
        return new_n_past

    def eval(
        self,
        ctx: Context,
        prompt: MediaPrompt,
        *,
        n_past: int = 0,
        seq_id: int = 0,
        logits_last: bool = True,
    ) -> int:
        """Decode the whole prompt (text and media) into ``seq_id`` from position ``n_past``;
        returns the next position. With ``logits_last`` the prompt must end with text."""
        if prompt.mtmd is not self:
            raise ValueError("the prompt was tokenized by another MtmdContext")
        if logits_last and not prompt.ends_with_text:
            raise ValueError("the prompt ends with media: add text after the last marker to get logits")
        n_ctx = ctx.n_ctx_per_seq
        if n_past + prompt.n_pos > n_ctx:
            raise ContextOverflowError(
                f"the prompt of {prompt.n_pos} positions ({prompt.n_tokens} tokens incl. media) does not fit "
                f"the context of {n_ctx} from position {n_past}",
                n_tokens=n_past + prompt.n_pos,
                n_ctx=n_ctx,
            )
        batch = Batch(ctx.n_batch)
        pos = n_past
        last = len(prompt.chunks) - 1
        for chunk in prompt.chunks:
            pos = self.eval_chunk(
                ctx, prompt, chunk, pos, seq_id, logits_last=logits_last and chunk.index == last, batch=batch
            )
        return pos

    # -------------------------------------------------------------- helpers
    def check_model_supports(self, kinds: Sequence[str]) -> None:
        for k in kinds:
            self._require(k)


def require_projector(mtmd: MtmdContext | None, kinds: Sequence[str], model_name: str) -> MtmdContext:
    """``mtmd`` when it can take ``kinds``; a clear error for a text-only model otherwise."""
    if mtmd is None:
        what = " and ".join(sorted(set(kinds))) or "media"
        raise UnsupportedError(
            f"the model {model_name} is text-only: it cannot take {what} input "
            "(load a multimodal projector with --mmproj to send images or audio)"
        )
    mtmd.check_model_supports(kinds)
    return mtmd


def _load_failure(path: Path, model: Model, errors: list[str]) -> str:
    detail = " ".join(e for e in errors if e)
    if "mismatch between text model" in detail:
        return (
            f"the projector {path.name} does not match the model {model.name}: {detail.split('hint:')[0].strip()} "
            "(use the mmproj file made for this model)"
        )
    if not any("clip_init" in e for e in errors) and nm.caps_from_file(str(path)) == (False, False):
        return (
            f"{path} is not a multimodal projector: its metadata declares no vision or audio encoder "
            "(is it the text model?)"
        )
    if detail:
        return f"cannot load the multimodal projector {path}: {detail}"
    return f"cannot load the multimodal projector {path} (see the 'llamabind.native' log)"


def resample(pcm: npt.NDArray[np.float32], src_rate: int, dst_rate: int) -> npt.NDArray[np.float32]:
    """Linear-interpolation resampling of mono PCM (good enough for speech encoders)."""
    if src_rate == dst_rate or pcm.size == 0:
        return pcm
    n_out = max(1, round(pcm.size * dst_rate / src_rate))
    x_out = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    out: npt.NDArray[np.float32] = np.interp(x_out, np.arange(pcm.size), pcm).astype(np.float32)
    return out


def _has_pillow() -> bool:
    import importlib.util

    return importlib.util.find_spec("PIL") is not None


def _pillow_decode(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8] | None:
    """RGB pixels via Pillow when it is installed (WebP and anything stb_image cannot read)."""
    if not _has_pillow():
        return None
    import io

    from PIL import Image  # type: ignore[import-not-found,unused-ignore]

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise MediaError(
                    f"image of {im.width}x{im.height} pixels exceeds the limit of {max_pixels} pixels",
                    status=413,
                )
            rgb = im.convert("RGB")
            out: npt.NDArray[np.uint8] = np.asarray(rgb, dtype=np.uint8)
            return out
    except MediaError:
        raise
    except Exception:
        return None
