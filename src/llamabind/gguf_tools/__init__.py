"""GGUF file tools: split/merge in llama.cpp's gguf-split layout, F16 dequantization, BERT conversion."""

from __future__ import annotations

from ._io import GGUFToolError, read_metadata
from .bert_convert import convert_bert_to_gguf, find_minilm_dir
from .dequant import dequantize_to_f16
from .split import merge_gguf, parse_size, shard_name, shard_paths, split_gguf

__all__ = [
    "GGUFToolError",
    "convert_bert_to_gguf",
    "dequantize_to_f16",
    "find_minilm_dir",
    "merge_gguf",
    "parse_size",
    "read_metadata",
    "shard_name",
    "shard_paths",
    "split_gguf",
]
