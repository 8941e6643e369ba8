"""A fast acceptance check for GBNF, with the same verdict as `parse_gbnf` where it answers.

`fast_accepts(text, root)` is True only when `parse_gbnf(text, root)` would accept the grammar
(every rule of llama.cpp's parser and every limit of `_gbnf_checks`); False means "not shown
here": `validate_gbnf` then runs the full parser, which decides and, for a refused grammar,
names the error and its position. So a False is always safe, and this module only has to be
right about its Trues.

It is faster than the full parser in three ways: one regular-expression pass splits the text
into tokens (spaces and comments fall out of it), elements are pairs of ints instead of objects,
and a repetition ``x{m,n}`` is one node standing for the n - m rules llama.cpp generates for
it instead of n - m rules (``uri-char{0,999}``: one node, not 999). Why that node is exact:
llama.cpp's rules for ``P{m,n}`` are ``g1 ::= P | ""`` and ``gi ::= P g(i-1) | ""``
(``g1 ::= P g1 | ""`` when unbounded). This module takes such a chain only when P is a terminal
or a reference to a rule that cannot match the empty string (otherwise it answers False). Then
in every gi the leftmost scan that all the checks make stops inside P: no gi has g(i-1) in a
leftmost position, so every gi has the same leftmost references (those of P), the same
left-recursion calls and depth, and the same number of parse paths (those of P; the empty
alternative adds none). One node with those values and a multiplicity of n - m gives the same
rule and symbol counts, the same cycles (a cycle through some gi passes through P's references
and the rule holding the repetition, as one through the node does) and the same verdict for
every limit. The left-recursion work of llama.cpp depends on rule order; it is bounded here
from above by the sum over all rules, which is never smaller.

Known rules: a library that emits the same rules in many grammars (the JSON Schema converter's
primitives) registers them once (`register_known_rules`, one complete rule per line, a set
that references nothing outside itself). The first check analyses each set once, as a grammar;
later, a line of a grammar equal to a registered one is neither read nor analysed again: it
counts with its registered sizes, and its rule with its registered values (can it be empty,
left-recursion calls and depth, parse paths), which depend only on the rules it reaches. So they
are used only when every rule the registered lines of a grammar reference is defined by
registered lines of one set; otherwise the grammar is read in full.

Forms this module does not take (spaces inside ``{m,n}``, an operator right after another, a
repetition of the empty string, ...) answer False; so do all errors.
"""

from __future__ import annotations

import re
import threading

from llamabind.grammar._gbnf_checks import (
    FORBIDDEN_CHAR,
    MAX_EXPANSION_PATHS,
    MAX_LEFT_DEPTH,
    MAX_LEFT_RECURSION_WORK,
    MAX_RULES,
    MAX_SYMBOLS,
)
from llamabind.grammar._gbnf_scan import NOT_TOKEN, Chain, Item, KnownLine, Scan, scan

__all__ = ["fast_accepts", "register_known_rules"]

_NAME = re.compile(r"[a-zA-Z0-9-]+")

# A known rule's values: (nullable, has an empty alternative, left-recursion calls, depth, parse
# paths, the left-recursion calls of all the rules its line makes)
_Facts = tuple[bool, bool, int, int, int, int]
# Per node, what the analysis found (see `_analyse`): nullable, may be empty, calls, depth, paths
_Analysis = tuple[list[bool], list[bool], list[int], list[int], list[int]]

_lock = threading.Lock()
_pending: list[str] = []  # registered, not analysed yet
_known_lines: dict[str, KnownLine] = {}
_known_sets: list[tuple[frozenset[str], dict[str, _Facts]]] = []


def register_known_rules(text: str) -> None:
    """Register the rules of `text`, one complete rule per line, none referencing a rule outside
    `text`; they are analysed at the first check (see the module doc)."""
    with _lock:
        _pending.append(text)


def fast_accepts(text: str, root: str = "root") -> bool:
    """True only if `parse_gbnf(text, root)` accepts `text` (False: not decided here)."""
    if type(text) is not str or type(root) is not str or not _NAME.fullmatch(root):
        return False
    if FORBIDDEN_CHAR.search(text):
        return False
    if _pending:
        _load_known()
    g = scan(text, _known_lines)
    if g is None:
        return False
    facts: dict[int, _Facts] = {}
    if g.known:
        found = _known_facts(g)
        if found is None:  # not one registered set: read every line
            g = scan(text)
            if g is None:
                return False
        else:
            facts = found
    return _check(g, root, facts)


