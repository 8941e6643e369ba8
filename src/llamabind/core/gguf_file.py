"""The one GGUF reader: magic check, header walk (metadata with exact types, tensor infos), tensor bytes.

Pure Python over ``mmap``, reading only what it is asked for: the metadata and tensor infos at the
head of the file, never tensor data unless a tensor's bytes are requested. (The ``gguf`` package's
reader builds numpy views for every vocabulary string and takes seconds on a 50k-token vocabulary.)
Used by model loading (magic + metadata sanity), the multimodal projector check, quantization,
imatrix files and the GGUF tools (split/merge/dequantize).
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelLoadError

__all__ = [
    "GGUFKV",
    "GGUF_MAGIC",
    "MIN_GGUF_BYTES",
    "VT_ARRAY",
    "VT_STRING",
    "GGUFArray",
    "GGUFHeader",
    "GGUFTensorInfo",
    "check_gguf_magic",
    "read_header",
]

PathLike = str | os.PathLike[str]

GGUF_MAGIC = b"GGUF"
MIN_GGUF_BYTES = 24  # magic + version + tensor count + kv count
_DEFAULT_ALIGNMENT = 32
_SMALL_ARRAY = 64  # arrays up to this length appear as lists in `GGUFHeader.metadata`

VT_STRING = 8
VT_ARRAY = 9
# value type -> struct format of a scalar
_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def check_gguf_magic(path: PathLike, *, error: type[Exception] | None = ModelLoadError) -> bool:
    """True when `path` is a file that starts with the GGUF magic and holds a whole GGUF preamble.

    Otherwise raises ``error(message)`` (a missing, unreadable, wrong-magic or truncated file),
    or returns False when `error` is None.
    """
    p = Path(path)
    message: str | None = None
    try:
        with p.open("rb") as f:
            head = f.read(MIN_GGUF_BYTES)
    except OSError as exc:
        message = f"cannot read GGUF file {p}: {exc}"
    else:
        if head[:4] != GGUF_MAGIC:
            message = f"not a GGUF file (bad magic {head[:4]!r}): {p}"
        elif len(head) < MIN_GGUF_BYTES:
            message = f"truncated GGUF file ({len(head)} bytes): {p}"
    if message is None:
        return True
    if error is None:
        return False
    raise error(message)


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array; its items are read from the file on demand (``GGUFHeader.array``)."""

    sub_type: int
    length: int
    pos: int  # file offset of the first item


@dataclass(frozen=True)
class GGUFKV:
    """One metadata entry as stored: strings are raw bytes, arrays a GGUFArray."""

    key: str
    value: Any
    vtype: int


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length
    type_id: int
    offset: int  # relative to the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n


_U64 = struct.Struct("<Q")


def _walk_strings(buf: Any, pos: int, n: int, out: list[bytes] | None) -> int:
    """Step over ``n`` length-prefixed strings from ``pos`` (appending them to ``out`` when given);
    the position after them. One tight loop: vocabularies hold 10^5 strings."""
    size = len(buf)
    unpack = _U64.unpack_from
    append = out.append if out is not None else None
    for _ in range(n):
        (k,) = unpack(buf, pos)
        pos += 8
        if k > size - pos:
            raise ValueError("string length past the end of the file")
        if append is not None:
            append(buf[pos : pos + k])  # bytes: `buf` is an mmap
        pos += k
    return pos


