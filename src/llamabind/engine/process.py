"""`EngineProcess`: the continuous-batching scheduler in a child process, behind the Scheduler's
surface (``submit``, ``GenRequest.cancel``, events through ``emit``, ``slot_info``, ``stats``).

A llama.cpp abort, a segfault, an out-of-memory kill or a hang in the engine ends that process,
not the caller: the supervisor thread fails the requests that were running in it with
:class:`~llamabind.errors.EngineCrashedError`, logs the cause with the engine's last log lines,
and starts a new engine (with backoff); requests still waiting go to the new engine. The
watchdog kills an engine whose current step (or whose heartbeat) is older than
``watchdog_timeout``.

The queue lives here, in the parent: the engine only ever holds as many requests as it has
slots, so what was waiting survives a crash. IPC is ``multiprocessing`` ('spawn' start method,
a duplex ``Pipe`` carrying lists of pickled :mod:`.protocol` messages).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import numpy.typing as npt

from ..batching import DoneEvent, ErrorEvent, GenRequest, QueueFullError, SchedulerConfig, SlotInfo, Usage
from ..batching.request import check_prompt_fits
from ..batching.scheduler import SchedulerStats
from ..core import Model
from ..errors import EngineCrashedError, LlamabindError
from .protocol import (
    Call,
    CallResult,
    Cancel,
    EngineSpec,
    Events,
    LoadFailed,
    Ready,
    Shutdown,
    Status,
    Submit,
)
from .support import add_stats as _add_stats
from .support import cause_of as _cause
from .support import read_log
from .worker import engine_main

__all__ = ["EngineProcess", "model_reloader"]

log = logging.getLogger("llamabind.engine")

_TICK = 0.02  # the dispatcher's poll for cancelled requests (seconds)
_HEALTHY_RESET = 60.0  # an engine that lived this long resets the restart backoff


@dataclass(eq=False)
class _Pending:
    req: GenRequest
    test_hook: str | None = None
    cancel_sent: bool = False


def model_reloader(model: Model) -> Callable[[], Model]:
    """A picklable loader of the same model file with the same parameters (for an engine process
    over a Model loaded here; adapters attached to ``model`` are not carried over)."""
    return functools.partial(Model, [str(p) for p in model.paths], dataclasses.replace(model.params))


class EngineProcess:
    """The scheduler in its own process, supervised.

    ``EngineProcess("model.gguf", SchedulerConfig(parallel=4))`` loads ``Model(path)`` in the
    engine process; pass an :class:`EngineSpec` for anything else (its ``loader`` must be
    picklable: a module-level function or a ``functools.partial`` of one). ``vocab`` (e.g.
    ``Model(path, vocab_only=True)``) lets ``submit`` reject out-of-vocabulary prompts at once.

    ``submit(req)`` returns at once; ``req.emit`` is called from a reader thread with the
    request's events (``TokenEvent`` … ``DoneEvent`` or ``ErrorEvent``); ``req.cancel()`` stops it.
    The engine process is started with ``multiprocessing``'s 'spawn' method: a script that
    creates an EngineProcess needs the usual ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        source: EngineSpec | str | os.PathLike[str],
        config: SchedulerConfig | None = None,
        *,
        vocab: Model | None = None,
        watchdog_timeout: float = 120.0,
        restart_backoff: tuple[float, float] = (0.5, 30.0),
        log_level: int | None = None,
    ) -> None:
        if isinstance(source, EngineSpec):
            if config is not None:
                source = dataclasses.replace(source, scheduler=config)
            spec = source
        else:
            spec = EngineSpec(functools.partial(Model, os.fspath(source)), config or SchedulerConfig())
        if watchdog_timeout <= 0:
            raise ValueError("watchdog_timeout must be positive")
        self.spec = spec
        self.config = spec.scheduler
        self.n_ctx_slot = spec.scheduler.ctx_per_slot
        self.vocab = vocab
        self.watchdog_timeout = float(watchdog_timeout)
        self.restart_backoff = restart_backoff
        self._log_level = log_level if log_level is not None else logging.getLogger().getEffectiveLevel()
        #: restarts so far, by cause (``watchdog``, ``sigkill``, ``sigabrt``, ``sigsegv``, ``exit`` …)
        self.restarts: collections.Counter[str] = collections.Counter()
        #: the engine's model facts once it is ready (n_ctx_slot, n_params, size, n_embd)
        self.info: dict[str, Any] = {}
        self.error: BaseException | None = None  # the first engine failed to load: no retries
        self._ctx = multiprocessing.get_context("spawn")
        self._cv = threading.Condition()
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._running: dict[int, _Pending] = {}
        self._calls: dict[int, tuple[Future[Any], Call, bool]] = {}
        self._cids = itertools.count(1)
        self._outbox: list[Any] = []
        self._conn: Connection | None = None
        self._proc: Any = None
        self._ready = False
        self._ever_ready = False
        self._closing = False
        self._status: Status | None = None
        self._last_msg = 0.0
        self._base = SchedulerStats()  # counters of engines that ended
        self._local = SchedulerStats()  # requests that never reached an engine, crash failures
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._supervisor = threading.Thread(target=self._supervise, name="llamabind-supervisor", daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch, name="llamabind-dispatch", daemon=True)
        self._supervisor.start()
        self._dispatcher.start()

    # ---------------------------------------------------------------- public
    @property
    def ready(self) -> bool:
        """Whether an engine is up and serving (False while it starts or restarts)."""
        return self._ready

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return int(proc.pid) if proc is not None and proc.pid is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until an engine is ready (True) or ``timeout`` passes (False); raises the load
        error if the first engine could not load the model."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._ready:
                if self.error is not None:
                    raise self.error
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left if left is not None else 1.0)
        return True

    def submit(self, req: GenRequest, *, test_hook: str | None = None) -> None:
        """Queue a request (thread-safe, returns at once). Raises ContextOverflowError,
        QueueFullError, TokenizeError at once, like ``Scheduler.submit``."""
        check_prompt_fits(req.prompt, self.n_ctx_slot)
        if req.media is not None:
            raise LlamabindError("media prompts cannot cross to an engine process")
        if self.vocab is not None:
            self.vocab.vocab.check(req.prompt)
        with self._cv:
            if self._closing:
                raise LlamabindError("the engine is shut down")
            if self.error is not None:
                raise LlamabindError(f"the engine failed to start: {self.error}")
            if len(self._waiting) + len(self._running) >= self.config.max_queue + self.config.parallel:
                raise QueueFullError(
                    f"server busy: {len(self._waiting)} requests waiting (--max-queue {self.config.max_queue})"
                )
            self._waiting.append(_Pending(req, test_hook))
            self._cv.notify_all()

    def cancel(self, req: GenRequest) -> None:
        """``req.cancel()``, passed on to the engine without waiting for the next poll."""
        req.cancel()
        with self._cv:
            self._cv.notify_all()

    def embed_tokens(self, chunk: list[list[int]]) -> list[npt.NDArray[np.float32]]:
        """Mean-pooled, normalised embeddings of token lists that fit one embeddings decode."""
        vecs: list[npt.NDArray[np.float32]] = self._call("embed", chunk)
        return vecs

    def rerank(self, query: str, documents: list[str]) -> tuple[list[Any], int]:
        """(RerankResults best first, tokens read) from a reranker model."""
        out: tuple[list[Any], int] = self._call("rerank", query, documents)
        return out

    def slot_action(self, slot_id: int, action: str, filename: str | None = None) -> dict[str, Any]:
        """:meth:`Scheduler.slot_action` in the engine process (save/restore/erase a slot's KV)."""
        out: dict[str, Any] = self._call("slot_action", slot_id, action, filename)
        return out

    @property
    def stats(self) -> SchedulerStats:
        """Counters over every engine this object ran (they survive restarts)."""
        st = self._status
        total = _add_stats(self._base, self._local)
        return _add_stats(total, st.stats) if st is not None else total

    def slot_info(self) -> list[SlotInfo]:
        st = self._status
        if st is not None:
            return list(st.slots)
        return [SlotInfo(i, "idle", None, 0, 0, 0) for i in range(self.config.parallel)]

    @property
    def slots(self) -> list[SlotInfo]:
        return self.slot_info()

    @property
    def queue_depth(self) -> int:
        st = self._status
        return len(self._waiting) + (st.queue_depth if st is not None else 0)

    @property
    def busy_slots(self) -> int:
        return sum(1 for s in self.slot_info() if s.request_id is not None)

    @property
    def kv_used_cells(self) -> int:
        st = self._status
        return st.kv_used_cells if st is not None else 0

    def last_log_lines(self) -> list[str]:
        """The engine's last stderr lines (llama.cpp's log included)."""
        return list(self._tail)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel what waits, cancel what runs, stop the engine (killed after ``timeout``)."""
        with self._cv:
            if self._closing:
                return
            self._closing = True
            waiting = list(self._waiting)
            self._waiting.clear()
            for p in self._running.values():
                p.req.cancel()
            self._outbox.append(Shutdown())
            self._cv.notify_all()
        for p in waiting:
            p.req.emit(DoneEvent("cancelled", Usage(len(p.req.prompt), 0)))
        proc = self._proc
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                log.warning("the engine did not stop within %.1f s: killing it", timeout)
                proc.kill()
        self._supervisor.join(timeout + 5)
        self._dispatcher.join(5)

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---------------------------------------------------------------- internals
    def _call(self, name: str, *args: Any) -> Any:
        fut: Future[Any] = Future()
        with self._cv:
            if self.error is not None:
                raise LlamabindError(f"the engine failed to start: {self.error}")
            if self._closing:
                raise LlamabindError("the engine is shut down")
            cid = next(self._cids)
            msg = Call(cid, name, args)
            sent = self._ready
            self._calls[cid] = (fut, msg, sent)
            if sent:
                self._outbox.append(msg)
                self._cv.notify_all()
        return fut.result()

    def _dispatch(self) -> None:
        """Move waiting requests into free engine slots, pass cancellations on, send the outbox."""
        while True:
            cancelled: list[_Pending] = []
            with self._cv:
                self._cv.wait(_TICK)
                conn = self._conn if self._ready else None
                out, self._outbox = self._outbox, []
                if self._waiting and any(p.req.cancelled.is_set() for p in self._waiting):
                    cancelled = [p for p in self._waiting if p.req.cancelled.is_set()]
                    self._waiting = collections.deque(
                        p for p in self._waiting if not p.req.cancelled.is_set()
                    )
                    self._local.requests_total += len(cancelled)
                    self._local.requests_cancelled += len(cancelled)
                for p in self._running.values():
                    if not p.cancel_sent and p.req.cancelled.is_set():
                        p.cancel_sent = True
                        out.append(Cancel(p.req.id))
                if conn is not None:
                    while self._waiting and len(self._running) < self.config.parallel:
                        p = self._waiting.popleft()
                        self._running[p.req.id] = p
                        out.append(self._submit_msg(p))
                stop = self._closing and self._proc is None and not out
            for p in cancelled:
                p.req.emit(DoneEvent("cancelled", Usage(len(p.req.prompt), 0)))
            if out and conn is not None:
                try:
                    conn.send(out)
                except (OSError, ValueError):
                    pass  # the engine is gone: the supervisor handles it
            if stop:
                return

    @staticmethod
    def _submit_msg(p: _Pending) -> Submit:
        r = p.req
        return Submit(
            rid=r.id,
            prompt=list(r.prompt),
            sampling=r.sampling,
            max_tokens=r.max_tokens,
            stop=list(r.stop),
            logprobs=r.logprobs,
            ignore_eos=r.ignore_eos,
            cache_prompt=r.cache_prompt,
            speculative=r.speculative,
            render_special=r.render_special,
            submitted_at=r.submitted_at,
            test_hook=p.test_hook,
        )

    def _supervise(self) -> None:
        first, cap = self.restart_backoff
        backoff = first
        while True:
            started = time.monotonic()
            try:
                reader, logger = self._spawn()
            except Exception as exc:  # e.g. the spec does not pickle: nothing to retry
                log.error("the engine process could not be started: %s", exc)
                with self._cv:
                    self.error = exc
                    self._cv.notify_all()
                return
            cause = self._monitor()
            reader.join(5)
            logger.join(2)
            self._on_exit(cause)
            with self._cv:
                if self._closing or self.error is not None:
                    self._proc = None
                    self._cv.notify_all()
                    return
            if time.monotonic() - started > _HEALTHY_RESET:
                backoff = first
            with self._cv:
                self._cv.wait_for(lambda: self._closing, backoff)
            backoff = min(backoff * 2, cap)

    def _spawn(self) -> tuple[threading.Thread, threading.Thread]:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        log_r, log_w = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=engine_main,
            args=(child_conn, log_w, self.spec, os.getpid(), self._log_level),
            name="llamabind-engine",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        log_w.close()
        with self._cv:
            self._proc = proc
            self._conn = parent_conn
            self._last_msg = time.monotonic()
        reader = threading.Thread(
            target=self._read, args=(parent_conn,), name="llamabind-engine-read", daemon=True
        )
        logger = threading.Thread(
            target=read_log, args=(log_r, self._tail), name="llamabind-engine-log", daemon=True
        )
        reader.start()
        logger.start()
        return reader, logger

    def _monitor(self) -> str:
        """Wait for the engine to end (killing it when the watchdog fires); the cause."""
        proc = self._proc
        killed_by: str | None = None
        while True:
            if wait([proc.sentinel], 0.1):
                break
            if killed_by is not None or not self._ready:
                continue
            now = time.monotonic()
            st = self._status
            stuck = (
                st is not None and st.busy_since is not None and now - st.busy_since > self.watchdog_timeout
            )
            silent = now - self._last_msg > self.watchdog_timeout
            if stuck or silent:
                what = "a step" if stuck else "its heartbeat"
                log.error(
                    "watchdog: the engine (pid %s) made no progress for %.0f s (%s); killing it",
                    proc.pid,
                    self.watchdog_timeout,
                    what,
                )
                killed_by = "watchdog"
                proc.kill()
        proc.join()
        return killed_by or _cause(proc.exitcode)

    def _on_exit(self, cause: str) -> None:
        proc = self._proc
        with self._cv:
            was_ready = self._ready
            self._ready = False
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            running = list(self._running.values())
            self._running.clear()
            failed_calls = [(cid, fut) for cid, (fut, _, sent) in self._calls.items() if sent]
            for cid, _ in failed_calls:
                del self._calls[cid]
            if self._status is not None:
                self._base = _add_stats(self._base, self._status.stats)
                self._status = None
            closing = self._closing
            if not closing:
                self._local.requests_failed += len(running)
                if self._ever_ready or was_ready:
                    self.restarts[cause] += 1
                elif self.error is None:  # the first engine never came up: retrying will not help
                    self.error = LlamabindError(
                        f"the engine process ended ({cause}, exit code {proc.exitcode if proc else None}) "
                        "before it was ready" + (f": {self._tail[-1]}" if self._tail else "")
                    )
            self._cv.notify_all()
        if closing:
            for p in running:
                p.req.emit(DoneEvent("cancelled", Usage(len(p.req.prompt), 0)))
            for _, fut in failed_calls:
                fut.set_exception(LlamabindError("the engine is shut down"))
            return
        code = proc.exitcode if proc is not None else None
        detail = (
            f"killed by the watchdog after {self.watchdog_timeout:.0f} s without progress"
            if (cause == "watchdog")
            else (f"ended by {cause.upper()}" if cause != "exit" else f"exited with code {code}")
        )
        err = f"the engine process {detail}; the request was not retried"
        for p in running:
            p.req.emit(ErrorEvent(EngineCrashedError(err)))
        for _, fut in failed_calls:
            fut.set_exception(EngineCrashedError(err))
        if self.error is None:
            tail = "\n".join(f"  | {line}" for line in self._tail)
            log.error(
                "the engine process (pid %s) %s; %d running request(s) failed; restarting%s",
                proc.pid if proc is not None else "?",
                detail,
                len(running),
                f"\nits last log lines:\n{tail}" if tail else "",
            )

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                msgs = conn.recv()
            except (EOFError, OSError, ValueError):
                return
            self._last_msg = time.monotonic()
            for m in msgs:
                if isinstance(m, Events):
                    self._deliver(m)
                elif isinstance(m, Status):
                    self._status = m
                elif isinstance(m, CallResult):
                    with self._cv:
                        entry = self._calls.pop(m.cid, None)
                    if entry is not None:
                        if m.error is not None:
                            entry[0].set_exception(m.error)
                        else:
                            entry[0].set_result(m.value)
                elif isinstance(m, Ready):
                    with self._cv:
                        self.info = dict(m.info)
                        self._ready = True
                        self._ever_ready = True
                        for cid, (fut, msg, sent) in list(self._calls.items()):
                            if not sent:
                                self._calls[cid] = (fut, msg, True)
                                self._outbox.append(msg)
                        self._cv.notify_all()
                    log.info("engine process %d ready", m.pid)
                elif isinstance(m, LoadFailed):
                    log.error("the engine could not load the model: %s", m.message)
                    with self._cv:
                        if not self._ever_ready:
                            self.error = m.error or LlamabindError(m.message)
                            for fut, _, _ in self._calls.values():
                                fut.set_exception(LlamabindError(f"the engine failed to start: {m.message}"))
                            self._calls.clear()
                        self._cv.notify_all()

    def _deliver(self, m: Events) -> None:
        finished = False
        running = self._running
        for rid, ev in m.items:
            p = running.get(rid)
            if p is None:
                continue
            if isinstance(ev, (DoneEvent, ErrorEvent)):
                with self._cv:
                    running.pop(rid, None)
                finished = True
            p.req.emit(ev)
        if finished:
            with self._cv:
                self._cv.notify_all()
