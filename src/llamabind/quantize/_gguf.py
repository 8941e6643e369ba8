"""A fast, read-only GGUF header walker (metadata scalars, tensor infos, data offset).

The ``gguf`` package's reader builds numpy views for every vocabulary string and takes seconds on
a 50k-token vocabulary; validating quantization inputs only needs scalars and tensor infos.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GGUFHeader", "GGUFTensorInfo", "read_header"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# value type -> struct format of a scalar (8 = string, 9 = array)
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


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # scalars and strings; arrays are summarised as ("array", type, length)
    tensors: list[GGUFTensorInfo]
    data_offset: int
    alignment: int
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_int(self, suffix: str, default: int = 0) -> int:
        value = self.metadata.get(f"{self.architecture}.{suffix}", default)
        return int(value) if isinstance(value, (int, float)) else default

    def tensor_data(self, info: GGUFTensorInfo, dtype: npt.DTypeLike = np.float32) -> npt.NDArray[Any]:
        """The raw data of an F32/F16/I32 tensor as a flat numpy array (a copy)."""
        itemsize = np.dtype(dtype).itemsize
        with self.path.open("rb") as f:
            f.seek(self.data_offset + info.offset)
            raw = f.read(info.n_elements * itemsize)
        if len(raw) != info.n_elements * itemsize:
            raise ValueError(f"{self.path}: tensor {info.name} is truncated")
        out: npt.NDArray[Any] = np.frombuffer(raw, dtype=dtype).copy()
        return out


class _Cursor:
    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError("string length past the end of the file")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip_string(self) -> None:
        n = self.unpack("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError("string length past the end of the file")
        self.pos += n

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype == 9:
            sub = self.unpack("<I")
            n = self.unpack("<Q")
            if sub == 8:
                if n <= 64:
                    return [self.string() for _ in range(n)]
                for _ in range(n):
                    self.skip_string()
            elif sub in _SCALAR:
                size = struct.calcsize(_SCALAR[sub])
                if n * size > len(self.buf) - self.pos:
                    raise ValueError("array past the end of the file")
                if n and n <= 64:
                    items = [
                        struct.unpack_from(_SCALAR[sub], self.buf, self.pos + i * size)[0] for i in range(n)
                    ]
                    self.pos += n * size
                    return items
                self.pos += n * size
            else:
                raise ValueError(f"unsupported array item type {sub}")
            return ("array", sub, n)
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        raise ValueError(f"unknown metadata value type {vtype}")


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse a GGUF file's header. Raises ValueError for anything that is not a well-formed GGUF."""
    p = Path(path)
    size = p.stat().st_size
    if size < 24:
        raise ValueError(f"{p} is too small to be a GGUF file ({size} bytes)")
    with p.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != _MAGIC:
            raise ValueError(f"{p} is not a GGUF file (magic {bytes(mm[:4])!r})")
        c = _Cursor(mm)
        c.pos = 4
        try:
            version = c.unpack("<I")
            n_tensors = c.unpack("<Q")
            n_kv = c.unpack("<Q")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = c.string()
                meta[key] = c.value(c.unpack("<I"))
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
        alignment = int(meta.get("general.alignment", _DEFAULT_ALIGNMENT) or _DEFAULT_ALIGNMENT)
        data_offset = (c.pos + alignment - 1) // alignment * alignment
    return GGUFHeader(p, version, meta, tensors, data_offset, alignment, size)
