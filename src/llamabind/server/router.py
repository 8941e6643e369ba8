"""Many models behind one server: :class:`ModelRouter` loads a model on its first request (the
requests for a model that is loading wait for that one load), keeps at most ``max_loaded`` models
(the least recently used idle one is unloaded to make room), unloads models idle for longer than
their TTL, and reports each model's status (``loaded``, ``loading``, ``unloaded``, ``failed``).

Each loaded model is a :class:`~.state.ServerState` of its own (with the process engine: its own
engine process), so one model's load or crash does not stall the others' requests. A request
holds a *lease* on its model from the moment it is routed until its response is sent
(:class:`LeaseMiddleware`): a leased model is never evicted.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import APIError
from .model_registry import ModelEntry, check_unique_names, shard_files
from .state import ServerState

__all__ = ["LeaseMiddleware", "ModelRouter", "ModelStatus", "RoutedModel"]

log = logging.getLogger("llamabind.server")

ModelStatus = Literal["unloaded", "loading", "loaded", "failed"]

#: the models leased by the HTTP request being handled (set by LeaseMiddleware)
_LEASES: contextvars.ContextVar[list[RoutedModel] | None] = contextvars.ContextVar(
    "llamabind_router_leases", default=None
)


class RoutedModel:
    """One configured model: its entry, its state when loaded, its status and its use."""

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self.state: ServerState | None = None
        self.status: ModelStatus = "unloaded"
        self.error: str | None = None
        self.lock = asyncio.Lock()
        self.leases = 0
        self.last_used = time.monotonic()
        self.load_seconds: float | None = None
        self.loads = 0
        self.unloads = 0

    @property
    def name(self) -> str:
        return self.entry.name

    def busy(self) -> bool:
        """Whether a request uses the model (leased, or its scheduler has work)."""
        if self.leases > 0:
            return True
        st = self.state
        if st is None:
            return False
        sched = st.scheduler
        return bool(sched.busy_slots or sched.queue_depth)


class ModelRouter:
    """The models of a router server. ``build(entry)`` (blocking, run in a worker thread) loads one
    and returns its ServerState; ``close(state)`` frees it. ``max_loaded`` bounds the models loaded
    at once (None: no bound); ``ttl`` unloads a model idle that many seconds (an entry's own
    ``ttl`` wins; None or 0: never). ``default`` names the model a request without ``model`` gets
    (else the only model, if there is one)."""

    def __init__(
        self,
        entries: Sequence[ModelEntry],
        build: Callable[[ModelEntry], ServerState],
        *,
        max_loaded: int | None = None,
        ttl: float | None = None,
        default: str | None = None,
        close: Callable[[ServerState], None] | None = None,
    ) -> None:
        if not entries:
            raise ValueError("a model router needs at least one model")
        if max_loaded is not None and max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        check_unique_names(entries)
        self._build = build
        self._close = close or (lambda st: st.close())
        self.max_loaded = max_loaded
        self.ttl = ttl
        self.models: dict[str, RoutedModel] = {e.name: RoutedModel(e) for e in entries}
        self._names: dict[str, RoutedModel] = {}
        for m in self.models.values():
            for n in m.entry.names:
                self._names.setdefault(n, m)
        if default is not None and default not in self._names:
            raise ValueError(f"the default model {default!r} is not one of the router's models")
        self.default = self._names[default].name if default is not None else None
        self._room = asyncio.Lock()
        self.closed = False

    # ------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        return list(self.models)

    def lookup(self, name: str | None) -> RoutedModel:
        """The model a request names (404 listing the models when there is none)."""
        if name is None or name == "":
            if self.default is not None:
                return self.models[self.default]
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise APIError(
                400,
                f"this server serves several models: name one in 'model' ({', '.join(self.models)})",
                param="model",
                code="model_required",
            )
        m = self._names.get(name)
        if m is None:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server serves: {', '.join(self.models)}",
                param="model",
                code="model_not_found",
            )
        return m

    def loaded(self) -> list[tuple[str, ServerState]]:
        return [(m.name, m.state) for m in self.models.values() if m.state is not None]

    # ------------------------------------------------------------------ use
    async def acquire(self, name: str | None) -> ServerState:
        """The loaded state of the named model (loading it first if needed), leased to the current
        HTTP request until its response is sent."""
        m = self.lookup(name)
        leases = _LEASES.get()
        if leases is not None:  # leased before waiting: the model cannot be evicted meanwhile
            m.leases += 1
            leases.append(m)
        m.last_used = time.monotonic()
        try:
            return await self._ensure(m, retry_failed=False)
        except BaseException:
            if leases is not None:
                leases.remove(m)
                self.release(m)
            raise

    def release(self, m: RoutedModel) -> None:
        m.leases = max(0, m.leases - 1)
        m.last_used = time.monotonic()

    async def load(self, name: str | None) -> ServerState:
        """Load the named model now (a failed one is tried again)."""
        return await self._ensure(self.lookup(name), retry_failed=True)

    async def unload(self, name: str | None) -> bool:
        """Unload the named model (False when it was not loaded); 409 while a request uses it."""
        m = self.lookup(name)
        async with m.lock:
            if m.state is None:
                if m.status == "failed":
                    m.status, m.error = "unloaded", None
                return False
            if m.busy():
                raise APIError(
                    409, f"the model {m.name!r} is serving requests", param="model", code="model_busy"
                )
            await self._unload(m)
            return True

    async def _ensure(self, m: RoutedModel, *, retry_failed: bool) -> ServerState:
        st = self._usable(m, retry_failed)
        if st is not None:
            return st
        async with m.lock:  # one load at a time per model: later requests wait for it
            st = self._usable(m, retry_failed)
            if st is not None:
                return st
            if self.closed:
                raise APIError(503, "the server is shutting down", code="shutting_down")
            await self._make_room(m)
            m.status, m.error = "loading", None
            log.info("loading model %s", m.name)
            t0 = time.monotonic()
            try:
                state = await run_in_threadpool(self._build, m.entry)
            except Exception as exc:
                m.status, m.error = "failed", f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s", m.name, m.error)
                raise self._failed(m) from None
            except BaseException:
                m.status = "unloaded"
                raise
            if self.closed:
                await run_in_threadpool(self._close, state)
                m.status = "unloaded"
                raise APIError(503, "the server is shutting down", code="shutting_down")
            m.state, m.status = state, "loaded"
            m.load_seconds = time.monotonic() - t0
            m.loads += 1
            m.last_used = time.monotonic()
            log.info("model %s loaded in %.2f s", m.name, m.load_seconds)
            return state

    def _usable(self, m: RoutedModel, retry_failed: bool) -> ServerState | None:
        """The model's state if it can serve now; raises for a failed model (unless retrying)."""
        st = m.state
        if st is not None and st.engine_error is not None:  # the engine died for good
            m.state, m.status, m.error = None, "failed", f"engine failed: {st.engine_error}"
            asyncio.get_running_loop().run_in_executor(None, self._close, st)
        if m.status == "failed" and not retry_failed:
            raise self._failed(m)
        return m.state if m.status == "loaded" else None

    @staticmethod
    def _failed(m: RoutedModel) -> APIError:
        return APIError(
            503, f"the model {m.name!r} failed to load: {m.error}", param="model", code="model_load_failed"
        )

    def _occupying(self, exclude: RoutedModel) -> list[RoutedModel]:
        return [x for x in self.models.values() if x is not exclude and x.status in ("loaded", "loading")]

    async def _make_room(self, m: RoutedModel) -> None:
        """Unload least recently used idle models until ``m`` fits under ``max_loaded`` (waiting
        while every loaded model is busy). ``m`` counts as loading once this returns."""
        if self.max_loaded is None:
            return
        async with self._room:
            while len(self._occupying(m)) >= self.max_loaded:
                idle = [x for x in self._occupying(m) if x.status == "loaded" and not x.busy()]
                if idle:
                    victim = min(idle, key=lambda x: x.last_used)
                    log.info("unloading model %s to make room for %s", victim.name, m.name)
                    await self._unload(victim)
                    continue
                await asyncio.sleep(0.05)
            m.status = "loading"  # claims the room before the lock is released

    async def _unload(self, m: RoutedModel) -> None:
        st, m.state = m.state, None
        m.status = "unloaded"
        m.unloads += 1
        if st is not None:
            await run_in_threadpool(self._close, st)
            log.info("model %s unloaded", m.name)

    # ------------------------------------------------------------------ TTL
    def ttl_of(self, m: RoutedModel) -> float | None:
        ttl = m.entry.ttl if m.entry.ttl is not None else self.ttl
        return ttl if ttl else None

    async def expire(self) -> list[str]:
        """Unload every loaded model idle for longer than its TTL; their names."""
        now = time.monotonic()
        out: list[str] = []
        for m in list(self.models.values()):
            ttl = self.ttl_of(m)
            if ttl is None or m.status != "loaded" or m.busy() or now - m.last_used < ttl:
                continue
            if m.lock.locked():
                continue
            async with m.lock:
                if m.status == "loaded" and not m.busy():
                    log.info("model %s idle for %.0f s: unloading", m.name, now - m.last_used)
                    await self._unload(m)
                    out.append(m.name)
        return out

    def ttl_interval(self) -> float | None:
        """How often the TTL task looks (None: no model has a TTL)."""
        ttls = [t for t in (self.ttl_of(m) for m in self.models.values()) if t is not None]
        return min(1.0, max(0.05, min(ttls) / 4)) if ttls else None

    async def run_ttl(self) -> None:
        """The background task that unloads idle models (cancel it to stop)."""
        interval = self.ttl_interval()
        if interval is None:
            return
        while not self.closed:
            await asyncio.sleep(interval)
            try:
                await self.expire()
            except Exception as exc:  # never let the task die silently
                log.error("unloading idle models failed: %s", exc)

    async def close_all(self) -> None:
        self.closed = True
        for m in self.models.values():
            async with m.lock:
                await self._unload(m)

    # ------------------------------------------------------------------ reports
    def statuses(self) -> dict[str, str]:
        return {m.name: m.status for m in self.models.values()}

    def describe(self, created: int) -> list[dict[str, Any]]:
        """Blocking (file sizes, model metadata): the /v1/models entries."""
        return [_describe(m, created) for m in self.models.values()]


