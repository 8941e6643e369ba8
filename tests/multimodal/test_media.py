"""Media references without a model: sniffing, data URLs, file ids, the SSRF-safe remote fetch
(against local HTTP servers, with DNS answers faked), and the in-memory /v1/files store driven by
the openai SDK."""

from __future__ import annotations

import asyncio
import base64
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

import tests.helpers.fixtures_mtmd as fx
from llamabind.multimodal import (
    MediaError,
    MediaPolicy,
    MediaResolver,
    canonicalize_media_parts,
    decode_data_url,
    fetch_remote,
    is_public_address,
    media_hash,
    sniff,
)
from llamabind.multimodal import media as media_mod
from llamabind.server.files import FileStore, FileStoreError, create_files_router

PNG = fx.png_bytes(fx.sample_image(20, 10))
WAV = fx.wav_bytes(fx.sample_tone(0.1))


# ---------------------------------------------------------------- sniffing


def test_sniff_formats_and_sizes() -> None:
    assert sniff(PNG).kind == "image" and (sniff(PNG).width, sniff(PNG).height) == (20, 10)
    assert sniff(WAV).format == "wav" and sniff(WAV).kind == "audio"
    assert sniff(b"GIF89a" + (300).to_bytes(2, "little") + (200).to_bytes(2, "little")).pixels == 60000
    jpeg = (
        b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x11\x08"
        + (480).to_bytes(2, "big")
        + (640).to_bytes(2, "big")
    )
    info = sniff(jpeg)
    assert (info.format, info.width, info.height) == ("jpeg", 640, 480)
    assert sniff(b"fLaC\x00\x00").format == "flac"
    assert sniff(b"ID3\x04\x00").format == "mp3"
    assert (
        sniff(
            b"RIFF\x00\x00\x00\x00WEBPVP8X"
            + bytes(8)
            + (99).to_bytes(3, "little")
            + (49).to_bytes(3, "little")
        ).pixels
        == 5000
    )
    assert sniff(b"plain text").kind == "unknown"


# ---------------------------------------------------------------- data URLs, file ids


def test_data_urls() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    data, mime = decode_data_url(url)
    assert data == PNG and mime == "image/png"
    assert decode_data_url("data:text/plain,hello%20world")[0] == b"hello world"
    with pytest.raises(MediaError, match="exceeds the limit") as ei:
        decode_data_url(url, max_bytes=100)
    assert ei.value.status == 413
    for bad, pattern in [("data:image/png;base64", "malformed"), ("data:;base64,@@@", "invalid base64")]:
        with pytest.raises(MediaError, match=pattern):
            decode_data_url(bad)


def test_resolver_sources() -> None:
    store = FileStore()
    f = store.add(PNG, "a.png", "vision")
    r = MediaResolver(files=store.content)
    a = r.resolve_url("data:image/png;base64," + base64.b64encode(PNG).decode())
    b = r.resolve_url(f.id)
    c = r.resolve_url("llamabind-file:" + f.id)
    assert a.hash == b.hash == c.hash == media_hash(PNG) == f.sha256
    assert (a.kind, a.format, a.source, b.source) == ("image", "png", "data-url", "file")
    audio = r.resolve_audio(base64.b64encode(WAV).decode(), "wav")
    assert audio.kind == "audio" and audio.data == WAV
    with pytest.raises(MediaError, match="no uploaded file"):
        r.resolve_url("file-missing")
    with pytest.raises(MediaError, match="remote media URLs are disabled"):
        r.resolve_url("https://example.com/cat.png")
    with pytest.raises(MediaError, match="unsupported media reference"):
        r.resolve_url("/etc/passwd")  # local files only when allow_local_files
    with pytest.raises(MediaError, match="exceeds the media limit"):
        MediaResolver(MediaPolicy(max_bytes=10), files=store.content).resolve_url(f.id)


def test_canonicalize_file_parts() -> None:
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_file", "image_file": {"file_id": "file-abc"}},
                {"type": "file", "file": {"file_id": "file-def"}},
            ],
        },
        {"role": "assistant", "content": "ok"},
    ]
    out = canonicalize_media_parts(msgs)
    parts = out[0]["content"]
    assert parts[0] == {"type": "text", "text": "hi"}
    assert parts[1] == {"type": "image_url", "image_url": {"url": "llamabind-file:file-abc"}}
    assert parts[2]["image_url"]["url"] == "llamabind-file:file-def"
    assert out[1] == msgs[1] and msgs[0]["content"][1]["type"] == "image_file"  # input untouched


