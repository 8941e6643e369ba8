"""Safe owners of libmtmd's native handles: a projector, media bitmaps and tokenized chunk lists.

    proj = MtmdProjector(model, "mmproj.gguf")
    bmp = proj.bitmap_from_buffer(png_bytes)          # or Bitmap.from_rgb / Bitmap.from_pcm
    chunks = MtmdChunks(proj, f"Look: {proj.marker}", [bmp])
    embd = proj.encode_chunk(chunks, 1)                # (n_tokens, n_embd) of the image chunk
    n_past = proj.decode_chunk(ctx, chunks, 1, embd, n_past=5)

The core layer of multimodal input: one owner per handle, ``close()`` and context managers,
children keep their parents alive, closed objects raise :class:`ClosedError`. Decoding media
into a :class:`Context` goes through :meth:`Context.decode_native` (its lock, its return-code
mapping). Media sniffing, limits, caching and prompt assembly live in :mod:`llamabind.multimodal`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .._native import mtmd as nm
from ..errors import ContextOverflowError, MediaError, ProjectorError
from ._owner import NativeOwner
from .context import Context
from .gguf_file import check_gguf_magic
from .model import Model

__all__ = [
    "Bitmap",
    "ChunkKind",
    "MtmdChunks",
    "MtmdProjector",
    "ProjectorInfo",
    "check_gguf",
    "default_marker",
    "projector_info",
]

ChunkKind = Literal["text", "image", "audio"]
_CHUNK_KINDS: dict[int, ChunkKind] = {
    nm.CHUNK_TEXT: "text",
    nm.CHUNK_IMAGE: "image",
    nm.CHUNK_AUDIO: "audio",
}
_FLASH = {"auto": -1, "off": 0, "on": 1, "disabled": 0, "enabled": 1}


def default_marker() -> str:
    """libmtmd's default media marker (``<__media__>``)."""
    return nm.default_marker()


def check_gguf(path: Path) -> None:
    """ProjectorError unless ``path`` is a file starting with the GGUF magic."""
    if not path.is_file():
        raise ProjectorError(f"projector file not found: {path}")
    check_gguf_magic(path, error=ProjectorError)


@dataclass(frozen=True)
class ProjectorInfo:
    """What a projector file supports, read without loading its weights."""

    vision: bool
    audio: bool


def projector_info(path: str | Path) -> ProjectorInfo:
    p = Path(path)
    check_gguf(p)
    vision, audio = nm.caps_from_file(str(p))
    if not vision and not audio:
        raise ProjectorError(
            f"{p} is not a multimodal projector (no vision or audio encoder in its metadata)"
        )
    return ProjectorInfo(vision, audio)


# ---------------------------------------------------------------------- bitmaps


class Bitmap(NativeOwner):
    """Decoded media ready for tokenization: an RGB image or mono float PCM.

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

    @classmethod
    def from_rgb(cls, width: int, height: int, data: bytes) -> Bitmap:
        """An image from ``width * height * 3`` bytes of packed RGB (copied)."""
        handle = nm.bitmap_from_rgb(width, height, data)
        if not handle:
            raise MediaError(f"libmtmd could not create a {width}x{height} image bitmap")
        return cls(handle, "image", "rgb")

    @classmethod
    def from_pcm(cls, pcm: npt.NDArray[np.float32]) -> Bitmap:
        """Audio from mono float32 PCM already at the projector's sample rate (copied)."""
        handle = nm.bitmap_from_audio(pcm)
        if not handle:
            raise MediaError("libmtmd could not create an audio bitmap")
        return cls(handle, "audio", "pcm")

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


# ---------------------------------------------------------------------- projector


