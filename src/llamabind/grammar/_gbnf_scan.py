"""The tokenizer and scanner of the fast GBNF check (`_gbnf_fast`).

`scan(text)` reads a grammar as llama.cpp's parser does, from one regular-expression pass over
the text (spaces and comments fall out of it), into nodes: rules and parenthesised groups, whose
alternatives are sequences of (code, count) pairs of ints, and repetition chains (see
`_gbnf_fast` for why one node stands for the rules of ``x{m,n}``). It returns None for anything
it does not take, errors included. Lines registered as known (`KnownLine`) are not read again:
the scanner takes their counts as registered and `_gbnf_fast` their analysis.
"""

from __future__ import annotations

import re
from typing import Any

from llamabind.grammar._gbnf_checks import MAX_NESTING, MAX_REPETITION, MAX_SYMBOLS

__all__ = ["NOT_TOKEN", "Chain", "Item", "KnownLine", "Scan", "scan"]

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
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_SIMPLE = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}

# An element: (code, count): `count` copies of a reference to node `code` when code >= 0, else
# of a terminal with -code character ranges (1 for a literal's character, ``.`` and tokens).
Item = tuple[int, int]
# A repetition chain: (its repeated item's code, count, rules generated, unbounded)
Chain = tuple[int, int, int, bool]
# A line registered as known, as it stands in the token list in place of its tokens:
# (NOT_TOKEN, the line, its rule's name, the names it references, its size, the symbols it
#  generates, the elements its repetitions copy); NOT_TOKEN starts no token (NUL is refused).
KnownLine = tuple[str, str, str, tuple[str, ...], int, int, int]
NOT_TOKEN = "\x00"


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


class Scan:
    """The grammar as nodes: rules and groups (alternatives of items) and repetition chains."""

    __slots__ = ("alts", "chains", "expanded", "index", "known", "size", "starts", "symbols")

    def __init__(self) -> None:
        self.alts: list[list[list[Item]] | None] = []  # None: a name not defined (yet)
        self.chains: dict[int, Chain] = {}
        self.index: dict[str, int] = {}
        self.symbols = 0  # rules as llama.cpp counts them (a chain counts its generated rules)
        self.size = 0  # symbols as `_gbnf_checks` counts them: 1 per alternative and element
        self.expanded = 0  # elements repetitions copied (llama.cpp's parser limit)
        self.known: list[tuple[int, str]] = []  # (node, line) of each known line
        self.starts: list[tuple[int, int]] = []  # (rule node, first node made in its body)


def _tokens(text: str, known: dict[str, KnownLine] | None) -> list[Any]:
    """The tokens of `text` and a final newline (str), a known line in place of its tokens."""
    if known:
        lines = text.split("\n")
        out: list[Any] = []
        start = 0
        for i, line in enumerate(lines):
            entry = known.get(line)
            if entry is not None:
                if i > start:
                    out += _TOKEN.findall("\n".join(lines[start:i]) + "\n")
                out.append(entry)
                start = i + 1
        if out:
            if start < len(lines):
                out += _TOKEN.findall("\n".join(lines[start:]) + "\n")
            return out
    return _TOKEN.findall(text + "\n")


def scan(text: str, known: dict[str, KnownLine] | None = None) -> Scan | None:
    """Parse as llama.cpp does; None for anything not taken here (errors included).

    A line of `text` equal to a key of `known` stands for its registered counts when it starts
    where a rule may start (a token that would run across a line's end is not taken here, so a
    line boundary is a token boundary)."""
    g = Scan()
    alts, chains, index = g.alts, g.chains, g.index
    symbols = 0
    size = 0
    expanded = 0  # elements repetitions copied (llama.cpp's parser limit)
    state = 0  # 0: between rules, 1: after a rule's name, 2: in a rule's body
    skip_newline = False  # after '::=', '|' or '(' a newline is a space
    depth = 0
    stack: list[tuple[list[list[Item]], list[Item], int, int]] = []  # the enclosing body
    cur_alts: list[list[Item]] = []
    seq: list[Item] = []
    last = 0  # what a repetition operator would repeat: 0 nothing, 1 an item, 2 a group
    group_rules = 1  # symbols the last group created (llama.cpp's repetition limit counts them)
    for tok in _tokens(text, known):
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
                if c != NOT_TOKEN:
                    return None
                _, line, name, refs, line_size, generated, copied = tok
                node = index.get(name)
                if node is None:
                    node = index[name] = len(alts)
                    alts.append(None)
                    symbols += 1
                elif alts[node] is not None:
                    return None  # defined twice
                alts[node] = []
                for ref in refs:
                    if ref not in index:
                        index[ref] = len(alts)
                        alts.append(None)
                        symbols += 1
                symbols += generated
                size += line_size
                expanded += copied
                if expanded > MAX_SYMBOLS:
                    return None
                g.known.append((node, line))
                continue
            node = index.get(tok)
            if node is None:
                node = index[tok] = len(alts)
                alts.append(None)
                symbols += 1
            elif alts[node] is not None:
                return None  # defined twice
            alts[node] = cur_alts = [seq := []]
            g.starts.append((node, len(alts)))
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
    g.expanded = expanded
    return g
