"""The engine process's main: loads the model, runs the continuous-batching scheduler and the
embedding jobs, and serves the parent over a duplex pipe.

Threads: the main thread reads messages from the parent (EOF = the parent is gone: exit at once);
a writer thread drains the outgoing queue and sends everything it holds in one message, plus a
status snapshot (counters, slots, the current step's start — the heartbeat) a few times a second;
a watcher thread exits when the parent process changes; two worker threads run embedding/rerank
calls (each waits for the engine thread). The scheduler's own engine thread does the decoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from .._native.process import kill_with_parent
from ..batching import DoneEvent, ErrorEvent, Event, GenRequest, Scheduler
from ..errors import LlamabindError
from .jobs import EmbeddingJobs
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

__all__ = ["STATUS_INTERVAL", "TEST_HOOKS_ENV", "engine_main"]

log = logging.getLogger("llamabind.engine")

#: seconds between status messages (the parent's watchdog counts on them as a heartbeat)
STATUS_INTERVAL = 0.25
#: set to 1 in the engine process's environment to enable the ``test_hook`` of requests
TEST_HOOKS_ENV = "LLAMABIND_TEST_HOOKS"


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the parent dies; a thread also polls the parent pid."""
    kill_with_parent()
    if os.getppid() != parent_pid:
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, name="llamabind-engine-parent-watch", daemon=True).start()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return LlamabindError(f"{type(exc).__name__}: {exc}")
    return exc