class MtmdProjector(NativeOwner):
    """A multimodal projector (``mtmd_context``) loaded for ``model``; the model outlives it.

    ``flash_attn`` is "auto", "on" or "off"; ``device`` a ``ggml_backend_dev_t`` handle (or an
    object with a ``handle`` attribute, like :class:`~llamabind.DeviceInfo`). Raises
    :class:`ProjectorError` when the file is missing, not GGUF, or llama.cpp cannot load it
    (``load_errors`` then holds libmtmd's own error lines for a better message).
    """

    def __init__(
        self,
        model: Model,
        path: str | Path,
        *,
        use_gpu: bool = True,
        n_threads: int = 4,
        media_marker: str | None = None,
        flash_attn: str = "auto",
        warmup: bool = True,
        image_min_tokens: int | None = None,
        image_max_tokens: int | None = None,
        batch_max_tokens: int | None = None,
        print_timings: bool = False,
        device: Any = None,
    ) -> None:
        p = Path(path)
        check_gguf(p)
        if flash_attn not in _FLASH:
            raise ValueError(f"flash_attn must be one of {sorted(_FLASH)}")
        if media_marker is not None and not media_marker:
            raise ValueError("media_marker must not be empty")
        if n_threads <= 0:
            raise ValueError("n_threads must be positive")
        self.model = model  # strong reference: the model outlives the projector
        self.path = p
        params = nm.MtmdParams(
            use_gpu=use_gpu,
            n_threads=n_threads,
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
            handle = nm.init_from_file(str(p), model._ptr(), params)
        if not handle:
            raise ProjectorError(self._load_failure(errors))
        self._own(handle, nm.context_free, parent=model)
        info = nm.context_info(handle)
        self.supports_vision = info.vision
        self.supports_audio = info.audio
        self.uses_mrope = info.mrope
        self.audio_sample_rate = info.audio_sample_rate if info.audio else 0
        self.marker = info.marker
        self.n_embd = model.n_embd
        self._encode_lock = threading.Lock()  # mtmd_encode_chunk is not thread-safe

    def _load_failure(self, errors: list[str]) -> str:
        path, model = self.path, self.model
        detail = " ".join(e for e in errors if e)
        if "mismatch between text model" in detail:
            return (
                f"the projector {path.name} does not match the model {model.name}: "
                f"{detail.split('hint:')[0].strip()} (use the mmproj file made for this model)"
            )
        if not any("clip_init" in e for e in errors) and nm.caps_from_file(str(path)) == (False, False):
            return (
                f"{path} is not a multimodal projector: its metadata declares no vision or audio encoder "
                "(is it the text model?)"
            )
        if detail:
            return f"cannot load the multimodal projector {path}: {detail}"
        return f"cannot load the multimodal projector {path} (see the 'llamabind.native' log)"

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, on in (("image", self.supports_vision), ("audio", self.supports_audio)) if on)

    def require_modality(self, kind: str) -> None:
        """MediaError unless this projector has an encoder for ``kind`` ("image"/"audio");
        ClosedError once it (or its model) is closed."""
        self._ptr()
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

    def bitmap_from_buffer(
        self, data: bytes, kind: Literal["image", "audio"], source_format: str
    ) -> Bitmap | None:
        """Decode an encoded image (stb_image) or audio file (miniaudio, resampled to
        :attr:`audio_sample_rate`); None when libmtmd cannot decode it. The id is SHA-256 of ``data``."""
        with nm.capture_errors():
            handle = nm.bitmap_from_buf(self._ptr(), data)
        return Bitmap(handle, kind, source_format) if handle else None

    def encode_chunk(self, chunks: MtmdChunks, index: int) -> npt.NDArray[np.float32]:
        """Run the encoder on media chunk ``index``: a copy of its (n_tokens, n_embd) embeddings."""
        handle, info = chunks._chunk(index, self)
        kind = _CHUNK_KINDS.get(info.type, "text")
        if kind == "text":
            raise ValueError("only media chunks can be encoded")
        with self._encode_lock, nm.capture_errors() as errors:
            embd = nm.encode_chunk(self._ptr(), handle, self.n_embd, info.n_tokens)
        if embd is None:
            detail = f": {errors[-1]}" if errors else ""
            raise MediaError(f"encoding the {kind} failed{detail}")
        return embd

    def check_context(self, ctx: Context) -> None:
        """ProjectorError unless ``ctx``'s model has the embedding width this projector outputs."""
        if ctx.model.n_embd != self.n_embd:
            raise ProjectorError(
                f"the context's model has n_embd={ctx.model.n_embd}, the projector was loaded for "
                f"n_embd={self.n_embd}"
            )

    def decode_chunk(
        self,
        ctx: Context,
        chunks: MtmdChunks,
        index: int,
        embd: npt.NDArray[np.float32],
        n_past: int,
        seq_id: int = 0,
    ) -> int:
        """Decode the embeddings of media chunk ``index`` into ``seq_id`` of ``ctx`` from position
        ``n_past`` (libmtmd sets M-RoPE positions and non-causal attention); the next position.

        Media batches produce no outputs. Raises like :meth:`Context.decode`.
        """
        self.check_context(ctx)
        handle, info = chunks._chunk(index, self)
        kind = _CHUNK_KINDS.get(info.type, "text")
        if kind == "text":
            raise ValueError("only media chunks can be decoded from embeddings")
        if embd.shape != (info.n_tokens, self.n_embd):
            raise ValueError(f"embeddings must have shape ({info.n_tokens}, {self.n_embd}), got {embd.shape}")
        if not 0 <= seq_id < ctx.n_seq_max:
            raise ValueError(f"sequence id {seq_id} out of range [0, {ctx.n_seq_max})")
        n_batch = ctx.n_batch
        if nm.use_non_causal(self._ptr(), handle):
            # non-causal attention over the media needs it in one micro-batch (llama.cpp aborts otherwise)
            if info.n_tokens > ctx.n_ubatch:
                raise ContextOverflowError(
                    f"this model attends to an {kind} all at once: its {info.n_tokens} tokens need "
                    f"n_ubatch >= {info.n_tokens} (the context has n_ubatch={ctx.n_ubatch})",
                    n_tokens=info.n_tokens,
                    n_ctx=ctx.n_ubatch,
                )
            n_batch = max(n_batch, info.n_tokens)
        mctx = self._ptr()
        new_n_past = n_past

        def run(lctx: Any) -> int:
            nonlocal new_n_past
            with nm.capture_errors():
                rc, new_n_past = nm.decode_media_embd(mctx, lctx, handle, embd, n_past, seq_id, n_batch)
            return rc

        ctx.decode_native(run, what=f"{kind} decode", n_tokens=info.n_tokens, n_outputs=0)
        return new_n_past


