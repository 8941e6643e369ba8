"""Incremental prefill: the prompt is decoded into the KV cache while the user is still typing.

* :class:`IncrementalPrefill` — ``update(text)`` as the text changes (the last 2 tokens, which
  BPE may still merge with the next keystroke, are withheld; an edit trims the cache from the
  first changed token), then ``flush(text)`` / ``stream(text)`` decode only what is left.
* :class:`IncrementalChat` — a conversation built on it: the system prompt decoded once (and
  cached on disk), history kept in the cache with sliding-window eviction of the oldest turns.
"""

from __future__ import annotations

from .prefill import IncrementalPrefill, PrefillStats
from .session import ChatTurnFormat, IncrementalChat, Turn

__all__ = ["ChatTurnFormat", "IncrementalChat", "IncrementalPrefill", "PrefillStats", "Turn"]
