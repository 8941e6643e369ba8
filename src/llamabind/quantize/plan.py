"""The per-tensor plan: llama.cpp's quantization log turned into rows, and the dry-run report.

A native dry run prints one log line per tensor; ``PlanCollector`` parses them into
``TensorPlan`` rows. ``plan_problems`` finds what would make the real run fail halfway and
``estimate_file_bytes`` sizes the output without writing it.
"""

from __future__ import annotations

import re

from .._native.backend import ggml_type_info
from .params import ProgressCallback, QuantizeParams, TensorPlan
from .types import IMATRIX_REQUIRED_TYPES, tensor_type_id
from .validate import Checked

__all__ = ["PlanCollector", "estimate_file_bytes", "plan_problems"]

_HEAD = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)\s+-\s+\[([\d,\s]+)\],\s+type\s*=\s*(\S+),")
_CONVERT = re.compile(r"converting to (\S+)")
_SIZE = re.compile(r"size\s*=\s*([\d.]+) MiB(?:\s*->\s*([\d.]+) MiB)?(?:\s*\((\S+)\))?")
_GGUF_ALIGNMENT = 32


class PlanCollector:
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


def plan_problems(c: Checked, plan: list[TensorPlan], params: QuantizeParams) -> list[str]:
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


def estimate_file_bytes(c: Checked, plan: list[TensorPlan], keep_split: bool) -> int:
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
