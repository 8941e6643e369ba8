"""Raw sampler calls: every llama.cpp sampler constructor, chains, sampling, accept, perf."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .lib import ll

__all__ = ["TOKEN_DATA_DTYPE", "sampler_init"]

#: numpy mirror of ``llama_token_data`` {int32 id; float logit; float p}
TOKEN_DATA_DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


def _h(x: Any) -> Any:
    """Sampler handles are ``POINTER(llama_sampler)`` objects (opaque to the core); None when NULL."""
    return x if x else None


def _cstrings(items: Sequence[str]) -> Any:
    return (ctypes.c_char_p * max(len(items), 1))(*[s.encode() for s in items])


def sampler_init(kind: str, *args: Any) -> Any:
    """Create one sampler. ``kind`` is the suffix of ``llama_sampler_init_<kind>``."""
    raw = ll()
    if kind == "dry":
        vocab, mult, base, allowed, last_n, breakers = args
        arr = _cstrings(breakers)
        return _h(raw.llama_sampler_init_dry(vocab, mult, base, allowed, last_n, arr, len(breakers)))
    if kind == "grammar_lazy_patterns":
        vocab, text, root, patterns, tokens = args
        pat = _cstrings(patterns)
        tok = (ctypes.c_int32 * max(len(tokens), 1))(*tokens)
        return _h(
            raw.llama_sampler_init_grammar_lazy_patterns(
                vocab, text.encode(), root.encode(), pat, len(patterns), tok, len(tokens)
            )
        )
    if kind == "grammar":
        vocab, text, root = args
        return _h(raw.llama_sampler_init_grammar(vocab, text.encode(), root.encode()))
    if kind == "logit_bias":
        n_vocab, biases = args
        arr = (raw.llama_logit_bias * max(len(biases), 1))()
        for i, (tok, bias) in enumerate(biases):
            arr[i].token = tok
            arr[i].bias = bias
        return _h(raw.llama_sampler_init_logit_bias(n_vocab, len(biases), arr))
    fn = getattr(raw, f"llama_sampler_init_{kind}")
    return _h(fn(*args))


def chain_init(no_perf: bool) -> Any:
    raw = ll()
    p = raw.llama_sampler_chain_default_params()
    p.no_perf = no_perf
    return raw.llama_sampler_chain_init(p)


def chain_add(chain: Any, smpl: Any) -> None:
    ll().llama_sampler_chain_add(chain, smpl)


def chain_n(chain: Any) -> int:
    return int(ll().llama_sampler_chain_n(chain))


def chain_get(chain: Any, i: int) -> Any:
    return _h(ll().llama_sampler_chain_get(chain, i))


def chain_remove(chain: Any, i: int) -> Any:
    return _h(ll().llama_sampler_chain_remove(chain, i))


def sampler_free(smpl: Any) -> None:
    ll().llama_sampler_free(smpl)


def sampler_name(smpl: Any) -> str:
    res = ll().llama_sampler_name(smpl)
    return res.decode() if res else ""


def sampler_sample(smpl: Any, ctx: int, idx: int) -> int:
    return int(ll().llama_sampler_sample(smpl, ctx, idx))


def has_logits(ctx: int, idx: int) -> bool:
    """Whether output ``idx`` of the last decode has logits (llama_sampler_sample asserts otherwise)."""
    return bool(ll().llama_get_logits_ith(ctx, idx))


def sampler_accept(smpl: Any, token: int) -> None:
    ll().llama_sampler_accept(smpl, token)


def sampler_reset(smpl: Any) -> None:
    ll().llama_sampler_reset(smpl)


def sampler_clone(smpl: Any) -> Any:
    return _h(ll().llama_sampler_clone(smpl))


def sampler_get_seed(smpl: Any) -> int:
    return int(ll().llama_sampler_get_seed(smpl))


def sampler_apply(smpl: Any, data: npt.NDArray[Any]) -> tuple[int, bool, int]:
    """Apply a sampler to a TOKEN_DATA_DTYPE array in place. Returns (size, sorted, selected)."""
    raw = ll()
    arr = raw.llama_token_data_array()
    arr.data = ctypes.cast(data.ctypes.data, raw.llama_token_data_p)
    arr.size = data.shape[0]
    arr.selected = -1
    arr.sorted = False
    raw.llama_sampler_apply(smpl, ctypes.byref(arr))
    return int(arr.size), bool(arr.sorted), int(arr.selected)


def perf_sampler(chain: Any) -> tuple[float, int]:
    d = ll().llama_perf_sampler(chain)
    return float(d.t_sample_ms), int(d.n_sample)


def perf_sampler_reset(chain: Any) -> None:
    ll().llama_perf_sampler_reset(chain)


class Candidates:
    """A reusable ``llama_token_data_array`` over n_vocab entries (one per sampler chain), for
    sampling paths that apply a chain's samplers one by one instead of ``llama_sampler_sample``."""

    def __init__(self, n_vocab: int) -> None:
        raw = ll()
        self.n_vocab = n_vocab
        self.template = np.zeros(n_vocab, dtype=TOKEN_DATA_DTYPE)
        self.template["id"] = np.arange(n_vocab, dtype=np.int32)
        self.data = self.template.copy()
        self.arr = raw.llama_token_data_array()
        self._ref = ctypes.byref(self.arr)
        self._ptr = ctypes.cast(self.data.ctypes.data, raw.llama_token_data_p)
        self.one = np.zeros(1, dtype=TOKEN_DATA_DTYPE)
        self.one_arr = raw.llama_token_data_array()
        self.one_arr.data = ctypes.cast(self.one.ctypes.data, raw.llama_token_data_p)
        self._one_ref = ctypes.byref(self.one_arr)

    def fill(self, logits: npt.NDArray[np.float32]) -> None:
        """Every token with its logit, unsorted, nothing selected (as ``llama_sampler_sample`` starts)."""
        np.copyto(self.data, self.template)
        self.data["logit"] = logits
        arr = self.arr
        arr.data = self._ptr
        arr.size = self.n_vocab
        arr.selected = -1
        arr.sorted = False

    def apply(self, smpl: Any) -> None:
        ll().llama_sampler_apply(smpl, self._ref)

    def selected(self) -> int:
        """The selected token id, or -1 when nothing was selected."""
        arr = self.arr
        if not 0 <= arr.selected < arr.size:
            return -1
        return int(arr.data[arr.selected].id)

    def selected_logit(self) -> float:
        """The logit of the selected token after the chain (-inf when nothing was allowed)."""
        arr = self.arr
        if not 0 <= arr.selected < arr.size:
            return float("-inf")
        return float(arr.data[arr.selected].logit)

    def allows(self, smpl: Any, token: int) -> bool:
        """Whether ``smpl`` (a grammar) leaves ``token`` possible: it is applied to that one token."""
        one = self.one
        one["id"][0] = token
        one["logit"][0] = 1.0
        one["p"][0] = 0.0
        self.one_arr.size = 1
        self.one_arr.selected = -1
        self.one_arr.sorted = False
        ll().llama_sampler_apply(smpl, self._one_ref)
        return bool(np.isfinite(one["logit"][0]))
