"""Test helpers: decide whether a string is in a GBNF grammar's language, and sample strings from it.

Both work on `llamabind.grammar.parse_gbnf`'s output, i.e. on the rules exactly as llama.cpp
expands them (repetitions and groups as generated rules), so they check the parser too.
"""

from __future__ import annotations

import random
from collections import defaultdict

from llamabind.grammar import ParsedGrammar, parse_gbnf
from llamabind.grammar.gbnf import AnyChar, CharClass, Element, RuleRef

__all__ = ["GbnfMatcher", "matches", "sample"]

_Item = tuple[int, int, int, int]  # (rule, alternative, dot, origin)


class GbnfMatcher:
    """An Earley recognizer (with Aycock-Horspool handling of nullable rules)."""

    def __init__(self, grammar: ParsedGrammar | str, root: str = "root") -> None:
        self.grammar = grammar if isinstance(grammar, ParsedGrammar) else parse_gbnf(grammar, root)
        self.rules = [r.alternatives for r in self.grammar.rules]
        self.nullable = self.grammar.nullable()

    def __call__(self, text: str) -> bool:
        return self.matches(text)

    def matches(self, text: str) -> bool:
        final = self._last_set(text)
        start = self.grammar.root_index
        rules = self.rules
        return final is not None and any(
            r == start and o == 0 and d == len(rules[r][a]) for r, a, d, o in final
        )

    def viable_prefix(self, text: str) -> bool:
        """Whether some continuation of ``text`` is in the language (every rule of the grammars
        tested derives some string, so a non-empty Earley set means a viable prefix)."""
        return self._last_set(text) is not None

    def _last_set(self, text: str) -> set[_Item] | None:
        """The Earley set after ``text`` (None when some set on the way was empty)."""
        rules, nullable = self.rules, self.nullable
        n = len(text)
        start = self.grammar.root_index
        sets: list[set[_Item]] = [set() for _ in range(n + 1)]
        # waiting[i][r]: items in set i whose next symbol is rule r
        waiting: list[defaultdict[int, list[_Item]]] = [defaultdict(list) for _ in range(n + 1)]
        sets[0] = {(start, a, 0, 0) for a in range(len(rules[start]))}
        for i in range(n + 1):
            work = list(sets[i])
            if not work and i > 0:
                return None
            cp = ord(text[i]) if i < n else -1
            while work:
                item = work.pop()
                r, a, d, o = item
                alt = rules[r][a]
                if d == len(alt):
                    for r2, a2, d2, o2 in waiting[o].get(r, ()):
                        new = (r2, a2, d2 + 1, o2)
                        if new not in sets[i]:
                            sets[i].add(new)
                            work.append(new)
                    continue
                elem = alt[d]
                if isinstance(elem, RuleRef):
                    waiting[i][elem.index].append(item)
                    for a2 in range(len(rules[elem.index])):
                        new = (elem.index, a2, 0, i)
                        if new not in sets[i]:
                            sets[i].add(new)
                            work.append(new)
                    if elem.index in nullable:
                        new = (r, a, d + 1, o)
                        if new not in sets[i]:
                            sets[i].add(new)
                            work.append(new)
                elif i < n and isinstance(elem, (CharClass, AnyChar)) and elem.matches(cp):
                    sets[i + 1].add((r, a, d + 1, o))
        return sets[n]


def matches(grammar: ParsedGrammar | str, text: str, root: str = "root") -> bool:
    return GbnfMatcher(grammar, root).matches(text)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

_POOL = [chr(c) for c in range(0x20, 0x7F)] + list("\n\t\r\x01\x1f") + list("éßñ中文😀\u2028")


def _min_costs(rules: list[tuple[tuple[Element, ...], ...]]) -> list[int]:
    inf = 10**9
    cost = [inf] * len(rules)
    changed = True
    while changed:
        changed = False
        for i, alts in enumerate(rules):
            for alt in alts:
                c = 1 + sum(cost[e.index] if isinstance(e, RuleRef) else 1 for e in alt)
                if c < cost[i]:
                    cost[i] = c
                    changed = True
    return cost


def _pick_char(elem: CharClass | AnyChar, rng: random.Random) -> str:
    if isinstance(elem, CharClass) and not elem.negated and rng.random() < 0.5:
        lo, hi = rng.choice(elem.ranges)
        for _ in range(20):
            cp = rng.randint(lo, min(hi, lo + 0x3000))
            if not 0xD800 <= cp <= 0xDFFF:
                return chr(cp)
    candidates = [c for c in _POOL if elem.matches(ord(c))]
    if candidates:
        return rng.choice(candidates)
    assert isinstance(elem, CharClass)
    for lo, hi in elem.ranges if not elem.negated else ((0, 0x10FFFF),):
        for cp in range(lo, min(hi, lo + 0x20000) + 1):
            if not 0xD800 <= cp <= 0xDFFF and elem.matches(cp):
                return chr(cp)
    raise AssertionError(f"no character matches {elem}")


def sample(grammar: ParsedGrammar | str, rng: random.Random, budget: int = 60, root: str = "root") -> str:
    """A random string of the grammar's language; derivations shrink once `budget` symbols are spent."""
    g = grammar if isinstance(grammar, ParsedGrammar) else parse_gbnf(grammar, root)
    rules = [r.alternatives for r in g.rules]
    cost = _min_costs(rules)
    out: list[str] = []
    spent = 0
    stack: list[Element] = [RuleRef(g.root_index)]
    while stack:
        elem = stack.pop()
        spent += 1
        if isinstance(elem, RuleRef):
            alts = rules[elem.index]
            if spent < budget:
                alt = rng.choice(alts)
            else:
                alt = min(alts, key=lambda a: sum(cost[e.index] if isinstance(e, RuleRef) else 1 for e in a))
            stack.extend(reversed(alt))
        elif isinstance(elem, (CharClass, AnyChar)):
            out.append(_pick_char(elem, rng))
        else:
            raise AssertionError("token terminals cannot be sampled as text")
    return "".join(out)
