"""LoRA adapters and control vectors."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._native import context as nctx
from ..errors import LoraError
from ._owner import NativeOwner
from .model import Model

__all__ = ["LoraAdapter", "load_control_vector"]


class LoraAdapter(NativeOwner):
    """A LoRA adapter loaded for one model; apply it with ``Context.set_loras([(adapter, scale)])``."""

    def __init__(self, model: Model, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if not p.is_file():
            raise LoraError(f"LoRA adapter file not found: {p}")
        handle = nctx.lora_init(model._ptr(), str(p))
        if not handle:
            raise LoraError(f"llama.cpp could not load LoRA adapter {p} for {model.path.name}")
        self.model = model
        self.path = p
        #: contexts this adapter is applied to (llama.cpp keeps raw pointers to it there)
        self._applied: weakref.WeakSet[Any] = weakref.WeakSet()
        self._own(handle, nctx.lora_free, parent=model)

    def close(self) -> None:
        """Detach the adapter from every context it is applied to, then free it.

        (Freeing it while a context still points at it would make the next decode crash.)
        """
        for ctx in list(getattr(self, "_applied", ())):
            if not ctx.closed:
                ctx.set_loras([(a, s) for a, s in ctx._loras if a is not self])
        super().close()

    @property
    def metadata(self) -> dict[str, str]:
        return nctx.lora_meta(self._ptr())


def load_control_vector(path: str | os.PathLike[str], n_layer: int, n_embd: int) -> npt.NDArray[np.float32]:
    """Read a control-vector GGUF (tensors ``direction.<layer>``) into an (n_layer, n_embd) array."""
    import gguf

    p = Path(path)
    if not p.is_file():
        raise LoraError(f"control vector file not found: {p}")
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as exc:
        raise LoraError(f"not a readable GGUF control vector: {p}: {exc}") from exc
    out = np.zeros((n_layer, n_embd), dtype=np.float32)
    found = 0
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            continue
        layer = int(t.name.split(".", 1)[1])
        data = np.asarray(t.data, dtype=np.float32).ravel()
        if data.size != n_embd:
            raise LoraError(f"{p}: {t.name} has {data.size} values, model n_embd is {n_embd}")
        if 1 <= layer <= n_layer:
            out[layer - 1] = data
            found += 1
    if not found:
        raise LoraError(f"{p}: no direction.N tensors")
    return out
