"""The parsed form of a GBNF grammar and the error helper shared by the parser and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from llamabind.errors import GrammarError

# --------------------------------------------------------------------------------------------
# The parsed form
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharClass:
    """A terminal matching one code point: a string literal's character or a ``[...]`` class."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def matches(self, code_point: int) -> bool:
        found = any(lo <= code_point <= hi for lo, hi in self.ranges)
        return found != self.negated


@dataclass(frozen=True)
class AnyChar:
    """The terminal ``.``: any single code point."""

    def matches(self, code_point: int) -> bool:
        return True


@dataclass(frozen=True)
class TokenRef:
    """A token terminal ``<[id]>`` / ``<text>``, or its negation with ``!``. Never matches characters."""

    token_id: int | None
    text: str | None
    negated: bool = False


@dataclass(frozen=True)
class RuleRef:
    """A reference to the rule with index `index` in `ParsedGrammar.rules`."""

    index: int
    position: int = field(default=0, compare=False)


Element: TypeAlias = "CharClass | AnyChar | TokenRef | RuleRef"


@dataclass(frozen=True)
class Rule:
    """One rule: alternatives, each a sequence of elements (an empty one matches the empty string).

    `origin` is the rule written in the grammar that this rule belongs to (itself for written
    rules, the enclosing rule for generated ones) and `position` where it starts in the text.
    """

    name: str
    alternatives: tuple[tuple[Element, ...], ...]
    origin: str
    position: int


# --------------------------------------------------------------------------------------------
# Error helpers
# --------------------------------------------------------------------------------------------


def line_col(text: str, position: int) -> tuple[int, int]:
    position = max(0, min(position, len(text)))
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    return line, col


def grammar_error(text: str, message: str, position: int, rule: str | None) -> GrammarError:
    line, col = line_col(text, position)
    where = f"in rule '{rule}'" if rule is not None else "at top level"
    return GrammarError(f"GBNF error at line {line}:{col} {where}: {message}", position=position, rule=rule)


def describe(text: str, pos: int) -> str:
    if pos >= len(text):
        return "end of input"
    snippet = text[pos : pos + 12].split("\n")[0].split("\r")[0]
    return repr(snippet) if snippet else "end of line"
