"""`PromptStore`: the scheduler's slots backed by a host-memory and an on-disk prompt cache, and
the slot files of ``POST /slots/{id}?action=save|restore|erase``.

Runs in the engine thread only (it calls llama.cpp on the scheduler's context). The slots'
choice and prefix sharing stay in :mod:`.slots`; this module decides what to save before a slot
is overwritten and restores the longest cached prefix of a prompt into a slot.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import Context, Model
from ..errors import LlamabindError, SlotActionError, StateError
from .config import SchedulerConfig, SchedulerStats
from .disk_cache import (
    DiskEntry,
    DiskPromptCache,
    model_identity,
    read_state_file,
    safe_file_name,
    write_state_file,
)
from .prompt_cache import CacheEntry, HostPromptCache, default_cache_ram_bytes

if TYPE_CHECKING:
    from .slots import Slot

__all__ = ["CacheHit", "PromptStore"]

log = logging.getLogger("llamabind.batching")

SLOT_ACTIONS = ("save", "restore", "erase")


@dataclass(frozen=True)
class CacheHit:
    """A cached state whose token list shares ``n`` tokens with a prompt."""

    entry: CacheEntry | DiskEntry
    n: int

    @property
    def tokens(self) -> tuple[int, ...]:
        return self.entry.tokens


class PromptStore:
    """Host-memory (``cache_ram_bytes``) and disk (``cache_disk_dir``) prompt caches over one
    context's sequences, plus slot files (``slot_save_path``)."""

    def __init__(self, model: Model, ctx: Context, config: SchedulerConfig, stats: SchedulerStats) -> None:
        self.model = model
        self.ctx = ctx
        self.stats = stats
        self.min_tokens = max(1, config.prompt_cache_min)
        ram = default_cache_ram_bytes() if config.cache_ram_bytes is None else config.cache_ram_bytes
        self.ram = HostPromptCache(ram) if ram > 0 else None
        self._identity: dict[str, Any] | None = None
        self._ns: str | None = None  # the namespace the slots' KV was computed under
        self._type_kv = (config.type_k, config.type_v)
        self.disk: DiskPromptCache | None = None
        if config.cache_disk_dir:
            self.disk = DiskPromptCache(config.cache_disk_dir, config.cache_disk_max_bytes, self.identity)
        self.slot_dir = Path(config.slot_save_path) if config.slot_save_path else None
        if self.slot_dir is not None:
            self.slot_dir.mkdir(parents=True, exist_ok=True)
        self.sync_stats()

    @property
    def enabled(self) -> bool:
        return self.ram is not None or self.disk is not None

    @property
    def identity(self) -> dict[str, Any]:
        """The model file and state format a saved state must match (computed once)."""
        if self._identity is None:
            self._identity = model_identity(self.model.path, *self._type_kv)
        return self._identity

    @property
    def namespace(self) -> str:
        """The adapters applied to the context: states saved under other adapters never match."""
        return json.dumps([[str(a.path), s] for a, s in self.ctx.loras]) if self.ctx.loras else ""

    def sync_stats(self) -> None:
        st = self.stats
        if self.ram is not None:
            st.prompt_cache_bytes = self.ram.used_bytes
            st.prompt_cache_entries = len(self.ram)
            st.prompt_cache_evictions_total = self.ram.evictions
        if self.disk is not None:
            st.prompt_cache_disk_bytes = self.disk.used_bytes
            st.prompt_cache_disk_entries = len(self.disk)
            st.prompt_cache_disk_evictions_total = self.disk.evictions

    # ------------------------------------------------------------ the prompt cache
    def lookup(self, prompt: list[int]) -> CacheHit | None:
        """The cached state sharing the longest prefix with ``prompt`` (host memory first on ties)."""
        if not self.enabled:
            return None
        self.sync_stats()  # the disk cache's writer may have changed it
        ns = self.namespace
        best: CacheHit | None = None
        if self.ram is not None:
            entry, n = self.ram.lookup(ns, prompt)
            if entry is not None:
                best = CacheHit(entry, n)
        if self.disk is not None:
            dentry, n = self.disk.lookup(ns, prompt)
            if dentry is not None and (best is None or n > best.n):
                best = CacheHit(dentry, n)
        return best

    def sync_namespace(self, slots: list[Slot]) -> None:
        """When the context's adapters changed, the idle slots' KV was computed under the old ones:
        save it under the old namespace and empty the slots (nothing is reused across adapters)."""
        ns = self.namespace
        if self._ns is None or ns == self._ns:
            self._ns = ns
            return
        old, self._ns = self._ns, ns
        for s in slots:
            if s.state == "idle" and s.cached:  # (a slot being claimed is still idle)
                self.save(s, 0, namespace=old)
                self.ctx.memory.remove(s.id, -1, -1)
                s.cached = []
                if s.drafter is not None:
                    s.drafter.reset()

    def save(self, slot: Slot, keep: int, *, namespace: str | None = None) -> None:
        """``slot``'s KV is about to shrink to ``keep`` tokens: keep its state in the caches first
        (unless what goes is too small to be worth it or a cache already holds it)."""
        tokens = slot.cached
        if not self.enabled or len(tokens) - keep < self.min_tokens or len(tokens) < self.min_tokens:
            return
        ns = self.namespace if namespace is None else namespace
        to_ram = self.ram is not None and not self.ram.covers(ns, tokens)
        to_disk = self.disk is not None and not self.disk.covers(ns, tokens)
        if not (to_ram or to_disk):
            return
        try:
            data = self.ctx.state.seq_to_bytes(slot.id)
        except LlamabindError as exc:
            log.warning("prompt cache: could not read slot %d's state: %s", slot.id, exc)
            return
        if not data:
            return
        if to_ram and self.ram is not None and self.ram.put(ns, tokens, data) is not None:
            self.stats.prompt_cache_saved_total += 1
        if to_disk and self.disk is not None:
            self.disk.put(ns, tokens, data)
        self.sync_stats()

    def restore(self, hit: CacheHit, slot: Slot, n: int) -> int:
        """Load ``hit``'s state into ``slot`` (its KV is replaced) and keep its first ``n`` tokens;
        the tokens kept (0 when the state could not be restored: the slot is then empty)."""
        entry = hit.entry
        t0 = time.perf_counter()
        if isinstance(entry, DiskEntry):
            assert self.disk is not None
            sf = self.disk.load(entry)
            data = sf.data if sf is not None else b""
        else:
            data = entry.data
            assert self.ram is not None
            self.ram.touch(entry)
        mem = self.ctx.memory
        mem.remove(slot.id, -1, -1)
        slot.cached = []
        if not data:
            self.stats.prompt_cache_misses_total += 1
            return 0
        try:
            self.ctx.state.seq_from_bytes(data, slot.id)
            if n < len(entry.tokens) and not mem.remove(slot.id, n, -1):
                raise StateError("the restored sequence cannot be shortened")
        except LlamabindError as exc:
            log.warning("prompt cache: restoring into slot %d failed: %s", slot.id, exc)
            mem.remove(slot.id, -1, -1)
            if isinstance(entry, CacheEntry) and self.ram is not None:
                self.ram.remove(entry)
            self.stats.prompt_cache_misses_total += 1
            self.sync_stats()
            return 0
        slot.cached = list(entry.tokens[:n])
        st = self.stats
        st.prompt_cache_hits_total += 1
        st.prompt_cache_disk_hits_total += isinstance(entry, DiskEntry)
        st.prompt_cache_restored_tokens_total += n
        st.prompt_cache_restore_seconds_total += time.perf_counter() - t0
        self.sync_stats()
        return n

    def close(self, slots: list[Slot]) -> None:
        """At shutdown: write the slots' states to the disk cache (a restart finds them), then wait
        for the writes."""
        if self.disk is None:
            return
        ns = self.namespace
        for s in slots:
            if len(s.cached) >= self.min_tokens and not self.disk.covers(ns, s.cached):
                try:
                    self.disk.put(ns, s.cached, self.ctx.state.seq_to_bytes(s.id))
                except LlamabindError as exc:
                    log.warning("prompt cache: could not save slot %d at shutdown: %s", s.id, exc)
        self.disk.close()
        self.sync_stats()

    # ----------------------------------------------------------------- slot files
    def slot_action(self, slot: Slot, action: str, filename: str | None) -> dict[str, Any]:
        """``save`` / ``restore`` a slot to / from a file in ``slot_save_path``, or ``erase`` it."""
        if action not in SLOT_ACTIONS:
            raise SlotActionError(f"unknown slot action {action!r} (save, restore or erase)", status=400)
        if slot.req is not None:
            raise SlotActionError(f"slot {slot.id} is processing a request", status=409)
        if action == "erase":
            n = len(slot.cached)
            self.ctx.memory.remove(slot.id, -1, -1)
            slot.cached = []
            if slot.drafter is not None:
                slot.drafter.reset()
            return {"id_slot": slot.id, "n_erased": n}
        if self.slot_dir is None:
            raise SlotActionError("slot save/restore needs --slot-save-path", status=501)
        try:
            name = safe_file_name(filename)
        except ValueError as exc:
            raise SlotActionError(str(exc), status=400) from None
        path = self.slot_dir / name
        t0 = time.perf_counter()
        if action == "save":
            data = self.ctx.state.seq_to_bytes(slot.id) if slot.cached else b""
            size = write_state_file(path, self.identity, self.namespace, slot.cached, data)
            ms = (time.perf_counter() - t0) * 1000
            return {
                "id_slot": slot.id,
                "filename": name,
                "n_saved": len(slot.cached),
                "n_written": size,
                "timings": {"save_ms": ms},
            }
        if not path.is_file():
            raise SlotActionError(f"no saved slot named {name!r}", status=404)
        try:
            sf = read_state_file(path, self.identity)
            if sf.namespace != self.namespace:
                raise StateError(f"{name} was saved with other LoRA adapters")
        except (OSError, StateError) as exc:
            raise SlotActionError(f"cannot restore {name!r}: {exc}", status=400) from None
        mem = self.ctx.memory
        mem.remove(slot.id, -1, -1)
        slot.cached = []
        if slot.drafter is not None:
            slot.drafter.reset()
        try:
            if sf.tokens:
                self.ctx.state.seq_from_bytes(sf.data, slot.id)
        except StateError as exc:
            mem.remove(slot.id, -1, -1)
            raise SlotActionError(f"cannot restore {name!r}: {exc}", status=400) from None
        slot.cached = list(sf.tokens)
        ms = (time.perf_counter() - t0) * 1000
        return {
            "id_slot": slot.id,
            "filename": name,
            "n_restored": len(sf.tokens),
            "n_read": path.stat().st_size,
            "timings": {"restore_ms": ms},
        }
