"""Incremental prefill: same first token as a normal prefill after any edit sequence, less decode
work than re-prefilling on every keystroke (counters), chat history, eviction, session cache, TUI."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llamabind as lb
from llamabind.generation.generator import Generator
from llamabind.incremental import ChatTurnFormat, IncrementalChat, IncrementalPrefill
from tests.helpers.core import GREEDY, THREADS


@pytest.fixture(scope="module")
def ctx_a(model: lb.Model) -> Iterator[lb.Context]:
    c = lb.Context(model, n_ctx=1024, n_batch=512, n_threads=THREADS)
    yield c
    c.close()


@pytest.fixture(scope="module")
def ctx_b(model: lb.Model) -> Iterator[lb.Context]:
    c = lb.Context(model, n_ctx=1024, n_batch=512, n_threads=THREADS)
    yield c
    c.close()


def _typing(text: str) -> list[str]:
    return [text[:i] for i in range(1, len(text) + 1)]


def _edits() -> dict[str, list[str]]:
    a = "Please summarise the following paragraph about the history of tea in China."
    b = "Explain how a bicycle stays upright while moving forward."
    mid = a.index("history")
    return {
        "typed": _typing(a),
        "backspaces": [*_typing(b), *[b[:i] for i in range(len(b) - 1, len(b) - 9, -1)], *_typing(b)[-8:]],
        "mid_line_insert": [*_typing(a), *[a[:mid] + "long "[:i] + a[mid:] for i in range(1, 6)]],
        "mid_line_delete": [*_typing(a), a[:mid] + a[mid + 8 :]],
        "word_replaced": [*_typing(b), b.replace("bicycle", "unicycle")],
        "pasted_then_cleared": [a, "", *_typing("Short question?")],
        "deleted_to_prefix": [*_typing(a), a[:12], a[:12] + " in French"],
        "trailing_space_and_newline": [*_typing(b), b + " ", b + " \n", b + " \nThanks!"],
    }


CHATML_BEFORE = "<|im_start|>user\n"
CHATML_AFTER = "<|im_end|>\n<|im_start|>assistant\n"


def test_first_token_equals_normal_prefill_after_edit_sequences(
    model: lb.Model, ctx_a: lb.Context, ctx_b: lb.Context
) -> None:
    system = model.tokenize(
        "<|im_start|>system\nYou are terse.<|im_end|>\n", add_special=False, parse_special=True
    )
    normal = Generator(ctx_b)
    inc_gen = Generator(ctx_a)
    for name, steps in _edits().items():
        inc_gen.reset()
        inc = IncrementalPrefill(inc_gen, base=system, before=CHATML_BEFORE, after=CHATML_AFTER)
        for text in steps:
            inc.update(text)
        final = steps[-1]
        tokens = inc.tokens(final)
        first = next(c for c in inc.stream(final, max_tokens=1, sampling=GREEDY) if c.tokens).tokens[0]
        # a normal prefill: the rendered prompt tokenized in one go, decoded in one go
        prompt = "<|im_start|>system\nYou are terse.<|im_end|>\n" + CHATML_BEFORE + final + CHATML_AFTER
        ref_tokens = model.tokenize(prompt, add_special=False, parse_special=True)
        assert tokens == ref_tokens, name
        normal.reset()
        ref = normal.complete(ref_tokens, max_tokens=1, sampling=GREEDY)
        assert first == ref.tokens[0], name
        st = inc.stats
        # at Enter only the withheld tail and the template's closing are left
        after_n = len(model.tokenize(CHATML_AFTER, add_special=False, parse_special=True))
        assert st.tokens_flushed <= inc.margin + after_n + 2, (name, st)
        assert st.total_decoded < st.naive_tokens, (name, st)


def test_margin_saves_work_versus_naive_and_no_margin(model: lb.Model, ctx_a: lb.Context) -> None:
    text = "Write a short poem about autumn leaves falling slowly onto a quiet river bank."
    results = {}
    for margin in (0, 2):
        gen = Generator(ctx_a)
        gen.reset()
        inc = IncrementalPrefill(gen, before=CHATML_BEFORE, after=CHATML_AFTER, margin=margin)
        for t in _typing(text):
            inc.update(t)
        inc.flush(text)
        assert gen.cached == inc.tokens(text)
        assert ctx_a.memory.pos_max(0) == len(gen.cached) - 1
        results[margin] = inc.stats
    naive = results[2].naive_tokens
    assert results[2].total_decoded * 5 < naive  # far below re-prefilling on every keystroke
    # without the margin, BPE merges keep invalidating the last tokens: more work is thrown away
    assert results[2].tokens_invalidated < results[0].tokens_invalidated
    assert results[2].total_decoded < results[0].total_decoded
    assert results[2].savings > 0.8


def test_flush_gives_logits_of_the_full_prompt(model: lb.Model, ctx_a: lb.Context, ctx_b: lb.Context) -> None:
    gen = Generator(ctx_a)
    gen.reset()
    inc = IncrementalPrefill(gen, margin=2)
    text = "The capital of France is"
    for t in _typing(text):
        inc.update(t)
    toks = inc.flush(text)
    assert toks == model.tokenize(text, add_special=False, parse_special=True)
    a = ctx_a.logits(-1)
    ref = Generator(ctx_b)
    ref.reset()
    ref.prefill(toks)
    b = ctx_b.logits(-1)
    assert int(a.argmax()) == int(b.argmax())


def test_chat_turns_history_and_session_cache(model: lb.Model, ctx_a: lb.Context, tmp_path: Path) -> None:
    cache = tmp_path / "system.session"
    ctx_a.memory.clear()
    chat = IncrementalChat(
        ctx_a, system_prompt="Answer in one short sentence.", reserve=24, session_cache=cache
    )
    assert cache.is_file() and not chat.session_restored
    replies = []
    for msg in ("What is the capital of France?", "And of Italy?"):
        for t in _typing(msg):
            chat.type(t)
        before = list(chat.gen.cached)
        tokens = chat.prefill.tokens(msg)
        reply = list(chat.reply(msg, sampling=GREEDY, max_tokens=12))
        got = [t for c in reply for t in c.tokens]
        # the same conversation tokens decoded from scratch give the same reply
        with lb.Context(model, n_ctx=1024, n_threads=THREADS) as fresh:
            ref = Generator(fresh).complete(tokens, max_tokens=12, sampling=GREEDY)
        assert got == ref.tokens
        replies.append(got)
        assert chat.last_timings.cached_tokens >= len(before) - 2  # history was not re-decoded
    assert [t.user for t in chat.history] == ["What is the capital of France?", "And of Italy?"]
    assert chat.messages()[1]["role"] == "assistant"
    # a restart restores the system prompt from disk instead of decoding it
    ctx_a.memory.clear()
    again = IncrementalChat(
        ctx_a, system_prompt="Answer in one short sentence.", reserve=24, session_cache=cache
    )
    assert again.session_restored and again.gen.cached == again.system_tokens
    assert ctx_a.memory.pos_max(0) == len(again.system_tokens) - 1
    first = list(again.reply("What is the capital of France?", sampling=GREEDY, max_tokens=4))
    assert [t for c in first for t in c.tokens] == replies[0][:4]
    ctx_a.memory.clear()


def test_sliding_window_eviction(model: lb.Model) -> None:
    with lb.Context(model, n_ctx=256, n_threads=THREADS) as ctx:  # llama.cpp's smallest context
        chat = IncrementalChat(ctx, system_prompt="Be brief.", reserve=48, keep_turns=1)
        msgs = ["Name a fruit.", "Name a colour.", "Name an animal.", "Name a city.", "Name a tool."]
        for m in msgs:
            chat.type(m)
            out = list(chat.reply(m, sampling=GREEDY, max_tokens=48, ignore_eos=True))
            assert out[-1].finish_reason in ("stop", "length")
            # the cache always mirrors the token list, positions contiguous after shifts
            assert ctx.memory.pos_max(0) == len(chat.gen.cached) - 1
            assert len(chat.gen.cached) <= chat.n_ctx
        assert chat.evicted_turns > 0
        assert 1 <= len(chat.history) < len(msgs)
        assert chat.history[-1].user == msgs[-1]
        assert chat.gen.cached[: len(chat.system_tokens)] == chat.system_tokens


def test_turn_format_from_chatml(model: lb.Model) -> None:
    from llamabind.chat import model_chat_template

    f = ChatTurnFormat.from_template(model_chat_template(model), system_prompt="S")
    assert f.system == "<|im_start|>system\nS<|im_end|>\n"
    assert f.user_before == CHATML_BEFORE and f.user_after == CHATML_AFTER
    assert f.assistant_end == "<|im_end|>\n"


# ----------------------------------------------------------------------------- TUI


class _Screen:
    """A tiny VT100 screen: enough of what prompt_toolkit's renderer emits to read the display."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.grid = [[" "] * cols for _ in range(rows)]
        self.r = self.c = 0
        self._pending = ""

    def _put(self, ch: str) -> None:
        if self.c >= self.cols:
            self.c = 0
            self.r = min(self.r + 1, self.rows - 1)
        self.grid[self.r][self.c] = ch
        self.c += 1

    def feed(self, data: str) -> None:
        data = self._pending + data
        self._pending = ""
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                m = re.match(r"\x1b\[([0-9;?]*)([A-Za-z@])|\x1b[()][A-Z0-9]|\x1b[=>78]", data[i:])
                if m is None:
                    self._pending = data[i:]  # an escape split across reads
                    return
                if m.group(2):
                    self._csi(m.group(1), m.group(2))
                i += m.end()
                continue
            if ch == "\r":
                self.c = 0
            elif ch == "\n":
                self.r = min(self.r + 1, self.rows - 1)
            elif ch == "\b":
                self.c = max(0, self.c - 1)
            elif ch >= " ":
                self._put(ch)
            i += 1

    def _csi(self, params: str, cmd: str) -> None:
        if params.startswith("?"):
            return
        nums = [int(x) if x else 0 for x in params.split(";")] if params else []
        n = nums[0] if nums and nums[0] else 1
        if cmd == "A":
            self.r = max(0, self.r - n)
        elif cmd == "B":
            self.r = min(self.rows - 1, self.r + n)
        elif cmd == "C":
            self.c = min(self.cols - 1, self.c + n)
        elif cmd == "D":
            self.c = max(0, self.c - n)
        elif cmd in "Hf":
            self.r = min(self.rows - 1, (nums[0] if nums and nums[0] else 1) - 1)
            self.c = min(self.cols - 1, (nums[1] if len(nums) > 1 and nums[1] else 1) - 1)
        elif cmd == "K":
            mode = nums[0] if nums else 0
            row = self.grid[self.r]
            lo, hi = (self.c, self.cols) if mode == 0 else (0, self.c + 1) if mode == 1 else (0, self.cols)
            for k in range(lo, hi):
                row[k] = " "
        elif cmd == "J":
            mode = nums[0] if nums else 0
            if mode == 2:
                self.grid = [[" "] * self.cols for _ in range(self.rows)]
            elif mode == 0:
                for k in range(self.c, self.cols):
                    self.grid[self.r][k] = " "
                for rr in range(self.r + 1, self.rows):
                    self.grid[rr] = [" "] * self.cols

    def text(self) -> str:
        return "\n".join("".join(row).rstrip() for row in self.grid)


