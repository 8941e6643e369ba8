"""`_emit._scan_item` (regular expressions) agrees with the plain character loop it replaced."""

from __future__ import annotations

import random

from llamabind.grammar._emit import _scan_item


def _reference(expr: str, i: int) -> int:
    """The end of the item at expr[i] (name, literal, class or group), -1 if malformed."""
    n = len(expr)
    c = expr[i]
    if c in '"[':
        close = '"' if c == '"' else "]"
        i += 1
        while i < n and expr[i] != close:
            i += 2 if expr[i] == "\\" else 1
        return i + 1 if i < n else -1
    if c == "(":
        i += 1
        while i < n:
            if expr[i] == ")":
                return i + 1
            if expr[i] in '"[(':
                i = _reference(expr, i)
                if i < 0:
                    return -1
            else:
                i += 1
        return -1
    while i < n and (expr[i].isalnum() or expr[i] == "-"):
        i += 1
    return i


def test_scan_item_matches_the_character_loop() -> None:
    rng = random.Random(7)
    alphabet = '()"[]\\ ab-é_|*\n'
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        i = rng.randrange(len(text))
        assert _scan_item(text, i) == _reference(text, i), (text, i)
