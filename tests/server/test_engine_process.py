"""The engine in its own process: a crash, an abort or a hang of the engine fails only the requests
running in it; the server survives, restarts the engine and keeps serving; shutdown leaves no
engine process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import llamabind as lb
from llamabind.batching import SchedulerConfig
from llamabind.engine import EngineProcess
from llamabind.server import ServerConfig
from tests.helpers.core import free_port

from .conftest import GREEDY, RunningServer

Serve = Callable[[object, ServerConfig], RunningServer]


def _config(**kw: Any) -> ServerConfig:
    return ServerConfig(
        engine="process",
        scheduler=SchedulerConfig(parallel=2, ctx_per_slot=1024, n_batch=512, max_queue=8),
        sampling=GREEDY,
        embeddings_n_ctx=256,
        **kw,
    )


def _engine(srv: RunningServer) -> EngineProcess:
    sched = srv.scheduler()
    assert isinstance(sched, EngineProcess)
    return sched


def _wait_ready(srv: RunningServer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with srv.http() as h:
        while time.monotonic() < deadline:
            if h.get("/health").status_code == 200:
                return
            time.sleep(0.05)
    raise AssertionError("the engine did not become ready")


def _wait_busy(engine: EngineProcess, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.busy_slots < n:
        assert time.monotonic() < deadline, "the requests did not start"
        time.sleep(0.02)


def _long(prompt: str = "Write a long story about a dragon.", **kw: Any) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": 900, "ignore_eos": True, "temperature": 0, **kw}


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children(pid: int) -> list[int]:
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


@pytest.fixture()
def hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine processes started during the test honour ``__test_engine``."""
    monkeypatch.setenv("LLAMABIND_TEST_HOOKS", "1")


def test_sigkill_fails_running_requests_then_serves(model: lb.Model, serve_with: Serve) -> None:
    srv = serve_with(model, _config())
    _wait_ready(srv)
    engine = _engine(srv)
    first_pid = engine.pid
    assert first_pid is not None and first_pid != os.getpid()
    stream_events: list[str] = []
    streaming = threading.Event()
    plain: dict[str, httpx.Response] = {}

    def stream() -> None:
        with srv.http() as h, h.stream("POST", "/v1/completions", json=_long(stream=True)) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    stream_events.append(line[6:])
                    streaming.set()

    def non_stream() -> None:
        with srv.http() as h:
            plain["r"] = h.post("/v1/completions", json=_long("Tell me about the sea."))

    threads = [threading.Thread(target=stream), threading.Thread(target=non_stream)]
    for t in threads:
        t.start()
    assert streaming.wait(60)
    _wait_busy(engine, 2)
    os.kill(first_pid, signal.SIGKILL)
    for t in threads:
        t.join(60)
    # streaming: an SSE error event, then the stream ends
    assert stream_events[-1] == "[DONE]"
    err = json.loads(stream_events[-2])
    assert err["error"]["code"] == "engine_crashed" and "SIGKILL" in err["error"]["message"]
    # non-streaming: HTTP 500 with an OpenAI error body
    r = plain["r"]
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "engine_crashed" and r.json()["error"]["type"] == "server_error"
    with srv.http() as h:
        health = h.get("/health")
        if health.status_code != 200:  # still restarting
            assert health.status_code == 503 and health.json()["status"] == "loading"
        deadline = time.monotonic() + 60
        while True:  # requests sent while the engine restarts wait for it
            r = h.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 4, "temperature": 0})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        assert engine.pid != first_pid and not _alive(first_pid)
        metrics = h.get("/metrics").text
    assert 'llamabind_engine_restarts_total{cause="sigkill"} 1.0' in metrics


def test_queued_requests_wait_for_the_restarted_engine(model: lb.Model, serve_with: Serve) -> None:
    cfg = _config()
    cfg.scheduler.parallel = 1
    srv = serve_with(model, cfg)
    _wait_ready(srv)
    engine = _engine(srv)
    results: dict[str, httpx.Response] = {}

    def post(name: str, body: dict[str, Any]) -> None:
        with srv.http() as h:
            results[name] = h.post("/v1/completions", json=body)

    running = threading.Thread(target=post, args=("running", _long()))
    running.start()
    _wait_busy(engine, 1)
    queued = threading.Thread(
        target=post, args=("queued", {"prompt": "Hello", "max_tokens": 4, "temperature": 0})
    )
    queued.start()
    deadline = time.monotonic() + 30
    while engine.queue_depth < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    running.join(60)
    queued.join(90)
    assert results["running"].status_code == 500
    assert results["running"].json()["error"]["code"] == "engine_crashed"
    assert results["queued"].status_code == 200
    assert results["queued"].json()["usage"]["completion_tokens"] == 4


