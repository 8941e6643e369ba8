"""Model quantization: every llama.cpp file type, tensor-type overrides, imatrix, pruning, dry runs.

from llamabind.quantize import quantize, QuantizeParams
result = quantize("model-F16.gguf", "model-Q4_K_M.gguf", QuantizeParams("Q4_K_M"))
print(result.file_bytes, result.bpw, result.type_counts())
"""

from __future__ import annotations

from .api import quantize
from .imatrix import ImatrixData, read_imatrix, write_imatrix
from .params import ProgressCallback, QuantizeParams, QuantizeResult, TensorPlan, default_output_path
from .types import IMATRIX_REQUIRED_TYPES, FileType, file_type, file_types

__all__ = [
    "IMATRIX_REQUIRED_TYPES",
    "FileType",
    "ImatrixData",
    "ProgressCallback",
    "QuantizeParams",
    "QuantizeResult",
    "TensorPlan",
    "default_output_path",
    "file_type",
    "file_types",
    "quantize",
    "read_imatrix",
    "write_imatrix",
]
