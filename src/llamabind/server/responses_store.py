"""The bounded in-memory store of past responses behind ``previous_response_id``,
``GET /v1/responses/{id}`` and its ``input_items``: least recently used entries go first once
``max_entries`` is reached. Entries share the item dicts of the conversation they extend, so a
long chain of responses costs one reference per item per entry, not copies of the text."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_MAX_RESPONSES", "ResponseStore", "StoredResponse"]

DEFAULT_MAX_RESPONSES = 512


@dataclass(frozen=True)
class StoredResponse:
    """A finished response: its object, this request's input items, and the whole conversation up
    to and including its output (what a follow-up with ``previous_response_id`` continues)."""

    response: Mapping[str, Any]
    input_items: tuple[Mapping[str, Any], ...]
    conversation: tuple[Mapping[str, Any], ...]


class ResponseStore:
    """A thread-safe LRU map ``id → StoredResponse`` holding at most ``max_entries``."""

    def __init__(self, max_entries: int = DEFAULT_MAX_RESPONSES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(
        self,
        response: Mapping[str, Any],
        input_items: Sequence[Mapping[str, Any]],
        history: Sequence[Mapping[str, Any]],
    ) -> StoredResponse:
        """Store a finished response (``history``: the conversation before this request's input)."""
        output = response.get("output") or []
        entry = StoredResponse(
            response=response,
            input_items=tuple(input_items),
            conversation=(*history, *input_items, *output),
        )
        with self._lock:
            self._entries[str(response["id"])] = entry
            self._entries.move_to_end(str(response["id"]))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def get(self, id: str) -> StoredResponse | None:
        with self._lock:
            entry = self._entries.get(id)
            if entry is not None:
                self._entries.move_to_end(id)
            return entry

    def delete(self, id: str) -> bool:
        with self._lock:
            return self._entries.pop(id, None) is not None