def _known_facts(g: Scan) -> dict[int, _Facts] | None:
    """The registered values of the known rules of `g`, if they all come from one set and every
    rule they reference is one of them."""
    used = {line for _, line in g.known}
    facts = next((f for lines, f in _known_sets if used <= lines), None)
    if facts is None:
        return None
    out = {node: facts[line] for node, line in g.known}
    index = g.index
    for line in used:
        for ref in _known_lines[line][3]:
            if index[ref] not in out:
                return None
    return out


def _load_known() -> None:
    with _lock:
        for text in _pending:
            try:
                _register(text)
            except ValueError:  # not registrable: its grammars are read in full (slower, as sound)
                pass
        _pending.clear()


def _register(text: str) -> None:
    lines = text.splitlines()
    g = scan(text)
    if g is None or None in g.alts or len(g.starts) != len(lines):
        raise ValueError("known rules: a grammar of one complete rule per line")
    found = _analyse(g, {})
    if found is None:
        raise ValueError("known rules: a grammar the fast check accepts")
    nullable, may_be_empty, calls, depth, paths = found
    named = set(g.index.values())
    ends = [first for _, first in g.starts[1:]] + [len(g.alts)]
    facts: dict[str, _Facts] = {}
    entries: dict[str, KnownLine] = {}
    for line, (rule, first), end in zip(lines, g.starts, ends, strict=True):
        own = calls[rule] + sum(  # the rule and the groups and repetitions of its body
            calls[node] * (g.chains[node][2] if node in g.chains else 1)
            for node in range(first, end)
            if node not in named
        )
        facts[line] = (nullable[rule], may_be_empty[rule], calls[rule], depth[rule], paths[rule], own)
        alone = scan(line)  # alone, every name it references is new: the worst case for limits
        if alone is None or scan(f'{line}\nknown-rule-probe ::= "a"') is None:
            raise ValueError(f"known rules: not a complete rule on one line: {line!r}")
        name = next(n for n, node in alone.index.items() if node == alone.starts[0][0])
        refs = tuple(n for n in alone.index if n != name)
        generated = alone.symbols - len(alone.index)
        entries[line] = (NOT_TOKEN, line, name, refs, alone.size, generated, alone.expanded)
    _known_lines.update(entries)
    _known_sets.append((frozenset(facts), facts))


def _check(g: Scan, root: str, facts: dict[int, _Facts]) -> bool:
    """`_gbnf_checks.check_grammar`'s limits on the scanned nodes (see the module doc)."""
    if g.symbols > MAX_RULES or g.size > MAX_SYMBOLS:
        return False
    node = g.index.get(root)
    if node is None or g.alts[node] is None or None in g.alts:
        return False  # no root, or a rule referenced but never defined
    return _analyse(g, facts) is not None


