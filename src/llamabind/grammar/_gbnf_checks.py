"""Whole-grammar checks run after parsing: nullable rules, left recursion and the size and
expansion limits that keep llama.cpp's grammar code fast and within its stack."""

from __future__ import annotations

import re

from llamabind.errors import GrammarError
from llamabind.grammar._gbnf_types import CharClass, Element, Rule, RuleRef
from llamabind.grammar._gbnf_types import grammar_error as _error

__all__ = [
    "FORBIDDEN_CHAR",
    "MAX_EXPANSION_PATHS",
    "MAX_LEFT_DEPTH",
    "MAX_LEFT_RECURSION_WORK",
    "MAX_NESTING",
    "MAX_REPETITION",
    "MAX_RULES",
    "MAX_SYMBOLS",
    "check_grammar",
    "nullable_rules",
]

#: Characters no grammar may hold: NUL (it ends the C string llama.cpp parses) and lone
#: surrogates (they have no UTF-8 form).
FORBIDDEN_CHAR = re.compile("[\x00\ud800-\udfff]")
#: llama.cpp's MAX_REPETITION_THRESHOLD: a lower bound of a repetition above this is an error,
#: an upper bound above it is silently treated as unbounded, and a repetition whose expansion
#: would create more than this many copies of nested rules is an error.
MAX_REPETITION = 2000
#: Most rules in a grammar, generated ones (groups, repetitions) included.
MAX_RULES = 50_000
#: Most elements over all rules (terminals, rule references, character ranges), after expansion.
MAX_SYMBOLS = 500_000
#: Deepest nesting of parentheses (llama.cpp's parser recurses once per level).
MAX_NESTING = 100
#: Longest chain of leftmost rule references (``r0 ::= r1``, ``r1 ::= r2``, ...): llama.cpp's
#: left-recursion check recurses once per link, and a chain of ~80 000 overflows an 8 MiB stack.
MAX_LEFT_DEPTH = 1_000
#: Most calls llama.cpp's left-recursion check may make. It does not remember rules it has
#: already checked, so each leftmost path is walked separately: ``a0 ::= a1 | a1``,
#: ``a1 ::= a2 | a2``, ... n levels deep is 2**n calls (2**20 take ~15 ms, 2**40 hours).
MAX_LEFT_RECURSION_WORK = 1 << 20
#: Most parse stacks one rule reference may expand into. llama.cpp keeps one stack per way the
#: text so far can continue and deduplicates them pairwise, so expanding a reference costs the
#: square of this number (4 096 stacks: ~50 ms, 16 384 about a second, doubling per level of
#: ``a0 ::= a1 "y" | a1 "z"``); and every sampled token pays for each live stack.
MAX_EXPANSION_PATHS = 4_096


def check_grammar(text: str, rules: tuple[Rule, ...]) -> None:
    """All whole-grammar checks: size, left recursion, then the expansion limits above."""
    _check_size(text, rules)
    nullable = nullable_rules(rules)
    _check_left_recursion(text, rules, nullable)
    _check_left_recursion_work(text, rules)
    _check_expansion_paths(text, rules, nullable)


def _check_size(text: str, rules: tuple[Rule, ...]) -> None:
    if len(rules) > MAX_RULES:
        raise _error(
            text,
            f"grammar has {len(rules)} rules (generated ones included), more than the limit of {MAX_RULES}",
            rules[MAX_RULES].position,
            rules[MAX_RULES].origin,
        )
    total = 0
    for rule in rules:
        for alt in rule.alternatives:
            total += 1 + sum(len(e.ranges) if isinstance(e, CharClass) else 1 for e in alt)
        if total > MAX_SYMBOLS:
            raise _error(
                text,
                f"grammar has more than {MAX_SYMBOLS} symbols (after expanding repetitions)",
                rule.position,
                rule.origin,
            )


