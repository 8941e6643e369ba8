"""The content/call event buffer shared by the tool-call stream parsers.

Whitespace that only separates content from a call is dropped (before a call, and right after
one); all other content is kept byte for byte. Adjacent text events are merged when drained.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["EventBuffer"]

_WS = " \t\r\n"

E = TypeVar("E")


class EventBuffer(Generic[E]):
    """Text and call events in output order, with the whitespace rules above."""

    __slots__ = ("_after_call", "_events", "_ws")

    def __init__(self) -> None:
        self._events: list[str | E] = []
        self._ws = ""  # whitespace held back: emitted before the next content, dropped before a call
        self._after_call = False  # drop whitespace right after a call

    def content(self, text: str) -> None:
        if not text:
            return
        if self._after_call:
            text = text.lstrip(_WS)
            if not text:
                return
            self._after_call = False
        body = text.rstrip(_WS)
        if body:
            self._events.append(self._ws + body)
            self._ws = text[len(body) :]
        else:
            self._ws += text

    def calls(self, calls: Iterable[E]) -> None:
        self._ws = ""
        self._events.extend(calls)
        self._after_call = True

    def drop_held_whitespace(self) -> None:
        self._ws = ""

    def flush(self) -> None:
        """At the end of the output: the whitespace still held back is content after all."""
        if self._ws:
            self._events.append(self._ws)
            self._ws = ""

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