def _analyse(g: Scan, facts: dict[int, _Facts]) -> _Analysis | None:
    """Each node's values for the limits, or None when one is exceeded or a chain is not taken.
    Every name must be defined; `facts`: the values of the known rules."""
    rules: list[list[list[Item]]] = g.alts  # type: ignore[assignment]  # no None left
    n = len(rules)
    chain_of: list[Chain | None] = [None] * n
    for node, info in g.chains.items():
        chain_of[node] = info
    fact_of: list[_Facts | None] = [None] * n
    for node, info_ in facts.items():
        fact_of[node] = info_

    # nullable rules: a worklist over the alternatives made of references only
    nullable = [False] * n
    may_be_empty = [False] * n  # a literally empty alternative (llama.cpp's own notion)
    work: list[int] = []
    left: list[int] = []  # per pending alternative: references not yet known nullable
    owner: list[int] = []
    users: dict[int, list[int]] = {}
    for node in range(n):
        if chain_of[node] is not None:
            nullable[node] = may_be_empty[node] = True
            work.append(node)
            continue
        known = fact_of[node]
        if known is not None:
            nullable[node], may_be_empty[node] = known[0], known[1]
            if known[0]:
                work.append(node)
            continue
        for alt in rules[node]:
            if not alt:
                may_be_empty[node] = True
                if not nullable[node]:
                    nullable[node] = True
                    work.append(node)
            elif min(alt)[0] >= 0:
                k = len(left)
                left.append(len(alt))
                owner.append(node)
                for code, _ in alt:
                    users.setdefault(code, []).append(k)
    while work:
        for k in users.get(work.pop(), ()):
            left[k] -= 1
            if not left[k] and not nullable[owner[k]]:
                nullable[owner[k]] = True
                work.append(owner[k])

    # leftmost references past nullable ones; a cycle among them is left recursion
    lead: list[list[int]] = []
    for node in range(n):
        out: list[int] = []
        chain = chain_of[node]
        if chain is not None:
            if chain[0] >= 0:
                if nullable[chain[0]]:
                    return None  # a chain of an item that can be empty: not taken here
                out.append(chain[0])
        else:
            for alt in rules[node]:
                for code, _ in alt:
                    if code < 0:
                        break
                    out.append(code)
                    if not nullable[code]:
                        break
        lead.append(out)
    order = _postorder(lead)
    if order is None:
        return None

    # In leftmost order: llama.cpp's left-recursion check (calls and depth, past rules with an
    # empty alternative, a subset of the nullable ones) and parse paths per rule.
    cap = MAX_LEFT_RECURSION_WORK + 1
    path_cap = MAX_EXPANSION_PATHS + 1
    calls = [0] * n
    depth = [0] * n
    paths = [0] * n
    total_calls = 0
    for node in order:
        known = fact_of[node]
        if known is not None:
            calls[node], depth[node], paths[node] = known[2], known[3], known[4]
            total_calls += known[5]
            continue
        chain = chain_of[node]
        if chain is not None:
            code = chain[0]
            if code >= 0:  # not nullable, so not see-through
                calls[node] = min(cap, 1 + calls[code])
                depth[node] = 1 + depth[code]
                paths[node] = paths[code]
            else:
                calls[node] = depth[node] = paths[node] = 1
            total_calls += calls[node] * chain[2]
        else:
            s = d = p = 0
            tails: set[int] | None = None
            for alt in rules[node]:
                if len(alt) == 1 and alt[0][0] >= 0 and alt[0][1] == 1:
                    # nothing is pushed after a lone reference, so two naming the same rule
                    # give the same stacks (llama.cpp merges them)
                    code = alt[0][0]
                    if tails is None:
                        tails = {code}
                    elif code in tails:
                        s += calls[code]
                        d = max(d, depth[code])
                        continue
                    else:
                        tails.add(code)
                see_through = True
                for code, count in alt:
                    if code < 0:
                        p += 1
                        break
                    if see_through:
                        d = max(d, depth[code])
                        if may_be_empty[code]:
                            s += count * calls[code]
                        else:
                            s += calls[code]
                            see_through = False
                    if nullable[code]:
                        p += count * paths[code]
                    else:
                        p += paths[code]
                        break
            calls[node] = min(cap, 1 + s)
            depth[node] = 1 + d
            paths[node] = min(path_cap, p)
            total_calls += calls[node]
        if depth[node] > MAX_LEFT_DEPTH or paths[node] > MAX_EXPANSION_PATHS:
            return None
    if total_calls > MAX_LEFT_RECURSION_WORK:
        return None  # never below llama.cpp's count, which skips rules already entered

    # parse paths at every position: a stretch of nullable references and what follows it
    # (a chain's positions hold its item, a terminal or a rule checked above, and the chain)
    limit = MAX_EXPANSION_PATHS
    for node in range(n):
        if chain_of[node] is not None:
            continue
        for alt in rules[node]:
            run = 0
            for code, count in alt:
                if code >= 0 and nullable[code]:
                    run += count * paths[code]
                elif run:
                    if run + (1 if code < 0 else paths[code]) > limit:
                        return None
                    run = 0
            if run > limit:
                return None
    return nullable, may_be_empty, calls, depth, paths


def _postorder(edges: list[list[int]]) -> list[int] | None:
    """Every node after the nodes its edges lead to; None if the edges form a cycle."""
    state = [0] * len(edges)  # 0 new, 1 on the path, 2 done
    order: list[int] = []
    for start in range(len(edges)):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, 0)]
        while stack:
            node, i = stack[-1]
            out = edges[node]
            if i < len(out):
                stack[-1] = (node, i + 1)
                target = out[i]
                if state[target] == 1:
                    return None
                if not state[target]:
                    state[target] = 1
                    stack.append((target, 0))
            else:
                state[node] = 2
                order.append(node)
                stack.pop()
    return order
