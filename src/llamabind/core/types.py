"""Name ↔ id tables for llama.cpp enums exposed as strings in the public API."""

from __future__ import annotations

from functools import cache
from typing import Literal

from .._native import backend as nbackend

__all__ = [
    "ATTENTION_TYPES",
    "FLASH_ATTN",
    "POOLING_TYPES",
    "ROPE_SCALING_TYPES",
    "SPLIT_MODES",
    "FlashAttn",
    "Pooling",
    "ggml_type_id",
    "ggml_type_name",
    "ggml_types",
]

Pooling = Literal["none", "mean", "cls", "last", "rank"]
FlashAttn = Literal["auto", "on", "off"]

POOLING_TYPES: dict[str, int] = {"unspecified": -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
ATTENTION_TYPES: dict[str, int] = {"unspecified": -1, "causal": 0, "non_causal": 1}
FLASH_ATTN: dict[str, int] = {"auto": -1, "off": 0, "on": 1}
ROPE_SCALING_TYPES: dict[str, int] = {"unspecified": -1, "none": 0, "linear": 1, "yarn": 2, "longrope": 3}
SPLIT_MODES: dict[str, int] = {"none": 0, "layer": 1, "row": 2, "tensor": 3}
CONTEXT_TYPES: dict[str, int] = {"default": 0, "mtp": 1}

_GGML_TYPE_COUNT = 43


@cache
def ggml_types() -> dict[str, int]:
    """Every ggml tensor type of this build by its ggml name (``f16``, ``q8_0``, ``bf16`` …)."""
    out: dict[str, int] = {}
    for i in range(_GGML_TYPE_COUNT):
        info = nbackend.ggml_type_info(i)
        if info.block_size > 0 and info.type_size > 0 and info.name not in ("?", "NONE"):
            out[info.name.lower()] = i
    return out


def ggml_type_id(name: str | int) -> int:
    if isinstance(name, int):
        return name
    types = ggml_types()
    key = name.strip().lower()
    if key not in types:
        raise ValueError(f"unknown ggml type {name!r}; known: {', '.join(sorted(types))}")
    return types[key]


def ggml_type_name(type_id: int) -> str:
    return nbackend.ggml_type_info(type_id).name
