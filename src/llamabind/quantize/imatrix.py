"""Importance-matrix (imatrix) files: llama.cpp's GGUF format and the legacy ``.dat`` format.

An importance matrix holds, for each weight matrix, the mean squared activation entering each
of its columns (per expert for MoE tensors). Low-bit quantizations (IQ1/IQ2/IQ3_XXS, Q2_K_S) use
it to spend precision where the activations are large.

* GGUF format (``llama-imatrix`` today): tensors ``<weight>.in_sum2`` (sums of squared
  activations, F32, ``[n_per_row, n_expert]``) and ``<weight>.counts`` (tokens seen per expert,
  F32); the importance is ``in_sum2 / counts``; metadata ``imatrix.datasets``,
  ``imatrix.chunk_count``, ``imatrix.chunk_size``.
* legacy ``.dat``: ``int32 n_entries``, then per entry ``int32 name_len, name, int32 ncall,
  int32 nval, float32[nval]`` (values already averaged, times ncall), then optionally
  ``int32 chunk_count, int32 len, dataset``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..core.gguf_file import check_gguf_magic, read_header
from ..errors import QuantizeError

__all__ = ["ImatrixData", "read_imatrix", "write_imatrix"]

_F32 = 0
_SUM_SUFFIX = ".in_sum2"
_COUNT_SUFFIX = ".counts"


@dataclass
class ImatrixData:
    """Importance values per weight tensor name (float32, ``n_per_row × n_expert`` values)."""

    entries: dict[str, npt.NDArray[np.float32]]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    path: Path | None = None
    format: str = "memory"

    def __len__(self) -> int:
        return len(self.entries)


def _read_gguf(p: Path) -> ImatrixData:
    header = read_header(p)
    sums: dict[str, npt.NDArray[np.float32]] = {}
    counts: dict[str, npt.NDArray[np.float32]] = {}
    for t in header.tensors:
        if t.name.endswith(_SUM_SUFFIX):
            target = sums
            name = t.name[: -len(_SUM_SUFFIX)]
        elif t.name.endswith(_COUNT_SUFFIX):
            target = counts
            name = t.name[: -len(_COUNT_SUFFIX)]
        else:
            continue
        if t.type_id != _F32:
            raise QuantizeError(f"imatrix {p}: tensor {t.name} must be F32")
        target[name] = header.tensor_data(t).astype(np.float32)
    if not sums:
        raise QuantizeError(f"imatrix {p}: no '*.in_sum2' tensors (is it an imatrix file?)")
    entries: dict[str, npt.NDArray[np.float32]] = {}
    for name, s in sums.items():
        c = counts.get(name)
        if c is None:
            raise QuantizeError(f"imatrix {p}: '{name}.in_sum2' has no matching '{name}.counts'")
        n_expert = c.size
        if n_expert == 0 or s.size % n_expert:
            raise QuantizeError(f"imatrix {p}: {name} has {s.size} sums for {n_expert} counts")
        per = s.reshape(n_expert, -1)
        out = np.ones_like(per)
        nz = c > 0
        out[nz] = per[nz] / c[nz, None]
        entries[name] = out.ravel()
    meta = header.metadata
    datasets = meta.get("imatrix.datasets")
    return ImatrixData(
        entries,
        datasets=[str(d) for d in datasets] if isinstance(datasets, list) else [],
        chunk_count=int(meta.get("imatrix.chunk_count", 0) or 0),
        chunk_size=int(meta.get("imatrix.chunk_size", 0) or 0),
        path=p,
        format="gguf",
    )


def _read_dat(p: Path) -> ImatrixData:
    data = p.read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise QuantizeError(f"imatrix {p}: truncated legacy imatrix file")
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += size
        return int(value)

    n_entries = take("<i")
    if n_entries < 1 or n_entries > 1_000_000:
        raise QuantizeError(f"imatrix {p}: not an imatrix file (entry count {n_entries})")
    entries: dict[str, npt.NDArray[np.float32]] = {}
    for _ in range(n_entries):
        n = take("<i")
        if n <= 0 or pos + n > len(data):
            raise QuantizeError(f"imatrix {p}: corrupt entry name")
        name = data[pos : pos + n].decode("utf-8", "replace")
        pos += n
        ncall = take("<i")
        nval = take("<i")
        if nval < 1 or pos + 4 * nval > len(data):
            raise QuantizeError(f"imatrix {p}: corrupt values for {name}")
        values = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        entries[name] = (values / np.float32(ncall)).astype(np.float32) if ncall > 0 else values
    chunk_count = 0
    datasets: list[str] = []
    if pos + 4 <= len(data):
        chunk_count = take("<i")
        if pos + 4 <= len(data):
            n = take("<i")
            if 0 < n <= len(data) - pos:
                datasets.append(data[pos : pos + n].decode("utf-8", "replace"))
    return ImatrixData(entries, datasets=datasets, chunk_count=chunk_count, path=p, format="dat")


def read_imatrix(path: str | os.PathLike[str]) -> ImatrixData:
    """Read an importance matrix in llama.cpp's GGUF format or the legacy ``.dat`` format.

    Raises QuantizeError when the file is missing, unreadable or holds non-finite values.
    """
    p = Path(path)
    if not p.is_file():
        raise QuantizeError(f"imatrix file not found: {p}")
    try:
        result = _read_gguf(p) if check_gguf_magic(p, error=None) else _read_dat(p)
    except (ValueError, OSError) as exc:
        raise QuantizeError(f"cannot read imatrix {p}: {exc}") from exc
    check_finite(result.entries, str(p))
    return result


def check_finite(entries: Mapping[str, npt.NDArray[np.float32]], where: str) -> None:
    for name, values in entries.items():
        if not np.all(np.isfinite(values)):
            raise QuantizeError(f"imatrix {where}: entry {name} holds non-finite values")


def write_imatrix(
    path: str | os.PathLike[str],
    entries: Mapping[str, npt.ArrayLike],
    *,
    format: Literal["gguf", "dat"] = "gguf",
    dataset: str = "",
    chunk_count: int = 1,
    chunk_size: int = 512,
    n_tokens: int = 512,
) -> Path:
    """Write importance values (per tensor: ``n_per_row`` values, or ``(n_expert, n_per_row)``).

    In GGUF format the values are stored as sums over ``n_tokens`` tokens with matching counts,
    so reading the file back gives the same values.
    """
    p = Path(path)
    if format == "dat":
        out = bytearray(struct.pack("<i", len(entries)))
        for name, values in entries.items():
            arr = np.ascontiguousarray(values, dtype="<f4").ravel()
            raw = name.encode()
            out += struct.pack("<i", len(raw)) + raw
            out += struct.pack("<ii", 1, arr.size) + arr.tobytes()
        raw_ds = dataset.encode()
        out += struct.pack("<ii", chunk_count, len(raw_ds)) + raw_ds
        p.write_bytes(bytes(out))
        return p
    if format != "gguf":
        raise QuantizeError(f"imatrix format must be 'gguf' or 'dat', got {format!r}")
    from gguf import GGUFWriter

    writer = GGUFWriter(str(p), arch="imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", [dataset] if dataset else [])
    writer.add_uint32("imatrix.chunk_count", chunk_count)
    writer.add_uint32("imatrix.chunk_size", chunk_size)
    for name, values in entries.items():
        arr = np.asarray(values, dtype=np.float32)
        arr2 = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
        writer.add_tensor(f"{name}{_SUM_SUFFIX}", np.ascontiguousarray(arr2 * float(n_tokens)))
        counts = np.full((arr2.shape[0], 1), float(n_tokens), dtype=np.float32)
        writer.add_tensor(f"{name}{_COUNT_SUFFIX}", counts)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return p
