"""Anthropic's Messages API (/v1/messages) through the official `anthropic` SDK (and raw `httpx` for
the wire format of errors)."""

from __future__ import annotations

from typing import Any

import anthropic
import jsonschema
import pytest

from llamabind.server.anthropic import to_chat_request

from .conftest import ALIAS, API_KEY, RunningServer

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def ac(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120.0)


def _text(msg: anthropic.types.Message) -> str:
    return "".join(b.text for b in msg.content if b.type == "text")


def test_message(ac: anthropic.Anthropic) -> None:
    r = ac.messages.create(
        model=ALIAS, max_tokens=12, messages=[{"role": "user", "content": "Name three colors."}]
    )
    assert r.type == "message"
    assert r.role == "assistant"
    assert r.id.startswith("msg_")
    assert r.model == ALIAS
    assert r.content and r.content[0].type == "text"
    assert _text(r)
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert r.usage.input_tokens > 0
    assert 0 < r.usage.output_tokens <= 12


def test_stream(ac: anthropic.Anthropic) -> None:
    deltas: list[str] = []
    kinds: list[str] = []
    with ac.messages.stream(
        model=ALIAS, max_tokens=16, messages=[{"role": "user", "content": "Count from one to five."}]
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert kinds[-1] == "message_stop"
    assert deltas
    assert "".join(deltas) == _text(final)
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0
    # the same request without streaming gives the same text (greedy)
    r = ac.messages.create(
        model=ALIAS, max_tokens=16, messages=[{"role": "user", "content": "Count from one to five."}]
    )
    assert _text(r) == _text(final)
    total = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert total == r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0) > 0


def test_max_tokens_and_stop_sequences(ac: anthropic.Anthropic) -> None:
    msgs: Any = [{"role": "user", "content": "Write a long story about a dragon."}]
    r = ac.messages.create(model=ALIAS, max_tokens=3, messages=msgs)
    assert r.stop_reason == "max_tokens"
    assert r.usage.output_tokens == 3
    full = ac.messages.create(model=ALIAS, max_tokens=24, messages=msgs)
    text = _text(full)
    words = text.split()
    assert len(words) > 3
    stop = words[2]
    r = ac.messages.create(model=ALIAS, max_tokens=24, messages=msgs, stop_sequences=[stop])
    assert r.stop_reason == "stop_sequence"
    assert r.stop_sequence == stop
    assert stop not in _text(r)
    assert text.startswith(_text(r))
    # and streamed
    with ac.messages.stream(model=ALIAS, max_tokens=24, messages=msgs, stop_sequences=[stop]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "stop_sequence"
    assert final.stop_sequence == stop
    assert _text(final) == _text(r)


def test_system_prompt(ac: anthropic.Anthropic, server: RunningServer) -> None:
    msgs: Any = [{"role": "user", "content": "Who are you?"}]
    plain = ac.messages.create(model=ALIAS, max_tokens=8, messages=msgs)
    sys_text = "You are a pirate. Always answer like a pirate."
    r = ac.messages.create(model=ALIAS, max_tokens=8, system=sys_text, messages=msgs)
    blocks = ac.messages.create(
        model=ALIAS, max_tokens=8, system=[{"type": "text", "text": sys_text}], messages=msgs
    )
    assert r.usage.input_tokens != plain.usage.input_tokens
    assert _text(blocks) == _text(r)
    # count_tokens renders the same prompt
    with server.http() as h:
        resp = h.post(
            "/v1/messages/count_tokens", json={"model": ALIAS, "system": sys_text, "messages": msgs}
        )
    assert resp.status_code == 200
    assert resp.json()["input_tokens"] == r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0)


