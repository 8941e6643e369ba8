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

Forms this module does not take (spaces inside ``{m,n}``, an operator right after another, a
repetition of the empty string, ...) answer False; so do all errors.
"""

from __future__ import annotations

import re

from llamabind.grammar._gbnf_checks import (
    MAX_EXPANSION_PATHS,
    MAX_LEFT_DEPTH,
    MAX_LEFT_RECURSION_WORK,
    MAX_NESTING,
    MAX_REPETITION,
    MAX_RULES,
    MAX_SYMBOLS,
)

__all__ = ["fast_accepts"]

_HEX_ESCAPE = r"x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U(?:0010[0-9a-fA-F]{4}|000[0-9a-fA-F]{5})"
_CHAR = r'(?:[^"\\]|\\(?:[trn\\"\[\]-]|' + _HEX_ESCAPE + "))"
_CLASS_CHAR = r"(?:[^\]\\]|\\(?:[trn\\\"\[\]-]|" + _HEX_ESCAPE + "))"
# Optional spaces and a comment, then one token, or any one character (a token that is not
# well formed here: the caller answers False). The text always ends with a newline.
_TOKEN = re.compile(
    r"[ \t]*(?:#[^\r\n]*)?("
    r"[a-zA-Z0-9-]+"
    r'|"' + _CHAR + r'*"'
    r"|\[\^?" + _CLASS_CHAR + r"+\]"
    r"|!?<\[[0-9]+\]>"
    r"|!?<(?!\[)[^>]*>"
    r"|::="
    r"|\{[0-9]+(?:,[0-9]*)?\}"
    r"|[\s\S])"
)
_ESCAPE = re.compile(r"\\(?:x..|u....|U........|.)")
_CLASS_ITEM = re.compile(
    r"(\\x..|\\u....|\\U........|\\.|[^\\])(?:-(\\x..|\\u....|\\U........|\\.|[^\\]))?", re.S
)
_NAME = re.compile(r"[a-zA-Z0-9-]+")
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_SIMPLE = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}

# An element: (code, count): `count` copies of a reference to node `code` when code >= 0, else
# of a terminal with -code character ranges (1 for a literal's character, ``.`` and tokens).
_Item = tuple[int, int]
# A repetition chain: (its repeated item's code, count, rules generated, unbounded)
_Chain = tuple[int, int, int, bool]


def _code_point(escape: str) -> int:
    if len(escape) == 1:
        return ord(escape)
    if escape[1] in "xuU":
        return int(escape[2:], 16)
    return _SIMPLE[escape[1]]


def _escape_overhead(body: str) -> int:
    """Characters of a well-formed literal's escapes beyond one per escape."""
    if "\\\\" in body or "\\x" in body or "\\u" in body or "\\U" in body:
        return sum(len(e) - 1 for e in _ESCAPE.findall(body))
    return body.count("\\")  # only two-character escapes


def _class_width(token: str) -> int:
    """Ranges of a well-formed ``[...]`` token, or 0 if one is reversed (llama.cpp: an error)."""
    body = token[2:-1] if token[1] == "^" else token[1:-1]
    if "\\" not in body:  # a range is 'lo-hi' with both in the class, as llama.cpp reads it
        width = i = 0
        end = len(body)
        while i < end:
            if i + 2 < end and body[i + 1] == "-":
                if body[i + 2] < body[i]:
                    return 0
                i += 3
            else:
                i += 1
            width += 1
        return width
    width = 0
    for lo, hi in _CLASS_ITEM.findall(body):
        if hi and _code_point(hi) < _code_point(lo):
            return 0
        width += 1
    return width


class _Scan:
    """The grammar as nodes: rules and groups (alternatives of items) and repetition chains."""

    __slots__ = ("alts", "chains", "index", "size", "symbols")

    def __init__(self) -> None:
        self.alts: list[list[list[_Item]] | None] = []  # None: a name not defined (yet)
        self.chains: dict[int, _Chain] = {}
        self.index: dict[str, int] = {}
        self.symbols = 0  # rules as llama.cpp counts them (a chain counts its generated rules)
        self.size = 0  # symbols as `_gbnf_checks` counts them: 1 per alternative and element