# ---------------------------------------------------------------------- chunks


class MtmdChunks(NativeOwner):
    """A prompt tokenized by a projector: libmtmd's chunk list (text runs and media chunks).

    ``text`` is split at each of the projector's markers and ``bitmaps[i]`` goes to the i-th one.
    The chunks keep their projector alive. Raises :class:`MediaError` when libmtmd finds a
    different number of markers than bitmaps, or media preprocessing fails.
    """

    def __init__(
        self,
        projector: MtmdProjector,
        text: str,
        bitmaps: Sequence[Bitmap] = (),
        *,
        add_special: bool = True,
        parse_special: bool = True,
    ) -> None:
        handles = [b._ptr() for b in bitmaps]
        chunks = nm.chunks_init()
        try:
            with nm.capture_errors() as errors:
                rc = nm.tokenize(
                    projector._ptr(),
                    chunks,
                    text,
                    handles,
                    add_special=add_special,
                    parse_special=parse_special,
                )
            if rc == 1:
                raise MediaError(
                    f"libmtmd found a different number of markers than the {len(bitmaps)} media given"
                )
            if rc != 0:
                detail = f": {errors[-1]}" if errors else ""
                raise MediaError(f"media preprocessing failed (code {rc}){detail}")
            handles_out = [nm.chunks_get(chunks, i) for i in range(nm.chunks_size(chunks))]
            infos = [nm.chunk_info(h) for h in handles_out]
        except BaseException:
            nm.chunks_free(chunks)
            raise
        self._own(chunks, nm.chunks_free)
        self.projector = projector  # keeps the projector alive while the chunks exist
        self._handles = handles_out
        self._infos = infos

    def __len__(self) -> int:
        return len(self._handles)

    def kind(self, index: int) -> ChunkKind:
        """ "text", "image" or "audio" (MediaError for a type this binding does not know)."""
        t = self._infos[index].type
        kind = _CHUNK_KINDS.get(t)
        if kind is None:
            raise MediaError(f"libmtmd produced a chunk of unknown type {t}")
        return kind

    def info(self, index: int) -> nm.ChunkInfo:
        """Type, KV cells (n_tokens), positions (n_pos) and media id of chunk ``index``."""
        self._ptr()
        return self._infos[index]

    def text_tokens(self, index: int) -> list[int]:
        """The token ids of text chunk ``index`` (empty for media)."""
        return nm.chunk_text_tokens(self._chunk(index)[0])

    def _chunk(self, index: int, projector: MtmdProjector | None = None) -> tuple[int, nm.ChunkInfo]:
        self._ptr()  # ClosedError once closed
        if projector is not None and self.projector is not projector:
            raise ValueError("the prompt was tokenized by another MtmdContext")
        if not 0 <= index < len(self._handles):
            raise IndexError(f"chunk {index} out of range [0, {len(self._handles)})")
        return self._handles[index], self._infos[index]
