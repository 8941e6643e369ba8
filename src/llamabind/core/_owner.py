"""One owner per native handle: idempotent close(), context managers, parents outlive children."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from ..errors import ClosedError

__all__ = ["NativeOwner"]


class _Handle:
    """The pointer and how to free it; shared by the owner and its finalizer (never the owner itself)."""

    __slots__ = ("children", "finalizer", "free", "parent", "ptr")

    def __init__(self, ptr: Any, free: Callable[[Any], None], parent: _Handle | None) -> None:
        self.ptr = ptr
        self.free = free
        self.parent = parent
        self.children: set[weakref.finalize[Any, Any]] = set()
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def release(self) -> None:
        # Children first: a parent is never freed under a live child (also at interpreter exit,
        # where weakref.finalize runs finalizers in creation order, parents first).
        for child in list(self.children):
            child()
        self.children.clear()
        ptr, self.ptr = self.ptr, None
        if ptr:
            self.free(ptr)
        if self.parent is not None and self.finalizer is not None:
            self.parent.children.discard(self.finalizer)


class NativeOwner:
    """Base of every object that owns a native handle."""

    _h: _Handle

    def _own(self, ptr: Any, free: Callable[[Any], None], parent: NativeOwner | None = None) -> None:
        h = _Handle(ptr, free, parent._h if parent is not None else None)
        h.finalizer = weakref.finalize(self, h.release)
        if parent is not None:
            parent._h.children.add(h.finalizer)
        self._h = h

    def close(self) -> None:
        """Free the native handle (and those of live children). Safe to call more than once."""
        h = getattr(self, "_h", None)
        if h is not None and h.finalizer is not None:
            h.finalizer()

    @property
    def closed(self) -> bool:
        h = getattr(self, "_h", None)
        return h is None or not h.ptr

    def _ptr(self) -> Any:
        """The native handle (an int address or a ctypes pointer); ClosedError once closed."""
        h = getattr(self, "_h", None)
        if h is None or not h.ptr:
            raise ClosedError(f"{type(self).__name__} is closed")
        return h.ptr

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
