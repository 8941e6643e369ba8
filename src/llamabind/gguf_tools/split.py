"""Split a GGUF model into shards and merge shards back, in llama.cpp's gguf-split layout.

Layout (what llama.cpp's loader expects):

* shard file names are ``<prefix>-00001-of-0000N.gguf`` (1-based, five digits at least);
* every shard carries ``split.no`` (uint16, 0-based), ``split.count`` (uint16) and
  ``split.tensors.count`` (int32, the total over all shards);
* the first shard also carries all of the model's metadata; the other shards carry only the
  three split keys;
* tensor data is copied byte for byte (quantized types stay as they are), each tensor padded
  to the data alignment.

A model so split loads from its first shard's path, or from the list of all shard paths.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from gguf import GGUFValueType
from gguf.constants import GGUF_DEFAULT_ALIGNMENT, Keys

from llamabind.core.gguf_file import GGUFHeader
from llamabind.core.shards import SHARD_RE, shard_name, shard_paths

from ._io import (
    GGUFToolError,
    KVEntry,
    OutTensor,
    PathLike,
    kv_entries,
    open_gguf,
    reject_split,
    src_tensors,
    write_gguf,
)

__all__ = [
    "SHARD_NAME_RE",
    "merge_gguf",
    "parse_size",
    "shard_name",
    "shard_paths",
    "split_gguf",
]

KEY_SPLIT_NO: str = Keys.Split.LLM_KV_SPLIT_NO  # "split.no"
KEY_SPLIT_COUNT: str = Keys.Split.LLM_KV_SPLIT_COUNT  # "split.count"
KEY_SPLIT_TENSORS: str = Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT  # "split.tensors.count"
_SPLIT_KEYS = frozenset({KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS})

SHARD_NAME_RE = SHARD_RE

_MAX_SHARDS = 0xFFFF  # split.count is a uint16


def parse_size(text: str | int) -> int:
    """Parse a shard size such as ``"500M"``, ``"2G"``, ``"1.5G"`` or ``"123456"`` into bytes.

    Units are decimal as in llama.cpp's gguf-split: K = 1000, M = 1000², G = 1000³ (a trailing
    ``B`` is accepted; ``KiB``/``MiB``/``GiB`` are binary).
    """
    if isinstance(text, int):
        if text <= 0:
            raise GGUFToolError(f"size must be positive, got {text}")
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT](?:i?[bB])?|[bB])?\s*", text)
    if not m:
        raise GGUFToolError(f"invalid size {text!r}: expected a number with an optional K, M, G or T suffix")
    number = float(m.group(1))
    unit = (m.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    power = {"K": 1, "M": 2, "G": 3, "T": 4}.get(unit[:1], 0)
    size = int(number * base**power)
    if size <= 0:
        raise GGUFToolError(f"size must be positive, got {text!r}")
    return size


def _field_int(header: GGUFHeader, key: str) -> int | None:
    value = header.get(key)
    return int(value) if isinstance(value, int) else None


def _copy_tensors(header: GGUFHeader) -> list[OutTensor]:
    return [
        OutTensor(name=t.name, shape=t.shape, qtype=t.qtype, nbytes=t.nbytes, data=t.data)
        for t in src_tensors(header)
    ]


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _plan(
    tensors: Sequence[OutTensor], max_tensors: int | None, max_size: int | None, align: int
) -> list[list[OutTensor]]:
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        n = _pad(t.nbytes, align)
        cur = shards[-1]
        if cur and (
            (max_tensors is not None and len(cur) >= max_tensors)
            or (max_size is not None and size + n > max_size)
        ):
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += n
    return shards


def split_gguf(
    src: PathLike,
    out_prefix: PathLike,
    *,
    max_tensors: int | None = None,
    max_size: int | str | None = None,
    metadata_only_first: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Split the GGUF file `src` into shards ``{out_prefix}-00001-of-0000N.gguf`` … and return their paths.

    A new shard starts when the current one already holds `max_tensors` tensors, or when adding
    the next tensor would make its tensor data exceed `max_size` bytes (``"500M"``-style strings
    are accepted, see parse_size); a single tensor larger than `max_size` gets a shard of its own.
    With `metadata_only_first` the first shard holds only metadata (as gguf-split's
    ``--no-tensor-first-split``). A trailing ``.gguf`` on `out_prefix` is dropped.
    """
    if max_tensors is None and max_size is None:
        raise GGUFToolError("split_gguf needs max_tensors or max_size")
    if max_tensors is not None and max_tensors < 1:
        raise GGUFToolError(f"max_tensors must be at least 1, got {max_tensors}")
    size_limit = parse_size(max_size) if max_size is not None else None

    src_path = Path(src)
    reader = open_gguf(src_path)
    reject_split(reader, src_path, "split")
    align = int(reader.alignment)
    prefix = Path(out_prefix)
    if prefix.name.endswith(".gguf"):
        prefix = prefix.with_name(prefix.name[: -len(".gguf")])
    if not prefix.name:
        raise GGUFToolError(f"invalid output prefix {str(out_prefix)!r}")

    tensors = _copy_tensors(reader)
    shards = _plan(tensors, max_tensors, size_limit, align)
    if metadata_only_first:
        shards.insert(0, [])
    count = len(shards)
    if count > _MAX_SHARDS:
        raise GGUFToolError(f"{count} shards exceed the format's limit of {_MAX_SHARDS}")
    n_total = len(tensors)

    paths = [prefix.with_name(shard_name(prefix.name, i, count)) for i in range(count)]
    if any(p.resolve() == src_path.resolve() for p in paths):
        raise GGUFToolError(f"output shard would overwrite the input {src_path}")

    model_kv = kv_entries(reader, skip=lambda k: k in _SPLIT_KEYS)
    extra_align: list[KVEntry] = []
    for i, (path, shard) in enumerate(zip(paths, shards, strict=True)):
        split_kv = [
            KVEntry(KEY_SPLIT_NO, i, GGUFValueType.UINT16),
            KVEntry(KEY_SPLIT_COUNT, count, GGUFValueType.UINT16),
            KVEntry(KEY_SPLIT_TENSORS, n_total, GGUFValueType.INT32),
        ]
        if i == 0:
            kv = model_kv + split_kv
        else:
            if align != GGUF_DEFAULT_ALIGNMENT:
                # the data alignment is per file: a shard must say so for its own tensor data
                extra_align = [KVEntry(Keys.General.ALIGNMENT, align, GGUFValueType.UINT32)]
            kv = split_kv + extra_align
        write_gguf(
            path,
            kv,
            shard,
            alignment=align,
            progress=progress,
            desc=f"shard {i + 1}/{count}",
        )
    return paths