class _Engine:
    """The engine-process side: the scheduler, the embedding jobs, the outgoing queue."""

    def __init__(self, spec: EngineSpec, conn: Connection) -> None:
        from ..core import Model

        self.conn = conn
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.model = spec.loader()
        self.draft: Model | None = None
        cfg = dataclasses.replace(spec.scheduler)
        cfg.max_queue = max(cfg.max_queue, 1 << 16)  # the parent bounds and holds the queue
        try:
            if cfg.spec == "draft":
                if not spec.draft_model:
                    raise ValueError("speculative decoding with a draft model needs a draft model path")
                self.draft = Model(spec.draft_model, n_gpu_layers=spec.draft_n_gpu_layers)
            self.scheduler = Scheduler(self.model, cfg, draft_model=self.draft)
            loras = list(getattr(self.model, "cli_loras", None) or [])
            if loras:
                sched = self.scheduler
                sched.run_in_engine(lambda: sched.ctx.set_loras(loras))
        except BaseException:
            if self.draft is not None:
                self.draft.close()
            raise
        self.jobs = EmbeddingJobs(
            self.model, n_ctx=spec.embeddings_n_ctx, n_seq=spec.embeddings_n_seq, n_threads=cfg.n_threads
        )
        self.requests: dict[int, GenRequest] = {}
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="llamabind-engine-call")
        self.hooks = os.environ.get(TEST_HOOKS_ENV) == "1"

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "n_ctx_slot": self.scheduler.n_ctx_slot,
            "n_params": m.n_params,
            "size": m.size,
            "n_embd": m.n_embd,
            "n_embd_out": m.n_embd_out,
        }

    # ---------------------------------------------------------------- outgoing
    def writer(self) -> None:
        last_status = 0.0
        while True:
            batch: list[Any] = []
            try:
                batch.append(self.out.get(timeout=STATUS_INTERVAL))
            except queue.Empty:
                pass
            while True:
                try:
                    batch.append(self.out.get_nowait())
                except queue.Empty:
                    break
            events: list[tuple[int, Event]] = []
            msgs: list[Any] = []
            finished = False
            for item in batch:
                if isinstance(item, tuple):
                    events.append(item)
                    finished = finished or isinstance(item[1], (DoneEvent, ErrorEvent))
                else:
                    if events:
                        msgs.append(Events(events))
                        events = []
                    msgs.append(item)
            if events:
                msgs.append(Events(events))
            now = time.monotonic()
            if finished or now - last_status >= STATUS_INTERVAL:
                # first, so that a request's Done reaches the parent after counters that include it
                msgs.insert(0, self.status())
                last_status = now
            try:
                self.conn.send(msgs)
            except (OSError, ValueError):  # the parent is gone
                os._exit(0)

    def status(self) -> Status:
        s = self.scheduler
        return Status(
            stats=dataclasses.replace(s.stats),
            slots=s.slot_info(),
            queue_depth=s.queue_depth,
            kv_used_cells=s.kv_used_cells,
            busy_since=s.busy_since,
        )

    # ---------------------------------------------------------------- incoming
    def submit(self, m: Submit) -> None:
        out = self.out
        rid = m.rid

        def emit(ev: Event) -> None:
            if isinstance(ev, ErrorEvent):
                ev = ErrorEvent(_picklable(ev.error))
            if isinstance(ev, (DoneEvent, ErrorEvent)):
                self.requests.pop(rid, None)
            out.put((rid, ev))

        req = GenRequest(
            prompt=m.prompt,
            emit=emit,
            sampling=m.sampling,
            max_tokens=m.max_tokens,
            stop=m.stop,
            logprobs=m.logprobs,
            ignore_eos=m.ignore_eos,
            cache_prompt=m.cache_prompt,
            speculative=m.speculative,
            render_special=m.render_special,
            id=rid,
            submitted_at=time.perf_counter() - max(0.0, time.monotonic() - m.submitted_at),
        )
        if self.hooks and m.test_hook in ("abort", "hang"):
            self._test_hook(m.test_hook)
        self.requests[rid] = req
        try:
            self.scheduler.submit(req)
        except Exception as exc:
            self.requests.pop(rid, None)
            out.put((rid, ErrorEvent(_picklable(exc))))

    def _test_hook(self, hook: str) -> None:
        """Test-only (``LLAMABIND_TEST_HOOKS=1`` in this process): abort the process, or block the
        engine thread forever, from inside the engine thread."""
        sched = self.scheduler

        def job() -> None:
            if hook == "abort":
                os.abort()
            while True:
                time.sleep(3600)

        threading.Thread(target=sched.run_in_engine, args=(job,), daemon=True).start()

    def call(self, m: Call) -> None:
        def run() -> None:
            try:
                if m.name == "embed":
                    value: Any = self.scheduler.run_in_engine(lambda: self.jobs.embed_tokens(m.args[0]))
                elif m.name == "rerank":
                    value = self.scheduler.run_in_engine(lambda: self.jobs.rerank(m.args[0], m.args[1]))
                elif m.name == "slot_action":  # runs its own job in the engine thread
                    value = self.scheduler.slot_action(*m.args)
                else:
                    raise ValueError(f"unknown engine call {m.name!r}")
            except BaseException as exc:
                self.out.put(CallResult(m.cid, error=_picklable(exc)))
                return
            self.out.put(CallResult(m.cid, value=value))

        self.pool.submit(run)

    def serve(self) -> None:
        threading.Thread(target=self.writer, name="llamabind-engine-writer", daemon=True).start()
        self.out.put(Ready(os.getpid(), self.info()))
        while True:
            try:
                msgs = self.conn.recv()
            except (EOFError, OSError):  # the parent is gone: nothing to finish for anyone
                os._exit(0)
            for m in msgs:
                if isinstance(m, Submit):
                    self.submit(m)
                elif isinstance(m, Cancel):
                    req = self.requests.get(m.rid)
                    if req is not None:
                        req.cancel()
                elif isinstance(m, Call):
                    self.call(m)
                elif isinstance(m, Shutdown):
                    return

    def close(self) -> None:
        self.scheduler.shutdown()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.jobs.close()
        if self.draft is not None:
            self.draft.close()


def engine_main(conn: Connection, log_w: Connection, spec: EngineSpec, parent_pid: int, level: int) -> None:
    """The engine process's entry point (``multiprocessing`` 'spawn')."""
    os.dup2(log_w.fileno(), 2)  # native and Python logs go to the parent, which keeps the last lines
    log_w.close()
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(level=level, format="llamabind engine: %(levelname)s %(name)s: %(message)s")
    _die_with_parent(parent_pid)
    try:
        engine = _Engine(spec, conn)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send([LoadFailed(f"{type(exc).__name__}: {exc}", _picklable(exc))])
        return
    try:
        engine.serve()
    finally:
        engine.close()
    sys.stderr.flush()