def nullable_rules(rules: tuple[Rule, ...]) -> set[int]:
    """Indices of the rules that derive the empty string (a linear-time worklist algorithm)."""
    nullable: set[int] = set()
    pending: list[list[int]] = []  # per rule, per alternative: rule references not yet known nullable
    users: dict[int, list[tuple[int, int]]] = {}  # rule -> (rule, alternative) that reference it
    work: list[int] = []
    for index, rule in enumerate(rules):
        counts: list[int] = []
        for a, alt in enumerate(rule.alternatives):
            if all(isinstance(e, RuleRef) for e in alt):
                counts.append(len(alt))
                for e in alt:
                    assert isinstance(e, RuleRef)
                    users.setdefault(e.index, []).append((index, a))
                if not alt and index not in nullable:
                    nullable.add(index)
                    work.append(index)
            else:
                counts.append(-1)  # contains a terminal: never empty
        pending.append(counts)
    while work:
        done = work.pop()
        for index, a in users.get(done, ()):
            pending[index][a] -= 1
            if pending[index][a] == 0 and index not in nullable:
                nullable.add(index)
                work.append(index)
    return nullable


def _leading_refs(rules: tuple[Rule, ...], see_through: set[int]) -> list[list[tuple[int, int]]]:
    """Per rule, the (rule index, position) of each reference in a leftmost position: first in an
    alternative, or preceded only by references to rules in `see_through`."""
    edges: list[list[tuple[int, int]]] = []
    for rule in rules:
        out: list[tuple[int, int]] = []
        for alt in rule.alternatives:
            for elem in alt:
                if not isinstance(elem, RuleRef):
                    break
                out.append((elem.index, elem.position))
                if elem.index not in see_through:
                    break
        edges.append(out)
    return edges


def _check_left_recursion(text: str, rules: tuple[Rule, ...], nullable: set[int]) -> None:
    """Reject any rule that can reach itself without consuming input (through nullable prefixes too)."""
    edges = _leading_refs(rules, nullable)

    white, grey, black = 0, 1, 2
    color = [white] * len(rules)
    for start in range(len(rules)):
        if color[start] != white:
            continue
        color[start] = grey
        stack: list[tuple[int, int]] = [(start, 0)]  # (rule, next edge index)
        path_pos: list[int] = []  # ref position of the edge taken from stack[i]
        while stack:
            node, i = stack[-1]
            if i < len(edges[node]):
                stack[-1] = (node, i + 1)
                target, ref_pos = edges[node][i]
                if color[target] == grey:
                    nodes = [s[0] for s in stack]
                    k = nodes.index(target)
                    cycle = nodes[k:]
                    positions = [*path_pos[k:], ref_pos]
                    _raise_left_recursion(text, rules, cycle, positions)
                if color[target] == white:
                    color[target] = grey
                    path_pos.append(ref_pos)
                    stack.append((target, 0))
            else:
                color[node] = black
                stack.pop()
                if path_pos:
                    path_pos.pop()


def _raise_left_recursion(text: str, rules: tuple[Rule, ...], cycle: list[int], positions: list[int]) -> None:
    # Blame a rule written in the grammar, preferring the earliest one in the text.
    written = [i for i, r in enumerate(cycle) if rules[r].name == rules[r].origin]
    candidates = written or list(range(len(cycle)))
    k = min(candidates, key=lambda i: rules[cycle[i]].position)
    cycle = cycle[k:] + cycle[:k]
    positions = positions[k:] + positions[:k]
    names: list[str] = []
    for r in cycle:
        if not names or names[-1] != rules[r].origin:
            names.append(rules[r].origin)
    names.append(rules[cycle[0]].origin)
    blamed = rules[cycle[0]].origin
    raise _error(
        text,
        f"left recursion: rule '{blamed}' can reach itself without consuming input "
        f"({' -> '.join(names)}); llama.cpp rejects left-recursive grammars",
        positions[0],
        blamed,
    )


def _postorder(edges: list[list[tuple[int, int]]]) -> list[int]:
    """Every rule, each after all the rules its edges lead to (the edges form no cycle)."""
    done = [False] * len(edges)
    order: list[int] = []
    for start in range(len(edges)):
        if done[start]:
            continue
        done[start] = True
        stack: list[tuple[int, int]] = [(start, 0)]
        while stack:
            node, i = stack[-1]
            if i < len(edges[node]):
                stack[-1] = (node, i + 1)
                target = edges[node][i][0]
                if not done[target]:
                    done[target] = True
                    stack.append((target, 0))
            else:
                order.append(node)
                stack.pop()
    return order


