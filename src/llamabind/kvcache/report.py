"""KV-cache types and their memory cost for a model, from ggml's own row sizes.

llama.cpp stores, per attention layer and per cached token, one K row of ``n_embd_head_k ×
n_head_kv`` elements and one V row of ``n_embd_head_v × n_head_kv`` elements, each in the
context's ``type_k`` / ``type_v``. A quantized row costs ``ggml_row_size(type, n)`` bytes (whole
blocks of ``block_size`` elements), so the row length must be a multiple of the block size.

Attention rotation ("TurboQuant"): for a quantized K (or V) type and a head size that is a
multiple of 64, llama.cpp multiplies Q/K (and V) by a Hadamard matrix before caching, which
spreads outliers over the whole head and makes low-bit KV much more accurate. It is on by
default; ``ContextParams(attn_rotation=False)`` switches it off for one context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._native.backend import ggml_type_info
from ..core import Model
from ..core.types import ggml_type_id

__all__ = [
    "KV_CACHE_TYPES",
    "KVLayout",
    "KVTypeReport",
    "format_bytes",
    "kv_bytes",
    "kv_layout",
    "kv_type_report",
    "kv_types",
]

#: KV cache types llama.cpp accepts for ``type_k`` / ``type_v`` (its ``--cache-type-k/-v`` list).
KV_CACHE_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


def kv_types(*, quantized_only: bool = False) -> tuple[str, ...]:
    """The KV cache type names, widest first."""
    if not quantized_only:
        return KV_CACHE_TYPES
    return tuple(t for t in KV_CACHE_TYPES if ggml_type_info(ggml_type_id(t)).quantized)


@dataclass(frozen=True)
class KVLayout:
    """The shape of a model's KV cache per token."""

    n_layer: int  # layers with a KV cache
    n_head_kv: int
    n_embd_head_k: int
    n_embd_head_v: int

    @property
    def n_embd_k_gqa(self) -> int:
        """Elements of one K row (one token, one layer)."""
        return self.n_embd_head_k * self.n_head_kv

    @property
    def n_embd_v_gqa(self) -> int:
        return self.n_embd_head_v * self.n_head_kv


def _meta_int(model: Model, key: str) -> int | None:
    raw = model.meta(f"{model.architecture}.{key}")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def kv_layout(model: Model) -> KVLayout:
    """Per-token KV shape of ``model`` (every layer counted as a full-attention layer)."""
    n_head = max(model.n_head, 1)
    head_k = _meta_int(model, "attention.key_length") or model.n_embd // n_head
    head_v = _meta_int(model, "attention.value_length") or model.n_embd // n_head
    return KVLayout(model.n_layer, model.n_head_kv or n_head, head_k, head_v)


@dataclass(frozen=True)
class KVTypeReport:
    """Memory cost of one K/V type pair for one model."""

    type_k: str
    type_v: str
    block_size: int  # elements per block (of type_k)
    block_bytes: int  # bytes per block (of type_k)
    bits_per_element: float  # of type_k
    k_row_bytes: int  # one token, one layer
    v_row_bytes: int
    bytes_per_token: int  # all layers, K + V
    supported: bool  # row lengths are whole blocks
    rotated: bool  # attention rotation applies when enabled
    layout: KVLayout

    def bytes_at(self, n_ctx: int) -> int:
        """KV cache bytes for ``n_ctx`` cached tokens."""
        return self.bytes_per_token * n_ctx

    @property
    def bytes_per_element(self) -> float:
        return self.bits_per_element / 8.0


def _row(type_name: str, n: int) -> tuple[int, bool]:
    info = ggml_type_info(ggml_type_id(type_name))
    if n % info.block_size:
        return 0, False
    return info.row_size(n), True


def kv_type_report(
    model: Model, types: Sequence[str] = KV_CACHE_TYPES, *, type_v: str | None = None
) -> list[KVTypeReport]:
    """For each KV type: bytes per element and per token (K+V, all layers) for ``model``.

    ``type_v`` None uses the same type for V as for K.
    """
    layout = kv_layout(model)
    out: list[KVTypeReport] = []
    for t in types:
        tk = t.lower()
        tv = (type_v or t).lower()
        info = ggml_type_info(ggml_type_id(tk))
        k_row, ok_k = _row(tk, layout.n_embd_k_gqa)
        v_row, ok_v = _row(tv, layout.n_embd_v_gqa)
        rot_k = info.quantized and layout.n_embd_head_k % 64 == 0
        rot_v = ggml_type_info(ggml_type_id(tv)).quantized and layout.n_embd_head_v % 64 == 0
        out.append(
            KVTypeReport(
                type_k=tk,
                type_v=tv,
                block_size=info.block_size,
                block_bytes=info.type_size,
                bits_per_element=info.type_size * 8.0 / info.block_size,
                k_row_bytes=k_row,
                v_row_bytes=v_row,
                bytes_per_token=layout.n_layer * (k_row + v_row),
                supported=ok_k and ok_v,
                rotated=rot_k or rot_v,
                layout=layout,
            )
        )
    return out


def kv_bytes(model: Model, n_ctx: int, type_k: str = "f16", type_v: str | None = None) -> int:
    """KV cache bytes of ``model`` at ``n_ctx`` tokens with the given types."""
    return kv_type_report(model, [type_k], type_v=type_v)[0].bytes_at(n_ctx)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"  # pragma: no cover