def _as_paths(first_shard_or_list: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(first_shard_or_list, (str, Path)) or not isinstance(first_shard_or_list, Sequence):
        return shard_paths(first_shard_or_list)  # type: ignore[arg-type]
    paths = [Path(p) for p in first_shard_or_list]
    if not paths:
        raise GGUFToolError("no shard paths given")
    return paths


def merge_gguf(
    first_shard_or_list: PathLike | Sequence[PathLike], dst: PathLike, *, progress: bool = False
) -> Path:
    """Merge a split model back into one GGUF file at `dst` and return `dst`.

    Takes the first shard's path (the others are found by name) or the full ordered list of shard
    paths. The output has the first shard's metadata without the ``split.*`` keys, and all tensors
    in shard order with their bytes unchanged. Shards are checked for consistency (count, order,
    total tensor count).
    """
    paths = _as_paths(first_shard_or_list)
    dst_path = Path(dst)
    for p in paths:
        if p.exists() and dst_path.exists() and p.resolve() == dst_path.resolve():
            raise GGUFToolError(f"merge output {dst_path} is one of the input shards")
    readers = [open_gguf(p) for p in paths]
    first = readers[0]
    declared = _field_int(first, KEY_SPLIT_COUNT)
    if declared is None or declared == 0:
        if len(paths) != 1:
            raise GGUFToolError(
                f"{paths[0].name} has no {KEY_SPLIT_COUNT} key: it is not the first shard of a split"
            )
    elif declared != len(paths):
        raise GGUFToolError(
            f"{paths[0].name} says {KEY_SPLIT_COUNT}={declared} but {len(paths)} shard(s) were given"
        )
    for i, (p, r) in enumerate(zip(paths, readers, strict=True)):
        no = _field_int(r, KEY_SPLIT_NO)
        if len(paths) > 1 and no != i:
            raise GGUFToolError(f"shard {p.name} has {KEY_SPLIT_NO}={no}, expected {i}: shards out of order?")
    tensors: list[OutTensor] = []
    for r in readers:
        tensors.extend(_copy_tensors(r))
    expected = _field_int(first, KEY_SPLIT_TENSORS)
    if expected is not None and declared and expected != len(tensors):
        raise GGUFToolError(f"shards hold {len(tensors)} tensors but {KEY_SPLIT_TENSORS}={expected}")
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise GGUFToolError("the same tensor name appears in more than one shard")
    kv = kv_entries(first, skip=lambda k: k in _SPLIT_KEYS)
    return write_gguf(
        dst_path,
        kv,
        tensors,
        alignment=int(first.alignment),
        progress=progress,
        desc=f"merge {dst_path.name}",
    )
