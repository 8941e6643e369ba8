"""Prometheus metrics: a collector that reads the scheduler's counters at scrape time, plus an HTTP
request counter. Each app has its own ``CollectorRegistry`` (several apps per process in tests)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..batching import Scheduler
from ..engine import EngineProcess

__all__ = ["Metrics"]


Sched = Scheduler | EngineProcess


def _stat(attr: str, _sched: Any, stats: Any) -> float:
    """A SchedulerStats field, for metric families built from a table."""
    return float(getattr(stats, attr))


class _SchedulerCollector:
    """The scheduler's counters; on a router, one sample per loaded model (label ``model``)."""

    def __init__(
        self,
        scheduler: Callable[[], Sched | None],
        models: Callable[[], list[tuple[str, Sched]]] | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._models = models

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        if self._models is not None:
            scheds: list[tuple[list[str], Sched]] = [([n], s) for n, s in self._models()]
            labels = ["model"]
        else:
            sched = self._scheduler()
            if sched is None:
                return
            scheds, labels = [([], sched)], []
        p = "llamabind_"
        rows = [(lv, s, s.stats) for lv, s in scheds]

        def family(kind: type[Any], name: str, doc: str, value: Callable[[Any, Any], float]) -> Any:
            fam = kind(p + name, doc, labels=labels)
            for lv, s, st in rows:
                fam.add_metric(lv, value(s, st))
            return fam

        def counter(name: str, doc: str, value: Callable[[Any, Any], float]) -> Any:
            return family(CounterMetricFamily, name, doc, value)

        def gauge(name: str, doc: str, value: Callable[[Any, Any], float]) -> Any:
            return family(GaugeMetricFamily, name, doc, value)

        yield counter("requests", "generation requests submitted", lambda s, st: st.requests_total)
        yield counter("requests_completed", "generation requests finished", lambda s, st: st.requests_done)
        yield counter(
            "requests_cancelled", "generation requests cancelled", lambda s, st: st.requests_cancelled
        )
        yield counter("requests_failed", "generation requests failed", lambda s, st: st.requests_failed)
        yield counter(
            "prompt_tokens", "prompt tokens decoded (tokens in)", lambda s, st: st.prompt_tokens_total
        )
        yield counter(
            "prompt_tokens_cached",
            "prompt tokens reused from the KV cache",
            lambda s, st: st.cached_tokens_total,
        )
        yield counter(
            "tokens_predicted", "tokens generated (tokens out)", lambda s, st: st.generated_tokens_total
        )
        yield counter(
            "prompt_seconds", "decode time spent on prompt tokens", lambda s, st: st.prompt_seconds_total
        )
        yield counter(
            "generation_seconds",
            "decode time spent on generated tokens",
            lambda s, st: st.generation_seconds_total,
        )
        yield counter("decode_calls", "llama_decode calls", lambda s, st: st.decode_calls_total)
        yield counter("kv_evictions", "times the KV cache ran full", lambda s, st: st.kv_evictions_total)
        yield counter("draft_tokens", "speculative tokens drafted", lambda s, st: st.spec_drafted_total)
        yield counter(
            "draft_tokens_accepted",
            "speculative drafted tokens accepted",
            lambda s, st: st.spec_accepted_total,
        )
        yield counter("draft_rounds", "speculative verification rounds", lambda s, st: st.spec_rounds_total)
        for name, doc, attr in (
            ("prompt_cache_hits", "prompts that got a cached state restored", "prompt_cache_hits_total"),
            ("prompt_cache_disk_hits", "prompt cache hits served from disk", "prompt_cache_disk_hits_total"),
            (
                "prompt_cache_misses",
                "prompt cache lookups that restored nothing",
                "prompt_cache_misses_total",
            ),
            (
                "prompt_cache_restored_tokens",
                "prompt tokens restored from the prompt cache",
                "prompt_cache_restored_tokens_total",
            ),
            (
                "prompt_cache_restore_seconds",
                "time spent restoring cached states",
                "prompt_cache_restore_seconds_total",
            ),
            ("prompt_cache_saves", "states saved to the host-memory cache", "prompt_cache_saved_total"),
            ("prompt_cache_evictions", "host-memory cache entries evicted", "prompt_cache_evictions_total"),
            (
                "prompt_cache_disk_evictions",
                "disk cache entries evicted",
                "prompt_cache_disk_evictions_total",
            ),
        ):
            yield counter(name, doc, functools.partial(_stat, attr))
        for name, doc, attr in (
            ("prompt_cache_bytes", "host memory held by the prompt cache", "prompt_cache_bytes"),
            ("prompt_cache_entries", "entries in the host-memory prompt cache", "prompt_cache_entries"),
            ("prompt_cache_disk_bytes", "bytes of the disk prompt cache", "prompt_cache_disk_bytes"),
            ("prompt_cache_disk_entries", "entries in the disk prompt cache", "prompt_cache_disk_entries"),
        ):
            yield gauge(name, doc, functools.partial(_stat, attr))

        def rate(n: float, secs: float) -> float:
            return n / secs if secs > 0 else 0.0

        yield gauge(
            "prompt_tokens_per_second",
            "average prompt throughput",
            lambda s, st: rate(st.prompt_tokens_total, st.prompt_seconds_total),
        )
        yield gauge(
            "predicted_tokens_per_second",
            "average generation throughput",
            lambda s, st: rate(st.generated_tokens_total, st.generation_seconds_total),
        )
        yield gauge("queue_depth", "requests waiting for a slot", lambda s, st: s.queue_depth)
        yield gauge("busy_slots", "slots processing a request", lambda s, st: s.busy_slots)
        yield gauge("slots", "slots (--parallel)", lambda s, st: len(s.slots))
        yield gauge(
            "kv_cache_tokens", "tokens held in the KV cache (all slots)", lambda s, st: s.kv_used_cells
        )

        def usage(s: Any, st: Any) -> float:
            n_ctx = s.n_ctx_slot * len(s.slots)
            return min(1.0, s.kv_used_cells / n_ctx) if n_ctx else 0.0

        yield gauge("kv_cache_usage_ratio", "KV cache use (0..1)", usage)
        procs = [(lv, s) for lv, s, _ in rows if isinstance(s, EngineProcess)]
        if procs:
            restarts = CounterMetricFamily(
                p + "engine_restarts", "engine process restarts by cause", labels=[*labels, "cause"]
            )
            for lv, s in procs:
                assert isinstance(s, EngineProcess)
                for cause, n in sorted(s.restarts.items()):
                    restarts.add_metric([*lv, cause], n)
            yield restarts
            ready = GaugeMetricFamily(
                p + "engine_ready", "1 while the engine process serves, 0 while it (re)starts", labels=labels
            )
            for lv, s in procs:
                ready.add_metric(lv, float(s.ready))
            yield ready


class Metrics:
    def __init__(
        self,
        scheduler: Callable[[], Sched | None],
        *,
        models: Callable[[], list[tuple[str, Sched]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SchedulerCollector(scheduler, models))
        self.http_requests = Counter(
            "llamabind_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out
