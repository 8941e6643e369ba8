"""Media inputs → :class:`~llamabind.core.mtmd.Bitmap`: validation, limits, sniffing, decoding.

The engine-side half of :class:`~llamabind.multimodal.MtmdContext`'s ``image_from_*`` /
``audio_from_*`` / ``media_from_*`` methods: arrays are normalised (RGBA → RGB, floats → uint8,
stereo → mono, resampled), encoded files are recognised by content and checked against the pixel
and duration limits before libmtmd decodes them (Pillow is the fallback decoder when installed).
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from ..core.mtmd import Bitmap, MtmdProjector
from .errors import MediaError
from .sniff import MediaInfo, sniff

__all__ = [
    "audio_from_pcm",
    "image_from_rgb",
    "media_from_bytes",
    "resample",
    "sha256",
]


def sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def image_from_rgb(proj: MtmdProjector, rgb: npt.ArrayLike, max_pixels: int) -> Bitmap:
    """An image from an (height, width, 3) uint8 array (or (h, w, 4) RGBA: alpha dropped)."""
    proj.require_modality("image")
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
    if h * w > max_pixels:
        raise MediaError(f"image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels", status=413)
    data = arr.tobytes()
    bmp = Bitmap.from_rgb(w, h, data)
    bmp.id = sha256(b"rgb", w.to_bytes(4, "little"), h.to_bytes(4, "little"), data)
    return bmp


def audio_from_pcm(
    proj: MtmdProjector, samples: npt.ArrayLike, sample_rate: int | None, max_seconds: float
) -> Bitmap:
    """Audio from float PCM in [-1, 1]: mono (n,), or (n, channels) averaged to mono, converted
    from ``sample_rate`` (default: the projector's) to the projector's rate."""
    proj.require_modality("audio")
    pcm = np.asarray(samples, dtype=np.float32)
    if pcm.ndim == 2:
        pcm = pcm.mean(axis=1)
    if pcm.ndim != 1:
        raise MediaError(f"PCM must have shape (n,) or (n, channels), got {pcm.shape}")
    if pcm.size == 0:
        raise MediaError("audio has no samples")
    if not np.all(np.isfinite(pcm)):
        raise MediaError("audio contains NaN or infinite samples")
    rate = sample_rate or proj.audio_sample_rate
    if rate <= 0:
        raise MediaError(f"invalid sample rate {rate}")
    if pcm.size / rate > max_seconds:
        raise MediaError(
            f"audio of {pcm.size / rate:.1f} s exceeds the limit of {max_seconds:.0f} s", status=413
        )
    if rate != proj.audio_sample_rate:
        pcm = resample(pcm, rate, proj.audio_sample_rate)
    bmp = Bitmap.from_pcm(pcm)
    bmp.id = sha256(b"pcm", proj.audio_sample_rate.to_bytes(4, "little"), pcm.tobytes())
    return bmp


def media_from_bytes(
    proj: MtmdProjector, data: bytes, kind: str | None, max_pixels: int, max_seconds: float
) -> Bitmap:
    """Decode an encoded image (PNG, JPEG, GIF, BMP; WebP with Pillow) or audio file (WAV, MP3,
    FLAC), recognised by content. ``kind`` ("image"/"audio") makes any other content an error."""
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
    proj.require_modality(info.kind)
    if info.kind == "image":
        return _decode_image(proj, data, info, max_pixels)
    return _decode_audio(proj, data, info, max_seconds)


def _decode_image(proj: MtmdProjector, data: bytes, info: MediaInfo, max_pixels: int) -> Bitmap:
    px = info.pixels
    if px is not None and px > max_pixels:
        raise MediaError(
            f"{info.format} image of {info.width}x{info.height} pixels exceeds the limit of "
            f"{max_pixels} pixels",
            status=413,
        )
    if px == 0:
        raise MediaError(f"{info.format} image with zero size")
    if info.format != "webp" and px is not None:
        bmp = proj.bitmap_from_buffer(data, "image", info.format)
        if bmp is not None:
            return bmp
    rgb = _pillow_decode(data, max_pixels)
    if rgb is None:
        hint = " (install Pillow to decode WebP)" if info.format == "webp" and not _has_pillow() else ""
        raise MediaError(f"could not decode the {info.format} image ({len(data)} bytes){hint}")
    bmp = image_from_rgb(proj, rgb, max_pixels)
    bmp.format = info.format
    bmp.id = sha256(data)
    return bmp


def _decode_audio(proj: MtmdProjector, data: bytes, info: MediaInfo, max_seconds: float) -> Bitmap:
    bmp = proj.bitmap_from_buffer(data, "audio", info.format)
    if bmp is None:
        raise MediaError(f"could not decode the {info.format} audio ({len(data)} bytes)")
    seconds = bmp.n_samples / max(proj.audio_sample_rate, 1)
    if seconds > max_seconds:
        bmp.close()
        raise MediaError(f"audio of {seconds:.1f} s exceeds the limit of {max_seconds:.0f} s", status=413)
    if bmp.n_samples == 0:
        bmp.close()
        raise MediaError("audio has no samples")
    return bmp


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
