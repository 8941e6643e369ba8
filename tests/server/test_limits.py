"""The request limits (``llamabind.server.limits``): every oversized or malformed input is a 4xx with
an error body naming the field, before any work is queued, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from llamabind.server import ServerConfig
from llamabind.server.limits import Limits, json_depth

from .conftest import ALIAS, API_KEY, RunningServer, chat
from .conftest import HI as MSG
from .test_errors import check_error

DEEP = 100_000


def complete(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/completions", json={"model": ALIAS, "prompt": "Hi", "max_tokens": 2, **body})


def alive(http: httpx.Client) -> None:
    """The server still answers /health and a normal completion."""
    assert http.get("/health").status_code == 200
    r = chat(http)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def anthropic_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return str(body["error"]["message"])


# ------------------------------------------------------------------------------------------------
# unit: the nesting scan and the middleware's streaming bound
# ------------------------------------------------------------------------------------------------


def test_json_depth() -> None:
    assert json_depth(b"") == 0
    assert json_depth(b'{"a": 1}') == 1
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth('{"a": "[[[[{{{{"}') == 1  # brackets inside strings do not count
    assert json_depth(b'{"a": "\\"[[[["}') == 1  # nor after an escaped quote
    assert json_depth(b"[" * DEEP + b"]" * DEEP) == DEEP
    assert json_depth("é[[]]") == 2


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_body"):
        Limits(max_body=0)


def test_middleware_stops_reading_an_oversized_stream() -> None:
    """A body without Content-Length is counted as it streams in: reading stops at the limit (the
    rest of a 200 MB upload is never received, let alone held)."""
    from llamabind.server.limits import LimitsMiddleware

    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    mw = LimitsMiddleware(app, Limits(max_body=1000), label=lambda s: s["path"])
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 300, "more_body": received < 200_000}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    }
    asyncio.run(mw(scope, receive, send))
    assert received == 4  # 4 × 300 > 1000: stopped there
    assert not reached
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


# ------------------------------------------------------------------------------------------------
# the HTTP layer: body size, content type, nesting
# ------------------------------------------------------------------------------------------------


def _raw_request(server: RunningServer, head: bytes) -> bytes:
    """Send only the head of a request (no body) and read the answer."""
    url = urlsplit(server.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_body_over_the_limit_by_content_length(server: RunningServer, http: httpx.Client) -> None:
    """A declared 200 MB body is refused on its Content-Length: the server answers before any of
    it is sent."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: 200000000\r\n\r\n"
    )
    data = _raw_request(server, head)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_too_large"
    assert body["error"]["type"] == "invalid_request_error"
    alive(http)