def test_abort_in_the_engine_leaves_the_server_up(model: lb.Model, serve_with: Serve, hooks: None) -> None:
    srv = serve_with(model, _config())
    _wait_ready(srv)
    with srv.http() as h:
        r = h.post(
            "/v1/completions",
            json={"prompt": "Hi", "max_tokens": 3, "temperature": 0, "__test_engine": "abort"},
        )
        assert r.status_code == 500 and r.json()["error"]["code"] == "engine_crashed"
        assert "SIGABRT" in r.json()["error"]["message"]
        deadline = time.monotonic() + 60
        while True:
            r = h.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
            )
            if r.status_code == 200 or time.monotonic() > deadline:
                break
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        assert 'llamabind_engine_restarts_total{cause="sigabrt"} 1.0' in h.get("/metrics").text


def test_test_hook_needs_the_environment_variable(
    model: lb.Model, serve_with: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMABIND_TEST_HOOKS", raising=False)
    srv = serve_with(model, _config())
    _wait_ready(srv)
    pid = _engine(srv).pid
    with srv.http() as h:
        for hook in ("abort", "hang"):
            r = h.post(
                "/v1/completions",
                json={"prompt": "Hi", "max_tokens": 3, "temperature": 0, "__test_engine": hook},
            )
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert _engine(srv).pid == pid and not _engine(srv).restarts


def test_watchdog_restarts_a_hung_engine(model: lb.Model, serve_with: Serve, hooks: None) -> None:
    srv = serve_with(model, _config(watchdog_timeout=2.0))
    _wait_ready(srv)
    t0 = time.monotonic()
    with srv.http() as h:
        r = h.post(
            "/v1/completions",
            json={"prompt": "Hi", "max_tokens": 3, "temperature": 0, "__test_engine": "hang"},
        )
        assert r.status_code == 500 and r.json()["error"]["code"] == "engine_crashed"
        assert "watchdog" in r.json()["error"]["message"]
        assert time.monotonic() - t0 < 60
        # /health answers at once while the engine hangs or restarts
        t1 = time.monotonic()
        assert h.get("/health").status_code in (200, 503)
        assert time.monotonic() - t1 < 1.0
        _wait_ready(srv)
        r = h.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200
        assert 'llamabind_engine_restarts_total{cause="watchdog"} 1.0' in h.get("/metrics").text


def test_embeddings_and_slots_through_the_engine_process(model: lb.Model, serve_with: Serve) -> None:
    srv = serve_with(model, _config())
    _wait_ready(srv)
    with srv.http() as h:
        r = h.post("/v1/embeddings", json={"input": ["hello world", "good night"]})
        assert r.status_code == 200
        data = r.json()["data"]
        assert len(data) == 2 and len(data[0]["embedding"]) == model.n_embd
        local = lb.Embedder(model, pooling="mean", normalize=True, n_ctx=256)
        try:
            want = local.embed_tokens([model.tokenize("hello world", add_special=True)])[0]
        finally:
            local.close()
        assert max(abs(a - b) for a, b in zip(data[0]["embedding"], want, strict=True)) < 1e-4
        slots = h.get("/slots").json()
        assert len(slots) == 2 and slots[0]["n_ctx"] == 1024
        r = h.post("/v1/completions", json={"prompt": [model.n_vocab + 5], "max_tokens": 2})
        assert r.status_code == 400


# ------------------------------------------------------------------------- the command
@pytest.fixture()
def serve_cmd() -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], str]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        cmd = [sys.executable, "-m", "llamabind", "serve", "--port", str(port), "--parallel", "2"]
        cmd += ["--ctx-size", "2048", "--temp", "0", *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not start")

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(30)


def test_sigterm_with_streams_in_flight(
    serve_cmd: Callable[..., tuple[subprocess.Popen[bytes], str]],
) -> None:
    proc, base = serve_cmd("--shutdown-timeout", "3")
    engines = _children(proc.pid)
    assert engines
    started = threading.Barrier(3)
    ended: list[bool] = []

    def stream() -> None:
        with (
            httpx.Client(base_url=base, timeout=60) as h,
            h.stream("POST", "/v1/completions", json=_long(stream=True)) as r,
        ):
            try:
                for i, _ in enumerate(r.iter_lines()):
                    if i == 0:
                        started.wait(30)
            except httpx.HTTPError:
                pass
        ended.append(True)

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait(60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    for t in threads:
        t.join(30)
    assert ended == [True, True]
    assert not _children(proc.pid)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in engines):
        assert time.monotonic() < deadline, "an engine process outlived the server"
        time.sleep(0.1)


def test_parent_sigkill_leaves_no_engine(
    serve_cmd: Callable[..., tuple[subprocess.Popen[bytes], str]],
) -> None:
    proc, _ = serve_cmd()
    engines = _children(proc.pid)
    assert engines
    proc.kill()
    proc.wait(30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in engines):
        assert time.monotonic() < deadline, "an engine process outlived its killed parent"
        time.sleep(0.1)
