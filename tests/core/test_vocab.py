"""Vocab: special tokens, tokenize/detokenize options, token attributes, the streaming detokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

import llamabind as lb
from llamabind.core.vocab import TokenAttr
from tests.helpers.core import N_VOCAB

MULTIBYTE = "Café 🦙 naïve 日本語のテキスト 😀👍🏽 Ω≈ç√ 🇫🇷 Ελληνικά, русский, ✓"
OUT_OF_RANGE = (-1, N_VOCAB, N_VOCAB + 1000, -(2**31))


def test_special_tokens(model: lb.Model) -> None:
    v = model.vocab
    assert v.n_tokens == N_VOCAB
    assert v.type == "bpe"
    assert (v.bos, v.eos, v.eot, v.pad, v.nl) == (1, 2, 0, 2, 198)
    assert v.sep is None and v.mask is None
    assert v.fim_pre is None and v.fim_suf is None and v.fim_mid is None and v.fim_pad is None
    assert v.fim_rep == 4
    assert not v.add_bos and not v.add_eos
    assert v.eog_tokens == frozenset({0, 2, 4})
    assert v.is_eog(2) and v.is_eog(0) and not v.is_eog(1) and not v.is_eog(198)


def test_is_eog_asks_per_token_without_a_vocabulary_scan() -> None:
    """``is_eog`` asks llama.cpp about the one token (cached), the same answers as the full set,
    which is only built when ``eog_tokens`` is read."""
    with lb.Model(lb.default_model_path(), vocab_only=True) as m:
        v = m.vocab
        assert [v.is_eog(t) for t in (0, 1, 2, 4, 198, *OUT_OF_RANGE)] == [True, False, True, True] + [
            False
        ] * 5
        assert v._eog is None  # no scan so far
        assert v.eog_tokens == frozenset({0, 2, 4})
        assert all(v.is_eog(t) == (t in v.eog_tokens) for t in range(0, N_VOCAB, 97))


def test_token_text_score_attrs(model: lb.Model) -> None:
    v = model.vocab
    assert v.token_text(1) == "<|im_start|>"
    assert v.token_text(198) == "Ċ"  # byte-level BPE spelling of "\n"
    assert v.token_score(28) == 0.0
    assert v.token_attr(1) == TokenAttr.CONTROL
    assert v.token_attr(28) == TokenAttr.NORMAL
    assert v.is_control(1) and v.is_control(2) and not v.is_control(28)
    assert v.token_to_piece(1) == b"<|im_start|>"
    assert v.token_to_piece(1, special=False) == b""
    assert v.token_to_piece(198) == b"\n"


def test_tokenize_special_handling(model: lb.Model) -> None:
    text = "<|im_start|>user"
    assert model.tokenize(text, add_special=False, parse_special=True) == [1, 4093]
    plain = model.tokenize(text, add_special=False, parse_special=False)
    assert 1 not in plain and len(plain) > 2
    assert model.detokenize(plain) == text
    assert model.tokenize("") == []
    assert model.tokenize(b"abc") == model.tokenize("abc")


def test_detokenize_special_handling(model: lb.Model) -> None:
    toks = [1, 28, 2]
    assert model.detokenize(toks) == ","
    assert model.detokenize(toks, unparse_special=True) == "<|im_start|>,<|im_end|>"
    assert model.detokenize(toks, remove_special=True, unparse_special=True) == "<|im_start|>,<|im_end|>"
    assert model.detokenize([]) == ""


@pytest.mark.parametrize(
    "text",
    ["The capital of France is Paris.", MULTIBYTE, "  leading spaces\n\ttabs\r\n", "a" * 3000],
)
def test_roundtrip(model: lb.Model, text: str) -> None:
    assert model.detokenize(model.tokenize(text, add_special=False)) == text


@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_out_of_range_token_ids(model: lb.Model, bad: int) -> None:
    v = model.vocab
    msg = rf"^token id {bad} out of range \[0, {N_VOCAB}\)$"
    with pytest.raises(lb.TokenizeError, match=msg):
        model.detokenize([28, bad])
    with pytest.raises(lb.TokenizeError, match=msg):
        v.token_to_piece(bad)
    with pytest.raises(lb.TokenizeError, match=msg):
        v.token_text(bad)
    with pytest.raises(lb.TokenizeError, match=msg):
        v.token_score(bad)
    with pytest.raises(lb.TokenizeError, match=msg):
        v.token_attr(bad)
    with pytest.raises(lb.TokenizeError, match=msg):
        v.is_control(bad)
    with pytest.raises(lb.TokenizeError, match=msg):
        lb.StreamingDetokenizer(v).feed(bad)
    assert issubclass(lb.TokenizeError, ValueError)


def test_vocab_of_closed_model(model_path: Path) -> None:
    m = lb.Model(model_path, vocab_only=True)
    v = m.vocab
    m.close()
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        v.tokenize("hello")
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        _ = v.bos
    with pytest.raises(lb.ClosedError, match=r"^Model is closed$"):
        v.token_text(5)


# ------------------------------------------------------------- streaming detokenizer


@pytest.mark.parametrize(
    "text",
    [MULTIBYTE, "🦙🦙🦙", "日本語のテキストです。", "ñandú, crème brûlée, Ærøskøbing", "x 👨‍👩‍👧 y"],
)
def test_streaming_detokenizer_never_splits_a_character(model: lb.Model, text: str) -> None:
    tokens = model.tokenize(text, add_special=False)
    d = lb.StreamingDetokenizer(model.vocab)
    pieces: list[str] = []
    withheld = 0
    for tok in tokens:
        piece = d.feed(tok)
        assert "\ufffd" not in piece
        piece.encode("utf-8")  # no lone surrogates / partial characters
        if piece == "" and d.pending_bytes:
            withheld += 1
        pieces.append(piece)
        assert text.startswith("".join(pieces))  # every prefix is a prefix of whole characters
    assert d.flush() == ""
    assert "".join(pieces) == model.detokenize(tokens) == text
    assert d.tokens == tokens
    # where byte-level BPE split a character over several tokens, bytes were held back
    split = sum(1 for t in tokens if not _is_utf8(model.vocab.token_to_piece(t)))
    assert withheld >= (1 if split else 0)
    assert split > 0 or all(len(ch.encode()) < 3 for ch in text)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_streaming_detokenizer_withholds_partial_bytes(model: lb.Model) -> None:
    tokens = model.tokenize("🦙", add_special=False)
    assert len(tokens) == 3  # the 4-byte llama emoji is three byte-level tokens
    d = lb.StreamingDetokenizer(model.vocab)
    assert d.feed(tokens[0]) == ""
    assert d.pending_bytes > 0
    assert d.feed(tokens[1]) == ""
    assert d.pending_bytes > 0
    assert d.feed(tokens[2]) == "🦙"
    assert d.pending_bytes == 0


def test_streaming_detokenizer_flush_and_reset(model: lb.Model) -> None:
    first = model.tokenize("🦙", add_special=False)[0]
    d = lb.StreamingDetokenizer(model.vocab)
    assert d.feed(first) == ""
    assert d.flush() == "\ufffd"  # an incomplete tail at the very end becomes one replacement char
    d.feed(first)
    d.reset()
    assert d.pending_bytes == 0 and d.tokens == []
    assert d.feed(model.tokenize("ok", add_special=False)[0]) == "ok"


def test_streaming_detokenizer_special_tokens(model: lb.Model) -> None:
    plain = lb.StreamingDetokenizer(model.vocab)
    special = lb.StreamingDetokenizer(model.vocab, special=True)
    assert plain.feed(1) == ""
    assert special.feed(1) == "<|im_start|>"
