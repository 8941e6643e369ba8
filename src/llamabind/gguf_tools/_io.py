"""Shared GGUF helpers for the gguf_tools package: reading through llamabind's one GGUF reader
(`llamabind.core.gguf_file`), writing with the `gguf` package's writer."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGUFEndian, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from llamabind.core.gguf_file import GGUFArray, GGUFHeader, read_header
from llamabind.errors import GGUFToolError, ModelLoadError

__all__ = [
    "GGUFToolError",
    "KVEntry",
    "OutTensor",
    "SrcTensor",
    "kv_entries",
    "logical_shape",
    "open_gguf",
    "read_metadata",
    "reject_split",
    "src_tensors",
    "tensor_nbytes",
    "write_gguf",
]

log = logging.getLogger("llamabind.gguf_tools")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class KVEntry:
    """One metadata key/value, typed exactly as it is (or will be) stored in the file."""

    key: str
    value: Any
    vtype: GGUFValueType
    sub_type: GGUFValueType | None = None


@dataclass
class OutTensor:
    """A tensor to write: its logical numpy-order shape, GGML type, byte size and a producer of its bytes."""

    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    nbytes: int
    data: Callable[[], npt.NDArray[Any]]


def open_gguf(path: PathLike) -> GGUFHeader:
    """Read a GGUF file's header (metadata + tensor infos), raising ModelLoadError with a clear message."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"GGUF file not found: {p}")
    if p.is_dir():
        raise ModelLoadError(f"expected a GGUF file but got a directory: {p}")
    try:
        return read_header(p)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"{p} is not a readable GGUF file: {exc}") from exc


def reject_split(header: GGUFHeader, path: PathLike, action: str) -> None:
    """Raise GGUFToolError when `header` is one shard of a split model (split.count > 1)."""
    count = header.get("split.count")
    if isinstance(count, int) and count > 1:
        raise GGUFToolError(
            f"{Path(path).name} is one shard of a {count}-file split model: merge the shards before you {action} it"
        )


def logical_shape(dims: Sequence[int] | npt.NDArray[Any]) -> tuple[int, ...]:
    """Numpy-order (outermost first) element shape from GGML `ne` order, keeping every dimension."""
    return tuple(int(d) for d in reversed(list(dims)))


def tensor_nbytes(shape: Sequence[int], qtype: GGMLQuantizationType) -> int:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n = 1
    for d in shape:
        n *= int(d)
    if n % block_size:
        raise GGUFToolError(f"{n} elements are not a multiple of the {qtype.name} block size {block_size}")
    return n // block_size * type_size


@dataclass(frozen=True)
class SrcTensor:
    """A tensor of an input file: GGML `ne` order dims, type, byte size, raw bytes on demand (mmap)."""

    header: GGUFHeader
    name: str
    ne: tuple[int, ...]
    qtype: GGMLQuantizationType
    nbytes: int
    offset: int

    @property
    def shape(self) -> tuple[int, ...]:
        return logical_shape(self.ne)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n

    def data(self) -> npt.NDArray[np.uint8]:
        start = self.header.data_offset + self.offset
        if start + self.nbytes > self.header.file_size:
            raise GGUFToolError(f"{self.header.path.name}: tensor {self.name!r} is truncated")
        return np.memmap(self.header.path, dtype=np.uint8, mode="r", offset=start, shape=(self.nbytes,))


def src_tensors(header: GGUFHeader) -> list[SrcTensor]:
    """The tensors of `header`'s file, in file order."""
    out: list[SrcTensor] = []
    for t in header.tensors:
        try:
            qtype = GGMLQuantizationType(t.type_id)
        except ValueError as exc:
            raise GGUFToolError(f"tensor {t.name!r}: unknown GGML type {t.type_id}") from exc
        out.append(SrcTensor(header, t.name, t.ne, qtype, tensor_nbytes(t.ne, qtype), t.offset))
    return out


def kv_entries(header: GGUFHeader, *, skip: Callable[[str], bool] | None = None) -> list[KVEntry]:
    """Every metadata key/value of `header` in file order, with exact value types; strings stay raw bytes."""
    out: list[KVEntry] = []
    for e in header.kv:
        if skip is not None and skip(e.key):
            continue
        vtype = GGUFValueType(e.vtype)
        if isinstance(e.value, GGUFArray):
            sub = GGUFValueType(e.value.sub_type)
            if sub == GGUFValueType.ARRAY:
                raise GGUFToolError(f"metadata key {e.key!r} holds nested arrays, which are not supported")
            out.append(KVEntry(e.key, list(header.array(e.key)), vtype, sub))
        else:
            out.append(KVEntry(e.key, e.value, vtype))
    return out


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of a GGUF file as plain Python values (strings decoded, arrays as lists)."""
    return {e.key: _decode(e.value) for e in kv_entries(open_gguf(path))}


class _Writer(GGUFWriter):  # type: ignore[misc]
    """GGUFWriter that can also write empty arrays (valid GGUF, which llama.cpp reads and writes)."""

    def _pack_val(
        self, val: Any, vtype: GGUFValueType, add_vtype: bool, sub_type: GGUFValueType | None = None
    ) -> bytes:
        if vtype == GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
            out = bytearray()
            if add_vtype:
                out += self._pack("I", vtype)
            out += self._pack("I", sub_type)
            out += self._pack("Q", 0)
            return bytes(out)
        result: bytes = super()._pack_val(val, vtype, add_vtype, sub_type)
        return result


def _tmp_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.partial")


def write_gguf(
    dst: PathLike,
    kv: Iterable[KVEntry],
    tensors: Sequence[OutTensor],
    *,
    alignment: int | None = None,
    endianess: GGUFEndian = GGUFEndian.LITTLE,
    progress: bool = False,
    desc: str | None = None,
) -> Path:
    """Write one GGUF file: `kv` in the given order, then the tensors, streamed one at a time.

    The file is written beside `dst` under a temporary name and renamed into place when complete,
    so a failure never leaves a truncated file at `dst`.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    writer = _Writer(None, "", endianess=endianess)
    writer.kv_data[0] = {}  # drop the architecture key GGUFWriter adds by itself: keys come from `kv` only
    if alignment is not None:
        writer.data_alignment = int(alignment)
    for e in kv:
        writer.add_key_value(e.key, e.value, e.vtype, e.sub_type)
    for t in tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    bar = None
    if progress:
        from tqdm import tqdm  # type: ignore[import-untyped]

        bar = tqdm(
            total=sum(t.nbytes for t in tensors),
            unit="B",
            unit_scale=True,
            desc=desc or dst.name,
            leave=False,
        )
    try:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            arr = t.data()
            if arr.nbytes != t.nbytes:
                raise GGUFToolError(f"tensor {t.name!r}: produced {arr.nbytes} bytes, expected {t.nbytes}")
            writer.write_tensor_data(np.ascontiguousarray(arr), tensor_endianess=endianess)
            if bar is not None:
                bar.update(t.nbytes)
        if not tensors:
            # GGUFWriter pads to the data alignment only when writing tensor data
            assert writer.fout is not None
            for f in writer.fout:
                writer.write_padding(f, f.tell())
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        if bar is not None:
            bar.close()
    return dst
