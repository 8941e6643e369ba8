"""Every bad input gets the right status and an OpenAI error body ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from .conftest import ALIAS, RunningServer, chat
from .conftest import HI as MSG


def check_error(
    r: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert "Traceback" not in r.text
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return dict(err)


def test_malformed_json(http: httpx.Client) -> None:
    r = http.post(
        "/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"content-type": "application/json"},
    )
    err = check_error(r, 400, code="invalid_json")
    assert err["type"] == "invalid_request_error"


def test_schema_violations(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json={"model": ALIAS})
    check_error(r, 400, param="messages")
    check_error(chat(http, temperature="hot"), 400, param="temperature")
    check_error(chat(http, temperature=5), 400, param="temperature")
    check_error(chat(http, top_logprobs=99, logprobs=True), 400, param="top_logprobs")
    check_error(chat(http, n=0), 400, param="n")
    check_error(chat(http, messages=[]), 400, param="messages")
    check_error(chat(http, tool_choice="sometimes"), 400, param="tool_choice")
    check_error(chat(http, top_k="many"), 400, param="top_k")
    check_error(chat(http, dry_multiplier="x"), 400, param="dry_multiplier")
    check_error(http.post("/v1/completions", json={"model": ALIAS, "prompt": {"a": 1}}), 400, param="prompt")
    check_error(http.post("/tokenize", json={"text": "x"}), 400, param="content")


def test_bad_messages(http: httpx.Client) -> None:
    err = check_error(chat(http, messages=[{"role": "wizard", "content": "hi"}]), 400, param="messages")
    assert "wizard" in err["message"]
    check_error(chat(http, messages=[{"role": "user"}]), 400, param="messages")


def test_unknown_model(strict_server: RunningServer) -> None:
    """With ``strict_model_name`` an unknown name is a 404 (the default server answers any name:
    tests/server/test_model_names.py)."""
    client = strict_server.client()
    with strict_server.http() as http:
        err = check_error(chat(http, model="gpt-17"), 404, param="model", code="model_not_found")
        assert "gpt-17" in err["message"]
        check_error(http.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404, param="model")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-17", messages=MSG)  # type: ignore[arg-type]


def test_prompt_too_long(http: httpx.Client, client: openai.OpenAI) -> None:
    long = "hello " * 1200
    err = check_error(
        chat(http, messages=[{"role": "user", "content": long}]), 400, code="context_length_exceeded"
    )
    assert "1024" in err["message"]  # the slot size
    n_tokens = [int(w) for w in err["message"].split() if w.isdigit()]
    assert any(n > 1024 for n in n_tokens), err["message"]
    check_error(
        http.post("/v1/completions", json={"model": ALIAS, "prompt": long, "stream": True}),
        400,
        code="context_length_exceeded",
    )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=ALIAS, prompt=long)


def test_bad_grammar_and_schema(http: httpx.Client) -> None:
    err = check_error(chat(http, grammar='root ::= "a'), 400, param="grammar", code="invalid_grammar")
    assert "grammar" in err["message"]
    check_error(chat(http, grammar="root ::= undefined-rule"), 400, param="grammar")
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}}
    check_error(chat(http, response_format=bad_schema), 400, param="response_format", code="invalid_schema")
    check_error(chat(http, response_format={"type": "yaml"}), 400, param="response_format")
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "wat"}}}},
    }
    check_error(chat(http, tools=[tool], tool_choice="required"), 400)
    check_error(
        http.post("/v1/completions", json={"model": ALIAS, "prompt": "x", "grammar": "root ::= ("}),
        400,
        code="invalid_grammar",
    )


def test_bad_tools(http: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    err = check_error(
        chat(http, tools=[tool], tool_choice={"type": "function", "function": {"name": "g"}}),
        400,
        param="tool_choice",
    )
    assert "'g'" in err["message"]
    check_error(chat(http, tool_choice="required"), 400, param="tool_choice")
    check_error(
        chat(http, tools=[{"type": "function", "function": {"name": "bad name!"}}]), 400, param="tools"
    )


def test_bad_logit_bias_and_tokens(http: httpx.Client) -> None:
    check_error(chat(http, logit_bias={"999999999": 5}), 400, param="logit_bias")
    check_error(http.post("/detokenize", json={"tokens": [-5]}), 400, param="tokens")
    check_error(http.post("/v1/completions", json={"model": ALIAS, "prompt": [10**9]}), 400)


def test_bad_embeddings(http: httpx.Client) -> None:
    err = check_error(
        http.post("/v1/embeddings", json={"model": ALIAS, "input": "x", "dimensions": 64}),
        400,
        param="dimensions",
    )
    assert "576" in err["message"]
    check_error(http.post("/v1/embeddings", json={"model": ALIAS, "input": []}), 400, param="input")
    check_error(http.post("/v1/embeddings", json={"model": ALIAS, "input": ""}), 400, param="input")
    check_error(
        http.post("/v1/embeddings", json={"model": ALIAS, "input": "x", "encoding_format": "hex"}), 400
    )
    check_error(
        http.post("/v1/embeddings", json={"model": ALIAS, "input": "word " * 600}),
        400,
        code="context_length_exceeded",
    )


def test_unknown_route_and_method(http: httpx.Client) -> None:
    check_error(http.get("/v1/nothing-here"), 404)
    check_error(http.get("/v1/chat/completions"), 405)


def test_internal_error_hides_details(
    http: httpx.Client, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = server.app.state.holder.state  # type: ignore[attr-defined]

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(state.formatter, "prepare", boom)
    err = check_error(chat(http), 500, code="internal_error")
    assert err["type"] == "server_error"
    assert "secret" not in err["message"]
