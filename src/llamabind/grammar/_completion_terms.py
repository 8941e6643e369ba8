"""The pieces :mod:`llamabind.grammar.completion` builds on: a character terminal in the form its
hot loop wants (and the character a completion writes for it), and UTF-8 read as llama.cpp's
grammar reads it (lax, one partly read character carried between tokens)."""

from __future__ import annotations

from collections.abc import Iterable

from llamabind.grammar._gbnf_types import AnyChar, CharClass

__all__ = ["SURROGATES", "Terminal", "decode_utf8", "merge_segments", "partial_range", "utf8_len"]

#: characters a completion prefers for a character class, in order (a readable, one-byte choice)
_PREFERRED = tuple(ord(c) for c in "a0A -_.")
SURROGATES = (0xD800, 0xDFFF)


class Terminal:
    """A terminal at one position, in the form the hot loop wants."""

    __slots__ = ("any", "literal", "negated", "ranges")

    def __init__(self, element: CharClass | AnyChar) -> None:
        self.any = isinstance(element, AnyChar)
        self.ranges: tuple[tuple[int, int], ...] = () if isinstance(element, AnyChar) else element.ranges
        self.negated = isinstance(element, CharClass) and element.negated
        self.literal = (
            self.ranges[0][0]
            if not self.negated and len(self.ranges) == 1 and self.ranges[0][0] == self.ranges[0][1]
            else -1
        )

    def matches(self, cp: int) -> bool:
        if self.any:
            return True
        for lo, hi in self.ranges:
            if lo <= cp <= hi:
                return not self.negated
        return self.negated

    def first_in(self, lo: int, hi: int) -> int | None:
        """The smallest code point in [lo, hi] this terminal matches (surrogates skipped)."""
        candidates = {lo}
        for r_lo, r_hi in self.ranges:
            candidates.add(r_hi + 1 if self.negated else max(lo, r_lo))
        candidates.add(SURROGATES[1] + 1)
        for cp in sorted(candidates):
            if lo <= cp <= hi and not SURROGATES[0] <= cp <= SURROGATES[1] and self.matches(cp):
                return cp
        return None

    def preferred(self) -> int | None:
        """The character a completion writes for this terminal."""
        for cp in _PREFERRED:
            if self.matches(cp):
                return cp
        printable = self.first_in(0x21, 0x10FFFF)
        return printable if printable is not None else self.first_in(0, 0x10FFFF)


def partial_range(partial: tuple[int, int]) -> tuple[int, int]:
    """The code points a partly read UTF-8 character can still become."""
    value, remain = partial
    lo = value << (6 * remain)
    return lo, lo | ((1 << (6 * remain)) - 1)


def utf8_len(cp: int) -> int:
    return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4


def decode_utf8(data: bytes, partial: tuple[int, int]) -> tuple[list[int], tuple[int, int]]:
    """Code points of ``data`` read after ``partial``, and the partial state after it.

    As lax as llama.cpp's decoder: the length comes from the lead byte's high bits and
    continuation bytes are not checked; a stray continuation byte as a lead is invalid (-1).
    """
    value, remain = partial
    out: list[int] = []
    for b in data:
        if remain < 0:
            break
        if remain > 0:
            value = (value << 6) | (b & 0x3F)
            remain -= 1
            if remain == 0:
                out.append(value)
                value = 0
            continue
        high = b >> 4
        if high < 8:
            out.append(b)
        elif high < 12:
            return out, (0, -1)
        elif high < 14:
            value, remain = b & 0x1F, 1
        elif high == 14:
            value, remain = b & 0x0F, 2
        else:
            value, remain = b & 0x07, 3
    return out, (value, remain)


def merge_segments(parts: Iterable[str | int]) -> tuple[str | int, ...]:
    out: list[str | int] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] = out[-1] + part
        elif part != "":
            out.append(part)
    return tuple(out)
