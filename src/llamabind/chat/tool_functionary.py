"""Functionary v3.2's output format: ``>>>recipient`` segments, and the grammar that forces calls.

The generation prompt ends with ``>>>``; the model then names a recipient on its own line and
writes that recipient's text. ``all`` is the user (content), any other name a function, whose text is
its JSON arguments; further segments follow after another ``>>>``::

    all
    Let me check.>>>get_weather
    {"city": "Paris"}>>>get_time
    {}

A ``python`` segment whose text is not JSON is code for the code interpreter (``{"code": text}``).
When the prompt did not end with ``>>>`` (the model continues an assistant message), the output
starts as content. A recipient line that is not a name (``>>> print(1)`` in prose) is content.
Whitespace that only separates content from a call is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from ._events import EventBuffer
from ._gbnf_compose import gbnf_literal, prefix_rules
from ._whitespace import WS
from .tool_calls import _FUNC_NAME, ToolCall, _dump, new_tool_call_id

__all__ = [
    "FunctionaryStreamParser",
    "functionary_answer_head",
    "functionary_grammar",
    "prompt_opens_functionary",
]

_SEP = ">>>"
_ALL = "all"
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.:\-]*")
_NAME_LIMIT = 256


def prompt_opens_functionary(prompt: str) -> bool:
    """Whether a rendered prompt ends with ``>>>`` (the model writes a recipient first)."""
    return prompt.endswith(_SEP)


class FunctionaryStreamParser:
    """Functionary v3.2 output deltas → content deltas and completed :class:`ToolCall` s.

    ``started``: the prompt ended with ``>>>`` (:func:`prompt_opens_functionary`; a redundant
    ``>>>`` at the start of the output is dropped). ``tools=False``: function segments are dropped.
    """

    def __init__(
        self,
        *,
        started: bool = True,
        tools: bool = True,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self._tools = tools
        self._new_id = id_factory or new_tool_call_id
        self._out: EventBuffer[ToolCall] = EventBuffer()
        self._buf = ""
        self._state = "recipient" if started else "content"
        self._opened = not started  # False: no ">>>" consumed yet (a leading one is redundant)
        self._sep_seen = False  # the current recipient line follows a ">>>" of the output
        self._name = ""
        self._searched = 0
        self._finished = False

    def feed(self, text: str) -> list[str | ToolCall]:
        if self._finished:
            raise RuntimeError("FunctionaryStreamParser.feed() after finish()")
        if text:
            self._buf += text
            self._run(final=False, truncated=False)
        return self._out.drain()

    def finish(self, truncated: bool = False) -> list[str | ToolCall]:
        """The rest; ``truncated`` (output cut by ``max_tokens``): an unfinished call is dropped."""
        if not self._finished:
            self._finished = True
            self._run(final=True, truncated=truncated)
            self._out.flush()
        return self._out.drain()

    def _content(self, text: str) -> None:
        self._out.content(text)

    def _run(self, final: bool, truncated: bool) -> None:
        while True:
            if self._state == "recipient":
                more = self._recipient(final)
            elif self._state == "content":
                more = self._scan_content(final)
            else:
                more = self._segment(final, truncated)
            if not more:
                return

    def _recipient(self, final: bool) -> bool:
        s = self._buf
        if not self._opened:
            if s.startswith(_SEP):
                s = self._buf = s[len(_SEP) :]
                self._opened = True
            elif _SEP.startswith(s) and not final:
                return False
            else:
                self._opened = True
        if not s and final:
            self._state = "content"  # a ">>>" that opened nothing
            return False
        m = _NAME_CHARS.match(s)
        end = m.end() if m is not None else 0
        if end == len(s) and end <= _NAME_LIMIT and not final:
            return False  # the name may go on
        if end < len(s) and s[end] == "\n" and 0 < end <= _NAME_LIMIT and _FUNC_NAME.match(s[:end]):
            self._name = s[:end]
            self._buf = s[end + 1 :]
            self._state = "content" if self._name == _ALL else "segment"
            self._searched = 0
            return True
        # not a recipient line: the text (and the ">>>" the output wrote before it) is content
        self._content((_SEP if self._sep_seen else "") + s[:end])
        self._buf = s[end:]
        self._state = "content"
        return True

    def _scan_content(self, final: bool) -> bool:
        s = self._buf
        i = s.find(_SEP)
        if i >= 0:
            self._content(s[:i])
            self._buf = s[i + len(_SEP) :]
            self._sep_seen = True
            self._state = "recipient"
            return True
        if final:
            if s:
                self._content(s)
            self._buf = ""
            return False
        hold = 2 if s.endswith(">>") else 1 if s.endswith(">") else 0
        self._content(s[: len(s) - hold])
        self._buf = s[len(s) - hold :]
        return False

    def _segment(self, final: bool, truncated: bool) -> bool:
        """A function's text: up to a ``>>>`` after which it is complete JSON, or the end."""
        s = self._buf
        while True:
            i = s.find(_SEP, self._searched)
            if i < 0:
                break
            in_string = _inside_string(s[:i])
            called = self._finish_call(s[:i], code=not in_string)
            if called or not in_string:
                if not called:
                    self._content(self._name + "\n" + s[:i])  # not a call: the text as it came
                self._buf = s[i + len(_SEP) :]
                self._sep_seen = True
                self._state = "recipient"
                return True
            self._searched = i + 1  # ">>>" inside a JSON string: read on
        if not final:
            self._searched = max(self._searched, len(s) - len(_SEP) + 1)
            return False
        self._buf = ""
        if not self._finish_call(s, code=True) and not truncated:
            self._content(self._name + "\n" + s)  # not a call: the text as it came
        self._state = "content"
        return False

    def _finish_call(self, text: str, *, code: bool) -> bool:
        """Read a function segment's text: True when it was a call (or dropped: no tools).
        ``code``: the text is complete, so a ``python`` segment that is not JSON is code."""
        body = text.lstrip(WS)
        args: Any = None
        rest = ""
        try:
            args, k = json.JSONDecoder().raw_decode(body)
            rest = body[k:]
        except ValueError:
            if self._name == "python" and code and body.strip():
                args = {"code": body}
        if not isinstance(args, dict):
            return False
        if self._tools:
            self._out.calls([ToolCall(self._name, _dump(args), self._new_id())])
        if rest.strip():
            self._content(rest)
        return True


