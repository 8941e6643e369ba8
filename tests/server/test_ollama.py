"""Ollama-compatible routes (/api/*) through the official `ollama` Python client (and raw `httpx`
for the wire format: NDJSON streaming, error bodies)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from .conftest import ALIAS, API_KEY, RunningServer

ollama = pytest.importorskip("ollama")

SHORT = "What is 2+2? Answer with a number only."  # greedy SmolLM2 ends this turn by itself


def _client(server: RunningServer, **kwargs: Any) -> Any:
    return ollama.Client(host=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, **kwargs)


@pytest.fixture(scope="module")
def oc(server: RunningServer) -> Any:
    return _client(server)


def test_list_show_ps_version(oc: Any, server: RunningServer) -> None:
    models = oc.list().models
    assert [m.model for m in models] == [f"{ALIAS}:latest"]
    m = models[0]
    assert m.size > 0 and len(m.digest) == 64
    assert m.details.format == "gguf" and m.details.family == "llama"
    assert m.details.parameter_size == "135M" and m.details.quantization_level == "Q4_1"
    shown = oc.show(f"{ALIAS}:latest")
    assert "completion" in shown.capabilities and "tools" in shown.capabilities
    assert shown.template and "messages" in shown.template
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    ps = oc.ps().models
    assert ps[0].model == f"{ALIAS}:latest" and ps[0].context_length == 1024
    with server.http() as http:
        assert http.get("/api/version").json()["version"]


def test_chat(oc: Any) -> None:
    r = oc.chat(model=ALIAS, messages=[{"role": "user", "content": SHORT}], options={"num_predict": 32})
    assert r.done and r.done_reason == "stop"
    assert r.message.role == "assistant" and "4" in r.message.content
    assert r.prompt_eval_count > 0 and 0 < r.eval_count <= 32
    assert r.total_duration >= r.eval_duration > 0
    assert r.model == ALIAS
    cut = oc.chat(
        model=ALIAS, messages=[{"role": "user", "content": "Tell me a story."}], options={"num_predict": 3}
    )
    assert cut.done_reason == "length" and cut.eval_count == 3


def test_chat_stream(oc: Any) -> None:
    chunks = list(
        oc.chat(model=f"{ALIAS}:latest", messages=[{"role": "user", "content": SHORT}], stream=True)
    )
    assert len(chunks) > 2
    assert all(not c.done for c in chunks[:-1])
    last = chunks[-1]
    assert last.done and last.done_reason == "stop" and last.eval_count > 0
    text = "".join(c.message.content for c in chunks)
    whole = oc.chat(model=ALIAS, messages=[{"role": "user", "content": SHORT}])
    assert text == whole.message.content  # greedy: streamed = whole


def test_stream_is_ndjson_by_default(server: RunningServer) -> None:
    with server.http() as http:
        with http.stream("POST", "/api/generate", json={"model": ALIAS, "prompt": SHORT}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) > 1 and lines[-1]["done"] is True
    assert all(set(x) >= {"model", "created_at", "response", "done"} for x in lines)


def test_generate(oc: Any) -> None:
    g = oc.generate(model=ALIAS, prompt=SHORT, options={"num_predict": 32, "temperature": 0, "seed": 1})
    assert g.done and "4" in g.response and g.prompt_eval_count > 0
    raw = oc.generate(model=ALIAS, prompt="The capital of France is", raw=True, options={"num_predict": 4})
    assert raw.done_reason == "length" and raw.eval_count == 4 and raw.response
    stop = oc.generate(
        model=ALIAS, prompt="Count: 1, 2, 3,", raw=True, options={"num_predict": 20, "stop": [","]}
    )
    assert "," not in stop.response and stop.eval_count < 20
    loaded = oc.generate(model=ALIAS, prompt="")
    assert loaded.done and loaded.done_reason == "load"


def test_embed(oc: Any) -> None:
    e = oc.embed(model=ALIAS, input=["hello", "world"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 576
    assert abs(sum(x * x for x in e.embeddings[0]) - 1.0) < 1e-3  # normalised
    assert e.prompt_eval_count >= 2
    short = oc.embed(model=ALIAS, input="hello", dimensions=64)
    assert len(short.embeddings[0]) == 64
    assert abs(sum(x * x for x in short.embeddings[0]) - 1.0) < 1e-3
    legacy = oc.embeddings(model=ALIAS, prompt="hello")
    assert len(legacy.embedding) == 576
    assert abs(legacy.embedding[0] - e.embeddings[0][0]) < 1e-4


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
      city: the city name
    """
    return f"sunny in {city}"


class ForceTools(httpx.HTTPTransport):
    """The 135M model never calls a tool on its own, and once it does, greedy decoding keeps adding
    calls: this transport adds llamabind's `tool_choice` and `parallel_tool_calls` extension fields
    (Ollama has neither) to the client's /api/chat bodies."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/chat":
            body = json.loads(request.read())
            body["tool_choice"] = "required"
            body["parallel_tool_calls"] = False
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            request = httpx.Request(request.method, request.url, headers=headers, json=body)
        return super().handle_request(request)


def test_tool_call(server: RunningServer) -> None:
    oc = _client(server, transport=ForceTools())
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = oc.chat(model=ALIAS, messages=messages, tools=[get_weather], options={"num_predict": 48})
    calls = r.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments["city"], str)
    streamed = list(oc.chat(model=ALIAS, messages=messages, tools=[get_weather], stream=True))
    stream_calls = [t for c in streamed if c.message.tool_calls for t in c.message.tool_calls]
    assert [t.function.name for t in stream_calls] == ["get_weather"]
    # the tool's result goes back as a `tool` message (Ollama's tool_name)
    messages += [r.message, {"role": "tool", "content": "Sunny, 22 degrees", "tool_name": "get_weather"}]
    plain = _client(server)
    follow = plain.chat(model=ALIAS, messages=messages, options={"num_predict": 24})
    question = plain.chat(model=ALIAS, messages=messages[:1], options={"num_predict": 1})
    assert follow.done and follow.prompt_eval_count > question.prompt_eval_count


class Color(BaseModel):
    name: str
    hex: str


def test_format_schema_and_json(oc: Any) -> None:
    r = oc.chat(
        model=ALIAS,
        messages=[{"role": "user", "content": "Give me a color."}],
        format=Color.model_json_schema(),
        options={"num_predict": 80},
    )
    Color.model_validate_json(r.message.content)
    j = oc.generate(
        model=ALIAS,
        prompt="Give me a JSON object with a name.",
        format="json",
        options={"num_predict": 200},
    )
    assert isinstance(json.loads(j.response), dict)


def test_errors(oc: Any, server: RunningServer) -> None:
    with pytest.raises(ollama.ResponseError) as bad:
        oc.chat(model=ALIAS, messages=[{"role": "user", "content": "x"}], options={"temperature": 5})
    assert bad.value.status_code == 400 and "temperature" in bad.value.error
    with server.http() as http:
        template = http.post(
            "/api/generate", json={"model": ALIAS, "prompt": "x", "template": "{{ .Prompt }}"}
        )
        assert template.status_code == 400 and set(template.json()) == {"error"}
        broken = http.post(
            "/api/generate", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400 and set(broken.json()) == {"error"}
        # a body that does not say it is JSON never reaches the engine (cross-site "simple" requests)
        plain = http.post("/api/generate", content=b'{"model": "x", "prompt": "x"}')
        assert plain.status_code == 415 and set(plain.json()) == {"error"}
        nomodel = http.post("/api/embed", json={"input": "x"})
        assert nomodel.status_code == 400 and "model" in nomodel.json()["error"]
