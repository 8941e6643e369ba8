"""OpenAI's Responses API (/v1/responses) through the official `openai` SDK (create, stream, parse,
input_tokens, retrieve, delete), one run of the OpenAI Agents SDK, and the stream encoder's events
for a thinking turn (checked against the SDK's event types)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from llamabind.chat import ChatDelta, ToolCallDelta
from llamabind.server.responses_api import ResponsesRequest, to_chat_request
from llamabind.server.responses_store import ResponseStore
from llamabind.server.responses_stream import EventEncoder

from .conftest import ALIAS, RunningServer

WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
SHORT = "What is 2+2? Answer with a number only."  # greedy SmolLM2 ends this turn by itself


def test_create(client: openai.OpenAI) -> None:
    r = client.responses.create(model=ALIAS, input=SHORT, max_output_tokens=64)
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.model == ALIAS
    assert r.status == "completed"
    assert r.output and r.output[0].type == "message"
    assert r.output_text.strip()
    u = r.usage
    assert u is not None
    assert u.input_tokens > 0 and 0 < u.output_tokens <= 64
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens >= 0
    # the same question as a list of items, after instructions (which replace the template's
    # default system prompt: another prompt length)
    items = client.responses.create(
        model=ALIAS,
        instructions="You are terse.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": SHORT}]}],
        max_output_tokens=64,
    )
    assert items.status == "completed" and items.output_text.strip()
    assert items.usage is not None and items.usage.input_tokens != u.input_tokens
    assert items.instructions == "You are terse."


def test_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    r = client.responses.create(model=ALIAS, input="Write a long story about a dragon.", max_output_tokens=5)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 5
    # streamed: the last event is response.incomplete, the items are marked incomplete too
    stream = client.responses.create(
        model=ALIAS, input="Write a long story about a dragon.", max_output_tokens=5, stream=True
    )
    events = list(stream)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete" and last.response.output_text == r.output_text
    done = [e for e in events if e.type == "response.output_item.done"]
    assert done and done[-1].item.status == "incomplete"


def test_stream(client: openai.OpenAI) -> None:
    deltas: list[str] = []
    events: list[Any] = []
    with client.responses.stream(model=ALIAS, input=SHORT, max_output_tokens=64) as stream:
        for event in stream:
            events.append(event)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert deltas and "".join(deltas) == final.output_text
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0
    # greedy: the same text as without streaming
    r = client.responses.create(model=ALIAS, input=SHORT, max_output_tokens=64)
    assert r.output_text == final.output_text


class Color(BaseModel):
    name: str
    hex: str


def test_parse_structured_output(client: openai.OpenAI) -> None:
    r = client.responses.parse(model=ALIAS, input="Give me a color.", text_format=Color, max_output_tokens=80)
    assert r.status == "completed"
    parsed = r.output_parsed
    assert isinstance(parsed, Color)
    assert Color.model_validate_json(r.output_text) == parsed


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model=ALIAS,
        input="What's the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=64,
    )
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) >= 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id and call.id and call.id.startswith("fc_")
    assert isinstance(json.loads(call.arguments)["city"], str)
    # the tool's result, continuing the stored conversation
    follow = client.responses.create(
        model=ALIAS,
        previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 22 degrees"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=48,
    )
    assert follow.previous_response_id == r.id
    assert [o.type for o in follow.output] == ["message"]
    assert follow.usage is not None
    output = [{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 22 degrees"}]
    counted = client.responses.input_tokens.count(
        model=ALIAS,
        previous_response_id=r.id,
        input=output,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
    )
    question_only = client.responses.input_tokens.count(
        model=ALIAS,
        input="What's the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
    )
    assert follow.usage.input_tokens == counted.input_tokens > question_only.input_tokens  # history prepended
    items = list(client.responses.input_items.list(follow.id))
    assert [i.type for i in items] == ["function_call_output"]


def test_named_tool_choice_stream(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=ALIAS,
        input="What's the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)


def test_store_retrieve_delete(client: openai.OpenAI) -> None:
    r = client.responses.create(model=ALIAS, input=SHORT, max_output_tokens=16)
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    unstored = client.responses.create(model=ALIAS, input=SHORT, max_output_tokens=16, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_input_tokens(client: openai.OpenAI) -> None:
    counted = client.responses.input_tokens.count(model=ALIAS, input=SHORT)
    assert counted.object == "response.input_tokens"
    r = client.responses.create(model=ALIAS, input=SHORT, max_output_tokens=4)
    assert r.usage is not None and counted.input_tokens == r.usage.input_tokens
    with_tools = client.responses.input_tokens.count(model=ALIAS, input=SHORT, tools=[WEATHER])  # type: ignore[list-item]
    assert with_tools.input_tokens > counted.input_tokens


def test_errors(client: openai.OpenAI, server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.responses.create(model=ALIAS, input="hi", previous_response_id="resp_missing")
    body = nf.value.body
    assert isinstance(body, dict)
    assert body["param"] == "previous_response_id" and body["code"] == "previous_response_not_found"
    assert "resp_missing" in body["message"]
    with server.http() as http:
        bad = http.post("/v1/responses", json={"model": ALIAS, "input": [{"type": "web_search_call"}]})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "input"
        tool = http.post(
            "/v1/responses", json={"model": ALIAS, "input": "hi", "tools": [{"type": "web_search"}]}
        )
        assert tool.status_code == 400 and "web_search" in tool.json()["error"]["message"]
        gone = http.delete("/v1/responses/resp_missing")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "response_not_found"


def test_agents_sdk_tool_run(server: RunningServer) -> None:
    agents = pytest.importorskip("agents")
    from agents.models.openai_responses import OpenAIResponsesModel

    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        calls.append(city)
        return f"The weather in {city} is sunny, 22 degrees."

    class AnswerAfterTool(agents.AgentHooks):  # type: ignore[misc]
        """The 135M model calls the tool again whenever it may: after the first call, answer."""

        async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: str) -> None:
            agent.model_settings = dataclasses.replace(agent.model_settings, tool_choice="none")

    agent = agents.Agent(
        name="weather",
        instructions="You answer questions about the weather.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=ALIAS, openai_client=server.async_client()),
        # one call per turn: greedy decoding would otherwise keep appending calls to the budget
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=48, parallel_tool_calls=False),
        hooks=AnswerAfterTool(),
        reset_tool_choice=False,
    )
    result = asyncio.run(agents.Runner.run(agent, "What's the weather in Paris?", max_turns=3))
    assert calls and isinstance(calls[0], str)
    kinds = [type(i).__name__ for i in result.new_items]
    assert kinds == ["ToolCallItem", "ToolCallOutputItem", "MessageOutputItem"]
    assert isinstance(result.final_output, str) and result.final_output


# ------------------------------------------------------------------------------------------------
# without a server
# ------------------------------------------------------------------------------------------------


def test_stream_events_of_a_thinking_turn_parse() -> None:
    """Reasoning, text and a function call in one turn: every event is a valid SDK event."""
    enc = EventEncoder()
    response = {
        "id": "resp_x",
        "object": "response",
        "created_at": 0,
        "model": "m",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "status": "in_progress",
    }
    chunks = enc.start(response)
    for d in (
        ChatDelta(reasoning_content="Let me think"),
        ChatDelta(reasoning_content=" about it."),
        ChatDelta(content="The answer"),
        ChatDelta(content=" is 4."),
        ChatDelta(tool_calls=(ToolCallDelta(0, "call_1", "add", '{"a":2,"b":2}'),)),
    ):
        chunks += enc.delta(d)
    chunks += enc.finish("completed")
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    events = []
    for chunk in chunks:
        head, data = chunk.decode().split("\n", 1)
        payload = json.loads(data.removeprefix("data: "))
        assert head == f"event: {payload['type']}"
        events.append(adapter.validate_python(payload))
    kinds = [e.type for e in events]
    assert "response.reasoning_text.delta" in kinds and "response.reasoning_text.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [o["type"] for o in enc.output] == ["reasoning", "message", "function_call"]
    assert enc.output[0]["content"] == [{"type": "reasoning_text", "text": "Let me think about it."}]
    assert enc.output[1]["content"][0]["text"] == "The answer is 4."
    assert enc.output[2]["arguments"] == '{"a":2,"b":2}'


def test_input_items_to_chat_messages() -> None:
    body = ResponsesRequest.model_validate(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "hm"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Calling."}],
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "done"},
            ],
            "max_output_tokens": 7,
            "temperature": 0.5,
            "top_k": 3,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        }
    )
    chat = to_chat_request(body, ())
    assert chat.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "Calling.",
            "reasoning_content": "hm",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    assert chat.max_tokens == 7 and chat.temperature == 0.5 and chat.top_k == 3
    assert chat.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": None},
    }


def test_store_is_lru_bounded() -> None:
    store = ResponseStore(2)
    for i in range(3):
        store.put({"id": f"r{i}", "output": [{"type": "message"}]}, [{"type": "message"}], ())
        if i == 1:
            assert store.get("r0") is not None  # r0 becomes the most recently used
    assert len(store) == 2
    assert store.get("r1") is None and store.get("r0") is not None and store.get("r2") is not None
    entry = store.get("r2")
    assert entry is not None and len(entry.conversation) == 2
    assert store.delete("r2") and not store.delete("r2")
