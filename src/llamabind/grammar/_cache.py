"""A small thread-safe LRU of compiled schemas, keyed by the schema's JSON text and the options.

The key keeps the schema's member order (properties are generated in schema order, so two
schemas that differ only in order compile differently). Schemas that are not plain JSON (a key
that is not a string, a tuple, a value ``json`` cannot write: whatever does not come back equal
from a JSON round trip) and schemas or grammars over `MAX_ENTRY_CHARS` are not cached;
`MAX_ENTRIES` bounds the rest."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamabind.grammar.grammar import Grammar

__all__ = ["MAX_ENTRIES", "MAX_ENTRY_CHARS", "SchemaCache"]

MAX_ENTRIES = 128
MAX_ENTRY_CHARS = 256 * 1024

Entry = tuple[tuple[str, ...], "Grammar"]  # relaxed keywords, the checked grammar


class SchemaCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, tuple[Any, ...]], Entry] = OrderedDict()

    @staticmethod
    def key(schema: Any, options: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]] | None:
        try:
            text = json.dumps(schema, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            if len(text) > MAX_ENTRY_CHARS or json.loads(text) != schema:
                return None  # json.dumps writes the key 1 as "1", a tuple as a list: not the same schema
        except (TypeError, ValueError, RecursionError):
            return None
        return text, options

    def get(self, key: tuple[str, tuple[Any, ...]]) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[str, tuple[Any, ...]], entry: Entry) -> None:
        if len(entry[1].text) > MAX_ENTRY_CHARS:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
