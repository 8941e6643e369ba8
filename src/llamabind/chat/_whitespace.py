"""Streamed text trimmed at its edges, one piece at a time: whitespace at the start may be
dropped, and whitespace at the end is held back until more text follows (the caller then keeps
it as content or drops it, e.g. before a tool call or at the end of a reasoning block)."""

from __future__ import annotations

__all__ = ["WS", "HeldWhitespace"]

#: the whitespace that separates content from tags and calls
WS = " \t\r\n"


class HeldWhitespace:
    """``feed`` each piece and emit what it returns; ``held`` is the trailing whitespace not yet
    emitted (set it to ``""`` to drop it); ``leading`` drops whitespace until the next other
    character (set it again to drop the whitespace after a call)."""

    __slots__ = ("held", "leading")

    def __init__(self, *, leading: bool) -> None:
        self.leading = leading
        self.held = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` to emit now, with the whitespace held before it ("" if none)."""
        if self.leading:
            text = text.lstrip(WS)
            if not text:
                return ""
            self.leading = False
        body = text.rstrip(WS)
        if not body:
            self.held += text
            return ""
        out = self.held + body
        self.held = text[len(body) :]
        return out