def test_body_over_the_limit_streamed(server: RunningServer, http: httpx.Client) -> None:
    """17 MiB sent without Content-Length (chunked) → 413."""

    def chunks() -> Any:
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(17):
            yield b"a" * (1 << 20)
        yield b'"}]}'

    try:
        r = http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    except httpx.TransportError:
        pass  # the server may close the connection while the client is still sending
    else:
        check_error(r, 413, code="request_too_large")
    alive(http)


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/v1/chat/completions", "text/plain"),
        ("/v1/completions", "application/x-www-form-urlencoded"),
        ("/v1/embeddings", "multipart/form-data; boundary=x"),
        ("/tokenize", "text/plain;charset=UTF-8"),
        ("/infill", None),
    ],
)
def test_json_routes_need_application_json(http: httpx.Client, path: str, ctype: str | None) -> None:
    body = json.dumps({"model": ALIAS, "messages": MSG, "prompt": "Hi", "input": "Hi", "content": "Hi"})
    headers = {"content-type": ctype} if ctype else {}
    r = http.post(path, content=body.encode(), headers=headers)
    check_error(r, 415, code="unsupported_media_type")
    ok = http.post(path, content=body.encode(), headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code != 415


def test_messages_needs_application_json(http: httpx.Client) -> None:
    """The cross-site "simple" request of the issue: a text/plain POST to /v1/messages."""
    body = {"model": ALIAS, "max_tokens": 2, "messages": MSG, "grammar": 'root ::= "a"'}
    r = http.post("/v1/messages", content=json.dumps(body).encode(), headers={"content-type": "text/plain"})
    assert "application/json" in anthropic_error(r, 415)
    alive(http)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"])
def test_deep_json_body(http: httpx.Client, path: str) -> None:
    deep = "[" * DEEP + "]" * DEEP
    body = f'{{"model": "{ALIAS}", "messages": {deep}, "input": {deep}, "prompt": {deep}}}'
    r = http.post(path, content=body.encode(), headers={"content-type": "application/json"})
    check_error(r, 400, code="json_too_deep")
    alive(http)


def test_deep_json_body_on_messages(http: httpx.Client) -> None:
    nested = "{" + '"a":{' * DEEP + "}" * DEEP + "}"
    body = f'{{"model": "{ALIAS}", "max_tokens": 2, "messages": [], "metadata": {nested}}}'
    r = http.post("/v1/messages", content=body.encode(), headers={"content-type": "application/json"})
    assert "deep" in anthropic_error(r, 400)
    r = http.post(
        "/v1/messages/count_tokens", content=body.encode(), headers={"content-type": "application/json"}
    )
    anthropic_error(r, 400)
    alive(http)


def test_json_depth_limit_boundary(http: httpx.Client) -> None:
    def nested(n: int) -> Any:
        v: Any = 1
        for _ in range(n):
            v = {"a": v}
        return v

    # the body object itself is level 1, "metadata" adds the rest
    assert chat(http, metadata=nested(63)).status_code == 200
    check_error(chat(http, metadata=nested(64)), 400, code="json_too_deep")


def test_deep_tool_call_arguments(http: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": "[" * DEEP + "]" * DEEP},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    check_error(chat(http, messages=messages), 400, param="messages", code="json_too_deep")
    alive(http)


# ------------------------------------------------------------------------------------------------
# request fields
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
        ({"stop": "x" * 257}, "stop"),
        ({"stop": [f"s{i}" for i in range(200_000)]}, "stop"),
        ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
        ({"logit_bias": [[i, 1] for i in range(1025)]}, "logit_bias"),
        ({"logit_bias": {"x" * 300: 1}}, "logit_bias"),
        (
            {"dry_multiplier": 0.8, "dry_sequence_breakers": [f"b{i}" for i in range(3000)]},
            "dry_sequence_breakers",
        ),
        ({"dry_sequence_breakers": ["x" * 65]}, "dry_sequence_breakers"),
        ({"repeat_last_n": 2**31 - 1}, "repeat_last_n"),
        ({"repeat_last_n": 1025}, "repeat_last_n"),
        ({"penalty_last_n": 2**31 - 1}, "penalty_last_n"),
        ({"dry_penalty_last_n": 2**31 - 1}, "dry_penalty_last_n"),
        ({"dry_penalty_last_n": -2}, "dry_penalty_last_n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"n_predict": 0, "max_tokens": None}, "n_predict"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"grammar": "root ::= " + " ".join(['"a"'] * 50_000)}, "grammar"),
        ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "description": "d" * (1 << 20)}}]},
            "tools",
        ),
        ({"chat_template_kwargs": {"x": "y" * (65 << 10)}}, "chat_template_kwargs"),
        ({"messages": MSG * 1025}, "messages"),
        ({"messages": [{"role": "user", "content": "a" * 4_000_001}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 4_000_001}]}]},
            "messages",
        ),
        ({"n": 11}, "n"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_chat_field_limits(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    check_error(chat(http, **fields), 400, param=param)


def test_field_limits_leave_the_server_serving(http: httpx.Client) -> None:
    alive(http)


@pytest.mark.parametrize("key", ["messages", "tools", "bos_token", "eos_token", "add_generation_prompt"])
def test_template_kwargs_that_collide(http: httpx.Client, key: str) -> None:
    err = check_error(chat(http, chat_template_kwargs={key: []}), 400, param="chat_template_kwargs")
    assert key in err["message"]


def test_template_kwargs_allowed(http: httpx.Client) -> None:
    r = chat(http, chat_template_kwargs={"enable_thinking": False, "custom": {"a": [1, 2]}})
    assert r.status_code == 200, r.text


def test_windows_within_the_slot_context(http: httpx.Client) -> None:
    """-1 (the slot context), 0 (off) and the slot context itself are fine."""
    for value in (-1, 0, 1024):
        assert chat(http, repeat_last_n=value, dry_penalty_last_n=value).status_code == 200


def test_a_batch_that_fits_the_idle_server(http: httpx.Client) -> None:
    """n up to --parallel + --max-queue (2 + 8 here) runs on an idle server, not 503; one above is
    a 400 naming ``n`` (it could never run), for chat and text completions alike."""
    r = chat(http, n=10, max_tokens=1)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 10
    check_error(complete(http, n=11), 400, param="n", code="limit_exceeded")
    check_error(complete(http, prompt=["a", "b", "c", "d", "e", "f"], n=2), 400, param="prompt")
    r = complete(http, prompt=["a", "b", "c", "d", "e"], n=2, max_tokens=1)
    assert r.status_code == 200 and len(r.json()["choices"]) == 10


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": ["a"] * 2049}, "prompt"),
        ({"prompt": "a" * 4_000_001}, "prompt"),
        ({"prompt": [[1] * 600_000, [1] * 600_000]}, "prompt"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [str(i) for i in range(17)]}, "stop"),
        ({"logprobs": 21}, "logprobs"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_completion_field_limits(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    check_error(complete(http, **fields), 400, param=param)


def test_infill_limits(http: httpx.Client) -> None:
    r = http.post("/infill", json={"input_prefix": "a" * 4_000_001, "input_suffix": "b"})
    check_error(r, 400, param="input_prefix")
    r = http.post("/infill", json={"input_prefix": "a", "input_suffix": "b", "repeat_last_n": 2**31 - 1})
    check_error(r, 400, param="repeat_last_n")


def test_embeddings_rerank_and_token_limits(http: httpx.Client) -> None:
    check_error(http.post("/v1/embeddings", json={"input": ["a"] * 2049}), 400, param="input")
    check_error(http.post("/v1/embeddings", json={"input": "a" * 4_000_001}), 400, param="input")
    r = http.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 2049})
    check_error(r, 400, param="documents")
    check_error(http.post("/tokenize", json={"content": "a" * 4_000_001}), 400, param="content")
    check_error(http.post("/detokenize", json={"tokens": [1] * 1_000_001}), 400, param="tokens")
    alive(http)


def test_messages_field_limits(http: httpx.Client) -> None:
    base = {"model": ALIAS, "max_tokens": 2, "messages": MSG}
    r = http.post("/v1/messages", json={**base, "stop_sequences": [str(i) for i in range(17)]})
    assert "stop" in anthropic_error(r, 400)
    r = http.post("/v1/messages", json={**base, "dry_sequence_breakers": ["x"] * 3000})
    anthropic_error(r, 400)
    r = http.post("/v1/messages/count_tokens", json={**base, "messages": MSG * 1025})
    anthropic_error(r, 400)
    alive(http)


def test_custom_limits(make_server: Any) -> None:
    """The limits come from ServerConfig.limits (the serve flags)."""
    srv = make_server(
        ServerConfig(model_alias=ALIAS, limits=Limits(max_body=4096, max_stop=2, max_json_depth=8))
    )
    with srv.http() as h:
        check_error(chat(h, stop=["a", "b", "c"]), 400, param="stop")
        check_error(chat(h, messages=[{"role": "user", "content": "a" * 5000}]), 413)
        check_error(chat(h, metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}), 400)
        assert chat(h, stop=["a", "b"]).status_code == 200


