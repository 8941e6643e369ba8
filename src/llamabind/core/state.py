"""Saving and restoring context state (whole context or one sequence): ``ctx.state``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._native import context as nctx
from ..errors import StateError

if TYPE_CHECKING:
    from .context import Context

__all__ = ["State"]


class State:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def to_bytes(self) -> bytes:
        """The whole context state (the KV cache) as bytes.

        This llama.cpp revision stores no logits in the state: after loading, decode the last token
        again (with logits) before sampling.
        """
        return bytes(self._ctx._call(nctx.state_get))

    def from_bytes(self, data: bytes) -> None:
        if not data:
            raise StateError("empty state")
        read = int(self._ctx._call(nctx.state_set, data))
        if read == 0:
            raise StateError("llama.cpp rejected the state data (different model or context size?)")

    def seq_to_bytes(self, seq: int) -> bytes:
        return bytes(self._ctx._call(nctx.state_seq_get, seq))

    def seq_from_bytes(self, data: bytes, seq: int) -> None:
        if not data:
            raise StateError("empty sequence state")
        if int(self._ctx._call(nctx.state_seq_set, data, seq)) == 0:
            raise StateError(f"llama.cpp could not restore the sequence state into sequence {seq}")

    def save(self, path: str | os.PathLike[str], tokens: Sequence[int] = ()) -> None:
        """Write the whole state and the token list to a session file."""
        if not self._ctx._call(nctx.state_save_file, str(path), list(tokens)):
            raise StateError(f"could not save state to {path}")

    def load(self, path: str | os.PathLike[str]) -> list[int]:
        """Restore a session file; returns its token list."""
        p = Path(path)
        if not p.is_file():
            raise StateError(f"state file not found: {p}")
        tokens = self._ctx._call(nctx.state_load_file, str(p), self._ctx.n_ctx)
        if tokens is None:
            raise StateError(f"could not load state from {p} (wrong model, context size or corrupt file)")
        return list(tokens)

    def seq_save(self, path: str | os.PathLike[str], seq: int, tokens: Sequence[int] = ()) -> None:
        if int(self._ctx._call(nctx.state_seq_save_file, str(path), seq, list(tokens))) == 0:
            raise StateError(f"could not save sequence {seq} to {path}")

    def seq_load(self, path: str | os.PathLike[str], seq: int) -> list[int]:
        p = Path(path)
        if not p.is_file():
            raise StateError(f"state file not found: {p}")
        tokens = self._ctx._call(nctx.state_seq_load_file, str(p), seq, self._ctx.n_ctx)
        if tokens is None:
            raise StateError(f"could not load sequence state from {p}")
        return list(tokens)
