"""The OpenAI API through the official `openai` SDK (and raw `httpx` where the wire format matters)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import httpx
import jsonschema
import numpy as np
import openai
import pytest
from pydantic import BaseModel, Field

from .conftest import ALIAS, RunningServer

MSG = [{"role": "user", "content": "Name three colors."}]


def sse_events(text: str) -> list[Any]:
    """The JSON payloads of an SSE body (and the literal '[DONE]')."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [ALIAS]
    assert models.data[0].object == "model"
    assert client.models.retrieve  # the SDK object exists; /v1/models is the list route


def test_chat(client: openai.OpenAI, server: RunningServer) -> None:
    r = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=12)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    # prompt tokens are really counted: the rendered ChatML prompt, tokenized
    prompt = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n"
    )
    with server.http() as h:
        n_prompt = len(h.post("/tokenize", json={"content": prompt}).json()["tokens"])
    assert r.usage.prompt_tokens == n_prompt
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 12


def test_same_paths_without_v1(server: RunningServer) -> None:
    with server.http() as h:
        r = h.post("/chat/completions", json={"model": ALIAS, "messages": MSG, "max_tokens": 2})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        assert h.get("/models").json()["data"][0]["id"] == ALIAS


def test_chat_stream_without_usage(client: openai.OpenAI, server: RunningServer) -> None:
    full = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=12)
    chunks = list(client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=12, stream=True))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    # on the wire: no usage key at all, and the stream ends with [DONE]
    with server.http() as h:
        body = h.post(
            "/v1/chat/completions", json={"model": ALIAS, "messages": MSG, "max_tokens": 4, "stream": True}
        )
    assert body.headers["content-type"].startswith("text/event-stream")
    events = sse_events(body.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


def test_chat_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=ALIAS, messages=MSG, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 6 or chunks[-2].choices[0].finish_reason == "stop"
    assert last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model=ALIAS, prompt="The capital of France is", max_tokens=8)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    chunks = list(
        client.completions.create(
            model=ALIAS,
            prompt="The capital of France is",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # token-array prompt, echo
    tok = client.completions.create(model=ALIAS, prompt=[504, 3575, 282], max_tokens=3, echo=True)
    assert tok.choices[0].text.startswith("The capital of")


def test_completion_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(model=ALIAS, prompt="One, two, three,", max_tokens=4, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens  # type: ignore[union-attr]
    assert lp.top_logprobs is not None and all(len(t) <= 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings(client: openai.OpenAI, server: RunningServer, encoding: str) -> None:
    texts = ["a cat sat on the mat", "stock markets fell sharply", "a kitten sat on a rug"]
    r = client.embeddings.create(model=ALIAS, input=texts, encoding_format=encoding)  # type: ignore[arg-type]
    assert [d.index for d in r.data] == [0, 1, 2]
    vecs = np.array(
        [
            np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
            if isinstance(d.embedding, str)
            else d.embedding
            for d in r.data
        ],
        dtype=np.float64,
    )
    assert vecs.shape == (3, 576)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    # the SDK decodes base64 itself: check the wire format with httpx
    with server.http() as h:
        raw = h.post(
            "/v1/embeddings", json={"model": ALIAS, "input": texts, "encoding_format": encoding}
        ).json()
    for i, item in enumerate(raw["data"]):
        if encoding == "base64":
            assert isinstance(item["embedding"], str)
            got = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        else:
            got = np.array(item["embedding"], dtype=np.float32)
        assert np.allclose(got, vecs[i], atol=1e-5)
    # batched = one by one; a single string; token ids
    solo = client.embeddings.create(model=ALIAS, input=texts[1], encoding_format="float")
    assert np.allclose(solo.data[0].embedding, vecs[1], atol=1e-4)
    with server.http() as h:
        ids = h.post("/tokenize", json={"content": texts[1], "add_special": True}).json()["tokens"]
    by_ids = client.embeddings.create(model=ALIAS, input=[ids], encoding_format="float")
    assert np.allclose(by_ids.data[0].embedding, vecs[1], atol=1e-4)


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population_millions: int


def test_json_schema_parse(client: openai.OpenAI) -> None:
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    r = parse(
        model=ALIAS,
        messages=[{"role": "user", "content": "Describe Paris as JSON with name, country and population."}],
        response_format=City,
        max_tokens=80,
    )
    city = r.choices[0].message.parsed
    assert isinstance(city, City)
    assert r.choices[0].finish_reason == "stop"


def test_json_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Give me a JSON object about a dog."}],
        response_format={"type": "json_object"},
        max_tokens=24,
        extra_body={"top_k": 1},
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    else:
        assert (r.choices[0].message.content or "").lstrip().startswith("{")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 24}},
            "required": ["timezone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_tools_required(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=ALIAS,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        max_tokens=80,  # type: ignore[list-item]
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}  # type: ignore[index]
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in schemas
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    assert not choice.message.content


def test_tools_named_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=ASK,
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=60,
        stream=True,
    )
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in stream:
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    assert entry["id"] is None  # sent once
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    assert entry["name"] is None
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
            finish = ch.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_time" and calls[0]["id"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), TIME["function"]["parameters"])  # type: ignore[index]


def test_tool_history_round_trip(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=ALIAS,
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Paris", "unit": "celsius"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=8,
    )
    assert r.choices[0].message.content
    assert not r.choices[0].message.tool_calls


def test_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=5, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None
    assert len(lp.content) == r.usage.completion_tokens  # type: ignore[union-attr]
    for item in lp.content:
        assert item.logprob <= 0.0
        assert len(item.top_logprobs) == 3
        values = [t.logprob for t in item.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert item.token == item.top_logprobs[0].token  # greedy picks the best
        assert math.isclose(item.logprob, values[0], abs_tol=1e-5)
        assert bytes(item.bytes or []).decode("utf-8", "replace") == item.token
    text = "".join(t.token for t in lp.content)
    assert (r.choices[0].message.content or "").startswith(text[: len(r.choices[0].message.content or "")])
    # streaming carries the same logprobs
    chunks = list(
        client.chat.completions.create(
            model=ALIAS, messages=MSG, max_tokens=5, logprobs=True, top_logprobs=3, stream=True
        )
    )
    streamed = [
        t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []
    ]
    assert [t.token for t in streamed] == [t.token for t in lp.content]


def test_n2(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=6, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content  # greedy
    assert r.usage is not None
    assert r.usage.completion_tokens == 12 or r.choices[0].finish_reason == "stop"
    # sampled with a seed: seed+i per choice, reproducible across requests
    kw: dict[str, Any] = {
        "model": ALIAS,
        "messages": MSG,
        "max_tokens": 8,
        "n": 2,
        "temperature": 1.0,
        "seed": 7,
    }
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    chunks = list(client.chat.completions.create(**kw, stream=True))
    texts = ["", ""]
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts == [c.message.content for c in a.choices]


def test_stop(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=16).choices[0].message.content
    assert full and len(full) > 8
    cut = full[4:7]
    stop_at = full.index(cut)
    r = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=16, stop=[cut, "zzzz"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:stop_at]
    chunks = list(
        client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=16, stop=cut, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full[:stop_at]


def test_seed_and_sampler_extras(client: openai.OpenAI) -> None:
    kw: dict[str, Any] = {
        "model": ALIAS,
        "messages": MSG,
        "max_tokens": 8,
        "temperature": 0.9,
        "top_p": 0.9,
        "seed": 1234,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.3,
        "extra_body": {
            "top_k": 20,
            "min_p": 0.02,
            "typical_p": 0.95,
            "repeat_penalty": 1.1,
            "repeat_last_n": 32,
            "dry_multiplier": 0.8,
            "dry_base": 1.75,
            "dry_allowed_length": 2,
            "xtc_probability": 0.1,
            "xtc_threshold": 0.2,
            "cache_prompt": True,
        },
    }
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_logit_bias_and_grammar_extra(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=1, logprobs=True)
    tok = first.choices[0].logprobs.content[0].token  # type: ignore[union-attr,index]
    # ban the greedy first token by its id (OpenAI: token ids as string keys)
    banned_id = _token_id(client, tok)
    r = client.chat.completions.create(
        model=ALIAS, messages=MSG, max_tokens=1, logprobs=True, logit_bias={str(banned_id): -100}
    )
    assert r.choices[0].logprobs.content[0].token != tok  # type: ignore[union-attr,index]
    g = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        max_tokens=4,
        extra_body={"grammar": 'root ::= "yes" | "no"'},
    )
    assert g.choices[0].message.content in ("yes", "no")


def _token_id(client: openai.OpenAI, piece: str) -> int:
    base = str(client.base_url).rstrip("/").removesuffix("/v1")
    r = httpx.post(
        base + "/tokenize",
        json={"content": piece, "with_pieces": True},
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    toks = r.json()["tokens"]
    assert len(toks) == 1 and toks[0]["piece"] == piece
    return int(toks[0]["id"])


def test_tokenize_detokenize(server: RunningServer) -> None:
    with server.http() as h:
        plain = h.post("/tokenize", json={"content": "Hello world"}).json()
        assert all(isinstance(t, int) for t in plain["tokens"])
        pieces = h.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
        assert [p["id"] for p in pieces] == plain["tokens"]
        assert "".join(p["piece"] for p in pieces) == "Hello world"
        special = h.post("/tokenize", json={"content": "<|im_start|>", "parse_special": True}).json()[
            "tokens"
        ]
        assert special == [1]
        back = h.post("/detokenize", json={"tokens": plain["tokens"]}).json()
        assert back == {"content": "Hello world"}


def test_health_metrics_slots_openapi(server: RunningServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=ALIAS, messages=MSG, max_tokens=2)
    with httpx.Client(base_url=server.base_url) as anon:
        assert anon.get("/health").json() == {"status": "ok"}
    with server.http() as h:
        metrics = h.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
        for name in (
            "llamabind_requests_total",
            "llamabind_prompt_tokens_total",
            "llamabind_tokens_predicted_total",
            "llamabind_prompt_tokens_per_second",
            "llamabind_predicted_tokens_per_second",
            "llamabind_queue_depth",
            "llamabind_busy_slots",
            "llamabind_kv_cache_usage_ratio",
            'llamabind_http_requests_total{route="/v1/chat/completions",status="200"}',
        ):
            assert name in text, name
        slots = h.get("/slots").json()
        assert len(slots) == 2
        assert {"id", "state", "is_processing", "n_ctx", "n_cached"} <= set(slots[0])
        assert all(s["n_ctx"] == 1024 for s in slots)
        schema = h.get("/openapi.json").json()
        assert "/v1/chat/completions" in schema["paths"]


def test_cors(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url) as anon:
        pre = anon.options(
            "/v1/chat/completions",
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://example.test"
        other = anon.options(
            "/v1/chat/completions",
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_auth(server: RunningServer) -> None:
    bad = openai.OpenAI(base_url=server.v1, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        bad.models.list()
    assert ei.value.status_code == 401
    with httpx.Client(base_url=server.base_url) as anon:
        for path in ("/v1/models", "/slots", "/metrics", "/openapi.json"):
            r = anon.get(path)
            assert r.status_code == 401, path
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert err["code"] == "invalid_api_key"
        r = anon.post("/v1/chat/completions", json={"model": ALIAS, "messages": MSG})
        assert r.status_code == 401
        r = anon.get("/v1/models", headers={"Authorization": "Bearer sk-wrong"})
        assert r.status_code == 401
        r = anon.get("/v1/models", headers={"Authorization": f"Bearer {server.api_key}"})
        assert r.status_code == 200
        r = anon.get("/v1/models", headers={"x-api-key": server.api_key or ""})
        assert r.status_code == 200
        assert anon.get("/health").status_code == 200
