"""Structured output and tool calls through real clients against the server (default model):
LangChain's ``ChatOpenAI`` (``bind_tools(tool_choice="any")``, ``with_structured_output`` in
json_schema and function_calling modes) and the ``openai`` SDK (a 40-token budget, a schema with
keywords left to validation)."""

from __future__ import annotations

import json

import openai
import pytest

from .conftest import ALIAS, RunningServer

langchain_openai = pytest.importorskip("langchain_openai")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}
PERSON = {
    "title": "Person",
    "description": "A person",
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
}


def _chat(server: RunningServer, **kw: object) -> object:
    return langchain_openai.ChatOpenAI(
        model=ALIAS, base_url=server.v1, api_key=server.api_key, max_retries=0, timeout=120, **kw
    )


def test_langchain_bind_tools_any_returns_a_call_within_a_small_budget(server: RunningServer) -> None:
    llm = _chat(server, max_tokens=40, temperature=0.8)
    msg = llm.bind_tools([WEATHER_TOOL], tool_choice="any").invoke("What's the weather in Paris?")
    assert msg.tool_calls, msg
    call = msg.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)
    assert set(call["args"]) <= {"city", "unit"}


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(server: RunningServer, method: str) -> None:
    llm = _chat(server, max_tokens=60, temperature=0.8)
    out = llm.with_structured_output(PERSON, method=method).invoke("Describe Ada Lovelace as JSON.")
    assert isinstance(out, dict) and set(out) == {"name", "age"}, out
    assert isinstance(out["name"], str) and 0 <= out["age"] <= 120


def test_openai_sdk_tool_call_with_40_tokens_is_compact_and_complete(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Weather in Paris and in Rome?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=40,
        temperature=0.8,
        seed=3,
    )
    choice = r.choices[0]
    assert choice.message.tool_calls, choice
    assert choice.finish_reason in ("tool_calls", "length")
    assert not choice.message.content  # a cut second call never leaks into the content
    for call in choice.message.tool_calls:
        args = json.loads(call.function.arguments)
        assert isinstance(args["city"], str)


def test_openai_sdk_reports_schema_errors_for_unenforced_keywords(server: RunningServer) -> None:
    schema = {"type": "integer", "minimum": 10, "maximum": 99, "multipleOf": 7}
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "A number please."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        "max_tokens": 8,
        "temperature": 0.8,
    }
    with server.http() as http:
        for seed in range(4):
            r = http.post("/v1/chat/completions", json={**body, "seed": seed}).json()
            message = r["choices"][0]["message"]
            value = json.loads(message["content"])
            assert 10 <= value <= 99
            assert ("schema_errors" in message) == (value % 7 != 0), message
        strict = {
            **body,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": schema, "strict": True},
            },
        }
        r2 = http.post("/v1/chat/completions", json=strict)
        assert r2.status_code == 400 and "multipleOf" in r2.text