# ---------------------------------------------------------------- SSRF-safe fetch


@pytest.mark.parametrize(
    ("addr", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
        ("not an address", False),
    ],
)
def test_is_public_address(addr: str, public: bool) -> None:
    assert is_public_address(addr) is public


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, Callable[[_Handler], None]] = {}

    def do_GET(self) -> None:
        fn = self.routes.get(self.path.split("?")[0])
        if fn is None:
            self.send_error(404)
            return
        fn(self)

    def log_message(self, *args: Any) -> None:
        pass


def _send(h: _Handler, body: bytes, ctype: str = "image/png", length: bool = True) -> None:
    h.send_response(200)
    h.send_header("Content-Type", ctype)
    if length:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    def slow(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        for _ in range(50):
            try:
                h.wfile.write(b"x" * 10)
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    def redirect(target: str) -> Callable[[_Handler], None]:
        def fn(h: _Handler) -> None:
            h.send_response(302)
            h.send_header("Location", target.replace("PORT", str(h.server.server_address[1])))
            h.send_header("Content-Length", "0")
            h.end_headers()

        return fn

    _Handler.routes = {
        "/cat.png": lambda h: _send(h, PNG),
        "/big.png": lambda h: _send(h, PNG + b"\0" * 5000),
        "/big-chunked.png": lambda h: _send(h, PNG + b"\0" * 5000, length=False),
        "/slow.png": slow,
        "/to-cat": redirect("http://public.test:PORT/cat.png"),
        "/to-internal": redirect("http://internal.test:PORT/cat.png"),
        "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
    }
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_fetch_from_a_local_server_when_private_networks_are_allowed(server: int) -> None:
    policy = MediaPolicy(
        allow_remote=True, allow_private_networks=True, max_bytes=len(PNG) + 100, remote_timeout=5
    )
    data, mime = fetch_remote(f"http://127.0.0.1:{server}/cat.png", policy)
    assert data == PNG and mime == "image/png"
    r = MediaResolver(policy).resolve_url(f"http://localhost:{server}/cat.png")
    assert r.source == "remote" and r.hash == media_hash(PNG)
    # size limit: by Content-Length, and while streaming a body without one
    for path in ("/big.png", "/big-chunked.png"):
        with pytest.raises(MediaError, match="exceeds the limit") as ei:
            fetch_remote(f"http://127.0.0.1:{server}{path}", policy)
        assert ei.value.status == 413
    with pytest.raises(MediaError, match="HTTP 404"):
        fetch_remote(f"http://127.0.0.1:{server}/missing.png", policy)


def test_fetch_total_timeout(server: int) -> None:
    policy = MediaPolicy(allow_remote=True, allow_private_networks=True, remote_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(MediaError, match="timed out") as ei:
        fetch_remote(f"http://127.0.0.1:{server}/slow.png", policy)
    assert time.monotonic() - t0 < 3
    assert ei.value.status == 408


def test_loopback_and_private_targets_are_refused(server: int) -> None:
    policy = MediaPolicy(allow_remote=True)
    for url in (
        f"http://127.0.0.1:{server}/cat.png",
        f"http://localhost:{server}/cat.png",
        "http://[::1]/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.png",
    ):
        with pytest.raises(MediaError, match="non-public address") as ei:
            fetch_remote(url, policy)
        assert ei.value.status == 403
    for url, pattern in [
        ("ftp://example.com/x", "unsupported media URL scheme"),
        ("http://user:pw@example.com/x", "credentials"),
    ]:
        with pytest.raises(MediaError, match=pattern):
            fetch_remote(url, policy)
    with pytest.raises(MediaError, match="unsupported media URL scheme"):
        fetch_remote("http://example.com/x", MediaPolicy(allow_remote=True, allowed_schemes=("https",)))


def test_dns_answers_are_checked_and_pinned(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``public.test`` resolves to a public address, ``internal.test`` to a private one. Connections
    go to the checked address (faked here: every connection lands on the local test server), and a
    redirect to a host resolving to a private address is refused at that hop."""
    fake_dns = {"public.test": "93.184.216.34", "internal.test": "10.0.0.7", "rebind.test": "8.8.4.4"}
    real_getaddrinfo = socket.getaddrinfo
    connected: list[tuple[str, int]] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in fake_dns:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (fake_dns[host], port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    real_create = socket.create_connection

    def create_connection(addr: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(addr)
        return real_create(("127.0.0.1", server), *args, **kwargs)

    monkeypatch.setattr(media_mod.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(media_mod.socket, "create_connection", create_connection)
    policy = MediaPolicy(allow_remote=True, remote_timeout=5)

    data, _ = fetch_remote(f"http://public.test:{server}/cat.png", policy)
    assert data == PNG
    assert connected[-1] == ("93.184.216.34", server)  # pinned to the checked address
    data, _ = fetch_remote(f"http://public.test:{server}/to-cat", policy)  # redirect to a public host
    assert data == PNG
    with pytest.raises(MediaError, match=r"internal\.test.*non-public address \(10\.0\.0\.7\)"):
        fetch_remote(f"http://internal.test:{server}/cat.png", policy)
    with pytest.raises(MediaError, match="non-public"):
        fetch_remote(f"http://public.test:{server}/to-internal", policy)
    with pytest.raises(MediaError, match="non-public"):
        fetch_remote(f"http://public.test:{server}/to-metadata", policy)


# ---------------------------------------------------------------- file store


def test_file_store_limits() -> None:
    s = FileStore(max_file_bytes=100, max_total_bytes=150, max_files=3)
    a = s.add(b"a" * 100, "a.bin")
    with pytest.raises(FileStoreError, match="exceeds the limit") as ei:
        s.add(b"b" * 101)
    assert ei.value.status == 413
    with pytest.raises(FileStoreError, match="store is full"):
        s.add(b"c" * 60)
    with pytest.raises(FileStoreError, match="empty"):
        s.add(b"")
    s.add(b"d" * 50)
    assert s.total_bytes == 150 and len(s) == 2
    assert s.delete(a.id) and not s.delete(a.id)
    s.add(b"e")
    s.add(b"f")
    with pytest.raises(FileStoreError, match="3 files"):
        s.add(b"g")
    files, more = s.list(limit=2)
    assert more and [f.data for f in files] == [b"f", b"e"]
    files, more = s.list(order="asc", after=files[0].id)
    assert files == [] and not more


def _client(store: FileStore) -> openai.AsyncOpenAI:
    app = FastAPI()
    app.include_router(create_files_router(store))
    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return openai.AsyncOpenAI(
        base_url="http://test/v1", api_key="sk-test", http_client=http_client, max_retries=0
    )


def test_files_api_with_the_openai_sdk() -> None:
    store = FileStore(max_file_bytes=4096)

    async def scenario() -> None:
        client = _client(store)
        up = await client.files.create(file=("cat.png", PNG, "image/png"), purpose="vision")
        assert up.id.startswith("file-") and up.bytes == len(PNG) and up.filename == "cat.png"
        assert up.purpose == "vision" and up.object == "file"
        assert store.content(up.id) == PNG
        listed = await client.files.list()
        assert [f.id for f in listed.data] == [up.id]
        got = await client.files.retrieve(up.id)
        assert got.id == up.id and got.bytes == len(PNG)
        content = await client.files.content(up.id)
        assert content.read() == PNG
        # oversize upload: 413 before the store sees it
        with pytest.raises(openai.APIStatusError) as ei:
            await client.files.create(
                file=("big.bin", b"\0" * 5000, "application/octet-stream"), purpose="vision"
            )
        assert ei.value.status_code == 413
        assert "exceeds the limit" in str(ei.value)
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve("file-nope")
        deleted = await client.files.delete(up.id)
        assert deleted.deleted and deleted.id == up.id
        with pytest.raises(openai.NotFoundError):
            await client.files.content(up.id)
        assert len(store) == 0
        await client.close()

    asyncio.run(scenario())


def test_files_api_rejects_malformed_uploads() -> None:
    store = FileStore(max_file_bytes=1000)
    app = FastAPI()
    app.include_router(create_files_router(store))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.post("/v1/files", json={"file": "x"})
            assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
            r = await c.post("/v1/files", data={"purpose": "vision"}, files={"other": ("a", b"x")})
            assert r.status_code == 400 and r.json()["error"]["param"] == "file"
            r = await c.post("/v1/files", files={"file": ("a", b"")})
            assert r.status_code == 400
            # over the limit: refused on Content-Length, and while streaming a chunked body
            r = await c.post(
                "/v1/files",
                content=b"--b\r\n" + b"x" * 200_000,
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
            assert r.status_code == 413

            async def chunks() -> Any:
                yield b"--b\r\n"
                for _ in range(20):
                    yield b"x" * 10_000

            r = await c.post(
                "/v1/files", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
            )
            assert r.status_code == 413
            r = await c.get("/v1/files", params={"order": "sideways"})
            assert r.status_code == 400

    asyncio.run(scenario())
