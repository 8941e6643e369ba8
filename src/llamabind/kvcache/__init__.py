"""KV-cache quantization and attention rotation ("TurboQuant").

Per-context KV types: ``ContextParams(type_k="q8_0", type_v="q8_0")``. Attention rotation is on
by default for quantized KV and switchable per context with ``ContextParams(attn_rotation=False)``
(llama.cpp reads ``LLAMA_ATTN_ROT_DISABLE`` at context creation; llamabind sets and restores it
under a process-wide lock). This package reports KV memory per type and measures quality.
"""

from __future__ import annotations

from .compare import (
    GenerationRun,
    KVComparison,
    KVQualityRow,
    compare_generation,
    compare_perplexity,
    greedy_tokens,
)
from .perplexity import PerplexityResult, perplexity, token_logprobs
from .report import (
    KV_CACHE_TYPES,
    KVLayout,
    KVTypeReport,
    format_bytes,
    kv_bytes,
    kv_layout,
    kv_type_report,
    kv_types,
)

__all__ = [
    "KV_CACHE_TYPES",
    "GenerationRun",
    "KVComparison",
    "KVLayout",
    "KVQualityRow",
    "KVTypeReport",
    "PerplexityResult",
    "compare_generation",
    "compare_perplexity",
    "format_bytes",
    "greedy_tokens",
    "kv_bytes",
    "kv_layout",
    "kv_type_report",
    "kv_types",
    "perplexity",
    "token_logprobs",
]