def test_forced_tool(ac: anthropic.Anthropic) -> None:
    r = ac.messages.create(
        model=ALIAS,
        max_tokens=64,
        messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert r.stop_reason == "tool_use"
    uses = [b for b in r.content if b.type == "tool_use"]
    assert len(uses) >= 1
    use = uses[0]
    assert use.name == "get_weather"
    assert use.id.startswith("toolu_")
    jsonschema.validate(use.input, WEATHER["input_schema"])
    # streamed: input_json_delta pieces make the same input
    with ac.messages.stream(
        model=ALIAS,
        max_tokens=64,
        messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert streamed and streamed[0].name == "get_weather"
    assert streamed[0].input == use.input


def test_tool_result_conversation(ac: anthropic.Anthropic) -> None:
    r = ac.messages.create(
        model=ALIAS,
        max_tokens=24,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "What is the weather like in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 degrees celsius"},
                    {"type": "text", "text": "Summarize it in one sentence."},
                ],
            },
        ],
        tool_choice={"type": "none"},
    )
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert not [b for b in r.content if b.type == "tool_use"]
    assert _text(r)


def test_conversion() -> None:
    from llamabind.server.anthropic import MessagesRequest

    body = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "top_k": 7,
            "min_p": 0.1,
        }
    )
    chat = to_chat_request(body)
    assert chat.messages == [
        {"role": "system", "content": "a\nb"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "ok"},
    ]
    assert chat.tools == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat.tool_choice == "required"
    assert chat.parallel_tool_calls is False
    assert chat.stop == ["END"]
    assert chat.max_tokens == 5
    assert chat.top_k == 7
    assert chat.min_p == 0.1


def test_errors(ac: anthropic.Anthropic, server: RunningServer, strict_server: RunningServer) -> None:
    import httpx

    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, timeout=60.0) as h:
        # missing max_tokens
        r = h.post(
            "/v1/messages",
            headers=headers,
            json={"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 400
        body = r.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in body["error"]["message"]
        # malformed JSON
        r = h.post("/messages", headers={**headers, "content-type": "application/json"}, content=b"{nope")
        assert r.status_code == 400 and r.json()["type"] == "error"
        # a bad role
        r = h.post(
            "/v1/messages",
            headers=headers,
            json={"model": ALIAS, "max_tokens": 4, "messages": [{"role": "robot", "content": "hi"}]},
        )
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        # wrong key
        r = h.post(
            "/v1/messages",
            headers={**headers, "x-api-key": "wrong"},
            json={"model": ALIAS, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 401
        assert r.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid or missing API key"},
        }
    # through the SDK
    bad = anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=ALIAS, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    # unknown model names are 404 on a server that answers only its own (--strict-model-name)
    strict = anthropic.Anthropic(base_url=strict_server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as info:
        strict.messages.create(
            model="claude-nonexistent", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        ac.messages.create(
            model=ALIAS,
            max_tokens=4,
            messages=[{"role": "user", "content": "hi"}],
            tool_choice={"type": "tool", "name": "get_weather"},
        )


def test_stream_encoder_blocks() -> None:
    """Thinking, text and tool-call deltas become consecutive content blocks."""
    import json

    from llamabind.chat import ChatDelta, ToolCallDelta
    from llamabind.server.anthropic_response import StreamEncoder

    enc = StreamEncoder("msg_x", "m")
    raw = [enc.start(10)]
    for d in (
        ChatDelta(reasoning_content="hmm"),
        ChatDelta(reasoning_content=" ok"),
        ChatDelta(content="Hi"),
        ChatDelta(tool_calls=(ToolCallDelta(0, "toolu_a", "f", '{"x": 1}'),)),
        ChatDelta(tool_calls=(ToolCallDelta(1, "toolu_b", "g", "{}"),)),
    ):
        raw += enc.delta(d)
    raw += enc.finish("stop", None, None, 10)
    events = []
    for chunk in raw:
        for block in chunk.decode().split("\n\n"):
            if block.strip():
                name, data = block.split("\n")
                payload = json.loads(data.removeprefix("data: "))
                assert name == f"event: {payload['type']}"
                events.append(payload)
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2, 3]
    deltas = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == [
        "thinking_delta",
        "thinking_delta",
        "text_delta",
        "input_json_delta",
        "input_json_delta",
    ]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-1] == {"type": "message_stop"}
