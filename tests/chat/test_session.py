"""llamabind.chat (formatter, stream parser, session): chat requests → prompt + constraints, output → content / reasoning / tool calls."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

import llamabind as lb
from llamabind.chat import (
    ChatFormatter,
    ChatRequestError,
    ChatStreamParser,
    ChatTemplate,
    ToolCallFormat,
    chat,
    chat_stream,
    closed_schema,
    response_format_grammar,
)
from llamabind.generation.generator import Generator
from llamabind.server.openai_format import openai_message
from tests.helpers.core import GREEDY

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


def test_render_and_tokenize_without_double_bos(model: lb.Model) -> None:
    f = ChatFormatter(model)
    p = f.prepare([{"role": "user", "content": "Hi"}])
    assert p.prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert p.tokens == model.tokenize(p.prompt, add_special=False, parse_special=True)
    # <|im_start|> is parsed as a special token, once per turn
    assert p.tokens[0] == 1 and p.tokens.count(1) == 3
    # a template that starts with the BOS string: BOS is not added again
    bos = ChatTemplate("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    g = ChatFormatter(model, bos)
    t = g.prepare([{"role": "user", "content": "x"}]).tokens
    assert t[0] == model.vocab.bos and t[1] != model.vocab.bos


def test_assistant_prefill(model: lb.Model) -> None:
    p = ChatFormatter(model).prepare(
        [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "One, two,"}]
    )
    assert p.prompt.endswith("<|im_start|>assistant\nOne, two,")


def test_tools_inlined_for_a_template_without_tools(model: lb.Model) -> None:
    f = ChatFormatter(model)
    assert f.tool_format() is ToolCallFormat.GENERIC
    p = f.prepare([{"role": "user", "content": "Weather?"}], tools=[WEATHER], tool_choice="required")
    assert '"get_weather"' in p.prompt and "tool_calls" in p.prompt
    assert p.grammar is not None and not p.grammar_lazy
    auto = f.prepare([{"role": "user", "content": "Weather?"}], tools=[WEATHER])
    assert auto.grammar_lazy and auto.grammar_trigger_patterns
    none = f.prepare([{"role": "user", "content": "Weather?"}], tools=[WEATHER], tool_choice="none")
    assert none.grammar is None and none.tool_format is None and "get_weather" not in none.prompt


def test_request_errors(model: lb.Model) -> None:
    f = ChatFormatter(model)
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(ChatRequestError) as ei:
        f.prepare(msgs, tool_choice="required")
    assert ei.value.param == "tool_choice"
    with pytest.raises(ChatRequestError):
        f.prepare(msgs, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ChatRequestError) as ei:
        f.prepare(msgs, response_format={"type": "xml"})
    assert ei.value.param == "response_format"
    with pytest.raises(ChatRequestError):
        f.prepare(msgs, grammar='root ::= "a"', response_format={"type": "json_object"})
    with pytest.raises(lb.GrammarError):
        f.prepare(msgs, grammar="root ::= (")
    with pytest.raises(lb.SchemaError):
        f.prepare(msgs, response_format={"type": "json_schema", "json_schema": {"schema": {"type": "wat"}}})
    with pytest.raises(ChatRequestError):
        f.prepare([])


def test_request_error_param_comes_from_the_raiser(model: lb.Model) -> None:
    # the field at fault is passed by whoever raises, not guessed from the message text: a
    # duplicated tool *named* "tool_choice" is a fault of ``tools``
    f = ChatFormatter(model)
    msgs = [{"role": "user", "content": "x"}]
    dup = {"type": "function", "function": {"name": "tool_choice", "parameters": {"type": "object"}}}
    with pytest.raises(ChatRequestError, match="duplicate tool name 'tool_choice'") as ei:
        f.prepare(msgs, tools=[dup, dup])
    assert ei.value.param == "tools"
    with pytest.raises(ChatRequestError, match="not among the tools") as ei:
        f.prepare(msgs, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "tools"}})
    assert ei.value.param == "tool_choice"
    with pytest.raises(ChatRequestError) as ei:
        f.prepare(msgs, tools=[{"type": "retrieval"}])
    assert ei.value.param == "tools"


def test_one_bos_decision(model: lb.Model, monkeypatch: pytest.MonkeyPatch) -> None:
    # a model that wants a BOS token: added once, whether or not the template writes it
    monkeypatch.setattr(lb.Vocab, "add_bos", property(lambda self: True))
    bos = model.vocab.bos
    assert bos is not None
    plain = ChatFormatter(model, ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}"))
    p = plain.prepare([{"role": "user", "content": "x"}])
    assert p.add_bos and plain.needs_bos(p.prompt)
    assert p.tokens[0] == bos and p.tokens[1] != bos
    assert p.tokens[1:] == model.tokenize(p.prompt, add_special=False, parse_special=True)
    src = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    written = ChatFormatter(model, ChatTemplate(src))
    q = written.prepare([{"role": "user", "content": "x"}])
    assert not q.add_bos and q.tokens.count(bos) == 1 and q.tokens[0] == bos
    # a prompt left for libmtmd to tokenize carries the same decision and no tokens
    r = plain.prepare([{"role": "user", "content": "x"}], tokenize=False)
    assert r.tokens == [] and r.add_bos and r.prompt == p.prompt
    monkeypatch.setattr(lb.Vocab, "add_bos", property(lambda self: False))
    assert not plain.prepare([{"role": "user", "content": "x"}]).add_bos


def test_response_format_and_closed_schema() -> None:
    assert response_format_grammar(None) is None
    assert response_format_grammar({"type": "text"}) is None
    assert response_format_grammar({"type": "json_object"}) is not None
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}},
        "$defs": {"x": {"properties": {"y": {"type": "string"}}}},
        "allOf": [{"type": "object"}],
    }
    closed = closed_schema(schema)
    assert "additionalProperties" not in closed  # allOf: left open
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert closed["$defs"]["x"]["additionalProperties"] is False
    assert closed_schema({"type": "object", "additionalProperties": True})["additionalProperties"] is True
    assert "additionalProperties" not in schema["properties"]["a"]  # the input is not modified


def test_stream_parser_tool_calls_and_reasoning() -> None:
    text = 'Sure.\n{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]}'
    # generic JSON is only a call when it is the whole turn: here it is content
    p = ChatStreamParser(tool_format="generic", tool_names=["get_weather"])
    for ch in text:
        p.feed(ch)
    msg = p.message("stop")
    assert msg.tool_calls == [] and msg.content == text and msg.finish_reason == "stop"
    whole = text[text.index("{") :]
    deltas = []
    p = ChatStreamParser(tool_format="generic", tool_names=["get_weather"], id_factory=lambda: "call_x")
    for ch in whole:
        deltas += p.feed(ch)
    tail, reason = p.finish("stop")
    deltas += tail
    assert reason == "tool_calls"
    calls = [tc for d in deltas for tc in d.tool_calls]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id == "call_x"
    assert json.loads(calls[0].arguments) == {"city": "Paris", "unit": "c"}
    assert all(d.content is None for d in deltas)
    # reasoning split, tags cut across deltas
    r = ChatStreamParser(reasoning_tags=("<think>", "</think>"))
    out = []
    for piece in ["<thi", "nk>Let me", " think.</th", "ink>\n\nThe answer", " is 4."]:
        out += r.feed(piece)
    out += r.finish("stop")[0]
    assert "".join(d.reasoning_content or "" for d in out) == "Let me think."
    assert "".join(d.content or "" for d in out) == "The answer is 4."
    # hermes markers with content around them, several calls
    h = ChatStreamParser(tool_format=ToolCallFormat.HERMES)
    for piece in [
        "Checking. <tool_",
        'call>{"name": "a", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>',
    ]:
        h.feed(piece)
    m = h.message("stop")
    assert m.content == "Checking." and [c.name for c in m.tool_calls] == ["a", "b"]
    assert openai_message(m)["tool_calls"][1]["function"]["arguments"] == '{"x":1}'


def test_library_chat(ctx: lb.Context) -> None:
    msgs = [{"role": "user", "content": "Say hello."}]
    r = chat(ctx, msgs, sampling=GREEDY, max_tokens=8)
    assert r.content and r.finish_reason in ("stop", "length")
    assert r.prompt_tokens == len(ChatFormatter(ctx.model).prepare(msgs).tokens)
    streamed = list(chat_stream(ctx, msgs, sampling=GREEDY, max_tokens=8))
    assert "".join(c.content for c in streamed) == r.content
    assert streamed[-1].finish_reason == r.finish_reason
    # the second call on the same context reused the prompt from the KV cache
    again = chat(ctx, msgs, sampling=GREEDY, max_tokens=8)
    assert again.timings.cached_tokens >= r.prompt_tokens - 1
    assert again.content == r.content


def test_library_chat_tool_required(ctx: lb.Context) -> None:
    r = chat(
        ctx,
        [{"role": "user", "content": "What's the weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice="required",
        sampling=GREEDY,
        max_tokens=60,
    )
    assert r.finish_reason == "tool_calls" and r.content is None
    assert r.tool_calls and r.tool_calls[0].name == "get_weather"
    jsonschema.validate(r.tool_calls[0].arguments_dict(), WEATHER["function"]["parameters"])  # type: ignore[index]


def test_library_chat_with_a_drafter_equals_plain(ctx: lb.Context) -> None:
    from llamabind.speculative import NgramDrafter

    text = "alpha beta gamma delta epsilon zeta eta theta"
    msgs = [{"role": "user", "content": f"Repeat exactly: {text}"}]
    gen = Generator(ctx)
    plain = chat(gen, msgs, sampling=GREEDY, max_tokens=24)
    gen.reset()
    spec = chat(gen, msgs, sampling=GREEDY, max_tokens=24, draft=NgramDrafter(4))
    assert spec.content == plain.content
    assert spec.timings.spec_rounds > 0
