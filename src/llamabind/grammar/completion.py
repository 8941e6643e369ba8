"""An incremental recognizer over a parsed GBNF grammar, and the shortest completion of a prefix.

`GrammarRecognizer` walks a grammar the way llama.cpp's grammar sampler does: its state is a set
of parse stacks (each a chain of positions inside rule alternatives, the innermost on top, whose
top is always a terminal), advanced one code point at a time; a rule reference in tail position
is replaced rather than pushed, so a long repetition (``char*``) keeps its stack flat. It is fed
what the sampler is fed — the bytes of each token's piece (a UTF-8 character may be split across
tokens, as in llama.cpp) or, for token terminals (``<[id]>``, ``<text>``), the token id — and its
states are immutable values, so keeping the state before a token is how a token is taken back.
Memory is bounded by the grammar and the nesting depth, not by the length of the text.

`GrammarRecognizer.completion` gives the *shortest completion* of a state: the shortest string
(counting UTF-8 bytes, one unit per token terminal) that, appended to the text so far, makes the
whole text a sentence of the grammar. Every stack node carries the cost of completing everything
it holds (precomputed minimal costs of rules and of alternative suffixes), so the cost of the
cheapest completion is a minimum over the stacks and its text is built from the cheapest one.

    >>> rec = recognizer_for('root ::= "[" [0-9]+ ("," [0-9]+)* "]"')
    >>> state = rec.feed_text(rec.start(), "[12,3")
    >>> rec.completion(state).text
    ']'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from llamabind.grammar._completion_terms import (
    SURROGATES,
    Terminal,
    decode_utf8,
    merge_segments,
    partial_range,
    utf8_len,
)
from llamabind.grammar._gbnf_types import Element, RuleRef, TokenRef
from llamabind.grammar.gbnf import ParsedGrammar, parse_gbnf

__all__ = ["INFINITE", "Completion", "GrammarRecognizer", "RecognizerState", "recognizer_for"]

#: the cost of what cannot be completed (a rule that derives no finite string, a negated token)
INFINITE = 1 << 60

# A stack node: (position id, cost of completing this frame and every frame below it, parent).
# ``None`` as a whole stack is the empty stack: the text so far is a complete sentence.
_Node: TypeAlias = "tuple[int, int, _Node | None]"
_Stack: TypeAlias = "_Node | None"

_KIND_RULE, _KIND_LITERAL, _KIND_CLASS, _KIND_ANY, _KIND_TOKEN = range(5)


@dataclass(frozen=True)
class RecognizerState:
    """Where the recognizer is: its parse stacks and a partly read UTF-8 character.

    ``partial``: (bits read so far, continuation bytes still expected), as llama.cpp keeps it;
    ``(0, 0)`` between characters, ``(0, -1)`` after invalid UTF-8.
    """

    stacks: frozenset[_Stack]
    partial: tuple[int, int] = (0, 0)

    @property
    def viable(self) -> bool:
        """Whether some continuation of the text so far is a sentence of the grammar."""
        return bool(self.stacks) and self.partial[1] >= 0

    @property
    def complete(self) -> bool:
        """Whether the text so far is itself a sentence of the grammar."""
        return None in self.stacks and self.partial[1] == 0


@dataclass(frozen=True)
class Completion:
    """What completes a prefix: ``continuation`` (the bytes that finish a partly read UTF-8
    character, usually empty), then ``segments``: text, or the id of a token the grammar names.

    ``cost``: UTF-8 bytes of the whole completion plus one per token segment (an upper bound on
    the tokens it takes when every token covers at least one byte).
    """

    continuation: bytes
    segments: tuple[str | int, ...]
    cost: int

    @property
    def text(self) -> str:
        """The text of the completion (the character finished by ``continuation`` excluded)."""
        return "".join(s for s in self.segments if isinstance(s, str))

    @property
    def empty(self) -> bool:
        return not self.continuation and not self.segments


class GrammarRecognizer:
    """Recognizes prefixes of one grammar's sentences and completes them; thread-safe (immutable).

    ``token_id(text)`` resolves a ``<text>`` token terminal to its token id (as llama.cpp does with
    the model's vocabulary); without it, or when it returns None, such a terminal matches no token
    and a completion never goes through it. Negated token terminals (``!<...>``) are recognized
    but never used by a completion.
    """

    def __init__(
        self,
        grammar: ParsedGrammar | str,
        root: str = "root",
        *,
        token_id: Callable[[str], int | None] | None = None,
    ) -> None:
        parsed = grammar if isinstance(grammar, ParsedGrammar) else parse_gbnf(grammar, root)
        self.grammar = parsed
        rules = [r.alternatives for r in parsed.rules]
        self._kind: list[int] = []
        self._elem: list[Any] = []  # per position: a Terminal, a rule index or a token matcher
        self._next: list[int] = []  # per position: the next position in its alternative, -1 at the end
        self._suffix: list[int] = []  # per position: the cost of the rest of its alternative
        self._starts: list[tuple[int, ...]] = []  # per rule: first position of each alternative (-1: empty)
        self._unit: list[int] = []  # per position: the cost of its element alone
        self._pick: list[int] = []  # per position: the character (or token id) a completion writes
        terminals: dict[Element, Terminal] = {}
        spans: list[list[tuple[int, int]]] = []
        for alts in rules:
            starts: list[int] = []
            rule_spans: list[tuple[int, int]] = []
            for alt in alts:
                first = len(self._kind)
                starts.append(first if alt else -1)
                for i, e in enumerate(alt):
                    self._next.append(len(self._kind) + 1 if i + 1 < len(alt) else -1)
                    if isinstance(e, RuleRef):
                        self._kind.append(_KIND_RULE)
                        self._elem.append(e.index)
                        self._pick.append(-1)
                    elif isinstance(e, TokenRef):
                        tid = e.token_id
                        if tid is None and e.text is not None and token_id is not None:
                            tid = token_id(e.text)
                        self._kind.append(_KIND_TOKEN)
                        self._elem.append((tid, e.negated))
                        self._pick.append(tid if tid is not None and not e.negated else -1)
                    else:
                        t = terminals.get(e)
                        if t is None:
                            t = terminals[e] = Terminal(e)
                        self._kind.append(
                            _KIND_ANY if t.any else _KIND_LITERAL if t.literal >= 0 else _KIND_CLASS
                        )
                        self._elem.append(t.literal if t.literal >= 0 else t)
                        cp = t.preferred()
                        self._pick.append(-1 if cp is None else cp)
                rule_spans.append((first, len(self._kind)))
            self._starts.append(tuple(starts))
            spans.append(rule_spans)
        n = len(self._kind)
        self._unit = [INFINITE] * n
        for p in range(n):
            kind = self._kind[p]
            if kind == _KIND_TOKEN:
                self._unit[p] = 1 if self._pick[p] >= 0 else INFINITE
            elif kind != _KIND_RULE:
                self._unit[p] = utf8_len(self._pick[p]) if self._pick[p] >= 0 else INFINITE
        self._rule_cost = self._min_rule_costs(spans)
        self._suffix = [0] * n
        for rule_spans in spans:
            for first, end in rule_spans:
                total = 0
                for p in range(end - 1, first - 1, -1):
                    unit = self._rule_cost[self._elem[p]] if self._kind[p] == _KIND_RULE else self._unit[p]
                    total = min(INFINITE, total + unit)
                    self._suffix[p] = total
        self._spans = spans
        self._min_segments: dict[int, tuple[str | int, ...]] = {}
        self._start = self._expand_all(
            [self._node(p, None) if p >= 0 else None for p in self._starts[parsed.root_index]]
        )

    # ------------------------------------------------------------------ tables

    def _min_rule_costs(self, spans: list[list[tuple[int, int]]]) -> list[int]:
        """The cost of each rule's cheapest sentence (a fixpoint; INFINITE when it has none)."""
        cost = [INFINITE] * len(spans)
        changed = True
        while changed:
            changed = False
            for r, rule_spans in enumerate(spans):
                for first, end in rule_spans:
                    total = 0
                    for p in range(first, end):
                        unit = cost[self._elem[p]] if self._kind[p] == _KIND_RULE else self._unit[p]
                        total += unit
                        if total >= INFINITE:
                            break
                    if total < cost[r]:
                        cost[r] = total
                        changed = True
        return cost

    def _cheapest_alternative(self, rule: int) -> tuple[int, int] | None:
        best: tuple[int, int] | None = None
        best_cost = INFINITE
        for first, end in self._spans[rule]:
            c = self._suffix[first] if end > first else 0
            if c < best_cost:
                best, best_cost = (first, end), c
        return best

    def _rule_segments(self, rule: int, active: frozenset[int] = frozenset()) -> tuple[str | int, ...]:
        """The cheapest sentence of ``rule`` as segments (memoized)."""
        got = self._min_segments.get(rule)
        if got is not None:
            return got
        if rule in active:  # cannot happen for a grammar parse_gbnf accepted; never loop regardless
            raise ValueError("grammar rule derives itself without consuming input")
        span = self._cheapest_alternative(rule)
        if span is None:
            raise ValueError(f"rule {self.grammar.rules[rule].name!r} derives no finite sentence")
        out = self._positions_segments(span[0], span[1], active | {rule})
        self._min_segments[rule] = out
        return out

    def _positions_segments(
        self, first: int, end: int, active: frozenset[int] = frozenset()
    ) -> tuple[str | int, ...]:
        parts: list[str | int] = []
        for p in range(first, end):
            kind = self._kind[p]
            if kind == _KIND_RULE:
                parts.extend(self._rule_segments(self._elem[p], active))
            elif kind == _KIND_TOKEN:
                parts.append(self._pick[p])
            else:
                parts.append(chr(self._pick[p]))
        return merge_segments(parts)

    def _alt_end(self, pos: int) -> int:
        while self._next[pos] >= 0:
            pos = self._next[pos]
        return pos + 1

    # ------------------------------------------------------------------ stacks

    def _node(self, pos: int, parent: _Stack) -> _Node:
        return (pos, min(INFINITE, self._suffix[pos] + (parent[1] if parent is not None else 0)), parent)

    def _expand(self, stack: _Stack, out: set[_Stack]) -> None:
        """Add ``stack`` to ``out`` with every rule reference on top expanded until a terminal is
        on top (or the stack is empty): llama.cpp's ``advance_stack``."""
        work = [stack]
        seen: set[_Stack] = set()
        kind, elem, nxt, starts, suffix = self._kind, self._elem, self._next, self._starts, self._suffix
        while work:
            s = work.pop()
            if s is None:
                out.add(None)
                continue
            pos = s[0]
            if kind[pos] != _KIND_RULE:
                out.add(s)
                continue
            if s in seen:
                continue
            seen.add(s)
            parent = s[2]
            after = nxt[pos]
            base: _Stack = parent
            if after >= 0:
                base = (
                    after,
                    min(INFINITE, suffix[after] + (parent[1] if parent is not None else 0)),
                    parent,
                )
            base_cost = base[1] if base is not None else 0
            for p0 in starts[elem[pos]]:
                work.append(base if p0 < 0 else (p0, min(INFINITE, suffix[p0] + base_cost), base))

    def _expand_all(self, stacks: Iterable[_Stack]) -> RecognizerState:
        out: set[_Stack] = set()
        for s in stacks:
            self._expand(s, out)
        return RecognizerState(frozenset(out))

    def _pop(self, s: _Node) -> _Stack:
        """The stack after its top terminal matched (not expanded)."""
        after = self._next[s[0]]
        parent = s[2]
        if after < 0:
            return parent
        return (after, min(INFINITE, self._suffix[after] + (parent[1] if parent is not None else 0)), parent)

    def _scan(self, stacks: Iterable[_Stack], cp: int) -> set[_Stack]:
        out: set[_Stack] = set()
        kind, elem = self._kind, self._elem
        for s in stacks:
            if s is None:
                continue
            k = kind[s[0]]
            if k == _KIND_LITERAL:
                if elem[s[0]] != cp:
                    continue
            elif k == _KIND_CLASS:
                if not elem[s[0]].matches(cp):
                    continue
            elif k != _KIND_ANY:  # a token terminal matches no character
                continue
            self._expand(self._pop(s), out)
        return out

    # ------------------------------------------------------------------ feeding

    def start(self) -> RecognizerState:
        """The state before any text."""
        return self._start

    def feed_bytes(self, state: RecognizerState, data: bytes) -> RecognizerState:
        """The state after ``data`` (UTF-8, possibly ending inside a character)."""
        if not data or not state.viable:
            return state
        cps, partial = decode_utf8(data, state.partial)
        stacks: Iterable[_Stack] = state.stacks
        for cp in cps:
            stacks = self._scan(stacks, cp)
            if not stacks:
                break
        if partial[1] < 0:
            return RecognizerState(frozenset(), partial)
        if partial[1] > 0:  # only stacks that can take a character starting with these bytes
            lo, hi = partial_range(partial)
            stacks = [s for s in stacks if s is not None and self._first_char(s[0], lo, hi) is not None]
        return RecognizerState(frozenset(stacks), partial)

    def _first_char(self, pos: int, lo: int, hi: int) -> int | None:
        """The smallest code point in [lo, hi] the terminal at ``pos`` matches (None: none)."""
        kind = self._kind[pos]
        if kind == _KIND_LITERAL:
            lit: int = self._elem[pos]
            return lit if lo <= lit <= hi else None
        if kind == _KIND_ANY:
            cp = lo if not SURROGATES[0] <= lo <= SURROGATES[1] else SURROGATES[1] + 1
            return cp if cp <= hi else None
        if kind == _KIND_CLASS:
            found: int | None = self._elem[pos].first_in(lo, hi)
            return found
        return None

    def feed_text(self, state: RecognizerState, text: str) -> RecognizerState:
        """The state after ``text``."""
        return self.feed_bytes(state, text.encode("utf-8", "surrogatepass"))

    def feed_token(self, state: RecognizerState, token: int, piece: bytes) -> RecognizerState:
        """The state after one token whose text is ``piece``, as llama.cpp's grammar takes it: a
        stack with a token terminal on top matches the id, the others read the piece's bytes."""
        if not state.viable:
            return state
        kind = self._kind
        if not any(s is not None and kind[s[0]] == _KIND_TOKEN for s in state.stacks):
            return self.feed_bytes(state, piece)
        out: set[_Stack] = set()
        chars: list[_Stack] = []
        for s in state.stacks:
            if s is None:
                continue
            if kind[s[0]] == _KIND_TOKEN:
                tid, negated = self._elem[s[0]]
                if tid is not None and (token == tid) != negated:
                    self._expand(self._pop(s), out)
            else:
                chars.append(s)
        read = self.feed_bytes(RecognizerState(frozenset(chars), state.partial), piece)
        partial = read.partial if read.partial[1] >= 0 else decode_utf8(piece, state.partial)[1]
        return RecognizerState(frozenset(out | read.stacks), partial)

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a sentence of the grammar."""
        return self.feed_text(self._start, text).complete

    # ------------------------------------------------------------------ completing

    def completion_cost(self, state: RecognizerState) -> int:
        """The cost of :meth:`completion` without building it (``INFINITE``: none)."""
        if not state.viable:
            return INFINITE
        if state.partial[1] == 0:
            return min((s[1] if s is not None else 0) for s in state.stacks)
        comp = self.completion(state)
        return comp.cost if comp is not None else INFINITE

    def completion(self, state: RecognizerState) -> Completion | None:
        """The cheapest completion of ``state`` (None: the text so far is no viable prefix, or it
        can only be completed through a negated or unknown token terminal)."""
        if not state.viable:
            return None
        remain = state.partial[1]
        best: _Stack = None
        best_cost = INFINITE
        best_cp = -1
        if remain == 0:
            # ties go to the alternative written first (the lowest position): the same text every run
            best_key = (INFINITE, 0)
            for s in state.stacks:
                key = (s[1], s[0]) if s is not None else (0, -1)
                if key < best_key:
                    best, best_key = s, key
            best_cost = best_key[0]
            if best_cost >= INFINITE:
                return None
            if best is None:
                return Completion(b"", (), 0)
            return Completion(b"", self._stack_segments(best, -1), best_cost)
        best_pos = 0
        lo, hi = partial_range(state.partial)
        for s in state.stacks:
            if s is None:
                continue
            pos = s[0]
            cp = self._first_char(pos, lo, hi)
            if cp is None:
                continue
            c = s[1] - self._unit[pos] + remain
            if (c, pos) < (best_cost, best_pos):
                best, best_cost, best_cp, best_pos = s, c, cp, pos
        if best is None or best_cost >= INFINITE:
            return None
        tail = bytes(0x80 | ((best_cp >> (6 * i)) & 0x3F) for i in range(remain - 1, -1, -1))
        return Completion(tail, self._stack_segments(best, best_cp), best_cost)

    def _stack_segments(self, stack: _Node, top_char: int) -> tuple[str | int, ...]:
        """The cheapest text of every frame of ``stack``; the top terminal itself is left out when
        ``top_char`` >= 0 (it is the character being finished)."""
        parts: list[str | int] = []
        pos, _, parent = stack
        if top_char < 0:
            parts.append(chr(self._pick[pos]) if self._kind[pos] != _KIND_TOKEN else self._pick[pos])
        after = self._next[pos]
        if after >= 0:
            parts.extend(self._positions_segments(after, self._alt_end(after)))
        node = parent
        while node is not None:
            p = node[0]
            parts.extend(self._positions_segments(p, self._alt_end(p)))
            node = node[2]
        return merge_segments(parts)


@functools.lru_cache(maxsize=32)
def _cached(text: str, root: str) -> GrammarRecognizer:
    return GrammarRecognizer(text, root)


def recognizer_for(text: str, root: str = "root") -> GrammarRecognizer:
    """A recognizer for GBNF ``text`` (the last 32 are cached; no token terminals resolved)."""
    return _cached(text, root)
