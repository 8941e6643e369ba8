"""Reasoning (<think>…</think>) split into reasoning_content and content, whole and streaming."""

from __future__ import annotations

import pytest

from llamabind.chat import (
    ChatTemplate,
    ReasoningDelta,
    ReasoningStreamSplitter,
    detect_reasoning_tags,
    prompt_opens_reasoning,
    split_reasoning,
)

THINK = ("<think>", "</think>")

# (text, started, tags, expected reasoning_content, expected content)
CASES: list[tuple[str, bool, tuple[str, str], str | None, str]] = [
    (
        "<think>\nLet me think.\nOK.\n</think>\n\nThe answer is 4.",
        False,
        THINK,
        "Let me think.\nOK.",
        "The answer is 4.",
    ),
    ("<think>a</think>b</think>c", False, THINK, "a", "b</think>c"),
    ("  <think>x</think>y", False, THINK, "x", "y"),
    ("<think>\n\n</think>\n\nJust the answer.", False, THINK, None, "Just the answer."),
    ("<think>never closed\n", False, THINK, "never closed", ""),
    ("No reasoning here.\n", False, THINK, None, "No reasoning here.\n"),
    ("  The <think> tag later is content", False, THINK, None, "  The <think> tag later is content"),
    ("<thinking>not our tag</thinking>", False, THINK, None, "<thinking>not our tag</thinking>"),
    ("<thi", False, THINK, None, "<thi"),
    ("", False, THINK, None, ""),
    # the prompt already opened the block
    ("Hmm, 2+2.\n</think>\n\n4", True, THINK, "Hmm, 2+2.", "4"),
    ("<think>dup open</think>4", True, THINK, "dup open", "4"),
    ("still thinking", True, THINK, "still thinking", ""),
    ("</think>direct", True, THINK, None, "direct"),
    # other tags
    ("[THINK]plan[/THINK]done", False, ("[THINK]", "[/THINK]"), "plan", "done"),
    (
        "<|START_THINKING|>a<|END_THINKING|>\nb",
        False,
        ("<|START_THINKING|>", "<|END_THINKING|>"),
        "a",
        "b",
    ),
]


@pytest.mark.parametrize(("text", "started", "tags", "reasoning", "content"), CASES)
def test_split_whole(
    text: str, started: bool, tags: tuple[str, str], reasoning: str | None, content: str
) -> None:
    result = split_reasoning(text, *tags, started=started)
    assert result.reasoning_content == reasoning
    assert result.content == content


def _stream(
    chunks: list[str], started: bool, tags: tuple[str, str], reasoning: str, content: str
) -> tuple[str, str]:
    splitter = ReasoningStreamSplitter(*tags, started=started)
    got_r = got_c = ""
    for chunk in [*chunks, None]:
        delta = splitter.feed(chunk) if chunk is not None else splitter.finish()
        assert isinstance(delta, ReasoningDelta)
        got_r += delta.reasoning
        got_c += delta.content
        # nothing emitted is ever taken back, and tags never leak
        assert reasoning.startswith(got_r) and content.startswith(got_c), chunks
    return got_r, got_c


@pytest.mark.parametrize(("text", "started", "tags", "reasoning", "content"), CASES)
def test_stream_every_boundary(
    text: str, started: bool, tags: tuple[str, str], reasoning: str | None, content: str
) -> None:
    expected_r = reasoning or ""
    for i in range(len(text) + 1):
        assert _stream([text[:i], text[i:]], started, tags, expected_r, content) == (expected_r, content), i
        for j in range(i, len(text) + 1):
            chunks = [text[:i], text[i:j], text[j:]]
            assert _stream(chunks, started, tags, expected_r, content) == (expected_r, content), (i, j)
    assert _stream(list(text), started, tags, expected_r, content) == (expected_r, content)


def test_stream_reports_reasoning_as_it_comes() -> None:
    splitter = ReasoningStreamSplitter()
    assert splitter.feed("<th") == ReasoningDelta()
    assert splitter.in_reasoning
    assert splitter.feed("ink>Step one") == ReasoningDelta(reasoning="Step one")
    assert splitter.feed(". </thi") == ReasoningDelta(reasoning=".")
    assert splitter.feed("nk>\n\nAnswer") == ReasoningDelta(content="Answer")
    assert not splitter.in_reasoning
    assert splitter.finish() == ReasoningDelta()
    with pytest.raises(RuntimeError):
        splitter.feed("x")


def test_template_that_preopens_think() -> None:
    # A Qwen3/DeepSeek-R1 style generation prompt that opens the block itself.
    src = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
        "{% else %}<think>\n{% endif %}{% endif %}"
    )
    tmpl = ChatTemplate(src)
    assert detect_reasoning_tags(src) == THINK
    msgs = [{"role": "user", "content": "2+2?"}]
    opened = tmpl.render(msgs)
    assert opened.endswith("<think>\n")
    assert prompt_opens_reasoning(opened)
    closed = tmpl.render(msgs, enable_thinking=False)
    assert not prompt_opens_reasoning(closed)
    result = split_reasoning("Simple sum.\n</think>\n\n4", started=prompt_opens_reasoning(opened))
    assert (result.reasoning_content, result.content) == ("Simple sum.", "4")
    result = split_reasoning("4", started=prompt_opens_reasoning(closed))
    assert (result.reasoning_content, result.content) == (None, "4")


def test_detect_reasoning_tags() -> None:
    assert detect_reasoning_tags(None) is None
    assert detect_reasoning_tags("{{ messages }}") is None
    assert detect_reasoning_tags("{{ content.split('</think>')[-1] }}") == THINK
    assert detect_reasoning_tags("[THINK]{{ t }}[/THINK]") == ("[THINK]", "[/THINK]")
    with pytest.raises(ValueError):
        ReasoningStreamSplitter("", "</think>")
