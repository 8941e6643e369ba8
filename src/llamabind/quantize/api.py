"""Typed model quantization over ``llama_model_quantize``.

Every input is checked before any work starts: the file type, tensor types and override
patterns, the input file, the output location, pruned layers, the importance matrix (readable,
finite, sizes matching the tensors) and KV overrides. Then a native dry run computes the exact
per-tensor plan, which decides the two things llama.cpp would otherwise only discover halfway
through writing the output: an already-quantized input without ``allow_requantize``, and low-bit
types that need an importance matrix.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._native import quantize as nquant
from .._native.backend import ggml_type_info
from ..core.gguf_file import GGUFHeader, read_header
from ..core.params import default_threads
from ..core.shards import SHARD_RE, shard_paths
from ..errors import ModelLoadError, QuantizeError
from .imatrix import ImatrixData, check_finite, read_imatrix
from .types import IMATRIX_REQUIRED_TYPES, FileType, file_type, tensor_type_id

__all__ = [
    "ProgressCallback",
    "QuantizeParams",
    "QuantizeResult",
    "TensorPlan",
    "default_output_path",
    "quantize",
]

PathLike = str | os.PathLike[str]
#: ``progress(done, total, tensor_name)``, called after each tensor is written (or planned).
ProgressCallback = Callable[[int, int, str], object]
KVValue = int | float | bool | str

_HEAD = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)\s+-\s+\[([\d,\s]+)\],\s+type\s*=\s*(\S+),")
_CONVERT = re.compile(r"converting to (\S+)")
_SIZE = re.compile(r"size\s*=\s*([\d.]+) MiB(?:\s*->\s*([\d.]+) MiB)?(?:\s*\((\S+)\))?")
_FAILED = re.compile(r"failed to quantize: (.*)")
_GGUF_ALIGNMENT = 32
_KV_MAX = 127  # llama_model_kv_override key / string value buffers are 128 bytes


@dataclass
class QuantizeParams:
    """What to quantize to. Type names are case-insensitive (``Q4_K_M``, ``q8_0``, ``f16``)."""

    ftype: str | int | FileType = "Q8_0"
    #: threads; None = the cores this process may use, 0 = llama.cpp's default (all hardware threads)
    nthread: int | None = None
    allow_requantize: bool = False
    quantize_output_tensor: bool = True
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    #: quantize every tensor to the file type's base type (no K-quant mixes)
    pure: bool = False
    #: write one output shard per input shard
    keep_split: bool = False
    #: importance matrix: a file (GGUF or legacy .dat), ImatrixData, or {tensor name: values}
    imatrix: PathLike | ImatrixData | Mapping[str, npt.ArrayLike] | None = None
    kv_overrides: Mapping[str, KVValue] = field(default_factory=dict)
    #: ``[(regex, ggml type)]``: the first pattern found in a tensor's name sets its type
    tensor_type_overrides: Sequence[tuple[str, str]] = ()
    #: layer indices to drop (the remaining layers are renumbered)
    prune_layers: Sequence[int] = ()
    #: plan and report sizes only; nothing is written
    dry_run: bool = False

    def replace(self, **changes: Any) -> QuantizeParams:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in changes:
            if key not in data:
                raise TypeError(f"unknown quantize parameter {key!r}")
        data.update(changes)
        return QuantizeParams(**data)


@dataclass(frozen=True)
class TensorPlan:
    """One tensor of the output: its shape (ggml order, row length first) and types."""

    name: str
    shape: tuple[int, ...]
    src_type: str
    dst_type: str
    src_bytes: int
    dst_bytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def quantized(self) -> bool:
        return self.src_type != self.dst_type


@dataclass
class QuantizeResult:
    """What a quantization wrote (or, for a dry run, would write)."""

    src: Path
    dst: Path | None
    files: list[Path]
    file_type: FileType
    tensors: list[TensorPlan]
    original_bytes: int  # tensor data of the input (kept tensors)
    tensor_bytes: int  # tensor data of the output
    file_bytes: int  # output file size(s): measured, or estimated for a dry run
    dry_run: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)
    #: dry run only: what would make the real run fail (requantizing, a missing importance matrix)
    problems: list[str] = field(default_factory=list)

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bpw(self) -> float:
        """Bits per weight over all tensors of the output."""
        n = self.n_elements
        return self.tensor_bytes * 8.0 / n if n else 0.0

    @property
    def ratio(self) -> float:
        return self.tensor_bytes / self.original_bytes if self.original_bytes else 1.0

    def type_counts(self) -> dict[str, int]:
        """How many tensors of each output type."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.dst_type] = out.get(t.dst_type, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def default_output_path(src: PathLike, ftype: str | FileType) -> Path:
    """``dir/model-Q4_K_M.gguf`` beside ``src`` (a shard suffix and an F16/F32/BF16 tag are dropped)."""
    p = Path(src)
    name = file_type(ftype).name
    m = SHARD_RE.match(p.name)
    stem = m["prefix"] if m else p.stem
    stem = re.sub(r"[-_.](f16|f32|bf16)$", "", stem, flags=re.IGNORECASE)
    return p.with_name(f"{stem}-{name}.gguf")


