"""`MtmdContext`: a multimodal projector (mmproj) loaded for a text model, over libmtmd.

    mtmd = MtmdContext(model, "mmproj.gguf")
    img = mtmd.image_from_file("cat.png")
    prompt = mtmd.tokenize(f"Describe this: {mtmd.marker}", [img])
    n_past = mtmd.eval(ctx, prompt)          # text + image embeddings into sequence 0

A prompt is tokenized into *chunks*: runs of text tokens and media chunks (one per image, or
per audio clip). :class:`MediaPrompt` also gives every prompt **position** a cache key — the
token id for text, and negative keys derived from the media's content hash for media — so
the usual "longest common prefix" KV reuse works unchanged across requests with media.

The native handles are owned by :mod:`llamabind.core.mtmd` (:class:`MtmdContext` is a
:class:`~llamabind.core.mtmd.MtmdProjector`); this module adds media inputs with limits, an
embedding cache and prompt evaluation.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core import Batch, Context, Model, default_threads
from ..core.mtmd import Bitmap, MtmdProjector, ProjectorInfo, default_marker, projector_info
from ..errors import ContextOverflowError, NoProjectorError
from . import bitmaps as bm
from .errors import MediaError
from .prompt import MediaChunk, MediaPrompt, media_keys

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
    "require_projector",
]

PathLike = str | os.PathLike[str]
#: Default ceiling on the pixels an image header may declare (about 8K × 6K).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
#: Default ceiling on the length of an audio clip.
DEFAULT_MAX_AUDIO_SECONDS = 600.0


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


class MtmdContext(MtmdProjector):
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
        super().__init__(
            model,
            Path(mmproj),
            use_gpu=use_gpu,
            n_threads=default_threads() if n_threads is None else n_threads,
            media_marker=media_marker,
            flash_attn=flash_attn,
            warmup=warmup,
            image_min_tokens=image_min_tokens,
            image_max_tokens=image_max_tokens,
            batch_max_tokens=batch_max_tokens,
            print_timings=print_timings,
            device=device,
        )
        self.max_image_pixels = max_image_pixels
        self.max_audio_seconds = max_audio_seconds
        self._lock = threading.Lock()  # guards the embedding cache (and serialises encodes)
        self._embd_cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._embd_cache_bytes = 0
        self.embd_cache_limit = max(0, int(embd_cache_bytes))

    # ------------------------------------------------------------------ info
    def __repr__(self) -> str:
        if self.closed:
            return f"<MtmdContext {self.path.name} (closed)>"
        return f"<MtmdContext {self.path.name} {'+'.join(self.modalities)} marker={self.marker!r}>"

    # --------------------------------------------------------------- bitmaps
    def image_from_rgb(self, rgb: npt.ArrayLike) -> Bitmap:
        """An image from an (height, width, 3) uint8 array (or (h, w, 4) RGBA: alpha dropped)."""
        return bm.image_from_rgb(self, rgb, self.max_image_pixels)

    def audio_from_pcm(self, samples: npt.ArrayLike, sample_rate: int | None = None) -> Bitmap:
        """Audio from float PCM in [-1, 1]: mono (n,), or (n, channels) averaged to mono.

        ``sample_rate`` (default: the projector's) is converted to :attr:`audio_sample_rate`.
        """
        return bm.audio_from_pcm(self, samples, sample_rate, self.max_audio_seconds)

    def media_from_bytes(self, data: bytes, kind: str | None = None) -> Bitmap:
        """Decode an encoded image (PNG, JPEG, GIF, BMP; WebP with Pillow) or audio file (WAV, MP3,
        FLAC), recognised by content. ``kind`` ("image"/"audio") makes any other content an error.

        Raises :class:`MediaError` when the bytes cannot be decoded, the header declares more than
        :attr:`max_image_pixels`, or the projector lacks the encoder for this kind of media.
        """
        return bm.media_from_bytes(self, data, kind, self.max_image_pixels, self.max_audio_seconds)

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
            self.require_modality(b.kind)
        return MediaPrompt(self, text, media, add_special=add_special, parse_special=parse_special)

    # -------------------------------------------------------------- encode
    def encode(self, prompt: MediaPrompt, chunk: MediaChunk) -> npt.NDArray[np.float32]:
        """The (n_tokens, n_embd) embeddings of a media chunk (cached by content hash when enabled)."""
        if prompt.mtmd is not self:
            raise ValueError("the prompt was tokenized by another MtmdContext")
        if not chunk.is_media:
            raise ValueError("only media chunks can be encoded")
        index = prompt.check_chunk(chunk)
        key = f"{chunk.id}|{chunk.n_tokens}|{chunk.index if not chunk.id else ''}"
        with self._lock:
            cached = self._embd_cache.get(key) if chunk.id else None
            if cached is not None:
                self._embd_cache.move_to_end(key)
                return cached
            embd = self.encode_chunk(prompt, index)
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
        self.check_context(ctx)
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
        self.check_context(ctx)
        index = prompt.check_chunk(chunk)
        return self.decode_chunk(ctx, prompt, index, embd, n_past, seq_id)

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
            self.require_modality(k)


def require_projector(mtmd: MtmdContext | None, kinds: Sequence[str], model_name: str) -> MtmdContext:
    """``mtmd`` when it can take ``kinds``; a clear error for a text-only model otherwise."""
    if mtmd is None:
        what = " and ".join(sorted(set(kinds))) or "media"
        raise NoProjectorError(
            f"the model {model_name} is text-only: it cannot take {what} input "
            "(load a multimodal projector with --mmproj to send images or audio)"
        )
    mtmd.check_model_supports(kinds)
    return mtmd
