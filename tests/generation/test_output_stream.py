"""OutputStream: the one place where sampled tokens become client text (detokenizer, stop strings,
end tokens, limits) — fed by hand with tokens of the real model's vocabulary."""

from __future__ import annotations

import llamabind as lb
from llamabind.generation.output import OutputStream, token_limit


def _tokens(model: lb.Model, text: str) -> list[int]:
    return model.tokenize(text, add_special=False, parse_special=False)


def _run(out: OutputStream, tokens: list[int]) -> tuple[list[str | None], str]:
    """Feed until the stream ends; what each token released, and the final flush."""
    got: list[str | None] = []
    for t in tokens:
        got.append(out.feed(t))
        if out.finish_reason is not None:
            break
    return got, out.finish()


def test_plain_text_round_trips(model: lb.Model) -> None:
    text = "Hello world, this is a test."
    toks = _tokens(model, text)
    out = OutputStream(model.vocab, n_prompt=3, n_ctx=512)
    got, tail = _run(out, toks)
    assert "".join(g for g in got if g is not None) + tail == text
    assert out.finish_reason is None and out.n_generated == len(toks) and out.stopped is None
    assert out.remaining == 512 - 3 - len(toks)


def test_stop_string_across_tokens_never_leaks(model: lb.Model) -> None:
    text = "one two three four five"
    toks = _tokens(model, text)
    out = OutputStream(model.vocab, n_prompt=1, n_ctx=512, stop=["three f"])
    got, tail = _run(out, toks)
    emitted = "".join(g for g in got if g is not None) + tail
    assert emitted == "one two "
    assert out.finish_reason == "stop" and out.stopped == "three f"
    # the token completing the stop string released nothing: it is not part of the output
    assert got[-1] is None
    assert tail == ""


def test_held_back_text_is_released_at_the_end(model: lb.Model) -> None:
    """A suffix that could start a stop string waits; at the end of the stream it goes out."""
    toks = _tokens(model, "say END")
    out = OutputStream(model.vocab, n_prompt=1, n_ctx=512, stop=["END!"])
    got, tail = _run(out, toks)
    assert "END" not in "".join(g for g in got if g is not None)
    assert tail.endswith("END") and out.stopped is None and out.finish_reason is None


def test_end_tokens_and_stop_tokens_end_without_text(model: lb.Model) -> None:
    eos = model.vocab.eos
    assert eos is not None
    words = _tokens(model, "alpha beta")
    out = OutputStream(model.vocab, n_prompt=1, n_ctx=512)
    got, _ = _run(out, [*words, eos, *words])
    assert got[-1] is None and out.finish_reason == "stop" and out.n_generated == len(words) + 1
    # ignore_eos: the end token is text like any other
    out = OutputStream(model.vocab, n_prompt=1, n_ctx=512, ignore_eos=True)
    assert out.feed(eos) is not None and out.finish_reason is None
    # an extra stop token
    out = OutputStream(model.vocab, n_prompt=1, n_ctx=512, stop_tokens=[words[1]])
    got, _ = _run(out, words)
    assert got == [got[0], None] and out.finish_reason == "stop"


def test_limits(model: lb.Model) -> None:
    toks = _tokens(model, "a b c d e f g h")
    out = OutputStream(model.vocab, n_prompt=1, n_ctx=512, max_tokens=3)
    got, _ = _run(out, toks)
    assert len(got) == 3 and all(g is not None for g in got) and out.finish_reason == "length"
    # the context: the token that takes the last position ends the output
    out = OutputStream(model.vocab, n_prompt=10, n_ctx=14)
    got, _ = _run(out, toks)
    assert len(got) == 4 and out.finish_reason == "length" and out.remaining == 0
    # max_tokens=0 ends before the first token; -1 / None mean "until the context is full"
    assert OutputStream(model.vocab, n_prompt=1, n_ctx=64, max_tokens=0).finish_reason == "length"
    assert token_limit(None, 64) == token_limit(-1, 64) == 64 and token_limit(5, 64) == 5


def test_utf8_is_never_split(model: lb.Model) -> None:
    text = "日本語のテキスト 🎉"
    toks = _tokens(model, text)
    out = OutputStream(model.vocab, n_prompt=1, n_ctx=512)
    got, tail = _run(out, toks)
    pieces = [g for g in got if g]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) + tail == text
    # cut in the middle of a character: the end of the stream turns the partial bytes into U+FFFD
    for cut in range(1, len(toks)):
        out = OutputStream(model.vocab, n_prompt=1, n_ctx=512)
        got, tail = _run(out, toks[:cut])
        assert "\ufffd" not in "".join(g for g in got if g)
        if not text.startswith("".join(g for g in got if g) + tail):
            assert tail.endswith("\ufffd")


def test_render_special(model: lb.Model) -> None:
    im_end = model.tokenize("<|im_end|>", add_special=False, parse_special=True)
    assert len(im_end) == 1
    # <|im_end|> is an end token of this model: use ignore_eos to see its text
    plain = OutputStream(model.vocab, n_prompt=1, n_ctx=64, ignore_eos=True)
    special = OutputStream(model.vocab, n_prompt=1, n_ctx=64, ignore_eos=True, render_special=True)
    assert plain.feed(im_end[0]) == ""
    assert special.feed(im_end[0]) == "<|im_end|>"
