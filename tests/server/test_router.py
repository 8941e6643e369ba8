"""A router server (``--models-dir``): requests route by ``model``, models load on first use, swap
under ``--models-max 1``, unload after their TTL; a corrupt GGUF is ``failed`` while the others
work. Driven through the `openai` SDK and httpx against a real uvicorn server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llamabind.batching import SchedulerConfig
from llamabind.server import ServerConfig, create_app
from llamabind.server.model_registry import ModelEntry, scan_models_dir

from .conftest import API_KEY, GREEDY, RunningServer, serve_app

pytestmark = pytest.mark.timeout(300)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@pytest.fixture(scope="module")
def models_dir(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two copies of SmolLM2 (``smol-a``, ``smol-b``), a corrupt GGUF, and a projector-named file
    (not a model)."""
    d = tmp_path_factory.mktemp("models")
    _link(model_path, d / "smol-a.gguf")
    _link(model_path, d / "smol-b.gguf")
    (d / "broken.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    (d / "mmproj-other-f16.gguf").write_bytes(b"GGUF")
    return d


def _serve(entries: list[ModelEntry], config: ServerConfig) -> Iterator[RunningServer]:
    return serve_app(create_app(None, config, models=entries), config)


def _config(**kw: Any) -> ServerConfig:
    base: dict[str, Any] = {
        "api_keys": [API_KEY],
        "scheduler": SchedulerConfig(parallel=2, ctx_per_slot=512, n_batch=256, max_queue=8),
        "sampling": GREEDY,
        "embeddings_n_ctx": 128,
        "engine": "thread",
        "models_max": 1,
    }
    base.update(kw)
    return ServerConfig(**base)


@pytest.fixture()
def router_server(models_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    gens: list[Iterator[RunningServer]] = []

    def make(entries: list[ModelEntry] | None = None, **kw: Any) -> RunningServer:
        gen = _serve(entries if entries is not None else scan_models_dir(models_dir), _config(**kw))
        gens.append(gen)
        return next(gen)

    yield make
    for gen in reversed(gens):
        for _ in gen:
            pass


def _statuses(srv: RunningServer) -> dict[str, dict[str, Any]]:
    with srv.http() as h:
        r = h.get("/v1/models")
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["data"]}


def _ask(client: openai.OpenAI, model: str) -> str:
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    assert r.model == model
    assert r.choices[0].message.content
    return r.choices[0].message.content


def test_models_dir_lists_every_model_with_status(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server()
    listed = srv.client().models.list()
    ids = [m.id for m in listed.data]
    assert sorted(ids) == ["broken", "smol-a", "smol-b"]  # the projector-named file is no model
    st = _statuses(srv)
    assert {k: v["status"] for k, v in st.items()} == dict.fromkeys(ids, "unloaded")
    assert st["smol-a"]["meta"]["quant"] is None or isinstance(st["smol-a"]["meta"]["quant"], str)
    assert st["smol-a"]["meta"]["size_on_disk"] > 50_000_000
    assert "smol-a.gguf" in st["smol-a"]["aliases"]


def test_alternate_requests_load_and_swap(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server(models_max=1)
    client = srv.client()
    answers = {}
    for name in ("smol-a", "smol-b", "smol-a", "smol-b"):
        answers.setdefault(name, _ask(client, name))
        assert _ask(client, name) == answers[name]  # greedy: the same answer after a swap
        st = _statuses(srv)
        loaded = [k for k, v in st.items() if v["status"] == "loaded"]
        assert loaded == [name]
        assert st[name]["meta"]["load_seconds"] > 0
        assert st[name]["meta"]["n_ctx_slot"] == 512
    router = srv.app.state.holder.router  # type: ignore[attr-defined]
    assert router.models["smol-a"].loads == 2 and router.models["smol-a"].unloads == 2
    assert router.models["smol-b"].loads == 2 and router.models["smol-b"].unloads == 1
    # the file's name routes too, and the response names the model
    r = client.completions.create(model="smol-b.gguf", prompt="The sky is", max_tokens=3)
    assert r.model == "smol-b"


def test_concurrent_requests_for_two_models_all_succeed(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server(models_max=1)

    async def main() -> list[str]:
        client = srv.async_client()
        names = ["smol-a", "smol-b"] * 4

        async def one(name: str) -> str:
            r = await client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "Count to three."}], max_tokens=6
            )
            assert r.model == name
            return r.choices[0].message.content or ""

        try:
            return await asyncio.gather(*(one(n) for n in names))
        finally:
            await client.close()

    outs = asyncio.run(main())
    assert len(outs) == 8 and all(outs)
    assert outs[0::2] == [outs[0]] * 4 and outs[1::2] == [outs[1]] * 4  # both are SmolLM2, greedy
    loaded = [k for k, v in _statuses(srv).items() if v["status"] == "loaded"]
    assert len(loaded) == 1


def test_corrupt_model_fails_while_the_others_work(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server(models_max=2)
    client = srv.client()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    body: Any = info.value.body
    assert body["code"] == "model_load_failed" and "broken" in body["message"]
    st = _statuses(srv)
    assert st["broken"]["status"] == "failed"
    assert st["broken"]["meta"]["error"]
    # asked again: the same clear error at once (no retry storm), and the others serve
    with pytest.raises(openai.APIStatusError, match="failed to load"):
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert _ask(client, "smol-a")
    assert _statuses(srv)["smol-a"]["status"] == "loaded"
    with srv.http() as h:
        assert h.get("/health").json() == {
            "status": "ok",
            "models": {"broken": "failed", "smol-a": "loaded", "smol-b": "unloaded"},
        }


def test_ttl_unloads_idle_models(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server(models_max=None, models_ttl=0.5)
    _ask(srv.client(), "smol-a")
    deadline = time.monotonic() + 20
    while _statuses(srv)["smol-a"]["status"] == "loaded":
        assert time.monotonic() < deadline, "the idle model was not unloaded"
        time.sleep(0.1)
    assert _statuses(srv)["smol-a"]["status"] == "unloaded"
    _ask(srv.client(), "smol-a")  # and it loads again on the next request


def test_unknown_model_is_404_listing_the_models(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server()
    with pytest.raises(openai.NotFoundError) as info:
        srv.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    body: Any = info.value.body
    assert body["code"] == "model_not_found"
    for name in ("smol-a", "smol-b", "broken"):
        assert name in body["message"]
    with pytest.raises(openai.NotFoundError):
        srv.client().embeddings.create(model="nope", input="hello")
    with srv.http() as h:  # several models: a request must name one
        r = h.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_required"


def test_every_route_routes_by_model(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server(models_max=2)
    with srv.http() as h:
        r = h.post("/tokenize", json={"model": "smol-b", "content": "Hello world"})
        assert r.status_code == 200 and r.json()["tokens"]
        r = h.post("/detokenize", json={"model": "smol-b", "tokens": r.json()["tokens"]})
        assert r.json()["content"].strip() == "Hello world"
        assert _statuses(srv)["smol-b"]["status"] == "loaded"
        emb = srv.client().embeddings.create(model="smol-a", input="hello")
        assert emb.model == "smol-a" and len(emb.data[0].embedding) > 0
        r = h.post(
            "/v1/messages",
            json={"model": "smol-a", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200 and r.json()["model"] == "smol-a"
        slots = h.get("/slots", params={"model": "smol-a"}).json()
        assert len(slots) == 2
        assert set(h.get("/slots").json()) == {"smol-a", "smol-b"}
        metrics = h.get("/metrics").text
        assert 'llamabind_requests_total{model="smol-a"}' in metrics
        assert 'llamabind_slots{model="smol-b"} 2.0' in metrics


def test_load_and_unload_endpoints(router_server: Callable[..., RunningServer]) -> None:
    srv = router_server(models_max=2)
    with httpx.Client(base_url=srv.base_url) as anon:
        assert anon.post("/models/load", json={"model": "smol-a"}).status_code == 401
    with srv.http() as h:
        r = h.post("/models/load", json={"model": "smol-a"})
        assert r.status_code == 200 and r.json()["status"] == "loaded"
        assert _statuses(srv)["smol-a"]["status"] == "loaded"
        r = h.post("/models/unload", json={"model": "smol-a"})
        assert r.json() == {"model": "smol-a", "status": "unloaded", "unloaded": True}
        r = h.post("/models/load", json={"model": "broken"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_load_failed"
        assert h.post("/models/load", json={"model": "zzz"}).status_code == 404
        assert h.post("/models/load", json={}).status_code == 400


def test_roles_and_presets(router_server: Callable[..., RunningServer], models_dir: Path) -> None:
    entries = [
        ModelEntry(name="chat", path=models_dir / "smol-a.gguf", aliases=("gpt-4o-mini",), parallel=1),
        ModelEntry(name="embed", path=models_dir / "smol-b.gguf", role="embedding", source="cli"),
    ]
    srv = router_server(entries, models_max=2)
    client = srv.client()
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert r.model == "chat"
    assert _statuses(srv)["chat"]["meta"]["parallel"] == 1
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])
    emb = client.embeddings.create(model="embed", input=["a", "b"])
    assert len(emb.data) == 2
    with srv.http() as h:  # the -m model ("cli") is the default for requests without a model
        r = h.post("/tokenize", json={"content": "hi"})
        assert r.status_code == 200


def test_process_engines_swap(router_server: Callable[..., RunningServer]) -> None:
    """With the process engine each model is its own engine process."""
    srv = router_server(models_max=1, engine="process")
    client = srv.client()
    router = srv.app.state.holder.router  # type: ignore[attr-defined]
    first = _ask(client, "smol-a")
    pid_a = router.models["smol-a"].state.scheduler.pid
    assert _ask(client, "smol-b") == first
    pid_b = router.models["smol-b"].state.scheduler.pid
    assert pid_a != pid_b and router.models["smol-a"].state is None
    with srv.http() as h:
        assert "llamabind_engine_ready" in h.get("/metrics").text


def test_hub_model_from_the_cache(
    router_server: Callable[..., RunningServer],
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A preset's ``hf`` model resolves through the Hub code on first use (offline: the cache)."""
    cache = tmp_path / "hf"
    root = cache / "models--owner--Smol-GGUF"
    commit = "b" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "blobs").mkdir()
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    _link(models_dir / "smol-a.gguf", root / "blobs" / ("c" * 64))
    os.symlink(os.path.relpath(root / "blobs" / ("c" * 64), snap), snap / "Smol-Q4_1.gguf")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entries = [
        ModelEntry(name="hub", hf="owner/Smol-GGUF:Q4_1", source="preset"),
        ModelEntry(name="missing", hf="owner/Nothing-GGUF", source="preset"),
    ]
    srv = router_server(entries, models_max=1)
    assert _ask(srv.client(), "hub")
    assert _statuses(srv)["hub"]["meta"]["file"] == "Smol-Q4_1.gguf"
    with pytest.raises(openai.APIStatusError, match="failed to load") as info:
        _ask(srv.client(), "missing")
    assert info.value.status_code == 503
    assert "Nothing-GGUF" in _statuses(srv)["missing"]["meta"]["error"]


def test_serve_command_with_models_dir_and_m(models_dir: Path, model_path: Path) -> None:
    """``llamabind serve --models-dir D -m MODEL --models-max 1``: -m's model loads at startup and
    serves requests that name no model; the directory's models load on demand."""
    from tests.helpers.core import free_port

    port = free_port()
    cmd = [
        sys.executable, "-m", "llamabind", "serve", "--models-dir", str(models_dir), "-m", str(model_path),
        "-a", "main", "--models-max", "1", "--port", str(port), "--engine", "process", "-np", "1",
        "-c", "512", "--temp", "0", "--no-webui",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as h:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                try:
                    health = h.get("/health").json()
                    if health.get("models", {}).get("main") == "loaded":
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            assert health["models"] == {
                "main": "loaded",
                "broken": "unloaded",
                "smol-a": "unloaded",
                "smol-b": "unloaded",
            }
            r = h.post("/v1/completions", json={"prompt": "The sky is", "max_tokens": 3})
            assert r.status_code == 200 and r.json()["model"] == "main"
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        r2 = client.completions.create(model="smol-b", prompt="The sky is", max_tokens=3)
        assert r2.model == "smol-b" and r2.choices[0].text == r.json()["choices"][0]["text"]
        statuses = {m.id: m.model_extra["status"] for m in client.models.list().data}  # type: ignore[index]
        assert statuses["smol-b"] == "loaded" and statuses["main"] == "unloaded"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
