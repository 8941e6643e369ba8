"""`Vocab`: tokenization, special tokens, token attributes; owned by its `Model`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .._native import model as nmodel
from ..errors import ClosedError, TokenizeError

if TYPE_CHECKING:
    from .model import Model

__all__ = ["TokenAttr", "Vocab"]


class TokenAttr:
    """Bit flags of ``llama_vocab_get_attr``."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


class Vocab:
    """The vocabulary of a model. Keeps the model alive; raises ClosedError once it is closed."""

    def __init__(self, model: Model, handle: int) -> None:
        self._model = model
        self._handle = handle
        self.n_tokens = nmodel.vocab_int(handle, "n_tokens")
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._eog: frozenset[int] | None = None
        self._eog_of: dict[int, bool] = {}  # tokens asked about one at a time

    def _v(self) -> int:
        if self._model.closed:
            raise ClosedError("Model is closed")
        return self._handle

    def _tok(self, name: str) -> int | None:
        t = nmodel.vocab_int(self._v(), name)
        return None if t < 0 else t

    @property
    def type(self) -> str:
        return {0: "none", 1: "spm", 2: "bpe", 3: "wpm", 4: "ugm", 5: "rwkv", 6: "plamo2"}.get(
            nmodel.vocab_int(self._v(), "type"), "unknown"
        )

    bos = property(lambda self: self._tok("bos"), doc="beginning-of-sequence token or None")
    eos = property(lambda self: self._tok("eos"), doc="end-of-sequence token or None")
    eot = property(lambda self: self._tok("eot"), doc="end-of-turn token or None")
    sep = property(lambda self: self._tok("sep"), doc="separator token or None")
    nl = property(lambda self: self._tok("nl"), doc="newline token or None")
    pad = property(lambda self: self._tok("pad"), doc="padding token or None")
    cls = property(lambda self: self._tok("cls"), doc="classification token or None")
    mask = property(lambda self: self._tok("mask"), doc="mask token or None")
    fim_pre = property(lambda self: self._tok("fim_pre"), doc="fill-in-the-middle prefix token")
    fim_suf = property(lambda self: self._tok("fim_suf"), doc="fill-in-the-middle suffix token")
    fim_mid = property(lambda self: self._tok("fim_mid"), doc="fill-in-the-middle middle token")
    fim_pad = property(lambda self: self._tok("fim_pad"), doc="fill-in-the-middle pad token")
    fim_rep = property(lambda self: self._tok("fim_rep"), doc="fill-in-the-middle repo token")
    fim_sep = property(lambda self: self._tok("fim_sep"), doc="fill-in-the-middle separator token")

    @property
    def add_bos(self) -> bool:
        return bool(nmodel.vocab_int(self._v(), "add_bos"))

    @property
    def add_eos(self) -> bool:
        return bool(nmodel.vocab_int(self._v(), "add_eos"))

    def check(self, tokens: Iterable[int]) -> None:
        """Raise TokenizeError if any id is outside [0, n_tokens)."""
        n = self.n_tokens
        for t in tokens:
            if not 0 <= t < n:
                raise TokenizeError(f"token id {t} out of range [0, {n})")

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, …). One native lookup per distinct token
        (cached): no scan over the vocabulary."""
        if self._eog is not None:
            return token in self._eog
        hit = self._eog_of.get(token)
        if hit is None:
            hit = 0 <= token < self.n_tokens and nmodel.vocab_is_eog(self._v(), token)
            self._eog_of[token] = hit
        return hit

    @property
    def eog_tokens(self) -> frozenset[int]:
        """All end-of-generation tokens (one scan over the vocabulary, on first use)."""
        if self._eog is None:
            v = self._v()
            self._eog = frozenset(t for t in range(self.n_tokens) if nmodel.vocab_is_eog(v, t))
        return self._eog

    def is_control(self, token: int) -> bool:
        self.check((token,))
        return nmodel.vocab_is_control(self._v(), token)

    def token_text(self, token: int) -> str:
        self.check((token,))
        return nmodel.vocab_token_text(self._v(), token)

    def token_score(self, token: int) -> float:
        self.check((token,))
        return nmodel.vocab_token_score(self._v(), token)

    def token_attr(self, token: int) -> int:
        self.check((token,))
        return nmodel.vocab_token_attr(self._v(), token)

    def tokenize(
        self, text: str | bytes, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        """Text → token ids. ``add_special`` adds BOS/EOS as the model wants; ``parse_special``
        turns special-token text (``<|im_start|>``) into its id instead of plain text."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        out = nmodel.tokenize(self._v(), data, add_special, parse_special)
        if out is None:
            raise TokenizeError(f"tokenization failed for a text of {len(data)} bytes (overflow)")
        return out

    def token_to_piece(self, token: int, *, special: bool = True) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character). Cached."""
        key = (token, special)
        piece = self._pieces.get(key)
        if piece is None:
            if not 0 <= token < self.n_tokens:
                raise TokenizeError(f"token id {token} out of range [0, {self.n_tokens})")
            piece = nmodel.token_to_piece(self._v(), token, special)
            self._pieces[key] = piece
        return piece

    def detokenize(
        self, tokens: Sequence[int], *, remove_special: bool = False, unparse_special: bool = False
    ) -> str:
        self.check(tokens)
        data = nmodel.detokenize(self._v(), list(tokens), remove_special, unparse_special)
        return data.decode("utf-8", "replace")
