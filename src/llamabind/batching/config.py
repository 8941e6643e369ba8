"""Scheduler settings, its counters, and the per-slot snapshot it reports."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import ContextParams

__all__ = ["SchedulerConfig", "SchedulerStats", "SlotInfo"]


@dataclass
class SchedulerConfig:
    parallel: int = 4  # slots = sequences in the shared context
    ctx_per_slot: int = 4096  # the most tokens (prompt + output) one request may use
    n_batch: int = 2048
    n_ubatch: int = 512
    prefill_chunk: int = 512  # prompt tokens decoded per step (keeps streams flowing)
    max_queue: int = 64  # waiting requests beyond the busy slots; more → QueueFullError
    n_threads: int | None = None
    n_threads_batch: int | None = None
    type_k: str = "f16"
    type_v: str = "f16"
    attn_rotation: bool | None = None
    flash_attn: str = "auto"
    cache_reuse_min: int = 1  # shortest prefix worth copying from another slot
    # False (llama-server's default for -np N): each slot has its own KV stream, so a request's
    # cells are always in position order and its output does not depend on what other slots do
    # (greedy output under load equals the output alone); a prefix shared from another slot is
    # a whole-stream copy. True: one KV pool shared by all slots (prefix sharing copies only cell
    # metadata, but where a sequence's cells land depends on the other slots' history, and
    # llama.cpp's attention sums in cell order, so results vary slightly with the load).
    kv_unified: bool = False
    # speculative decoding: None | "ngram" | "draft" (Scheduler(draft_model=…)) | "mtp"
    spec: str | None = None
    n_draft: int = 8  # most tokens drafted per slot per step (MTP: 1–3 is typical)
    spec_p_min: float = 0.0  # draft/MTP: stop a draft at a token less probable than this
    spec_ngram_min: int = 2
    spec_ngram_max: int = 4
    # the prompt cache (``prompt_cache``, ``disk_cache``): sequence states of conversations that
    # lost their slot, restored when they return. Host memory: None = 8192 MiB like llama-server
    # but at most half the memory available at start; 0 = off. Bytes held never exceed it.
    cache_ram_bytes: int | None = None
    cache_disk_dir: str | None = None  # persistent prompt cache (survives restarts); None: off
    cache_disk_max_bytes: int = 10240 << 20
    prompt_cache_min: int = 32  # fewest tokens worth saving, and the least a restore must gain
    slot_save_path: str | None = None  # directory of POST /slots/{id}?action=save|restore files

    def context_params(self) -> ContextParams:
        return ContextParams(
            n_ctx=self.ctx_per_slot * self.parallel,
            n_batch=self.n_batch,
            n_ubatch=self.n_ubatch,
            n_seq_max=self.parallel,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads_batch,
            type_k=self.type_k,
            type_v=self.type_v,
            attn_rotation=self.attn_rotation,
            flash_attn=self.flash_attn,
            kv_unified=self.kv_unified,
        )


@dataclass
class SchedulerStats:
    """Counters the engine updates; read by /metrics."""

    requests_total: int = 0
    requests_done: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    prompt_tokens_total: int = 0  # prompt tokens decoded
    cached_tokens_total: int = 0  # prompt tokens reused from cache
    generated_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    generation_seconds_total: float = 0.0
    decode_calls_total: int = 0
    decode_seconds_total: float = 0.0
    kv_evictions_total: int = 0
    spec_rounds_total: int = 0  # slot-steps that verified a non-empty draft
    spec_drafted_total: int = 0  # tokens proposed by drafters
    spec_accepted_total: int = 0  # proposed tokens the target kept
    prompt_cache_hits_total: int = 0  # prompts that got a cached state restored
    prompt_cache_disk_hits_total: int = 0  # … of them from the disk cache
    prompt_cache_misses_total: int = 0  # prompt-cache lookups that restored nothing
    prompt_cache_restored_tokens_total: int = 0
    prompt_cache_restore_seconds_total: float = 0.0
    prompt_cache_saved_total: int = 0  # states saved to host memory
    prompt_cache_evictions_total: int = 0  # host-memory entries evicted for room
    prompt_cache_bytes: int = 0  # host memory held by states
    prompt_cache_entries: int = 0
    prompt_cache_disk_bytes: int = 0
    prompt_cache_disk_entries: int = 0
    prompt_cache_disk_evictions_total: int = 0

    def count_decode(self, seconds: float, n_prompt: int, n_total: int) -> None:
        """One decode of ``n_total`` batch entries, ``n_prompt`` of them prompt tokens."""
        self.decode_calls_total += 1
        self.decode_seconds_total += seconds
        if n_total:
            self.prompt_seconds_total += seconds * n_prompt / n_total
            self.generation_seconds_total += seconds * (n_total - n_prompt) / n_total
        self.prompt_tokens_total += n_prompt

    @property
    def spec_acceptance_rate(self) -> float:
        return self.spec_accepted_total / self.spec_drafted_total if self.spec_drafted_total else 0.0


@dataclass(frozen=True)
class SlotInfo:
    id: int
    state: str  # idle | prefill | generate
    request_id: int | None
    n_cached: int
    n_prompt: int
    n_generated: int
