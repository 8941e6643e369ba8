"""Recognise media bytes by their magic numbers, and read image dimensions from headers.

Used before handing bytes to a decoder: it picks image vs audio, and lets the caller refuse an
image whose header declares more pixels than allowed (a small file must not make the decoder
allocate gigabytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

__all__ = ["MediaInfo", "sniff"]

IMAGE_FORMATS = ("png", "jpeg", "gif", "bmp", "webp")
AUDIO_FORMATS = ("wav", "mp3", "flac")


@dataclass(frozen=True)
class MediaInfo:
    kind: Literal["image", "audio", "unknown"]
    format: str  # png | jpeg | gif | bmp | webp | wav | mp3 | flac | ogg | unknown
    width: int | None = None
    height: int | None = None

    @property
    def pixels(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return self.width * self.height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            i += 2
            continue
        if i + 4 > n:
            return None
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if seg_len < 2:
            return None
        i += 2 + seg_len
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _is_mp3(data: bytes) -> bool:
    if data[:3] == b"ID3":
        return True
    return len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) != 0


def sniff(data: bytes) -> MediaInfo:
    """What ``data`` is (by content, never by name) and, for images, its declared size."""
    head = bytes(data[:64])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return MediaInfo("image", "png", w, h)
        return MediaInfo("image", "png")
    if head.startswith(b"\xff\xd8\xff"):
        size = _jpeg_size(bytes(data))
        return MediaInfo("image", "jpeg", *(size or (None, None)))
    if head[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) >= 10:
            w, h = struct.unpack("<HH", data[6:10])
            return MediaInfo("image", "gif", w, h)
        return MediaInfo("image", "gif")
    if head.startswith(b"BM") and len(data) >= 26:
        dib = struct.unpack("<I", data[14:18])[0]
        if dib == 12:
            w, h = struct.unpack("<HH", data[18:22])
        else:
            w, h = struct.unpack("<ii", data[18:26])
        return MediaInfo("image", "bmp", abs(w), abs(h))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        size = _webp_size(bytes(data[:64]))
        return MediaInfo("image", "webp", *(size or (None, None)))
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return MediaInfo("audio", "wav")
    if head.startswith(b"fLaC"):
        return MediaInfo("audio", "flac")
    if head.startswith(b"OggS"):
        return MediaInfo("audio", "ogg")
    if _is_mp3(head):
        return MediaInfo("audio", "mp3")
    return MediaInfo("unknown", "unknown")
