"""Prometheus metrics: a collector that reads the scheduler's counters at scrape time, plus an HTTP
request counter. Each app has its own ``CollectorRegistry`` (several apps per process in tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..batching import Scheduler
from ..engine import EngineProcess

__all__ = ["Metrics"]


class _SchedulerCollector:
    def __init__(self, scheduler: Callable[[], Scheduler | EngineProcess | None]) -> None:
        self._scheduler = scheduler

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        sched = self._scheduler()
        if sched is None:
            return
        st = sched.stats
        p = "llamabind_"

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(p + name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(p + name, doc, value=value)

        yield counter("requests", "generation requests submitted", st.requests_total)
        yield counter("requests_completed", "generation requests finished", st.requests_done)
        yield counter("requests_cancelled", "generation requests cancelled", st.requests_cancelled)
        yield counter("requests_failed", "generation requests failed", st.requests_failed)
        yield counter("prompt_tokens", "prompt tokens decoded (tokens in)", st.prompt_tokens_total)
        yield counter(
            "prompt_tokens_cached", "prompt tokens reused from the KV cache", st.cached_tokens_total
        )
        yield counter("tokens_predicted", "tokens generated (tokens out)", st.generated_tokens_total)
        yield counter("prompt_seconds", "decode time spent on prompt tokens", st.prompt_seconds_total)
        yield counter(
            "generation_seconds", "decode time spent on generated tokens", st.generation_seconds_total
        )
        yield counter("decode_calls", "llama_decode calls", st.decode_calls_total)
        yield counter("kv_evictions", "times the KV cache ran full", st.kv_evictions_total)
        yield counter("draft_tokens", "speculative tokens drafted", st.spec_drafted_total)
        yield counter("draft_tokens_accepted", "speculative drafted tokens accepted", st.spec_accepted_total)
        yield counter("draft_rounds", "speculative verification rounds", st.spec_rounds_total)
        yield counter(
            "prompt_cache_hits", "prompts that got a cached state restored", st.prompt_cache_hits_total
        )
        yield counter(
            "prompt_cache_disk_hits", "prompt cache hits served from disk", st.prompt_cache_disk_hits_total
        )
        yield counter(
            "prompt_cache_misses", "prompt cache lookups that restored nothing", st.prompt_cache_misses_total
        )
        yield counter(
            "prompt_cache_restored_tokens",
            "prompt tokens restored from the prompt cache",
            st.prompt_cache_restored_tokens_total,
        )
        yield counter(
            "prompt_cache_restore_seconds",
            "time spent restoring cached states",
            st.prompt_cache_restore_seconds_total,
        )
        yield counter(
            "prompt_cache_saves", "states saved to the host-memory cache", st.prompt_cache_saved_total
        )
        yield counter(
            "prompt_cache_evictions", "host-memory cache entries evicted", st.prompt_cache_evictions_total
        )
        yield counter(
            "prompt_cache_disk_evictions", "disk cache entries evicted", st.prompt_cache_disk_evictions_total
        )
        yield gauge("prompt_cache_bytes", "host memory held by the prompt cache", st.prompt_cache_bytes)
        yield gauge(
            "prompt_cache_entries", "entries in the host-memory prompt cache", st.prompt_cache_entries
        )
        yield gauge("prompt_cache_disk_bytes", "bytes of the disk prompt cache", st.prompt_cache_disk_bytes)
        yield gauge(
            "prompt_cache_disk_entries", "entries in the disk prompt cache", st.prompt_cache_disk_entries
        )
        pt = st.prompt_tokens_total / st.prompt_seconds_total if st.prompt_seconds_total > 0 else 0.0
        gt = (
            st.generated_tokens_total / st.generation_seconds_total
            if st.generation_seconds_total > 0
            else 0.0
        )
        yield gauge("prompt_tokens_per_second", "average prompt throughput", pt)
        yield gauge("predicted_tokens_per_second", "average generation throughput", gt)
        yield gauge("queue_depth", "requests waiting for a slot", sched.queue_depth)
        yield gauge("busy_slots", "slots processing a request", sched.busy_slots)
        yield gauge("slots", "slots (--parallel)", len(sched.slots))
        n_ctx = sched.n_ctx_slot * len(sched.slots)
        used = sched.kv_used_cells
        yield gauge("kv_cache_tokens", "tokens held in the KV cache (all slots)", used)
        yield gauge("kv_cache_usage_ratio", "KV cache use (0..1)", min(1.0, used / n_ctx) if n_ctx else 0.0)
        if isinstance(sched, EngineProcess):
            restarts = CounterMetricFamily(
                p + "engine_restarts", "engine process restarts by cause", labels=["cause"]
            )
            for cause, n in sorted(sched.restarts.items()):
                restarts.add_metric([cause], n)
            yield restarts
            yield gauge(
                "engine_ready", "1 while the engine process serves, 0 while it (re)starts", float(sched.ready)
            )


class Metrics:
    def __init__(self, scheduler: Callable[[], Scheduler | EngineProcess | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SchedulerCollector(scheduler))
        self.http_requests = Counter(
            "llamabind_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out