# ------------------------------------------------------------------ log parsing


class _PlanCollector:
    """Turns llama.cpp's per-tensor quantization log lines into TensorPlan rows."""

    def __init__(self, progress: ProgressCallback | None, total: int | None) -> None:
        self.rows: list[TensorPlan] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._pending: tuple[str, tuple[int, ...], str, int] | None = None
        self._dst: str | None = None
        self._progress = progress
        self._total = total
        self.callback_error: BaseException | None = None

    def __call__(self, level: int, line: str) -> None:
        if level == 4:
            self.errors.append(line.strip())
        elif level == 3:
            self.warnings.append(line.strip())
        m = _HEAD.search(line)
        if m:
            ne = tuple(int(x) for x in m.group(4).replace(" ", "").split(",") if x)
            self._pending = (m.group(3), ne, m.group(5).lower(), int(m.group(2)))
            self._dst = None
            line = line[m.end() :]
        if self._pending is None:
            return
        c = _CONVERT.search(line)
        if c:
            self._dst = c.group(1).lower()
        s = _SIZE.search(line)
        if s:
            name, ne, src, total = self._pending
            dst = (s.group(3) or self._dst or src).lower()
            self._pending = None
            self.rows.append(_plan_row(name, ne, src, dst))
            if self._progress is not None and self.callback_error is None:
                try:
                    self._progress(len(self.rows), self._total or total, name)
                except BaseException as exc:  # re-raised once llama.cpp returns
                    self.callback_error = exc


def _type_id(name: str) -> int:
    return tensor_type_id(name)


def _nbytes(type_name: str, ne: tuple[int, ...]) -> int:
    rows = 1
    for d in ne[1:]:
        rows *= d
    return rows * ggml_type_info(_type_id(type_name)).row_size(ne[0])


def _plan_row(name: str, ne: tuple[int, ...], src: str, dst: str) -> TensorPlan:
    while len(ne) > 1 and ne[-1] == 1:
        ne = ne[:-1]
    return TensorPlan(name, ne, src, dst, _nbytes(src, ne), _nbytes(dst, ne))


# ------------------------------------------------------------------ validation


@dataclass
class _Checked:
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


def _remap_names(prune: list[int], n_layer: int) -> dict[int, int]:
    """New layer index -> original index after pruning (remaining layers renumbered in order)."""
    kept = [i for i in range(n_layer) if i not in set(prune)]
    return dict(enumerate(kept))


_BLK = re.compile(r"^blk\.(\d+)\.")


def _original_name(name: str, remap: dict[int, int]) -> str:
    m = _BLK.match(name)
    if not m or not remap:
        return name
    return f"blk.{remap[int(m.group(1))]}.{name[m.end() :]}"


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


def _validate(src: PathLike, dst: PathLike | None, params: QuantizeParams) -> _Checked:
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
    return _Checked(
        src_path, dst_path, ft, nthread, output_type, embd_type, tt, prune, imatrix, source, kv, headers
    )


def _run(
    c: _Checked,
    params: QuantizeParams,
    *,
    dry_run: bool,
    progress: ProgressCallback | None,
    total: int | None,
) -> tuple[int, _PlanCollector]:
    collector = _PlanCollector(progress, total)
    out = str(c.dst)
    keep_split = params.keep_split and len(c.headers) > 1  # one input file: one output file
    if keep_split and out.endswith(".gguf"):
        out = out[: -len(".gguf")]  # llama.cpp appends -0000i-of-0000n.gguf itself
    rc = nquant.model_quantize(
        str(c.src),
        out,
        ftype=c.ftype.ftype,
        nthread=c.nthread,
        output_tensor_type=c.output_type,
        token_embedding_type=c.embd_type,
        allow_requantize=params.allow_requantize,
        quantize_output_tensor=params.quantize_output_tensor,
        only_copy=c.ftype.only_copy,
        pure=params.pure,
        keep_split=keep_split,
        dry_run=dry_run,
        imatrix=c.imatrix,
        kv_overrides=c.kv,
        tt_overrides=c.tt,
        prune_layers=c.prune,
        on_line=collector,
    )
    return rc, collector


def _failure(collector: _PlanCollector, what: str) -> QuantizeError:
    reason = next((m.group(1) for e in collector.errors if (m := _FAILED.search(e))), None)
    if reason is None:
        reason = collector.errors[-1] if collector.errors else "see the 'llamabind.native' log"
    return QuantizeError(f"{what}: {reason.strip()}")


