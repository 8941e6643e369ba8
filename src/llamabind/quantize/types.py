"""Every llama.cpp model file type (``llama_ftype``) that ``llama_model_quantize`` can produce.

``bpw`` is the bits per weight of the file type's base tensor type, straight from ggml's block
sizes. Mixes (``*_K_S``/``*_K_M``/``*_K_L``, ``IQ2_M``, ``IQ3_M`` …) keep some tensors (attention
V, FFN down, output) at a larger type, so a real file lands a little above it; a dry run
(:func:`llamabind.quantize.quantize` with ``dry_run=True``) reports the exact figure for a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ..core.types import ggml_type_id, ggml_types
from ..errors import QuantizeError

__all__ = [
    "IMATRIX_REQUIRED_TYPES",
    "FileType",
    "file_type",
    "file_types",
    "tensor_type_id",
]

#: ggml tensor types llama.cpp refuses to produce without an importance matrix.
IMATRIX_REQUIRED_TYPES = frozenset({"iq3_xxs", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_m", "iq1_s"})


@dataclass(frozen=True)
class FileType:
    """One quantization file type: its name, ``llama_ftype`` value and what it stores."""

    name: str
    ftype: int
    base_type: str  # ggml type of most 2-D weights
    description: str
    needs_imatrix: bool = False
    alias_of: str | None = None
    only_copy: bool = False

    @property
    def bpw(self) -> float:
        """Bits per weight of the base tensor type (from ggml's block size and bytes per block)."""
        from .._native.backend import ggml_type_info

        info = ggml_type_info(ggml_type_id(self.base_type))
        return info.type_size * 8.0 / info.block_size


# name, llama_ftype, base ggml type, description, needs imatrix
_TABLE: tuple[tuple[str, int, str, str, bool], ...] = (
    ("F32", 0, "f32", "32-bit floats everywhere: no quantization", False),
    ("F16", 1, "f16", "IEEE half-precision floats", False),
    ("BF16", 32, "bf16", "bfloat16: float32 range with 8-bit mantissa", False),
    ("Q8_0", 7, "q8_0", "8-bit, one scale per 32 weights; practically lossless", False),
    ("Q6_K", 18, "q6_k", "6-bit K-quant in 256-weight super-blocks", False),
    ("Q5_1", 9, "q5_1", "legacy 5-bit with scale and minimum per 32 weights", False),
    ("Q5_0", 8, "q5_0", "legacy 5-bit with one scale per 32 weights", False),
    ("Q5_K_M", 17, "q5_k", "5-bit K-quant mix; half of attn_v/ffn_down at 6-bit", False),
    ("Q5_K_S", 16, "q5_k", "5-bit K-quant, uniform", False),
    ("Q4_1", 3, "q4_1", "legacy 4-bit with scale and minimum per 32 weights", False),
    ("Q4_0", 2, "q4_0", "legacy 4-bit with one scale per 32 weights", False),
    ("Q4_K_M", 15, "q4_k", "4-bit K-quant mix; half of attn_v/ffn_down at 6-bit (the usual default)", False),
    ("Q4_K_S", 14, "q4_k", "4-bit K-quant, mostly uniform", False),
    ("IQ4_NL", 25, "iq4_nl", "4-bit non-linear codebook, blocks of 32", False),
    ("IQ4_XS", 30, "iq4_xs", "4-bit non-linear codebook in 256-weight super-blocks", False),
    ("Q3_K_L", 13, "q3_k", "3-bit K-quant mix; attn_v/attn_output/ffn_down at 5-bit", False),
    ("Q3_K_M", 12, "q3_k", "3-bit K-quant mix; attn_v/ffn_down partly at 4/5-bit", False),
    ("Q3_K_S", 11, "q3_k", "3-bit K-quant, uniform", False),
    ("IQ3_M", 27, "iq3_s", "3-bit i-quant mix", False),
    ("IQ3_S", 26, "iq3_s", "3.44-bit i-quant", False),
    ("IQ3_XS", 22, "iq3_s", "3.3-bit i-quant mix", False),
    ("IQ3_XXS", 23, "iq3_xxs", "3.06-bit i-quant; needs an importance matrix", True),
    ("Q2_K", 10, "q2_k", "2-bit K-quant mix (attn_v/ffn_down at 3/4-bit)", False),
    ("Q2_K_S", 21, "q2_k", "2-bit K-quant, smaller mix; needs an importance matrix", True),
    ("IQ2_M", 29, "iq2_s", "2.7-bit i-quant mix; needs an importance matrix", True),
    ("IQ2_S", 28, "iq2_xs", "2.5-bit i-quant mix; needs an importance matrix", True),
    ("IQ2_XS", 20, "iq2_xs", "2.31-bit i-quant; needs an importance matrix", True),
    ("IQ2_XXS", 19, "iq2_xxs", "2.06-bit i-quant; needs an importance matrix", True),
    ("Q2_0", 41, "q2_0", "2-bit, one scale per 64 weights", False),
    ("IQ1_M", 31, "iq1_m", "1.75-bit i-quant; needs an importance matrix", True),
    ("IQ1_S", 24, "iq1_s", "1.56-bit i-quant; needs an importance matrix", True),
    ("TQ2_0", 37, "tq2_0", "2-bit ternary, for ternary-trained (BitNet-style) models", False),
    ("TQ1_0", 36, "tq1_0", "1.69-bit ternary, for ternary-trained (BitNet-style) models", False),
    ("Q1_0", 40, "q1_0", "1-bit, one scale per 128 weights (for 1-bit-trained models)", False),
    ("MXFP4_MOE", 38, "mxfp4", "MXFP4 (4-bit float) for MoE expert tensors, Q8_0 elsewhere", False),
)
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


@cache
def _by_name() -> dict[str, FileType]:
    out: dict[str, FileType] = {}
    for name, ftype, base, desc, needs in _TABLE:
        out[name] = FileType(name, ftype, base, desc, needs)
    for alias, target in _ALIASES.items():
        t = out[target]
        out[alias] = FileType(
            alias, t.ftype, t.base_type, f"alias of {target}", t.needs_imatrix, alias_of=target
        )
    out["COPY"] = FileType(
        "COPY", 0, "f32", "copy tensors unchanged (re-write metadata, prune, split)", only_copy=True
    )
    return out


def file_types(*, include_aliases: bool = True) -> list[FileType]:
    """Every quantization type by name, largest bits per weight first."""
    return [t for t in _by_name().values() if include_aliases or t.alias_of is None]


def file_type(name: str | int | FileType) -> FileType:
    """Look a file type up by name (case-insensitive: ``q4_k_m``, ``Q8_0``, ``COPY``) or ``llama_ftype`` number."""
    if isinstance(name, FileType):
        return name
    table = _by_name()
    if isinstance(name, int) and not isinstance(name, bool):
        for t in table.values():
            if t.ftype == name and t.alias_of is None and not t.only_copy:
                return t
        raise QuantizeError(f"unknown llama_ftype {name}; known: {', '.join(table)}")
    key = str(name).strip().upper()
    if key.isdigit():
        return file_type(int(key))
    if key not in table:
        raise QuantizeError(f"unknown quantization type {name!r}; known: {', '.join(table)}")
    return table[key]


def tensor_type_id(name: str | int, what: str = "tensor type") -> int:
    """A ggml tensor type id by name (``q8_0``, ``Q4_K``, ``f16`` …), as QuantizeError when unknown."""
    if isinstance(name, int) and not isinstance(name, bool):
        if name not in ggml_types().values():
            raise QuantizeError(f"unknown ggml {what} id {name}")
        return name
    try:
        return ggml_type_id(str(name))
    except ValueError:
        known = ", ".join(sorted(ggml_types()))
        raise QuantizeError(f"unknown {what} {name!r}; ggml types: {known}") from None