def _describe(m: RoutedModel, created: int) -> dict[str, Any]:
    from ..hub import quant_tag

    e = m.entry
    meta: dict[str, Any] = {"role": e.role, "source": e.source}
    if e.path is not None:
        meta["file"] = e.path.name
        meta["path"] = str(e.path)
        meta["quant"] = quant_tag(e.path.name)
        meta["size_on_disk"] = sum(p.stat().st_size for p in shard_files(e.path) if p.is_file())
    if e.hf is not None:
        meta["hf"] = e.hf
    if e.mmproj:
        meta["mmproj"] = e.mmproj
    ttl = e.ttl
    if ttl is not None:
        meta["ttl"] = ttl
    if m.error is not None:
        meta["error"] = m.error
    if m.load_seconds is not None:
        meta["load_seconds"] = round(m.load_seconds, 3)
    st = m.state
    if st is not None:
        model = st.model
        meta.update(
            file=model.path.name,
            n_vocab=model.n_vocab,
            n_ctx_train=model.n_ctx_train,
            n_ctx_slot=st.scheduler.n_ctx_slot,
            parallel=len(st.scheduler.slots),
            n_embd=model.n_embd,
        )
    return {
        "id": m.name,
        "object": "model",
        "created": created,
        "owned_by": "llamabind",
        "status": m.status,
        "aliases": [n for n in e.names if n != m.name],
        "meta": meta,
    }


class LeaseMiddleware:
    """Holds the leases a request takes on its models until its response has been sent (streams
    included), then releases them (pure ASGI: the endpoint runs in this context)."""

    def __init__(self, app: ASGIApp, router: Callable[[], ModelRouter | None]) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router()
        if scope["type"] != "http" or router is None:
            await self.app(scope, receive, send)
            return
        leases: list[RoutedModel] = []
        token = _LEASES.set(leases)
        try:
            await self.app(scope, receive, send)
        finally:
            _LEASES.reset(token)
            for m in leases:
                router.release(m)