def _check_left_recursion_work(text: str, rules: tuple[Rule, ...]) -> None:
    """Bound the recursion depth and the number of calls of llama.cpp's left-recursion check.

    That check enters a rule, then each reference in a leftmost position (past references to
    rules with an empty alternative), without remembering rules already cleared; it starts
    afresh from every rule no earlier start has entered.
    """
    may_be_empty = {i for i, rule in enumerate(rules) if any(not alt for alt in rule.alternatives)}
    edges = _leading_refs(rules, may_be_empty)
    cap = MAX_LEFT_RECURSION_WORK + 1
    calls = [0] * len(rules)
    depth = [0] * len(rules)
    first_over: int | None = None  # the first rule whose own check exceeds the limit
    for node in _postorder(edges):
        calls[node] = min(cap, 1 + sum(calls[t] for t, _ in edges[node]))
        if first_over is None and calls[node] == cap:
            first_over = node
        depth[node] = 1 + max((depth[t] for t, _ in edges[node]), default=0)
        if depth[node] > MAX_LEFT_DEPTH:
            rule = rules[node]
            raise _error(
                text,
                f"a chain of more than {MAX_LEFT_DEPTH} rule references in leftmost position starts "
                f"here (llama.cpp checks it recursively and would overflow its stack); "
                f"shorten the chain",
                rule.position,
                rule.origin,
            )
    entered = [False] * len(rules)
    total = 0
    for start in range(len(rules)):
        if entered[start]:
            continue
        total += calls[start]
        if total > MAX_LEFT_RECURSION_WORK:
            worst = first_over if first_over is not None else max(range(len(rules)), key=calls.__getitem__)
            rule = rules[worst]
            raise _error(
                text,
                f"rule '{rule.origin}' has more than {MAX_LEFT_RECURSION_WORK} leftmost derivation "
                f"paths (llama.cpp's left-recursion check walks each one and would take exponential "
                f"time); avoid alternatives that repeat the same rule reference, e.g. 'a ::= b | b'",
                rule.position,
                rule.origin,
            )
        entered[start] = True
        todo = [start]
        while todo:
            for target, _ in edges[todo.pop()]:
                if not entered[target]:
                    entered[target] = True
                    todo.append(target)


def _check_expansion_paths(text: str, rules: tuple[Rule, ...], nullable: set[int]) -> None:
    """Bound the parse stacks that expanding any one element can produce.

    Expanding a reference to rule t yields one stack per leftmost path through t's
    alternatives down to a terminal, plus, when t can be empty, the stacks of what follows the
    reference. ``paths[t]`` counts those of t alone; the suffix sums below count them for every
    position of every alternative, which is where a stack can stand after consuming input.
    """
    cap = MAX_EXPANSION_PATHS + 1
    paths = [0] * len(rules)

    def suffix_paths(alt: tuple[Element, ...]) -> list[int]:
        out = [0] * (len(alt) + 1)
        for k in range(len(alt) - 1, -1, -1):
            elem = alt[k]
            if isinstance(elem, RuleRef):
                follow = out[k + 1] if elem.index in nullable else 0
                out[k] = min(cap, paths[elem.index] + follow)
            else:
                out[k] = 1
        return out

    def fail(rule: Rule, position: int) -> GrammarError:
        return _error(
            text,
            f"a rule reference here can expand into more than {MAX_EXPANSION_PATHS} parse paths at "
            f"once (llama.cpp tracks each one and would slow to a crawl); factor out the prefixes "
            f'that alternatives share, e.g. \'a ::= b "y" | b "z"\' as \'a ::= b ("y" | "z")\'',
            position,
            rule.origin,
        )

    for node in _postorder(_leading_refs(rules, nullable)):
        rule = rules[node]
        total = 0
        tails: set[int] = set()
        for alt in rule.alternatives:
            if len(alt) == 1 and isinstance(alt[0], RuleRef):
                # nothing is pushed after a lone reference, so two such alternatives naming the
                # same rule yield the same stacks, which llama.cpp merges
                if alt[0].index in tails:
                    continue
                tails.add(alt[0].index)
            total += suffix_paths(alt)[0]
        paths[node] = min(cap, total)
        if paths[node] > MAX_EXPANSION_PATHS:
            raise fail(rule, rule.position)
    for rule in rules:
        for alt in rule.alternatives:
            for k, count in enumerate(suffix_paths(alt)[:-1]):
                if count > MAX_EXPANSION_PATHS:
                    elem = alt[k]
                    raise fail(rule, elem.position if isinstance(elem, RuleRef) else rule.position)