def _plan_problems(c: _Checked, plan: list[TensorPlan], params: QuantizeParams) -> list[str]:
    """What would make the real run fail halfway: requantizing without permission, missing imatrix."""
    problems: list[str] = []
    if not params.allow_requantize:
        for t in plan:
            if t.quantized and ggml_type_info(_type_id(t.src_type)).quantized:
                problems.append(
                    f"the input is already quantized (tensor {t.name} is {t.src_type.upper()}); "
                    "requantizing loses quality: quantize from an F16/BF16/F32 model, or pass "
                    "allow_requantize=True"
                )
                break
    remap = _remap_names(c.prune, c.headers[0].arch_int("block_count")) if c.prune else {}
    for t in plan:
        needs = t.dst_type in IMATRIX_REQUIRED_TYPES or (t.dst_type == "q2_k" and c.ftype.name == "Q2_K_S")
        if not needs or not t.quantized or t.name.startswith(("token_embd.", "output.")):
            continue
        if c.imatrix is None:
            problems.append(
                f"{c.ftype.name} needs an importance matrix (tensor {t.name} becomes "
                f"{t.dst_type.upper()}): pass one with imatrix=PATH / --imatrix FILE (llama.cpp imatrix GGUF or .dat)"
            )
            break
        if _original_name(t.name, remap) not in c.imatrix:
            problems.append(
                f"the importance matrix has no entry for {_original_name(t.name, remap)}, which "
                f"{c.ftype.name} quantizes to {t.dst_type.upper()}"
            )
            break
    return problems


def _estimate_file_bytes(c: _Checked, plan: list[TensorPlan], keep_split: bool) -> int:
    """Header (source metadata + the output's tensor infos) plus aligned tensor data."""
    h = c.headers[0]
    info_bytes = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.ne) + 4 + 8 for t in h.tensors)
    kv_bytes = h.data_offset - info_bytes
    out_infos = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in plan)
    extra_kv = sum(
        8 + len(k.encode()) + 4 + (8 + len(v.encode()) if isinstance(v, str) else 8) for k, v in c.kv
    )
    data = sum((t.dst_bytes + _GGUF_ALIGNMENT - 1) // _GGUF_ALIGNMENT * _GGUF_ALIGNMENT for t in plan)
    n_files = len(c.headers) if keep_split and len(c.headers) > 1 else 1
    return n_files * (kv_bytes + extra_kv) + out_infos + data


def _output_files(c: _Checked, params: QuantizeParams) -> list[Path]:
    if params.keep_split and len(c.headers) > 1:
        n = len(c.headers)
        # llama.cpp names shards after the output path without its .gguf suffix
        base = str(c.dst)
        base = base[: -len(".gguf")] if base.endswith(".gguf") else base
        return [Path(f"{base}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    return [c.dst]


def quantize(
    src: PathLike,
    dst: PathLike | None = None,
    params: QuantizeParams | None = None,
    *,
    progress: ProgressCallback | None = None,
    **overrides: Any,
) -> QuantizeResult:
    """Quantize the GGUF model ``src`` into ``dst`` (``QuantizeParams`` fields may be given as keywords).

    Raises QuantizeError for every bad input before anything is written. With ``dry_run`` the
    result reports the per-tensor plan and the output size without writing (``dst`` may be None).
    """
    params = params or QuantizeParams()
    if overrides:
        params = params.replace(**overrides)
    t0 = time.perf_counter()
    c = _validate(src, dst, params)
    rc, plan_log = _run(c, params, dry_run=True, progress=progress if params.dry_run else None, total=None)
    if plan_log.callback_error is not None:
        raise plan_log.callback_error
    if rc != 0:
        raise _failure(plan_log, f"cannot quantize {c.src.name} to {c.ftype.name}")
    plan = plan_log.rows
    if not plan:
        raise QuantizeError("llama.cpp planned no tensors (is the input a model GGUF?)")
    problems = _plan_problems(c, plan, params)
    if problems and not params.dry_run:
        raise QuantizeError(problems[0])
    original = sum(t.src_bytes for t in plan)
    if params.dry_run:
        return QuantizeResult(
            src=c.src,
            dst=None,
            files=[],
            file_type=c.ftype,
            tensors=plan,
            original_bytes=original,
            tensor_bytes=sum(t.dst_bytes for t in plan),
            file_bytes=_estimate_file_bytes(c, plan, params.keep_split),
            dry_run=True,
            seconds=time.perf_counter() - t0,
            warnings=plan_log.warnings,
            problems=problems,
        )
    rc, done = _run(c, params, dry_run=False, progress=progress, total=len(plan))
    files = _output_files(c, params)
    if rc != 0:
        for f in files:
            if f.exists():
                f.unlink()
        raise _failure(done, f"quantizing {c.src.name} to {c.ftype.name} failed")
    if done.callback_error is not None:
        raise done.callback_error
    rows = done.rows or plan
    return QuantizeResult(
        src=c.src,
        dst=c.dst,
        files=files,
        file_type=c.ftype,
        tensors=rows,
        original_bytes=sum(t.src_bytes for t in rows),
        tensor_bytes=sum(t.dst_bytes for t in rows),
        file_bytes=sum(f.stat().st_size for f in files if f.exists()),
        dry_run=False,
        seconds=time.perf_counter() - t0,
        warnings=done.warnings,
    )
