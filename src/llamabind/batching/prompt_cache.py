"""The host-memory prompt cache: sequence states of conversations that lost their slot.

Before a slot's KV cache is overwritten by another conversation, the scheduler saves that
sequence's state (``llama_state_seq_get_data``) here together with its token list; a request
whose prompt starts with a cached token list gets that state restored into its slot and decodes
only the rest. Entries are found through a radix tree over their token lists (the longest cached
prefix of a prompt costs one walk down the tree, not a scan of the entries) and evicted least
recently used first under a byte budget that is never exceeded.

Token lists are the scheduler's cache keys: text token ids, and negative keys derived from the
content hash for the positions of an image / audio chunk (``multimodal.media_keys``), so media are
part of the key. Adapters are too: every entry lives under a *namespace* (the LoRA adapters and
scales of the context when it was saved), and a lookup only sees its own namespace.
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["DEFAULT_CACHE_RAM_BYTES", "CacheEntry", "HostPromptCache", "TokenTrie", "default_cache_ram_bytes"]

V = TypeVar("V")

#: llama-server's default ``--cache-ram`` (8192 MiB)
DEFAULT_CACHE_RAM_BYTES = 8192 << 20


def default_cache_ram_bytes() -> int:
    """8192 MiB like llama-server, but never more than half the memory available now."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return min(DEFAULT_CACHE_RAM_BYTES, int(line.split()[1]) * 1024 // 2)
    except (OSError, ValueError, IndexError):
        pass
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_CACHE_RAM_BYTES
    return min(DEFAULT_CACHE_RAM_BYTES, avail // 2)


class _Node(Generic[V]):
    __slots__ = ("children", "count", "label", "parent", "value")

    def __init__(self, label: tuple[int, ...], parent: _Node[V] | None) -> None:
        self.label = label  # the tokens on the edge from the parent
        self.parent = parent
        self.children: dict[int, _Node[V]] = {}
        self.value: V | None = None  # the value whose key ends here
        self.count = 0  # values in this subtree (this node included)


def _common(a: Sequence[int], b: Sequence[int], start: int) -> int:
    """How many of ``a`` equal ``b[start:]``, from the start."""
    n = min(len(a), len(b) - start)
    i = 0
    while i < n and a[i] == b[start + i]:
        i += 1
    return i


class TokenTrie(Generic[V]):
    """A radix tree from token lists to values; edges hold runs of tokens, so it has at most about
    two nodes per key whatever the keys' lengths."""

    def __init__(self) -> None:
        self.root: _Node[V] = _Node((), None)

    def __len__(self) -> int:
        return self.root.count

    def _walk(self, key: Sequence[int]) -> tuple[_Node[V], int, int]:
        """(deepest node reached, tokens of ``key`` matched, tokens matched on that node's edge)."""
        node, depth = self.root, 0
        while depth < len(key):
            child = node.children.get(key[depth])
            if child is None:
                return node, depth, len(node.label)
            m = _common(child.label, key, depth)
            depth += m
            node = child
            if m < len(child.label):
                return node, depth, m
        return node, depth, len(node.label)

    def longest(self, key: Sequence[int]) -> tuple[V | None, int]:
        """A value whose key shares the longest prefix with ``key`` (the shortest such key), and
        the length of that prefix; (None, 0) when nothing shares a token."""
        node, depth, _ = self._walk(key)
        if depth == 0 or node.count == 0:
            return None, 0
        while node.value is None:  # a value below: every key under here shares `depth` tokens
            node = next(c for c in node.children.values() if c.count > 0)
        return node.value, depth

    def get(self, key: Sequence[int]) -> V | None:
        node, depth, on_edge = self._walk(key)
        if depth == len(key) and on_edge == len(node.label):
            return node.value
        return None

    def prefixes(self, key: Sequence[int]) -> list[V]:
        """The values whose keys are prefixes of ``key`` (``key`` itself included)."""
        out: list[V] = []
        node, depth = self.root, 0
        while True:
            if node.value is not None:
                out.append(node.value)
            if depth >= len(key):
                return out
            child = node.children.get(key[depth])
            if child is None or _common(child.label, key, depth) < len(child.label):
                return out
            depth += len(child.label)
            node = child

    def insert(self, key: Sequence[int], value: V) -> V | None:
        """Store ``value`` under ``key`` (non-empty); returns the value it replaced."""
        if not key:
            raise ValueError("empty key")
        node, depth, on_edge = self._walk(key)
        if on_edge < len(node.label):  # split the edge: a new node where the keys part
            mid = _Node[V](node.label[:on_edge], node.parent)
            assert node.parent is not None
            node.parent.children[mid.label[0]] = mid
            node.label = node.label[on_edge:]
            node.parent = mid
            mid.children[node.label[0]] = node
            mid.count = node.count
            node = mid
        if depth < len(key):
            leaf = _Node[V](tuple(key[depth:]), node)
            node.children[leaf.label[0]] = leaf
            node = leaf
        old = node.value
        node.value = value
        if old is None:
            n: _Node[V] | None = node
            while n is not None:
                n.count += 1
                n = n.parent
        return old

    def remove(self, key: Sequence[int]) -> V | None:
        node, depth, on_edge = self._walk(key)
        if depth != len(key) or on_edge != len(node.label) or node.value is None:
            return None
        old, node.value = node.value, None
        n: _Node[V] | None = node
        while n is not None:
            n.count -= 1
            n = n.parent
        # prune empty leaves, then merge a value-less node with its only child
        while node.parent is not None and node.count == 0:
            del node.parent.children[node.label[0]]
            node = node.parent
        if node.parent is not None and node.value is None and len(node.children) == 1:
            (child,) = node.children.values()
            child.label = node.label + child.label
            child.parent = node.parent
            node.parent.children[child.label[0]] = child
        return old


_entry_ids = itertools.count(1)


@dataclass(eq=False)
class CacheEntry:
    """One saved sequence: its cache keys, its llama.cpp sequence state, and its namespace."""

    tokens: tuple[int, ...]
    data: bytes
    namespace: str = ""
    id: int = field(default_factory=lambda: next(_entry_ids))

    @property
    def nbytes(self) -> int:
        return len(self.data)


class HostPromptCache:
    """Sequence states in host memory: LRU under ``max_bytes`` (the states' bytes never exceed it)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.evictions = 0
        self._tries: dict[str, TokenTrie[CacheEntry]] = {}
        self._lru: collections.OrderedDict[int, CacheEntry] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def entries(self) -> list[CacheEntry]:
        """Least recently used first."""
        return list(self._lru.values())

    def lookup(self, namespace: str, prompt: Sequence[int]) -> tuple[CacheEntry | None, int]:
        """The entry sharing the longest prefix with ``prompt`` and that prefix's length."""
        trie = self._tries.get(namespace)
        if trie is None:
            return None, 0
        return trie.longest(prompt)

    def covers(self, namespace: str, tokens: Sequence[int]) -> bool:
        """Whether an entry already holds ``tokens`` (or a continuation of them)."""
        _, n = self.lookup(namespace, tokens)
        return n == len(tokens)

    def touch(self, entry: CacheEntry) -> None:
        if entry.id in self._lru:
            self._lru.move_to_end(entry.id)

    def put(self, namespace: str, tokens: Sequence[int], data: bytes) -> CacheEntry | None:
        """Store a state; entries whose tokens are a prefix of ``tokens`` go (this one holds them).
        None when the state alone is larger than the budget."""
        if not tokens or len(data) > self.max_bytes:
            return None
        entry = CacheEntry(tuple(tokens), data, namespace)
        trie = self._tries.get(namespace)
        for old in trie.prefixes(entry.tokens) if trie is not None else ():
            self.remove(old)
        while self._lru and self.used_bytes + entry.nbytes > self.max_bytes:
            self.remove(next(iter(self._lru.values())))
            self.evictions += 1
        self._tries.setdefault(namespace, TokenTrie()).insert(entry.tokens, entry)
        self._lru[entry.id] = entry
        self.used_bytes += entry.nbytes
        return entry

    def remove(self, entry: CacheEntry) -> None:
        if self._lru.pop(entry.id, None) is None:
            return
        self.used_bytes -= entry.nbytes
        trie = self._tries.get(entry.namespace)
        if trie is not None:
            trie.remove(entry.tokens)
            if not len(trie):
                del self._tries[entry.namespace]

    def clear(self) -> None:
        self._tries.clear()
        self._lru.clear()
        self.used_bytes = 0