def _scan(text: str) -> _Scan | None:
    """Parse as llama.cpp does; None for anything not taken here (errors included)."""
    g = _Scan()
    alts, chains, index = g.alts, g.chains, g.index
    symbols = 0
    size = 0
    expanded = 0  # elements repetitions copied (llama.cpp's parser limit)
    state = 0  # 0: between rules, 1: after a rule's name, 2: in a rule's body
    skip_newline = False  # after '::=', '|' or '(' a newline is a space
    depth = 0
    stack: list[tuple[list[list[_Item]], list[_Item], int, int]] = []  # the enclosing body
    cur_alts: list[list[_Item]] = []
    seq: list[_Item] = []
    last = 0  # what a repetition operator would repeat: 0 nothing, 1 an item, 2 a group
    group_rules = 1  # symbols the last group created (llama.cpp's repetition limit counts them)
    for tok in _TOKEN.findall(text + "\n"):
        c = tok[0]
        if state == 2:
            if c in _NAME_START:
                node = index.get(tok)
                if node is None:
                    node = index[tok] = len(alts)
                    alts.append(None)
                    symbols += 1
                seq.append((node, 1))
                size += 1
                last = 1
            elif c == '"':
                if len(tok) < 2:
                    return None
                body = tok[1:-1]
                n = len(body)
                if "\\" in body:
                    n -= _escape_overhead(body)
                if n:
                    seq.append((-1, n))
                    size += n
                    last = 1
                else:
                    last = 0
            elif c == "\n" or c == "\r":
                if depth or skip_newline:
                    continue
                state = 0
                continue
            elif c == "(":
                if depth >= MAX_NESTING:
                    return None
                depth += 1
                stack.append((cur_alts, seq, symbols, len(alts)))
                seq = []
                cur_alts = [seq]
                alts.append(cur_alts)
                symbols += 1
                size += 1
                skip_newline = True
                last = 0
                continue
            elif c == ")":
                if not depth:
                    return None
                depth -= 1
                cur_alts, seq, before, node = stack.pop()
                group_rules = max(1, symbols - before)
                seq.append((node, 1))
                size += 1
                last = 2
            elif c == "|":
                seq = []
                cur_alts.append(seq)
                size += 1
                skip_newline = True
                last = 0
                continue
            elif c in "*+?{":
                if not last:
                    return None
                if c == "*":
                    lo, hi = 0, None
                elif c == "+":
                    lo, hi = 1, None
                elif c == "?":
                    lo, hi = 0, 1
                elif len(tok) > 1 and len(tok) < 16:
                    a, comma, b = tok[1:-1].partition(",")
                    lo = int(a)
                    hi = (int(b) if b else None) if comma else lo
                else:
                    return None
                if lo > MAX_REPETITION:
                    return None
                if hi is not None and hi > MAX_REPETITION:
                    hi = None
                if hi is not None and hi < lo:
                    return None
                total = hi if hi else lo if lo else 1
                if (group_rules if last == 2 else 1) * total > MAX_REPETITION:
                    return None
                code, count = seq[-1]
                n_opt = 1 if hi is None else hi - lo
                expanded += count * (max(lo, 1) + n_opt)
                if expanded > MAX_SYMBOLS:
                    return None
                width = count if code >= 0 else -code * count
                if lo == 0:
                    seq.pop()
                    size -= width
                elif lo > 1:
                    seq[-1] = (code, count * lo)
                    size += width * (lo - 1)
                if n_opt:
                    node = len(alts)
                    alts.append([])
                    chains[node] = (code, count, n_opt, hi is None)
                    symbols += n_opt
                    seq.append((node, 1))
                    # g1 ::= P | "" ; gi ::= P g(i-1) | ""  (unbounded: g1 ::= P g1 | ""), and the
                    # reference to the last one
                    size += n_opt * (2 + width) + (n_opt if hi is None else n_opt - 1) + 1
                last = 0
            elif c == "[":
                if len(tok) < 3:
                    return None
                width = _class_width(tok)
                if not width:
                    return None
                seq.append((-width, 1))
                size += width
                last = 1
            elif c == "<" or c == "!":
                if len(tok) < 2:
                    return None
                start = 2 if c == "<" else 3
                if tok[start - 1] == "[" and tok[-2] == "]":  # <[id]>
                    digits = tok[start:-2]
                    if len(digits) > 10 or int(digits) > 0xFFFFFFFF:
                        return None
                seq.append((-1, 1))
                size += 1
                last = 1
            elif c == ".":
                seq.append((-1, 1))
                size += 1
                last = 1
            else:
                return None
            skip_newline = False
        elif c == "\n" or c == "\r":
            continue
        elif state == 0:
            if c not in _NAME_START:
                return None
            node = index.get(tok)
            if node is None:
                node = index[tok] = len(alts)
                alts.append(None)
                symbols += 1
            elif alts[node] is not None:
                return None  # defined twice
            alts[node] = cur_alts = [seq := []]
            size += 1
            state = 1
        elif tok == "::=":
            state = 2
            skip_newline = True
            last = 0
        else:
            return None
    if state == 1 or depth:
        return None
    g.symbols = symbols
    g.size = size
    return g


def fast_accepts(text: str, root: str = "root") -> bool:
    """True only if `parse_gbnf(text, root)` accepts `text` (False: not decided here)."""
    if type(text) is not str or type(root) is not str or not _NAME.fullmatch(root):
        return False
    if _FORBIDDEN.search(text):
        return False
    g = _scan(text)
    return g is not None and _check(g, root)


def _check(g: _Scan, root: str) -> bool:
    """`_gbnf_checks.check_grammar`'s limits on the scanned nodes (see the module doc)."""
    alts = g.alts
    if g.symbols > MAX_RULES or g.size > MAX_SYMBOLS:
        return False
    node = g.index.get(root)
    if node is None or alts[node] is None or None in alts:
        return False  # no root, or a rule referenced but never defined
    rules: list[list[list[_Item]]] = alts  # type: ignore[assignment]  # no None left
    n = len(rules)
    chain_of: list[_Chain | None] = [None] * n
    for node, info in g.chains.items():
        chain_of[node] = info

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
                    return False  # a chain of an item that can be empty: not taken here
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
        return False

    # In leftmost order: llama.cpp's left-recursion check (calls and depth, past rules with an
    # empty alternative, a subset of the nullable ones) and parse paths per rule.
    cap = MAX_LEFT_RECURSION_WORK + 1
    path_cap = MAX_EXPANSION_PATHS + 1
    calls = [0] * n
    depth = [0] * n
    paths = [0] * n
    total_calls = 0
    for node in order:
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
            return False
    if total_calls > MAX_LEFT_RECURSION_WORK:
        return False  # never below llama.cpp's count, which skips rules already entered

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
                        return False
                    run = 0
            if run > limit:
                return False
    return True


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
