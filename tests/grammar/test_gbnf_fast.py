"""The fast GBNF check (`_gbnf_fast.fast_accepts`) never accepts what `parse_gbnf` refuses.

Random grammars are checked both ways with every limit shrunk (so that each limit is crossed
often by small grammars, near its edge); the fast check must accept only what the full parser
accepts, and must decide most of it. Converter output (the schema corpus) must be decided
entirely by the fast check, which is what makes `compile_json_schema` cheap.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from llamabind.errors import GrammarError
from llamabind.grammar import (
    JSON_ARRAY_GBNF,
    JSON_GBNF,
    JSON_OBJECT_GBNF,
    _gbnf_checks,
    _gbnf_fast,
    _gbnf_scan,
    gbnf,
    parse_gbnf,
)
from llamabind.grammar._gbnf_fast import fast_accepts
from llamabind.grammar.json_schema import convert_unchecked

CORPUS = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "schema_corpus.json"

SMALL_LIMITS = {
    "MAX_REPETITION": 12,
    "MAX_RULES": 40,
    "MAX_SYMBOLS": 160,
    "MAX_NESTING": 3,
    "MAX_LEFT_DEPTH": 5,
    "MAX_LEFT_RECURSION_WORK": 40,
    "MAX_EXPANSION_PATHS": 10,
}

LITERALS = ['"a"', '"bc"', '""', '"\\n"', '"\\x41\\u00e9"', '"\\\\"', '"x\\"y"', '"\\U0001F600"', '"é"']
CLASSES = ["[a-c]", "[^x]", "[a-]", "[\\]a]", '[^\\x00-\\x1F"\\\\]', "[0-9a-fA-F]", "[-a]"]
OPS = ["*", "+", "?", "{0}", "{1}", "{2}", "{0,3}", "{2,5}", "{3,}", "{0,1}", "{1,1}", "{0,30}", "{2,3}"]
ODD = ["{4,2}", "{13}", "{ 2 }", "*", "?+", "<[99999999999]>", '"\\q"', "@", ")", "[z-a]"]
# Rules registered as known in the random test (two sets differing in one rule, as the JSON
# converter's whitespace variants do), and wrong definitions of their names.
KNOWN = [
    'k-sp ::= " "?',
    'k-a ::= "x" k-sp k-b? k-c',
    'k-b ::= [a-c]{0,3} "b" | "y"',
    'k-c ::= ( "z" | k-sp [0-9]{1,2} )',
    'k-d ::= k-c k-sp k-c | "w" k-d',
]
KNOWN_OTHER = 'k-sp ::= ""'
KNOWN_WRONG = ['k-sp ::= "a"', 'k-b ::= "q"?', "k-c ::= k-d", 'k-a ::= k-a "x"', "k-c ::= k-sp{0,5}"]
KNOWN_NAMES = ["k-a", "k-b", "k-c", "k-d", "k-sp"]


class _Gen:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.names = [f"r{i}" for i in range(rng.randint(1, 7))]
        self.noisy = rng.random() < 0.4  # else: no syntax errors, shallower groups
        self.known = rng.random() < 0.4  # references to the known rules, and their lines
        self.current = 0

    def item(self, depth: int) -> str:
        rng = self.rng
        kind = rng.random()
        if kind < 0.3:
            s = rng.choice(LITERALS)
        elif kind < 0.45:
            s = rng.choice(CLASSES)
        elif kind < 0.75:
            later = self.names[self.current + 1 :]  # mostly acyclic (cycles are left recursion)
            s = rng.choice(later if later and rng.random() < 0.8 else self.names)
            if self.noisy and rng.random() < 0.01:
                s = "undefined"
            elif self.known and rng.random() < 0.4:
                s = rng.choice(KNOWN_NAMES)
        elif kind < 0.9 and depth < (4 if self.noisy else 2):
            sep = rng.choice([" ", " ", "\n  "])
            s = f"({sep}{self.alts(depth + 1)}{sep})"
        elif kind < 0.97:
            s = rng.choice([".", "<[7]>", "<think>", "!<x>", "!<[3]>"])
        else:
            s = rng.choice(ODD) if self.noisy else "[x-z]"
        if rng.random() < 0.4 and (s != '""' or self.noisy):
            s += rng.choice(OPS)
            if rng.random() < 0.02 and self.noisy:
                s += rng.choice(OPS)
        return s

    def alts(self, depth: int) -> str:
        rng = self.rng
        seqs = []
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            sep = rng.choice([" ", " ", " ", "\n    "]) if depth else " "
            seqs.append(sep.join(self.item(depth) for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4]))))
        joiner = rng.choice([" | "] * 5 + [" |\n  "])
        return joiner.join(seqs)

    def grammar(self) -> str:
        rng = self.rng
        lines = []
        for current, name in enumerate(self.names):
            self.current = current
            if rng.random() < 0.01 and self.noisy:
                continue  # a rule left undefined
            comment = "  # note" if rng.random() < 0.1 else ""
            lines.append(f"{name} ::= {self.alts(0)}{comment}")
        if rng.random() < 0.02 and self.noisy:
            lines.append(lines[-1] if lines else "")  # defined twice
        if self.known:
            for line in KNOWN if rng.random() < 0.6 else [KNOWN_OTHER, *KNOWN[1:]]:
                if rng.random() < 0.06:
                    line = rng.choice(KNOWN_WRONG)
                if rng.random() < 0.95:
                    lines.append(line)
        rest = lines[1:]
        rng.shuffle(rest)
        lines = lines[:1] + rest
        text = "\n".join(lines).replace("r0 ::=", "root ::=").replace("r0", "root")
        return text + ("\n" if rng.random() < 0.9 else "")


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    # rules registered as known were analysed under the real limits: only the test's set here
    monkeypatch.setattr(_gbnf_fast, "_pending", ["\n".join(KNOWN), "\n".join([KNOWN_OTHER, *KNOWN[1:]])])
    monkeypatch.setattr(_gbnf_fast, "_known_lines", {})
    monkeypatch.setattr(_gbnf_fast, "_known_sets", [])
    for name, value in SMALL_LIMITS.items():
        for module in (_gbnf_checks, _gbnf_fast, _gbnf_scan, gbnf):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)


def _slow_error(text: str) -> str | None:
    try:
        parse_gbnf(text)
    except GrammarError as exc:
        return str(exc)
    return None


@pytest.mark.usefixtures("small_limits")
def test_fast_check_accepts_only_what_the_parser_accepts_near_every_limit() -> None:
    rng = random.Random(20240607)
    accepted = decided = with_known = 0
    refusals: dict[str, int] = {}
    kinds = {
        "parse paths": "expansion paths",
        "leftmost derivation paths": "left-recursion work",
        "chain of more than": "leftmost depth",
        "symbols": "symbols",
        "rules": "rules",
        "nested too deeply": "nesting",
        "left recursion": "left recursion",
        "limit of": "repetition",
        "undefined rule": "undefined",
        "defined twice": "duplicate",
    }
    for i in range(4000):
        text = _Gen(rng).grammar()
        fast = fast_accepts(text)
        error = _slow_error(text)
        assert not (fast and error), f"grammar {i} accepted by the fast check, refused: {error}\n{text}"
        if error is None:
            accepted += 1
            decided += fast
            scanned = _gbnf_scan.scan(text, _gbnf_fast._known_lines)
            if fast and scanned is not None and scanned.known and _gbnf_fast._known_facts(scanned):
                with_known += 1
        else:
            for fragment, kind in kinds.items():
                if fragment in error:
                    refusals[kind] = refusals.get(kind, 0) + 1
                    break
    # the test means something only if the limits were crossed and the fast check decides
    assert set(refusals) == set(kinds.values()), refusals
    assert accepted > 500
    assert decided / accepted > 0.8, (decided, accepted)
    assert len(_gbnf_fast._known_sets) == 2 and with_known > 100, with_known


@pytest.mark.parametrize(
    "text",
    [
        'root ::= "a"{0,5}\n',  # a chain
        'root ::= ( "a" | "b" ){3,}\n',
        'root ::= x{0,4} "y"\nx ::= "z" | "w"\n',
        'root ::= "ab"{2,7} [a-c]* .? <[5]> !<x>\n',
        'root ::=\n  ( "a"\n  | "b"\n  )\n',  # newlines inside a group and after '::='
        'root ::= "a" |\n  "b" # comment\n# another\n\n',
        'root ::= "x" |',  # an empty last alternative, no newline
        'root ::= "a" ""\n',  # the empty literal is no element
        "root ::= [\\]\\-\\[^]\n",
    ],
)
def test_fast_check_takes_the_common_forms(text: str) -> None:
    assert parse_gbnf(text)
    assert fast_accepts(text)


@pytest.mark.parametrize(
    "text",
    [
        'root ::= ( "a"? ){0,3}\n',  # a chain of a nullable item: left to the parser
        'root ::= "a"{ 2 }\n',
        'root ::= "a"{2}?\n',  # an operator after another
    ],
)
def test_forms_left_to_the_parser_are_still_accepted(text: str) -> None:
    assert not fast_accepts(text)
    gbnf.validate_gbnf(text)


def _corpus() -> list[dict[str, Any]]:
    return json.loads(CORPUS.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_converter_output_and_json_grammars_are_decided_by_the_fast_check() -> None:
    for text in (JSON_GBNF, JSON_OBJECT_GBNF, JSON_ARRAY_GBNF):
        assert fast_accepts(text)
    for entry in _corpus():
        for whitespace in ("bounded", "compact"):
            text, _ = convert_unchecked(entry["schema"], whitespace=whitespace)  # type: ignore[arg-type]
            assert fast_accepts(text), entry["id"]


def _primitive(name: str) -> str:
    from llamabind.grammar._emit import _primitive_line

    return _primitive_line(name, False)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        # a converter primitive verbatim, but a rule it uses defined otherwise (left-recursive)
        (f'root ::= string\n{_primitive("string")}\nchar ::= "a"?\n', "left recursion"),
        # the known line is read into the rule before it (after '|' a newline is a space)
        (f'root ::= "a" |\n{_primitive("null")}\n', "expected end of line"),
        (f"root ::= null\n{_primitive('null')}\n{_primitive('null')}\n", "defined twice"),
        (f'root ::= ws\n{_primitive("ws")}\nws ::= ""\n', "defined twice"),
        (f"root ::= string\n{_primitive('string')}\n", "undefined rule 'char'"),
    ],
)
def test_known_rules_do_not_hide_errors(text: str, fragment: str) -> None:
    assert not fast_accepts(text)
    with pytest.raises(GrammarError, match=fragment):
        gbnf.validate_gbnf(text)


def test_known_rules_are_used_for_converter_output() -> None:
    for whitespace in ("bounded", "compact"):
        text, _ = convert_unchecked({"type": "array", "items": {}}, whitespace=whitespace)
        assert "value ::=" in text
        g = _gbnf_scan.scan(text, _gbnf_fast._known_lines)
        assert g is not None and g.known and _gbnf_fast._known_facts(g) is not None
        assert fast_accepts(text)
