"""Shared GGUF reading/writing helpers for the gguf_tools package (built on the `gguf` package)."""

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
from gguf import GGUFEndian, GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from llamabind.errors import GGUFToolError, ModelLoadError

__all__ = [
    "GGUFToolError",
    "KVEntry",
    "OutTensor",
    "kv_entries",
    "logical_shape",
    "open_gguf",
    "read_metadata",
    "reject_split",
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


def open_gguf(path: PathLike) -> GGUFReader:
    """Open a GGUF file read-only (memory-mapped), raising ModelLoadError with a clear message on failure."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"GGUF file not found: {p}")
    if p.is_dir():
        raise ModelLoadError(f"expected a GGUF file but got a directory: {p}")
    try:
        return GGUFReader(p, "r")
    except (ValueError, KeyError, IndexError, TypeError, OSError) as exc:
        raise ModelLoadError(f"{p} is not a readable GGUF file: {exc}") from exc


def reject_split(reader: GGUFReader, path: PathLike, action: str) -> None:
    """Raise GGUFToolError when `reader` is one shard of a split model (split.count > 1)."""
    field = reader.get_field("split.count")
    if field is not None and int(field.parts[-1][0]) > 1:
        raise GGUFToolError(
            f"{Path(path).name} is one shard of a {int(field.parts[-1][0])}-file split model: "
            f"merge the shards before you {action} it"
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


def _field_sub_type(field: Any) -> GGUFValueType:
    # parts = [key_len, key_bytes, value_type, item_type, length, items...]: the item type is stored
    # even for an empty array, where `field.types` only holds ARRAY.
    return GGUFValueType(int(field.parts[3][0]))


def kv_entries(reader: GGUFReader, *, skip: Callable[[str], bool] | None = None) -> list[KVEntry]:
    """Every metadata key/value of `reader` in file order, with exact value types; strings stay raw bytes."""
    out: list[KVEntry] = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # header pseudo-fields (version, counts)
        if skip is not None and skip(key):
            continue
        vtype = GGUFValueType(field.types[0])
        if vtype == GGUFValueType.STRING:
            out.append(KVEntry(key, bytes(field.parts[-1]), vtype))
        elif vtype == GGUFValueType.ARRAY:
            sub = _field_sub_type(field)
            if sub == GGUFValueType.ARRAY:
                raise GGUFToolError(f"metadata key {key!r} holds nested arrays, which are not supported")
            if sub == GGUFValueType.STRING:
                items: list[Any] = [bytes(field.parts[i]) for i in field.data]
            else:
                items = [field.parts[i].tolist()[0] for i in field.data]
            out.append(KVEntry(key, items, vtype, sub))
        else:
            out.append(KVEntry(key, field.parts[-1].tolist()[0], vtype))
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
