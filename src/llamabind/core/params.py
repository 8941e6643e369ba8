"""`ContextParams`: every field of llama_context_params, typed, with string enums."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from .types import (
    ATTENTION_TYPES,
    CONTEXT_TYPES,
    FLASH_ATTN,
    POOLING_TYPES,
    ROPE_SCALING_TYPES,
    ggml_type_id,
)

__all__ = ["THREADS_ENV", "ContextParams", "default_threads"]


THREADS_ENV = "LLAMABIND_THREADS"


def default_threads() -> int:
    """``$LLAMABIND_THREADS`` if set, else the cores this process may run on (llama.cpp's own
    default of 4 oversubscribes small machines, and its spinning threads suffer badly from it)."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {env!r}") from None
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 4
    return max(1, min(n, 16))


@dataclass
class ContextParams:
    """Context creation parameters. ``None`` keeps llama.cpp's default for that field."""

    n_ctx: int = 4096  # 0 = the model's training context
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_rs_seq: int | None = None
    n_outputs_max: int | None = None
    n_threads: int | None = None  # None: default_threads()
    n_threads_batch: int | None = None
    flash_attn: str | bool = "auto"  # auto | on | off
    type_k: str | int = "f16"
    type_v: str | int = "f16"
    #: attention rotation for quantized KV ("TurboQuant"); None = llama.cpp default (on)
    attn_rotation: bool | None = None
    embeddings: bool = False
    pooling: str | None = None  # none | mean | cls | last | rank (None: the model's)
    attention_type: str | None = None  # causal | non_causal
    rope_scaling_type: str | None = None  # none | linear | yarn | longrope
    rope_freq_base: float | None = None
    rope_freq_scale: float | None = None
    yarn_ext_factor: float | None = None
    yarn_attn_factor: float | None = None
    yarn_beta_fast: float | None = None
    yarn_beta_slow: float | None = None
    yarn_orig_ctx: int | None = None
    offload_kqv: bool | None = None
    op_offload: bool | None = None
    no_perf: bool = False
    swa_full: bool | None = None
    kv_unified: bool | None = None
    ctx_type: str = "default"  # default | mtp

    def replace(self, **changes: Any) -> ContextParams:
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise TypeError(f"unknown context parameter {key!r}")
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return ContextParams(**data)

    def to_native(self) -> dict[str, Any]:
        """The llama_context_params field values this describes (validated)."""
        for name in ("n_ctx", "n_batch", "n_ubatch", "n_seq_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0 or (name != "n_ctx" and value == 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        threads = self.n_threads or default_threads()
        out: dict[str, Any] = {
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "n_ubatch": min(self.n_ubatch, self.n_batch),
            "n_seq_max": self.n_seq_max,
            "n_threads": threads,
            "n_threads_batch": self.n_threads_batch or threads,
            "embeddings": self.embeddings,
            "no_perf": self.no_perf,
        }
        fa = self.flash_attn
        if isinstance(fa, bool):
            fa = "on" if fa else "off"
        out["flash_attn_type"] = _lookup("flash_attn", fa, FLASH_ATTN)
        out["type_k"] = ggml_type_id(self.type_k)
        out["type_v"] = ggml_type_id(self.type_v)
        if self.pooling is not None:
            out["pooling_type"] = _lookup("pooling", self.pooling, POOLING_TYPES)
        if self.attention_type is not None:
            out["attention_type"] = _lookup("attention_type", self.attention_type, ATTENTION_TYPES)
        if self.rope_scaling_type is not None:
            out["rope_scaling_type"] = _lookup(
                "rope_scaling_type", self.rope_scaling_type, ROPE_SCALING_TYPES
            )
        out["ctx_type"] = _lookup("ctx_type", self.ctx_type, CONTEXT_TYPES)
        for name in (
            "n_rs_seq",
            "n_outputs_max",
            "rope_freq_base",
            "rope_freq_scale",
            "yarn_ext_factor",
            "yarn_attn_factor",
            "yarn_beta_fast",
            "yarn_beta_slow",
            "yarn_orig_ctx",
            "offload_kqv",
            "op_offload",
            "swa_full",
            "kv_unified",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _lookup(what: str, value: str, table: dict[str, int]) -> int:
    key = value.strip().lower()
    if key not in table:
        raise ValueError(
            f"{what} must be one of {', '.join(k for k in table if k != 'unspecified')}; got {value!r}"
        )
    return table[key]