class _Cursor:
    def __init__(self, buf: Any, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def raw_string(self) -> bytes:
        n = self.unpack("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError("string length past the end of the file")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw

    def string(self) -> str:
        return self.raw_string().decode("utf-8", "replace")

    def skip_array(self, sub: int, n: int) -> None:
        if sub == VT_STRING:
            self.pos = _walk_strings(self.buf, self.pos, n, None)
        elif sub in _SCALAR:
            width = struct.calcsize(_SCALAR[sub])
            if n * width > len(self.buf) - self.pos:
                raise ValueError("array past the end of the file")
            self.pos += n * width
        else:
            raise ValueError(f"unsupported array item type {sub}")

    def items(self, arr: GGUFArray) -> list[Any]:
        self.pos = arr.pos
        if arr.sub_type == VT_STRING:
            out: list[bytes] = []
            self.pos = _walk_strings(self.buf, self.pos, arr.length, out)
            return out
        fmt = _SCALAR[arr.sub_type]
        width = struct.calcsize(fmt)
        out = [struct.unpack_from(fmt, self.buf, self.pos + i * width)[0] for i in range(arr.length)]
        self.pos += arr.length * width
        return out

    def value(self, vtype: int, strings: list[bytes] | None = None) -> Any:
        """The value at the cursor; an array of strings also fills `strings` (when given) with its
        items, in the one walk that steps over them."""
        if vtype == VT_STRING:
            return self.raw_string()
        if vtype == VT_ARRAY:
            sub = self.unpack("<I")
            n = self.unpack("<Q")
            arr = GGUFArray(sub, n, self.pos)
            if sub == VT_STRING and strings is not None:
                self.pos = _walk_strings(self.buf, self.pos, n, strings)
            else:
                self.skip_array(sub, n)
            return arr
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        raise ValueError(f"unknown metadata value type {vtype}")


def _plain(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass
class GGUFHeader:
    path: Path
    version: int
    kv: list[GGUFKV]  # file order, exact types
    tensors: list[GGUFTensorInfo]
    data_offset: int
    alignment: int
    file_size: int

    def __post_init__(self) -> None:
        self._by_key = {e.key: e for e in self.kv}
        self._cache: dict[str, list[Any]] = {}

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        """Scalars and decoded strings; arrays of up to 64 items as lists, longer ones as
        ``("array", item type, length)`` (read those with `array`)."""
        out: dict[str, Any] = {}
        for e in self.kv:
            if isinstance(e.value, GGUFArray):
                if e.value.length <= _SMALL_ARRAY and e.value.sub_type != VT_ARRAY:
                    out[e.key] = [_plain(v) for v in self.array(e.key)]
                else:
                    out[e.key] = ("array", e.value.sub_type, e.value.length)
            else:
                out[e.key] = _plain(e.value)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """One metadata value: scalars and decoded strings; arrays as GGUFArray."""
        e = self._by_key.get(key)
        return default if e is None else _plain(e.value)

    def array(self, key: str) -> list[Any]:
        """The items of the metadata array `key` (strings as raw bytes), read from the file."""
        if key in self._cache:
            return self._cache[key]
        e = self._by_key.get(key)
        if e is None or not isinstance(e.value, GGUFArray):
            raise KeyError(f"{key} is not a metadata array")
        if e.value.sub_type not in _SCALAR and e.value.sub_type != VT_STRING:
            raise ValueError(f"{key}: nested arrays are not supported")
        with self.path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            items = _Cursor(mm).items(e.value)
        self._cache[key] = items
        return items

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", "") or "")

    def arch_int(self, suffix: str, default: int = 0) -> int:
        value = self.get(f"{self.architecture}.{suffix}", default)
        return int(value) if isinstance(value, (int, float)) else default

    def tensor_bytes(self, info: GGUFTensorInfo, nbytes: int) -> npt.NDArray[np.uint8]:
        """The `nbytes` raw bytes of a tensor, memory-mapped read-only."""
        start = self.data_offset + info.offset
        if start + nbytes > self.file_size:
            raise ValueError(f"{self.path}: tensor {info.name} is truncated")
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=start, shape=(nbytes,))

    def tensor_data(self, info: GGUFTensorInfo, dtype: npt.DTypeLike = np.float32) -> npt.NDArray[Any]:
        """The data of an F32/F16/I32 tensor as a flat numpy array (a copy)."""
        itemsize = np.dtype(dtype).itemsize
        with self.path.open("rb") as f:
            f.seek(self.data_offset + info.offset)
            raw = f.read(info.n_elements * itemsize)
        if len(raw) != info.n_elements * itemsize:
            raise ValueError(f"{self.path}: tensor {info.name} is truncated")
        out: npt.NDArray[Any] = np.frombuffer(raw, dtype=dtype).copy()
        return out


def read_header(path: PathLike, *, keep: Collection[str] = ()) -> GGUFHeader:
    """Parse a GGUF file's metadata and tensor infos (no tensor data).

    The items of the string arrays named in `keep` are collected while the header walk steps over
    them (``header.array(key)`` then reads nothing more). Raises ValueError for anything that is
    not a well-formed little-endian GGUF.
    """
    p = Path(path)
    check_gguf_magic(p, error=ValueError)
    size = p.stat().st_size
    with p.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        c = _Cursor(mm, 4)
        try:
            version = c.unpack("<I")
            if version & 0xFFFF == 0:
                raise ValueError(f"{p}: big-endian GGUF files are not supported")
            n_tensors = c.unpack("<Q")
            n_kv = c.unpack("<Q")
            kv: list[GGUFKV] = []
            kept: dict[str, list[Any]] = {}
            for _ in range(n_kv):
                key = c.string()
                vtype = c.unpack("<I")
                strings: list[bytes] | None = [] if key in keep else None
                value = c.value(vtype, strings)
                kv.append(GGUFKV(key, value, vtype))
                if strings is not None:  # a repeated key: the last one counts, as in `get`
                    if isinstance(value, GGUFArray) and value.sub_type == VT_STRING:
                        kept[key] = strings
                    else:
                        kept.pop(key, None)
            tensors: list[GGUFTensorInfo] = []
            for _ in range(n_tensors):
                name = c.string()
                n_dims = c.unpack("<I")
                if n_dims > 8:
                    raise ValueError(f"tensor {name}: {n_dims} dimensions")
                ne = tuple(c.unpack("<Q") for _ in range(n_dims))
                type_id = c.unpack("<I")
                offset = c.unpack("<Q")
                tensors.append(GGUFTensorInfo(name, ne, type_id, offset))
        except struct.error as exc:
            raise ValueError(f"{p}: truncated GGUF header ({exc})") from exc
        end = c.pos
    header = GGUFHeader(p, version, kv, tensors, 0, _DEFAULT_ALIGNMENT, size)
    header._cache.update(kept)
    alignment = header.get("general.alignment", _DEFAULT_ALIGNMENT)
    header.alignment = int(alignment) if isinstance(alignment, int) and alignment > 0 else _DEFAULT_ALIGNMENT
    header.data_offset = (end + header.alignment - 1) // header.alignment * header.alignment
    return header