def _inside_string(text: str) -> bool:
    """Whether ``text`` (the start of a JSON value) ends inside a string."""
    inside = escape = False
    for ch in text:
        if escape:
            escape = False
        elif ch == "\\" and inside:
            escape = True
        elif ch == '"':
            inside = not inside
    return inside


# ---------------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------------


def functionary_answer_head(answer_root: str, *, started: bool) -> list[str]:
    """GBNF rules putting the rule ``answer_root`` in an ``all`` segment (after the ``>>>`` that
    opens it, unless the prompt already wrote it: ``started``)."""
    opener = gbnf_literal((_ALL if started else _SEP + _ALL) + "\n")
    return [f"root ::= {opener} {answer_root}"]


def functionary_grammar(
    functions: Sequence[tuple[str, Any]],
    *,
    lazy: bool,
    parallel: bool,
    schema_to_gbnf: Callable[[Any], str],
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(GBNF, trigger patterns, trigger words) forcing Functionary v3.2 calls of ``functions``.

    Not lazy (``required`` / named): optional ``all`` content, then the calls (the prompt's ``>>>``
    opened the first segment). Lazy (``auto``): the grammar starts at a function's name line (at
    the start of the output or after ``>>>``), which the trigger patterns spell out.
    """
    rules: list[str] = []
    alternatives: list[str] = []
    for i, (name, schema) in enumerate(functions):
        prefix = f"t{i}-"
        rules.append(prefix_rules(schema_to_gbnf(schema), prefix).strip())
        rule = f"tc-call-{i}"
        alternatives.append(rule)
        rules.append(f"{rule} ::= {gbnf_literal(name + chr(10))} {prefix}root")
    rules.append("tc-call ::= " + " | ".join(alternatives))
    sep = gbnf_literal(_SEP)
    calls = f"tc-call ( {sep} tc-call )*" if parallel else "tc-call"
    if lazy:
        head = [f"root ::= {calls}"]
    else:
        head = [
            f"root ::= ( {gbnf_literal(_ALL + chr(10))} tc-text {sep} )? {calls}",
            'tc-text ::= ( [^>] | ">" [^>] | ">>" [^>] )*',
        ]
    # names are [A-Za-z0-9_.:-]: only "." is special (outside a class), in Python's re and std::regex
    names = "|".join(name.replace(".", "\\.") for name, _ in functions)
    patterns = (r"(?:[\s\S]*?" + re.escape(_SEP) + r")?((?:" + names + r")\n)[\s\S]*",)
    words = tuple(name + "\n" for name, _ in functions)
    return "\n".join(head + rules) + "\n", patterns, words
