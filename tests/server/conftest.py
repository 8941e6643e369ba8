"""A real server on a free loopback port, driven only through the `openai` SDK and `httpx`.

One uvicorn server per configuration, started in a background thread and shared by the whole
session (loading SmolLM2 and creating the context take a moment; generation is greedy and short).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import uvicorn

import llamabind as lb
from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig, create_app
from tests.helpers.core import GREEDY

API_KEY = "sk-llamabind-test"
ALIAS = "smollm2-test"


@dataclass
class RunningServer:
    base_url: str
    api_key: str | None
    app: object

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.v1, api_key=self.api_key or "unused", max_retries=0, timeout=120.0, **kwargs
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.v1, api_key=self.api_key or "unused", max_retries=0, timeout=300.0
        )

    def http(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120.0)

    def scheduler(self) -> object:
        return self.app.state.holder.state.scheduler  # type: ignore[attr-defined]


def _serve(model: lb.Model | Callable[[], lb.Model], config: ServerConfig) -> Iterator[RunningServer]:
    return serve_app(create_app(model, config), config)


def serve_app(app: Any, config: ServerConfig) -> Iterator[RunningServer]:
    """Run ``app`` with uvicorn in a thread on a free loopback port until the generator is closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", config.api_keys[0] if config.api_keys else None, app)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


@pytest.fixture(scope="session")
def make_server(model: lb.Model) -> Iterator[Callable[[ServerConfig], RunningServer]]:
    stack: list[Iterator[RunningServer]] = []

    def make(config: ServerConfig) -> RunningServer:
        gen = _serve(model, config)
        stack.append(gen)
        return next(gen)

    yield make
    for gen in reversed(stack):
        for _ in gen:
            pass


@pytest.fixture()
def serve_with() -> Iterator[Callable[[lb.Model | Callable[[], lb.Model], ServerConfig], RunningServer]]:
    """A server for one test (e.g. over a model loader); stopped after the test."""
    stack: list[Iterator[RunningServer]] = []

    def make(source: lb.Model | Callable[[], lb.Model], config: ServerConfig) -> RunningServer:
        gen = _serve(source, config)
        stack.append(gen)
        return next(gen)

    yield make
    for gen in reversed(stack):
        for _ in gen:
            pass


@pytest.fixture(scope="session")
def server(make_server: Callable[[ServerConfig], RunningServer]) -> RunningServer:
    """The main server: 2 slots of 1024 tokens, an API key, greedy by default."""
    return make_server(
        ServerConfig(
            model_alias=ALIAS,
            api_keys=[API_KEY],
            cors_origins=["http://example.test"],
            scheduler=SchedulerConfig(parallel=2, ctx_per_slot=1024, n_batch=512, max_queue=8),
            sampling=GREEDY,
            embeddings_n_ctx=512,
        )
    )


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def strict_server(make_server: Callable[[ServerConfig], RunningServer]) -> RunningServer:
    """A server that answers only its own model names (``--strict-model-name``): one small slot."""
    return make_server(
        ServerConfig(
            model_alias=ALIAS,
            strict_model_name=True,
            scheduler=SchedulerConfig(parallel=1, ctx_per_slot=512, n_batch=256, max_queue=4),
            sampling=GREEDY,
            embeddings_n_ctx=128,
        )
    )


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """An httpx client of the main server (with its API key)."""
    with server.http() as h:
        yield h


HI = [{"role": "user", "content": "Hi"}]


def chat(http: httpx.Client, **body: Any) -> httpx.Response:
    """POST a 2-token chat completion of ``HI`` to /v1/chat/completions; ``body`` overrides."""
    return http.post("/v1/chat/completions", json={"model": ALIAS, "messages": HI, "max_tokens": 2, **body})
