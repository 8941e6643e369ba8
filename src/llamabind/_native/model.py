"""Raw model and vocabulary calls: loading, metadata, tokenization, token attributes."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Sequence
from typing import Any

from .lib import ll, load_side_library

__all__ = [
    "ModelParamsSpec",
    "cpu_build_uses_amx",
    "detokenize",
    "model_chat_template",
    "model_desc",
    "model_free",
    "model_int",
    "model_load",
    "model_meta",
    "model_save",
    "model_vocab",
    "token_to_piece",
    "tokenize",
    "vocab_int",
    "vocab_token_attr",
    "vocab_token_score",
    "vocab_token_text",
]


class ModelParamsSpec:
    """Plain-Python description of ``llama_model_params`` (the core builds it from ModelParams)."""

    def __init__(
        self,
        *,
        n_gpu_layers: int | None = None,
        main_gpu: int | None = None,
        split_mode: int | None = None,
        tensor_split: Sequence[float] | None = None,
        use_mmap: bool | None = None,
        use_mlock: bool | None = None,
        vocab_only: bool = False,
        check_tensors: bool = False,
        kv_overrides: Sequence[tuple[str, int | float | bool | str]] = (),
        devices: Sequence[int] = (),
        load_mtp: bool | None = None,
        use_extra_bufts: bool | None = None,
        progress: Callable[[float], bool] | None = None,
    ) -> None:
        self.n_gpu_layers = n_gpu_layers
        self.main_gpu = main_gpu
        self.split_mode = split_mode
        self.tensor_split = tensor_split
        self.use_mmap = use_mmap
        self.use_mlock = use_mlock
        self.vocab_only = vocab_only
        self.check_tensors = check_tensors
        self.kv_overrides = kv_overrides
        self.devices = devices
        self.load_mtp = load_mtp
        self.use_extra_bufts = use_extra_bufts
        self.progress = progress


@functools.cache
def cpu_build_uses_amx() -> bool:
    """Whether the CPU backend was compiled with Intel AMX kernels (``ggml_cpu_has_amx_int8``)."""
    lib = load_side_library("ggml-cpu")
    fn = getattr(lib, "ggml_cpu_has_amx_int8", None) if lib is not None else None
    if fn is None:
        return False
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return bool(fn())


class _ProgressTrampoline:
    def __init__(self, fn: Callable[[float], bool]) -> None:
        self.fn = fn
        self.error: BaseException | None = None
        self.cancelled = False
        self.cfunc = ll().llama_progress_callback(self._call)

    def _call(self, progress: float, _user: Any) -> bool:
        try:
            keep = bool(self.fn(float(progress)))
        except BaseException as exc:  # re-raised by model_load after C returns
            self.error = exc
            keep = False
        if not keep:
            self.cancelled = True
        return keep


def kv_override_array(raw: Any, items: Sequence[tuple[str, int | float | bool | str]]) -> Any:
    """A ``llama_model_kv_override`` array for ``items``, terminated by an entry with an empty key."""
    arr = (raw.llama_model_kv_override * (len(items) + 1))()
    for i, (key, value) in enumerate(items):
        item = arr[i]
        item.key = key.encode()
        if isinstance(value, bool):
            item.tag = raw.LLAMA_KV_OVERRIDE_TYPE_BOOL
            item.value.val_bool = value
        elif isinstance(value, int):
            item.tag = raw.LLAMA_KV_OVERRIDE_TYPE_INT
            item.value.val_i64 = value
        elif isinstance(value, float):
            item.tag = raw.LLAMA_KV_OVERRIDE_TYPE_FLOAT
            item.value.val_f64 = value
        else:
            item.tag = raw.LLAMA_KV_OVERRIDE_TYPE_STR
            item.value.val_str = str(value).encode()
    arr[len(items)].key = b"\0"
    return arr


def _build_params(spec: ModelParamsSpec) -> tuple[Any, list[Any]]:
    raw = ll()
    p = raw.llama_model_default_params()
    keep: list[Any] = []  # ctypes objects referenced by p: must live until the load returns
    if spec.n_gpu_layers is not None:
        p.n_gpu_layers = spec.n_gpu_layers
    if spec.main_gpu is not None:
        p.main_gpu = spec.main_gpu
    if spec.split_mode is not None:
        p.split_mode = spec.split_mode
    if spec.use_mmap is not None or spec.use_mlock is not None:
        mmap = raw.llama_supports_mmap() if spec.use_mmap is None else spec.use_mmap
        mlock = bool(spec.use_mlock)
        p.load_mode = (
            raw.LLAMA_LOAD_MODE_MMAP_MLOCK
            if mmap and mlock
            else raw.LLAMA_LOAD_MODE_MMAP
            if mmap
            else raw.LLAMA_LOAD_MODE_MLOCK
            if mlock
            else raw.LLAMA_LOAD_MODE_NONE
        )
    if spec.load_mtp is not None:
        p.load_mtp = spec.load_mtp
    p.vocab_only = spec.vocab_only
    p.check_tensors = spec.check_tensors
    # Extra buffer types repack weights for AMX / CPU-specific kernels. In the pinned revision the
    # AMX matmul crashes (SIGSEGV in ggml_backend_amx_mul_mat) on an AMX CPU, so "auto" (None)
    # turns them off when the CPU build has AMX and keeps llama.cpp's default otherwise.
    if spec.use_extra_bufts is None:
        p.use_extra_bufts = not cpu_build_uses_amx()
    else:
        p.use_extra_bufts = spec.use_extra_bufts
    if spec.tensor_split:
        n = int(raw.llama_max_devices())
        arr = (ctypes.c_float * n)(*list(spec.tensor_split)[:n])
        keep.append(arr)
        p.tensor_split = arr
    if spec.kv_overrides:
        arr_kv = kv_override_array(raw, spec.kv_overrides)
        keep.append(arr_kv)
        p.kv_overrides = arr_kv
    if spec.devices:
        arr_dev = (ctypes.c_void_p * (len(spec.devices) + 1))(*spec.devices, None)
        keep.append(arr_dev)
        p.devices = ctypes.cast(arr_dev, ctypes.c_void_p)
    if spec.progress is not None:
        tramp = _ProgressTrampoline(spec.progress)
        keep.append(tramp)
        p.progress_callback = tramp.cfunc
    return p, keep


def model_load(paths: Sequence[str], spec: ModelParamsSpec) -> tuple[int | None, BaseException | None, bool]:
    """Load a model from one file or from split shards.

    Returns (handle or None, exception raised by the progress callback, cancelled).
    """
    raw = ll()
    params, keep = _build_params(spec)
    if len(paths) == 1:
        handle = raw.llama_model_load_from_file(paths[0].encode(), params)
    else:
        arr = (ctypes.c_char_p * len(paths))(*[p.encode() for p in paths])
        handle = raw.llama_model_load_from_splits(arr, len(paths), params)
    tramp = next((k for k in keep if isinstance(k, _ProgressTrampoline)), None)
    err = tramp.error if tramp else None
    cancelled = tramp.cancelled if tramp else False
    return (int(handle) if handle else None), err, cancelled


def model_free(handle: int) -> None:
    ll().llama_model_free(handle)


def model_save(handle: int, path: str) -> None:
    ll().llama_model_save_to_file(handle, path.encode())


def model_vocab(handle: int) -> int:
    return int(ll().llama_model_get_vocab(handle))


_MODEL_INTS = {
    "n_ctx_train": "llama_model_n_ctx_train",
    "n_embd": "llama_model_n_embd",
    "n_embd_inp": "llama_model_n_embd_inp",
    "n_embd_out": "llama_model_n_embd_out",
    "n_layer": "llama_model_n_layer",
    "n_layer_nextn": "llama_model_n_layer_nextn",
    "n_head": "llama_model_n_head",
    "n_head_kv": "llama_model_n_head_kv",
    "n_swa": "llama_model_n_swa",
    "n_cls_out": "llama_model_n_cls_out",
    "rope_type": "llama_model_rope_type",
    "size": "llama_model_size",
    "n_params": "llama_model_n_params",
    "has_encoder": "llama_model_has_encoder",
    "has_decoder": "llama_model_has_decoder",
    "decoder_start_token": "llama_model_decoder_start_token",
    "is_recurrent": "llama_model_is_recurrent",
    "is_hybrid": "llama_model_is_hybrid",
    "is_diffusion": "llama_model_is_diffusion",
    "ftype": "llama_model_ftype",
}


def model_int(handle: int, name: str) -> int:
    return int(getattr(ll(), _MODEL_INTS[name])(handle))


def model_rope_freq_scale_train(handle: int) -> float:
    return float(ll().llama_model_rope_freq_scale_train(handle))


def _read_string(fn: Callable[[ctypes.Array[ctypes.c_char], int], int]) -> str:
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = int(fn(buf, size))
        if n < 0:
            return ""
        if n < size:
            return buf.raw[:n].decode("utf-8", "replace")
        size = n + 1


def _by_index(fn: Any, handle: Any, i: int, buf: ctypes.Array[ctypes.c_char], size: int) -> int:
    return int(fn(handle, i, buf, size))


def model_meta(handle: int) -> dict[str, str]:
    raw = ll()
    out: dict[str, str] = {}
    for i in range(int(raw.llama_model_meta_count(handle))):
        key = _read_string(functools.partial(_by_index, raw.llama_model_meta_key_by_index, handle, i))
        out[key] = _read_string(
            functools.partial(_by_index, raw.llama_model_meta_val_str_by_index, handle, i)
        )
    return out


def model_desc(handle: int) -> str:
    return _read_string(lambda b, s: ll().llama_model_desc(handle, b, s))


def model_chat_template(handle: int, name: str | None) -> str | None:
    res = ll().llama_model_chat_template(handle, name.encode() if name else None)
    return res.decode("utf-8", "replace") if res else None


def model_cls_label(handle: int, i: int) -> str | None:
    res = ll().llama_model_cls_label(handle, i)
    return res.decode("utf-8", "replace") if res else None


def ftype_name(ftype: int) -> str:
    res = ll().llama_ftype_name(ftype)
    return res.decode() if res else str(ftype)


# ---------------------------------------------------------------- vocabulary

_VOCAB_INTS = {
    "n_tokens": "llama_vocab_n_tokens",
    "type": "llama_vocab_type",
    "bos": "llama_vocab_bos",
    "eos": "llama_vocab_eos",
    "eot": "llama_vocab_eot",
    "sep": "llama_vocab_sep",
    "nl": "llama_vocab_nl",
    "pad": "llama_vocab_pad",
    "mask": "llama_vocab_mask",
    "cls": "llama_vocab_cls",
    "fim_pre": "llama_vocab_fim_pre",
    "fim_suf": "llama_vocab_fim_suf",
    "fim_mid": "llama_vocab_fim_mid",
    "fim_pad": "llama_vocab_fim_pad",
    "fim_rep": "llama_vocab_fim_rep",
    "fim_sep": "llama_vocab_fim_sep",
    "add_bos": "llama_vocab_get_add_bos",
    "add_eos": "llama_vocab_get_add_eos",
    "add_sep": "llama_vocab_get_add_sep",
}


def vocab_int(vocab: int, name: str) -> int:
    return int(getattr(ll(), _VOCAB_INTS[name])(vocab))


def vocab_is_eog(vocab: int, token: int) -> bool:
    return bool(ll().llama_vocab_is_eog(vocab, token))


def vocab_is_control(vocab: int, token: int) -> bool:
    return bool(ll().llama_vocab_is_control(vocab, token))


def vocab_token_text(vocab: int, token: int) -> str:
    res = ll().llama_vocab_get_text(vocab, token)
    return res.decode("utf-8", "replace") if res else ""


def vocab_token_score(vocab: int, token: int) -> float:
    return float(ll().llama_vocab_get_score(vocab, token))


def vocab_token_attr(vocab: int, token: int) -> int:
    return int(ll().llama_vocab_get_attr(vocab, token))


def tokenize(vocab: int, text: bytes, add_special: bool, parse_special: bool) -> list[int] | None:
    """Tokenize UTF-8 bytes; None on failure (overflow)."""
    raw = ll()
    cap = len(text) + 8
    while True:
        buf = (ctypes.c_int32 * cap)()
        n = int(raw.llama_tokenize(vocab, text, len(text), buf, cap, add_special, parse_special))
        if n >= 0:
            return list(buf[:n])
        if n == -(2**31):
            return None
        cap = -n


def token_to_piece(vocab: int, token: int, special: bool, lstrip: int = 0) -> bytes:
    """The bytes of one token (may be a partial UTF-8 sequence)."""
    raw = ll()
    buf = ctypes.create_string_buffer(64)
    n = int(raw.llama_token_to_piece(vocab, token, buf, 64, lstrip, special))
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = int(raw.llama_token_to_piece(vocab, token, buf, -n, lstrip, special))
    return buf.raw[: max(n, 0)]


def detokenize(vocab: int, tokens: Sequence[int], remove_special: bool, unparse_special: bool) -> bytes:
    raw = ll()
    arr = (ctypes.c_int32 * max(len(tokens), 1))(*tokens)
    cap = max(len(tokens) * 8, 64)
    while True:
        buf = ctypes.create_string_buffer(cap)
        n = int(raw.llama_detokenize(vocab, arr, len(tokens), buf, cap, remove_special, unparse_special))
        if n >= 0:
            return buf.raw[:n]
        cap = -n
