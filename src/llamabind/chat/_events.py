"""The content/call event buffer shared by the tool-call stream parsers.

Whitespace that only separates content from a call is dropped (before a call, and right after
one); all other content is kept byte for byte. Adjacent text events are merged when drained.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from ._whitespace import HeldWhitespace

__all__ = ["EventBuffer"]

E = TypeVar("E")


class EventBuffer(Generic[E]):
    """Text and call events in output order, with the whitespace rules above."""

    __slots__ = ("_events", "_ws")

    def __init__(self) -> None:
        self._events: list[str | E] = []
        # whitespace held back: emitted before the next content, dropped before a call;
        # `leading` drops the whitespace right after a call
        self._ws = HeldWhitespace(leading=False)

    def content(self, text: str) -> None:
        if piece := self._ws.feed(text):
            self._events.append(piece)

    def calls(self, calls: Iterable[E]) -> None:
        self._ws.held = ""
        self._events.extend(calls)
        self._ws.leading = True

    def drop_held_whitespace(self) -> None:
        self._ws.held = ""

    def flush(self) -> None:
        """At the end of the output: the whitespace still held back is content after all."""
        if self._ws.held:
            self._events.append(self._ws.held)
            self._ws.held = ""

    def drain(self) -> list[str | E]:
        out: list[str | E] = []
        for ev in self._events:
            if isinstance(ev, str):
                if not ev:
                    continue
                if out and isinstance(out[-1], str):
                    out[-1] = out[-1] + ev
                    continue
            out.append(ev)
        self._events = []
        return out
