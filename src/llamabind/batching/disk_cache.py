"""Sequence states on disk: the persistent prompt cache (``--cache-disk``) and slot files
(``--slot-save-path``), one file format for both.

A file is ``MAGIC``, a little-endian u32 header length, a JSON header, the token list (int64, so
media keys fit) and llama.cpp's sequence state. The header's ``identity`` names the model file
(name, size, a hash of its first bytes: the GGUF header and metadata) and the state format (the
llama.cpp build and the KV cache types); a file whose identity differs, whose lengths do not add
up or whose checksum fails is ignored (never handed to llama.cpp). Writes go to a temporary file
renamed into place, so a crash leaves no half-written entry.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import queue
import re
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StateError
from .prompt_cache import TokenTrie

__all__ = [
    "DiskEntry",
    "DiskPromptCache",
    "StateFile",
    "model_identity",
    "read_state_file",
    "safe_file_name",
    "write_state_file",
]

log = logging.getLogger("llamabind.batching")

MAGIC = b"LBSEQ01\n"
SUFFIX = ".lbseq"
_HASHED_BYTES = 4 << 20  # the GGUF header and metadata lie in the first few MiB
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


def model_identity(model_path: Path, type_k: str, type_v: str) -> dict[str, Any]:
    """What a saved state must match to be restored into this model's contexts."""
    from ..core.backend import library_info

    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        h.update(f.read(_HASHED_BYTES))
    lib = library_info()
    return {
        "model": model_path.name,
        "model_size": model_path.stat().st_size,
        "model_sha256_head": h.hexdigest(),
        "llama_cpp_python": lib["llama_cpp_python"],
        "ggml_commit": lib["ggml_commit"],
        "type_k": type_k,
        "type_v": type_v,
    }