# ------------------------------------------------------------------------------------------------
# web security
# ------------------------------------------------------------------------------------------------


def test_uploaded_files_download_as_attachments(http: httpx.Client) -> None:
    page = b"<html><script>alert(1)</script></html>"
    r = http.post(
        "/v1/files",
        files={"file": ("page.html", page, "text/html")},
        data={"purpose": "user_data"},
    )
    assert r.status_code == 200, r.text
    fid = r.json()["id"]
    got = http.get(f"/v1/files/{fid}/content")
    assert got.status_code == 200 and got.content == page
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert 'filename="page.html"' in got.headers["content-disposition"]
    http.delete(f"/v1/files/{fid}")


def test_auth_headers_in_any_order(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as anon:
        for headers in (
            [("Authorization", "Basic dXNlcjpwdw=="), ("x-api-key", API_KEY)],
            [("x-api-key", API_KEY), ("Authorization", "Basic dXNlcjpwdw==")],
            [("x-api-key", "wrong"), ("Authorization", f"Bearer {API_KEY}")],
            [("Authorization", f"Bearer {API_KEY}"), ("x-api-key", "wrong")],
        ):
            assert anon.get("/v1/models", headers=headers).status_code == 200, headers
        for headers in (
            [("Authorization", "Basic dXNlcjpwdw=="), ("x-api-key", "wrong")],
            [("Authorization", f"Basic {API_KEY}")],
            [("Authorization", "Bearer")],
        ):
            assert anon.get("/v1/models", headers=headers).status_code == 401, headers


def test_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        ServerConfig(api_keys=[""])
    r = subprocess.run(
        [sys.executable, "-m", "llamabind", "serve", "--api-key", ""],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--api-key" in r.stderr


# ------------------------------------------------------------------------------------------------
# the serve flags
# ------------------------------------------------------------------------------------------------


def test_serve_flags_match_the_limits() -> None:
    import dataclasses

    from llamabind.cli.commands._serve_limits import DEFAULTS, LIMIT_FLAGS, byte_size
    from llamabind.cli.main import build_parser

    assert dataclasses.asdict(Limits()) == DEFAULTS
    assert {name for name, *_ in LIMIT_FLAGS} == set(DEFAULTS)
    assert byte_size("16M") == 16 << 20 and byte_size("512k") == 512 << 10 and byte_size("100") == 100
    from llamabind.cli.commands.serve import build_config

    args = build_parser().parse_args(["serve", "--max-body", "1M", "--max-stop", "4"])
    cfg = build_config(args)
    assert cfg.limits == dataclasses.replace(Limits(), max_body=1 << 20, max_stop=4)
    r = subprocess.run(
        [sys.executable, "-m", "llamabind", "serve", "--max-body", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