def test_incremental_chat_tui_in_a_pty(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    cache = tmp_path / "sys.session"
    env = dict(os.environ, TERM="xterm", LINES="30", COLUMNS="110")
    args = ["-m", "llamabind", "incremental-chat", "--temp", "0", "-n", "12", "-t", "1", "-c", "1024"]
    args += ["--debounce-ms", "20", "-s", "Answer in one short sentence.", "--session-cache", str(cache)]
    child = pexpect.spawn(sys.executable, args, env=env, dimensions=(30, 110), encoding="utf-8", timeout=90)
    screen = _Screen(30, 110)

    def wait_for(pattern: str) -> None:
        deadline = time.monotonic() + 90
        while not re.search(pattern, screen.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen:\n{screen.text()}")
            try:
                screen.feed(child.read_nonblocking(65536, timeout=0.5))
            except pexpect.TIMEOUT:
                pass

    try:
        wait_for(r"ready")
        for ch in "zzz qqq":
            child.send(ch)
        child.send("\x15")  # Ctrl-U: delete to line start
        for ch in "What is the capital of Frnce":
            child.send(ch)
            time.sleep(0.01)
        child.send("\x1b[D\x1b[D\x1b[D")  # three times ←: after "Fr"
        child.send("a")  # mid-line edit: "France"
        child.send("\x1b[F")  # End
        child.send("?")
        wait_for(r"prefilled \d+ tokens")
        child.send("\r")
        wait_for(r"you: What is the capital of France\?")
        wait_for(r"Paris")
        wait_for(r"TTFT \d+ ms")
        assert "zzz" not in screen.text()  # Ctrl-U removed it before it was sent
        assert cache.is_file()
        child.send("\x03")
        wait_for(r"again to quit")
        child.send("\x03")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
