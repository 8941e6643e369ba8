"""What a quantization is asked to do and what it reports: parameters, per-tensor plan, result."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt

from ..core.shards import SHARD_RE
from .imatrix import ImatrixData
from .types import FileType, file_type

__all__ = [
    "KVValue",
    "PathLike",
    "ProgressCallback",
    "QuantizeParams",
    "QuantizeResult",
    "TensorPlan",
    "default_output_path",
]

PathLike = str | os.PathLike[str]
#: ``progress(done, total, tensor_name)``, called after each tensor is written (or planned).
ProgressCallback = Callable[[int, int, str], object]
KVValue = int | float | bool | str


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
