"""KV cache (llama_memory) operations per sequence: ``ctx.memory``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._native import context as nctx

if TYPE_CHECKING:
    from .context import Context

__all__ = ["Memory"]


class Memory:
    """Positions are half-open ranges [p0, p1); -1 means "from the start" / "to the end"."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def _seq(self, seq: int, *, allow_all: bool = False) -> None:
        # llama.cpp asserts (aborts the process) on an id outside [0, n_seq_max); only seq_rm takes -1
        if not (-1 if allow_all else 0) <= seq < self._ctx.n_seq_max:
            raise ValueError(f"sequence id {seq} out of range [0, {self._ctx.n_seq_max})")

    def clear(self, data: bool = True) -> None:
        """Remove everything from the KV cache (``data`` also zeroes the buffers)."""
        self._ctx._call(nctx.memory_clear, data)

    def remove(self, seq: int = -1, p0: int = -1, p1: int = -1) -> bool:
        """Remove tokens of ``seq`` (-1: all sequences) in [p0, p1). False if a partial removal is impossible."""
        self._seq(seq, allow_all=True)
        return bool(self._ctx._call(nctx.memory_seq_rm, seq, p0, p1))

    def copy(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Make tokens of ``src`` in [p0, p1) also belong to ``dst`` (no data copy)."""
        self._seq(src)
        self._seq(dst)
        self._ctx._call(nctx.memory_seq_cp, src, dst, p0, p1)

    def keep(self, seq: int) -> None:
        """Remove every sequence but ``seq``."""
        self._seq(seq)
        self._ctx._call(nctx.memory_seq_keep, seq)
        # without a unified KV cache each sequence has its own stream and llama.cpp's seq_keep only
        # clears the stream of ``seq``: remove the other sequences explicitly
        for other in range(self._ctx.n_seq_max):
            if other != seq:
                self._ctx._call(nctx.memory_seq_rm, other, -1, -1)

    def shift(self, seq: int, p0: int, p1: int, delta: int) -> None:
        """Add ``delta`` to the positions of ``seq`` in [p0, p1) (context shifting)."""
        self._seq(seq)
        if not self.can_shift:
            from ..errors import UnsupportedError

            raise UnsupportedError("this model's memory cannot shift positions")
        self._ctx._call(nctx.memory_seq_add, seq, p0, p1, delta)

    def divide(self, seq: int, p0: int, p1: int, d: int) -> None:
        """Integer-divide the positions of ``seq`` in [p0, p1) by ``d`` (self-extend)."""
        self._seq(seq)
        if d <= 0:
            raise ValueError("divisor must be positive")
        self._ctx._call(nctx.memory_seq_div, seq, p0, p1, d)

    def pos_min(self, seq: int) -> int:
        """Smallest position of ``seq`` in the cache, -1 if empty."""
        self._seq(seq)
        return int(self._ctx._call(nctx.memory_seq_pos_min, seq))

    def pos_max(self, seq: int) -> int:
        """Largest position of ``seq`` in the cache, -1 if empty."""
        self._seq(seq)
        return int(self._ctx._call(nctx.memory_seq_pos_max, seq))

    @property
    def can_shift(self) -> bool:
        return bool(self._ctx._call(nctx.memory_can_shift))
