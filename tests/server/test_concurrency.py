"""Continuous batching seen from clients: 16 concurrent streams over 4 slots give the same greedy text
as each request alone; beyond --max-queue the server answers 503; a client that disconnects
mid-stream frees its slot."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig

from .conftest import ALIAS, GREEDY, RunningServer

PARALLEL = 4
MAX_QUEUE = 12  # 4 generating + 12 waiting = 16 accepted; the 17th is refused
TOPICS = [
    "apples",
    "the sea",
    "winter",
    "a red bicycle",
    "mountains",
    "coffee",
    "the moon",
    "old books",
    "trains",
    "rain in the city",
    "a small dog",
    "music",
    "bread",
    "the desert",
    "clocks",
    "a lighthouse",
]
MAX_TOKENS = 12


# 256 tokens per slot keeps every slot's KV view under 512 cells: llama.cpp's CPU attention
# switches kernels for a single query over >= 512 cells, so a request decoding alone would then
# round differently from the same request batched with others.
@pytest.fixture(scope="module")
def busy_server(make_server: Callable[[ServerConfig], RunningServer]) -> RunningServer:
    return make_server(
        ServerConfig(
            model_alias=ALIAS,
            scheduler=SchedulerConfig(parallel=PARALLEL, ctx_per_slot=256, n_batch=512, max_queue=MAX_QUEUE),
            sampling=GREEDY,
        )
    )


def body(topic: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": ALIAS,
        "messages": [{"role": "user", "content": f"Write one sentence about {topic}."}],
        "max_tokens": MAX_TOKENS,
        **extra,
    }


def sse_text(raw: str) -> tuple[str, str | None]:
    text, finish = "", None
    for block in raw.split("\n\n"):
        block = block.strip()
        if not block or block == "data: [DONE]":
            continue
        ev = json.loads(block[len("data: ") :])
        assert "error" not in ev, ev
        for ch in ev["choices"]:
            text += ch["delta"].get("content") or ""
            finish = ch["finish_reason"] or finish
    return text, finish


def test_concurrent_streams_equal_solo_and_queue_bound(busy_server: RunningServer) -> None:
    client = busy_server.client()
    solo = []
    for topic in TOPICS:
        r = client.chat.completions.create(**body(topic))  # type: ignore[call-overload]
        solo.append(r.choices[0].message.content)
    assert len(set(solo)) > 1  # different prompts, different answers

    async def run() -> tuple[list[str], httpx.Response]:
        async with httpx.AsyncClient(base_url=busy_server.base_url, timeout=300.0) as http:
            opened: list[Any] = []
            streams: list[httpx.Response] = []
            try:
                # open all 16 streams: each has its response headers, so each was accepted (queued or running)
                for topic in TOPICS:
                    cm = http.stream("POST", "/v1/chat/completions", json=body(topic, stream=True))
                    opened.append(cm)
                    streams.append(await cm.__aenter__())
                assert all(s.status_code == 200 for s in streams)
                # a 17th request while 4 slots are busy and 12 wait: refused
                extra = await http.post("/v1/chat/completions", json=body("overflow"))
                texts = list(await asyncio.gather(*(s.aread() for s in streams)))
            finally:
                for cm in opened:
                    await cm.__aexit__(None, None, None)
            return [t.decode() for t in texts], extra

    raw, extra = asyncio.run(run())
    assert extra.status_code == 503, extra.text
    err = extra.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "server_busy"
    got = [sse_text(r)[0] for r in raw]
    assert got == solo
    # every slot took part
    with busy_server.http() as h:
        assert sum(1 for s in h.get("/slots").json() if s["n_cached"] > 0) == PARALLEL
    # and the queue drained: a new request is accepted again
    assert client.chat.completions.create(**body(TOPICS[0])).choices[0].message.content == solo[0]  # type: ignore[call-overload]


def test_client_disconnect_frees_slot(busy_server: RunningServer) -> None:
    http = busy_server.http()
    before = _cancelled(http)
    long_body = body("the history of the world", stream=True, max_tokens=200, ignore_eos=True)
    with http.stream("POST", "/v1/chat/completions", json=long_body) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen >= 4:
                break
        busy = [s for s in http.get("/slots").json() if s["is_processing"]]
        assert len(busy) == 1 and busy[0]["n_decoded"] < 200
    # the connection is closed: the slot must free at the next engine step, long before 200 tokens
    deadline = time.monotonic() + 15
    while True:
        slots = http.get("/slots").json()
        if not any(s["is_processing"] for s in slots):
            break
        assert time.monotonic() < deadline, slots
        time.sleep(0.05)
    assert _cancelled(http) == before + 1
    http.close()


def test_non_streaming_client_disconnect_frees_slot(busy_server: RunningServer) -> None:
    http = busy_server.http()
    before = _cancelled(http)
    long_body = body("the history of the world", max_tokens=200, ignore_eos=True)
    # the client gives up long before 200 tokens: its connection closes, the server cancels
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(busy_server.base_url + "/v1/chat/completions", json=long_body, timeout=0.3)
    deadline = time.monotonic() + 15
    while any(s["is_processing"] for s in http.get("/slots").json()) or _cancelled(http) == before:
        assert time.monotonic() < deadline, http.get("/slots").json()
        time.sleep(0.05)
    assert _cancelled(http) == before + 1  # cancelled, not finished by length
    http.close()


def _cancelled(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("llamabind_requests_cancelled_total "):
            return float(line.split()[1])
    raise AssertionError("no cancelled counter")
