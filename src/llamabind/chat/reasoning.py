"""Split a reasoning block (``<think>…</think>`` and configurable tags) off a model's output.

Rules (the same for :func:`split_reasoning` and the streaming :class:`ReasoningStreamSplitter`,
which is what the former runs on the whole text):

* A reasoning block is recognised only at the start of the output (after whitespace): an opening
  tag, or nothing at all when the prompt already opened it (``started=True``, see
  :func:`prompt_opens_reasoning`; a redundant opening tag is then dropped).
* Everything up to the closing tag is ``reasoning_content``; a block that never closes is
  reasoning to the end. Whitespace around the reasoning text and between the closing tag and the
  content is dropped; content is otherwise kept byte for byte.
* Output that does not start with the opening tag is all content.
* ``end_markers`` (e.g. a tool-call marker): text that also ends the reasoning block, for models
  that start their calls without closing it; the marker is kept, as the start of the content.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._whitespace import WS, HeldWhitespace

__all__ = [
    "DEFAULT_REASONING_TAGS",
    "KNOWN_REASONING_TAGS",
    "ReasoningDelta",
    "ReasoningResult",
    "ReasoningStreamSplitter",
    "detect_reasoning_tags",
    "prompt_opens_reasoning",
    "split_reasoning",
]

DEFAULT_REASONING_TAGS = ("<think>", "</think>")
#: Tags of models that reason in a delimited block, looked for by :func:`detect_reasoning_tags`.
KNOWN_REASONING_TAGS: tuple[tuple[str, str], ...] = (
    DEFAULT_REASONING_TAGS,
    ("<seed:think>", "</seed:think>"),
    ("[THINK]", "[/THINK]"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
)


def detect_reasoning_tags(template: str | None) -> tuple[str, str] | None:
    """The reasoning tags whose closing tag a chat template mentions, or None."""
    if not template:
        return None
    for start, end in KNOWN_REASONING_TAGS:
        if end in template:
            return start, end
    return None


def prompt_opens_reasoning(prompt: str, tags: tuple[str, str] = DEFAULT_REASONING_TAGS) -> bool:
    """Whether a rendered prompt ends inside an open reasoning block (the template pre-opened it)."""
    return prompt.rstrip(WS).endswith(tags[0])


@dataclass(frozen=True)
class ReasoningDelta:
    """What one feed produced: reasoning text, then content text (either may be empty)."""

    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)


@dataclass(frozen=True)
class ReasoningResult:
    """``reasoning_content`` (None when the output had no reasoning text) and ``content``."""

    reasoning_content: str | None
    content: str


class _S(enum.Enum):
    START = 0
    OPENED = 1
    REASONING = 2
    AFTER = 3
    CONTENT = 4


def _partial_suffix(text: str, marker: str) -> int:
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


class ReasoningStreamSplitter:
    """Streaming reasoning/content splitter; tags split across deltas are handled.

    ``feed(delta)`` returns the reasoning and content that became certain; ``finish()`` the rest.
    Text that may be the start of a tag is held back until it is decided.
    """

    def __init__(
        self,
        start_tag: str = DEFAULT_REASONING_TAGS[0],
        end_tag: str = DEFAULT_REASONING_TAGS[1],
        *,
        started: bool = False,
        end_markers: tuple[str, ...] = (),
    ) -> None:
        if not start_tag or not end_tag or not all(end_markers):
            raise ValueError("reasoning tags must be non-empty")
        self.start_tag = start_tag
        self.end_tag = end_tag
        self.end_markers = end_markers
        self._state = _S.OPENED if started else _S.START
        self._buf = ""
        self._reasoning: list[str] = []
        self._content: list[str] = []
        # whitespace at the start of the reasoning dropped, at its end held (dropped if the block
        # ends there)
        self._r_ws = HeldWhitespace(leading=True)
        self._finished = False

    @property
    def in_reasoning(self) -> bool:
        """Whether the text so far is inside the reasoning block (or may still start one)."""
        return self._state in (_S.START, _S.OPENED, _S.REASONING)

    def feed(self, text: str) -> ReasoningDelta:
        if self._finished:
            raise RuntimeError("ReasoningStreamSplitter.feed() after finish()")
        if text:
            self._buf += text
            self._run(final=False)
        return self._drain()

    def finish(self) -> ReasoningDelta:
        if not self._finished:
            self._finished = True
            self._run(final=True)
        return self._drain()

    def _drain(self) -> ReasoningDelta:
        out = ReasoningDelta("".join(self._reasoning), "".join(self._content))
        self._reasoning = []
        self._content = []
        return out

    def _emit_reasoning(self, text: str) -> None:
        if piece := self._r_ws.feed(text):
            self._reasoning.append(piece)

    def _run(self, final: bool) -> None:
        while True:
            state = self._state
            if state in (_S.START, _S.OPENED):
                s = self._buf
                stripped = s.lstrip(WS)
                if stripped.startswith(self.start_tag):
                    self._buf = stripped[len(self.start_tag) :]
                    self._state = _S.REASONING
                    continue
                if not final and self.start_tag.startswith(stripped):
                    return  # could still be the opening tag (or only whitespace so far)
                if state is _S.OPENED:
                    self._state = _S.REASONING
                else:
                    self._content.append(s)
                    self._buf = ""
                    self._state = _S.CONTENT
                continue
            if state is _S.REASONING:
                s = self._buf
                j = s.find(self.end_tag)
                k = min((i for i in (s.find(m) for m in self.end_markers) if i >= 0), default=-1)
                if k >= 0 and (j < 0 or k < j):  # a marker that starts the content: kept
                    self._emit_reasoning(s[:k])
                    self._r_ws.held = ""
                    self._content.append(s[k:])
                    self._buf = ""
                    self._state = _S.CONTENT
                    return
                if j >= 0:
                    self._emit_reasoning(s[:j])
                    self._r_ws.held = ""
                    self._buf = s[j + len(self.end_tag) :]
                    self._state = _S.AFTER
                    continue
                if final:
                    self._emit_reasoning(s)
                    self._r_ws.held = ""
                    self._buf = ""
                    return
                hold = max(_partial_suffix(s, m) for m in (self.end_tag, *self.end_markers))
                self._emit_reasoning(s[: len(s) - hold])
                self._buf = s[len(s) - hold :]
                return
            if state is _S.AFTER:
                stripped = self._buf.lstrip(WS)
                self._buf = ""
                if stripped:
                    self._content.append(stripped)
                    self._state = _S.CONTENT
                return
            # CONTENT
            if self._buf:
                self._content.append(self._buf)
                self._buf = ""
            return


def split_reasoning(
    text: str,
    start_tag: str = DEFAULT_REASONING_TAGS[0],
    end_tag: str = DEFAULT_REASONING_TAGS[1],
    *,
    started: bool = False,
) -> ReasoningResult:
    """Split a complete output into ``reasoning_content`` and ``content`` (see the module doc)."""
    splitter = ReasoningStreamSplitter(start_tag, end_tag, started=started)
    first = splitter.feed(text)
    last = splitter.finish()
    reasoning = first.reasoning + last.reasoning
    return ReasoningResult(reasoning_content=reasoning or None, content=first.content + last.content)