def safe_file_name(name: object) -> str:
    """``name`` when it is a plain file name (letters, digits, ``._-``; no path, no leading dot)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid file name {name!r}: use letters, digits, '.', '_' and '-' only, no path")
    return name


@dataclass(frozen=True)
class StateFile:
    """A sequence state read back from a file."""

    tokens: list[int]
    data: bytes
    namespace: str


def _checksum(tok_bytes: bytes, data: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(tok_bytes)
    h.update(data)
    return h.hexdigest()


def write_state_file(
    path: Path, identity: dict[str, Any], namespace: str, tokens: Sequence[int], data: bytes
) -> int:
    """Write a state file atomically; its size in bytes."""
    tok_bytes = np.asarray(tokens, dtype="<i8").tobytes()
    header = json.dumps(
        {
            "identity": identity,
            "namespace": namespace,
            "n_tokens": len(tokens),
            "n_data": len(data),
            "checksum": _checksum(tok_bytes, data),
        }
    ).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(header)) + header)
            f.write(tok_bytes)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(MAGIC) + 4 + len(header) + len(tok_bytes) + len(data)


def _read_header(f: Any, path: Path) -> dict[str, Any]:
    head = f.read(len(MAGIC) + 4)
    if len(head) != len(MAGIC) + 4 or not head.startswith(MAGIC):
        raise StateError(f"{path.name} is not a llamabind state file")
    (n,) = struct.unpack("<I", head[len(MAGIC) :])
    if n > 1 << 20:
        raise StateError(f"{path.name}: header too large")
    try:
        header = json.loads(f.read(n))
    except ValueError:
        raise StateError(f"{path.name}: unreadable header") from None
    if not isinstance(header, dict) or not all(
        isinstance(header.get(k), t)
        for k, t in (("identity", dict), ("namespace", str), ("n_tokens", int), ("n_data", int))
    ):
        raise StateError(f"{path.name}: malformed header")
    return header


def _check_identity(header: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    if header["identity"] != identity:
        raise StateError(
            f"{path.name} was saved by another model or llama.cpp build "
            f"({header['identity'].get('model')!r}, {header['identity'].get('ggml_commit')!r})"
        )


def read_tokens(path: Path, identity: dict[str, Any]) -> tuple[list[int], str]:
    """The token list and namespace of a state file (its state is not read)."""
    with open(path, "rb") as f:
        header = _read_header(f, path)
        _check_identity(header, identity, path)
        n = header["n_tokens"]
        raw = f.read(8 * n)
        end = f.tell() + header["n_data"]
    if len(raw) != 8 * n or path.stat().st_size != end:
        raise StateError(f"{path.name} is truncated")
    return np.frombuffer(raw, dtype="<i8").tolist(), header["namespace"]


def read_state_file(path: Path, identity: dict[str, Any]) -> StateFile:
    """Read and verify a whole state file (StateError when it does not fit or is damaged)."""
    with open(path, "rb") as f:
        header = _read_header(f, path)
        _check_identity(header, identity, path)
        tok_bytes = f.read(8 * header["n_tokens"])
        data = f.read(header["n_data"] + 1)
    if len(tok_bytes) != 8 * header["n_tokens"] or len(data) != header["n_data"]:
        raise StateError(f"{path.name} is truncated or has trailing bytes")
    if header.get("checksum") != _checksum(tok_bytes, data):
        raise StateError(f"{path.name} is damaged (checksum mismatch)")
    return StateFile(np.frombuffer(tok_bytes, dtype="<i8").tolist(), data, header["namespace"])


@dataclass(eq=False)
class DiskEntry:
    path: Path
    tokens: tuple[int, ...]
    namespace: str
    nbytes: int


class DiskPromptCache:
    """The persistent prompt cache: a directory of state files, LRU (by last use) under
    ``max_bytes``. Writes run in a background thread; the index is shared under a lock.

    Only files of this model and build count toward the bound; other files in the directory
    (another model's, damaged ones) are left alone and never read as states.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, identity: dict[str, Any]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.identity = identity
        self.used_bytes = 0
        self.evictions = 0
        self.ignored = 0  # files skipped at start-up (another model, damaged)
        self._lock = threading.Lock()
        self._tries: dict[str, TokenTrie[DiskEntry]] = {}
        self._lru: collections.OrderedDict[Path, DiskEntry] = collections.OrderedDict()
        self._scan()
        self._queue: queue.Queue[tuple[str, tuple[int, ...], bytes] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="llamabind-disk-cache", daemon=True)
        self._writer.start()

    def _scan(self) -> None:
        found: list[tuple[float, DiskEntry]] = []
        for p in self.dir.glob("*" + SUFFIX):
            try:
                tokens, ns = read_tokens(p, self.identity)
                st = p.stat()
            except (OSError, StateError, ValueError) as exc:
                self.ignored += 1
                log.info("prompt cache: ignoring %s (%s)", p.name, exc)
                continue
            if tokens:
                found.append((st.st_mtime, DiskEntry(p, tuple(tokens), ns, st.st_size)))
        for _, e in sorted(found, key=lambda x: x[0]):
            self._add(e)
        self._evict(0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def _file_for(self, namespace: str, tokens: Sequence[int]) -> Path:
        h = hashlib.blake2b(digest_size=16)
        h.update(namespace.encode())
        h.update(np.asarray(tokens, dtype="<i8").tobytes())
        return self.dir / (h.hexdigest() + SUFFIX)

    def _add(self, e: DiskEntry) -> None:  # under the lock (or before the writer starts)
        trie = self._tries.setdefault(e.namespace, TokenTrie())
        for old in trie.prefixes(e.tokens):
            if old.path != e.path:
                self._drop(old, delete=True)
        replaced = trie.insert(e.tokens, e)
        if replaced is not None and self._lru.pop(replaced.path, None) is not None:
            self.used_bytes -= replaced.nbytes
        self._lru[e.path] = e
        self.used_bytes += e.nbytes

    def _drop(self, e: DiskEntry, *, delete: bool) -> None:
        if self._lru.pop(e.path, None) is None:
            return
        self.used_bytes -= e.nbytes
        trie = self._tries.get(e.namespace)
        if trie is not None:
            trie.remove(e.tokens)
        if delete:
            e.path.unlink(missing_ok=True)

    def _evict(self, incoming: int) -> None:
        while self._lru and self.used_bytes + incoming > self.max_bytes:
            self._drop(next(iter(self._lru.values())), delete=True)
            self.evictions += 1

    def lookup(self, namespace: str, prompt: Sequence[int]) -> tuple[DiskEntry | None, int]:
        with self._lock:
            trie = self._tries.get(namespace)
            return trie.longest(prompt) if trie is not None else (None, 0)

    def covers(self, namespace: str, tokens: Sequence[int]) -> bool:
        return self.lookup(namespace, tokens)[1] == len(tokens)

    def load(self, entry: DiskEntry) -> StateFile | None:
        """The entry's state, or None (and the entry forgotten) when the file is gone or damaged."""
        try:
            sf = read_state_file(entry.path, self.identity)
            if tuple(sf.tokens) != entry.tokens:
                raise StateError(f"{entry.path.name} changed on disk")
            os.utime(entry.path)
        except (OSError, StateError, ValueError) as exc:
            log.warning("prompt cache: dropping %s (%s)", entry.path.name, exc)
            with self._lock:
                self._drop(entry, delete=isinstance(exc, StateError))
            return None
        with self._lock:
            if entry.path in self._lru:
                self._lru.move_to_end(entry.path)
        return sf

    def put(self, namespace: str, tokens: Sequence[int], data: bytes) -> None:
        """Queue a state for writing (the caller's bytes are not copied: never mutate them)."""
        self._queue.put((namespace, tuple(tokens), data))

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(*item)
            except Exception:
                log.exception("prompt cache: writing a disk entry failed")
            finally:
                self._queue.task_done()

    def _write(self, namespace: str, tokens: tuple[int, ...], data: bytes) -> None:
        path = self._file_for(namespace, tokens)
        with self._lock:
            if self._lru.get(path) is not None:
                self._lru.move_to_end(path)
                return
        size = write_state_file(path, self.identity, namespace, tokens, data)
        with self._lock:
            if size > self.max_bytes:
                path.unlink(missing_ok=True)
                return
            self._evict(size)
            self._add(DiskEntry(path, tokens, namespace, size))

    def flush(self) -> None:
        """Wait until every queued state is written."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
