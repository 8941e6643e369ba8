"""``llamabind serve`` as a command, and the app while its model is still loading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

import llamabind as lb
from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig
from tests.helpers.core import free_port

from .conftest import GREEDY, RunningServer


def test_serve_command(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# keys\nsk-one\nsk-two\n")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llamabind",
        "serve",
        "--port",
        str(port),
        "--parallel",
        "2",
        "--ctx-size",
        "1024",
        "--api-key-file",
        str(keys),
        "--model-alias",
        "tiny",
        "--temp",
        "0",
        "--max-queue",
        "4",
        "--cors-origin",
        "*",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                r = httpx.get(base + "/health", timeout=2)
                status = r.status_code
                if status == 200:
                    break
                assert r.json()["status"] == "loading"
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert status == 200
        assert httpx.get(base + "/v1/models").status_code == 401
        client = openai.OpenAI(base_url=base + "/v1", api_key="sk-two", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        r = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert r.usage is not None and r.usage.completion_tokens <= 3
        slots = httpx.get(base + "/slots", headers={"Authorization": "Bearer sk-one"}).json()
        assert len(slots) == 2 and slots[0]["n_ctx"] == 512
    finally:
        proc.terminate()
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc in (0, -signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal


def test_serve_usage_errors() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "llamabind", "serve", "--api-key-file", "/nonexistent/keys"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "api-key-file" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "llamabind", "serve", "--parallel", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2


def test_health_while_loading(
    model_path: Path, serve_with: Callable[[object, ServerConfig], RunningServer]
) -> None:
    release = threading.Event()

    def loader() -> lb.Model:
        release.wait(60)
        return lb.Model(model_path)

    cfg = ServerConfig(scheduler=SchedulerConfig(parallel=1, ctx_per_slot=256), sampling=GREEDY)
    srv = serve_with(loader, cfg)
    with srv.http() as h:
        r = h.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = h.get("/v1/models")
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        release.set()
        deadline = time.monotonic() + 60
        while h.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = h.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2


def test_health_when_loading_failed(serve_with: Callable[[object, ServerConfig], RunningServer]) -> None:
    def loader() -> lb.Model:
        raise lb.ModelLoadError("no such model: /nope.gguf")

    srv = serve_with(loader, ServerConfig())
    with srv.http() as h:
        deadline = time.monotonic() + 30
        while (r := h.get("/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["status"] == "error"
        err = h.get("/v1/models").json()["error"]
        assert err["code"] == "model_load_failed" and "nope.gguf" in err["message"]


@pytest.mark.parametrize("path", ["/health", "/v1/health"])
def test_health_is_open(server: RunningServer, path: str) -> None:
    assert httpx.get(server.base_url + path).json() == {"status": "ok"}
