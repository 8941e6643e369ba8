"""Every quantization input checked before any work starts.

The file type, tensor types and override patterns, the input file, the output location, pruned
layers, the importance matrix (readable, finite, sizes matching the tensors) and KV overrides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..core.gguf_file import GGUFHeader, read_header
from ..core.params import default_threads
from ..core.shards import shard_paths
from ..errors import ModelLoadError, QuantizeError
from .imatrix import ImatrixData, check_finite, read_imatrix
from .params import KVValue, PathLike, QuantizeParams, default_output_path
from .types import FileType, file_type, tensor_type_id

__all__ = ["Checked", "validate"]

_KV_MAX = 127  # llama_model_kv_override key / string value buffers are 128 bytes


@dataclass
class Checked:
    src: Path
    dst: Path
    ftype: FileType
    nthread: int
    output_type: int | None
    embd_type: int | None
    tt: list[tuple[str, int]]
    prune: list[int]
    imatrix: dict[str, npt.NDArray[np.float32]] | None
    imatrix_source: str | None
    kv: list[tuple[str, KVValue]]
    headers: list[GGUFHeader]


def _check_src(src: PathLike) -> tuple[Path, list[GGUFHeader]]:
    p = Path(src)
    if not p.exists():
        raise QuantizeError(f"input model not found: {p}")
    if p.is_dir():
        raise QuantizeError(f"input model is a directory, not a GGUF file: {p}")
    headers: list[GGUFHeader] = []
    try:
        shards = shard_paths(p)
    except ModelLoadError as exc:
        raise QuantizeError(str(exc)) from None
    for shard in shards:
        try:
            headers.append(read_header(shard))
        except (ValueError, OSError) as exc:
            raise QuantizeError(f"cannot read input model: {exc}") from exc
    count = headers[0].metadata.get("split.count")
    if isinstance(count, int) and count > 1 and len(headers) == 1:
        raise QuantizeError(f"{p} is one shard of {count}: pass the first shard (…-00001-of-…)")
    if not any(h.tensors for h in headers):
        raise QuantizeError(f"input model has no tensors: {p}")
    return p, headers


def _check_dst(dst: PathLike, src: Path, dry_run: bool) -> Path:
    p = Path(dst)
    if dry_run:
        return p
    if p.is_dir():
        raise QuantizeError(f"output path is a directory: {p}")
    if p.exists() and p.resolve() == src.resolve():
        raise QuantizeError("output path is the input model: choose another file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise QuantizeError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise QuantizeError(f"output is not writable: {p}")
    return p


def _check_patterns(items: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise QuantizeError(f"tensor type override {item!r}: expected (pattern, type)")
        pattern, type_name = item
        if not isinstance(pattern, str) or not pattern:
            raise QuantizeError(f"tensor type override {item!r}: empty pattern")
        if "(?<" in pattern or "(?P" in pattern:
            raise QuantizeError(
                f"tensor type override pattern {pattern!r}: lookbehind and named groups are not "
                "supported by llama.cpp's ECMAScript regular expressions"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise QuantizeError(f"tensor type override pattern {pattern!r} is invalid: {exc}") from None
        out.append((pattern, tensor_type_id(type_name, f"tensor type for pattern {pattern!r}")))
    return out


def _check_prune(prune: Sequence[int], headers: list[GGUFHeader]) -> list[int]:
    if not prune:
        return []
    n_layer = headers[0].arch_int("block_count")
    layers = sorted(set(int(x) for x in prune))
    bad = [x for x in layers if not 0 <= x < n_layer]
    if bad:
        raise QuantizeError(f"prune_layers {bad} out of range: the model has layers 0..{n_layer - 1}")
    if len(layers) >= n_layer:
        raise QuantizeError(f"prune_layers would remove all {n_layer} layers")
    return layers


def _check_kv(kv: Mapping[str, KVValue]) -> list[tuple[str, KVValue]]:
    out: list[tuple[str, KVValue]] = []
    for key, value in kv.items():
        if not isinstance(key, str) or not key or len(key.encode()) > _KV_MAX:
            raise QuantizeError(f"kv_overrides key {key!r}: must be 1..{_KV_MAX} bytes")
        if not isinstance(value, bool | int | float | str):
            raise QuantizeError(f"kv_overrides[{key!r}]: value must be int, float, bool or str")
        if isinstance(value, str) and len(value.encode()) > _KV_MAX:
            raise QuantizeError(f"kv_overrides[{key!r}]: string values are limited to {_KV_MAX} bytes")
        out.append((key, value))
    return out


def _load_imatrix(
    spec: PathLike | ImatrixData | Mapping[str, npt.ArrayLike] | None, headers: list[GGUFHeader]
) -> tuple[dict[str, npt.NDArray[np.float32]] | None, str | None, ImatrixData | None]:
    if spec is None:
        return None, None, None
    if isinstance(spec, ImatrixData):
        data = spec
    elif isinstance(spec, str | os.PathLike):
        data = read_imatrix(spec)
    elif isinstance(spec, Mapping):
        entries = {str(k): np.asarray(v, dtype=np.float32).ravel() for k, v in spec.items()}
        check_finite(entries, "(in memory)")
        data = ImatrixData(entries)
    else:
        raise QuantizeError(f"imatrix must be a path, ImatrixData or a mapping, not {type(spec).__name__}")
    if not data.entries:
        raise QuantizeError("imatrix holds no entries")
    tensors = {t.name: t for h in headers for t in h.tensors}
    matched = 0
    for name, values in data.entries.items():
        t = tensors.get(name)
        if t is None:
            continue
        matched += 1
        expected = t.ne[0] * (t.ne[2] if len(t.ne) > 2 else 1)
        if values.size != expected and not name.startswith("token_embd"):
            raise QuantizeError(
                f"imatrix entry {name} has {values.size} values but the tensor needs {expected} "
                "(an importance matrix computed for another model?)"
            )
    if matched == 0:
        raise QuantizeError("no imatrix entry matches a tensor of the input model (wrong imatrix?)")
    source = str(data.path) if data.path is not None else None
    return dict(data.entries), source, data


def validate(src: PathLike, dst: PathLike | None, params: QuantizeParams) -> Checked:
    ft = file_type(params.ftype)
    output_type = (
        tensor_type_id(params.output_tensor_type, "output_tensor_type")
        if params.output_tensor_type is not None
        else None
    )
    embd_type = (
        tensor_type_id(params.token_embedding_type, "token_embedding_type")
        if params.token_embedding_type is not None
        else None
    )
    tt = _check_patterns(list(params.tensor_type_overrides))
    if params.nthread is not None and (not isinstance(params.nthread, int) or params.nthread < 0):
        raise QuantizeError(f"nthread must be a non-negative integer, got {params.nthread!r}")
    kv = _check_kv(params.kv_overrides)
    src_path, headers = _check_src(src)
    if dst is None:
        if not params.dry_run:
            raise QuantizeError("no output path given (only a dry run may omit it)")
        dst_path = default_output_path(src_path, ft)
    else:
        dst_path = _check_dst(dst, src_path, params.dry_run)
    prune = _check_prune(params.prune_layers, headers)
    imatrix, source, data = _load_imatrix(params.imatrix, headers)
    if data is not None:
        # record provenance in the output, as llama.cpp's own quantize tool does
        keys = {k for k, _ in kv}
        extra: list[tuple[str, KVValue]] = []
        if source and "quantize.imatrix.file" not in keys:
            extra.append(("quantize.imatrix.file", source[-_KV_MAX:]))
        if data.datasets and "quantize.imatrix.dataset" not in keys:
            extra.append(("quantize.imatrix.dataset", data.datasets[0][:_KV_MAX]))
        if "quantize.imatrix.entries_count" not in keys:
            extra.append(("quantize.imatrix.entries_count", len(data.entries)))
        if data.chunk_count > 0 and "quantize.imatrix.chunks_count" not in keys:
            extra.append(("quantize.imatrix.chunks_count", data.chunk_count))
        kv = kv + extra
    nthread = default_threads() if params.nthread is None else params.nthread
    return Checked(
        src_path, dst_path, ft, nthread, output_type, embd_type, tt, prune, imatrix, source, kv, headers
    )
