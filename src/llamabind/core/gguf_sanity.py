"""Metadata sanity checks run before ``llama_model_load``.

llama.cpp aborts the whole process (``GGML_ASSERT``) on some metadata instead of failing the load:
a zero or oversized layer count, expert counts out of range, duplicated vocabulary strings,
vocabulary arrays of different lengths, and (at the first decode) a negative or NaN norm epsilon. These are refused here first, with a ModelLoadError that
names the key. Only the header and metadata are read (never tensor data), with the user's
``kv_overrides`` applied on top, as llama.cpp will see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .gguf_file import VT_STRING, GGUFArray, GGUFHeader, read_header

__all__ = ["MAX_EXPERTS", "MAX_LAYERS", "check_model_metadata"]

#: llama.cpp's LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS (fixed-size per-layer / per-expert tables)
MAX_LAYERS = 512
MAX_EXPERTS = 512

_TOKENS = "tokenizer.ggml.tokens"
_PER_TOKEN = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type")


def _int_value(key: str, value: Any, path: Path) -> int | None:
    # a value of the wrong type is llama.cpp's to report (it fails the load cleanly)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)


def _check_counts(meta: Mapping[str, Any], arch: str, path: Path) -> None:
    key = f"{arch}.block_count"
    n_layer = _int_value(key, meta.get(key), path)
    if n_layer is not None and not 1 <= n_layer <= MAX_LAYERS:
        raise ModelLoadError(f"{path}: metadata {key}={n_layer} is out of range (1..{MAX_LAYERS})")
    key_n, key_used = f"{arch}.expert_count", f"{arch}.expert_used_count"
    n_expert = _int_value(key_n, meta.get(key_n), path) or 0
    n_used = _int_value(key_used, meta.get(key_used), path) or 0
    if not 0 <= n_expert <= MAX_EXPERTS:
        raise ModelLoadError(f"{path}: metadata {key_n}={n_expert} is out of range (0..{MAX_EXPERTS})")
    if n_expert == 0 and n_used != 0:
        raise ModelLoadError(f"{path}: metadata {key_used}={n_used} but the model has no experts ({key_n}=0)")
    if n_expert > 0 and not 1 <= n_used <= n_expert:
        raise ModelLoadError(f"{path}: metadata {key_used}={n_used} is out of range (1..{key_n}={n_expert})")


def _token_text(i: int, raw: bytes) -> bytes:
    """A token as llama.cpp's vocabulary sees it: a C string (cut at its first NUL byte), and
    ``[EMPTY_<id>]`` for an empty one."""
    text = raw.partition(b"\0")[0]
    return text if text else b"[EMPTY_%d]" % i


def _check_epsilons(meta: Mapping[str, Any], arch: str, path: Path) -> None:
    # ggml's norm kernels GGML_ASSERT(eps >= 0) at the first decode (NaN fails it too)
    for key, value in meta.items():
        if key.startswith(f"{arch}.") and key.endswith("epsilon") and isinstance(value, (int, float)):
            if not value >= 0:
                raise ModelLoadError(f"{path}: metadata {key}={value} must be a number >= 0")


def _check_vocab(header: GGUFHeader, overridden: set[str], path: Path) -> None:
    tokens = header.get(_TOKENS)
    if _TOKENS in overridden or not isinstance(tokens, GGUFArray):
        return
    for key in _PER_TOKEN:
        arr = header.get(key)
        if key not in overridden and isinstance(arr, GGUFArray) and arr.length != tokens.length:
            raise ModelLoadError(
                f"{path}: metadata {key} has {arr.length} entries but {_TOKENS} has {tokens.length}"
            )
    if tokens.sub_type != VT_STRING:
        return  # llama.cpp refuses a vocabulary that is not made of strings ("invalid gguf type")
    raw: list[bytes] = header.array(_TOKENS)
    distinct = set(raw)
    if len(distinct) == len(raw) and b"" not in distinct and b"\0" not in b"".join(raw):
        return  # no empty token and no NUL byte: the texts are the raw strings, all distinct
    items = [_token_text(i, tok) for i, tok in enumerate(raw)]
    if len(set(items)) != len(items):
        seen: dict[bytes, int] = {}
        for i, tok in enumerate(items):
            if tok in seen:
                raise ModelLoadError(
                    f"{path}: metadata {_TOKENS} holds the token {tok.decode('utf-8', 'replace')!r} "
                    f"twice (ids {seen[tok]} and {i}"
                    + (", up to its NUL byte)" if b"\0" in header.array(_TOKENS)[i] else ")")
                )
            seen[tok] = i


def check_model_metadata(
    path: Path, kv_overrides: Mapping[str, int | float | bool | str] | None = None
) -> None:
    """Refuse, with ModelLoadError naming the key, metadata that would abort llama.cpp's loader.

    `path` is the model's (first) GGUF file; `kv_overrides` are applied before checking. A file
    this reader cannot parse is left to llama.cpp, which reports it as a load failure.
    """
    try:
        header = read_header(path, keep=(_TOKENS,))
    except (ValueError, OSError):
        return
    overrides = dict(kv_overrides or {})
    meta = {**header.metadata, **overrides}
    arch = str(meta.get("general.architecture") or "")
    if arch:
        _check_counts(meta, arch, path)
        _check_epsilons(meta, arch, path)
    _check_vocab(header, set(overrides), path)
