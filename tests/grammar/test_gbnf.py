"""GBNF parsing/validation (llamabind.grammar.gbnf) and the test recognizer built on it."""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from llamabind.errors import GrammarError, LlamabindError
from llamabind.grammar import (
    JSON_ARRAY_GBNF,
    JSON_GBNF,
    JSON_OBJECT_GBNF,
    Grammar,
    parse_gbnf,
    validate_gbnf,
)
from llamabind.grammar.gbnf import RuleRef
from tests.helpers.gbnf_matcher import GbnfMatcher, matches, sample


def _line_col(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col}"


# (id, grammar, rule named in the error, where the error is: a substring whose first occurrence
#  starts at the error position, or an int offset, and a fragment of the message)
INVALID: list[tuple[str, str, str | None, str | int, str]] = [
    ("missing-assign", 'root "a"\n', "root", '"a"', "expected '::='"),
    ("missing-assign-2nd-rule", 'root ::= item\nitem = "x"\n', "item", '= "x"', "expected '::='"),
    ("unterminated-string", 'root ::= "abc\n', "root", '"abc', "unterminated string"),
    ("unterminated-string-escape", 'root ::= "ab\\"', "root", '"ab', "unterminated string"),
    ("unterminated-class", "root ::= [a-z\n", "root", "[a-z", "unterminated character class"),
    ("unterminated-class-range", "root ::= [a-", "root", "[a-", "unterminated character class"),
    ("bad-escape", 'root ::= "a\\qb"\n', "root", "\\q", "unknown escape '\\q'"),
    ("bad-escape-in-class", "root ::= [\\d]\n", "root", "\\d", "unknown escape"),
    ("short-hex-escape", 'root ::= "\\x4"\n', "root", "\\x4", "2 hex digits"),
    ("short-unicode-escape", 'root ::= "\\u12G4"\n', "root", "\\u12", "4 hex digits"),
    ("escape-beyond-unicode", 'root ::= "\\U00110000"\n', "root", "\\U", "beyond U+10FFFF"),
    ("unbalanced-open", 'root ::= ( "a" | "b"\n', "root", "(", "missing ')'"),
    ("unbalanced-open-nested", 'root ::= ( "a" ( "b" )\nx ::= "c"\n', "root", "(", "missing ')'"),
    ("unbalanced-close", 'root ::= "a" ) "b"\n', "root", ")", "unbalanced ')'"),
    ("group-closed-by-bracket", 'root ::= ( "a" ]\n', "root", "(", "missing ')'"),
    ("repeat-min-gt-max", 'root ::= "a"{5,2}\n', "root", "{5,2}", "minimum exceeds maximum"),
    ("repeat-no-int", 'root ::= "a"{,3}\n', "root", ",3}", "expected an integer"),
    ("repeat-unclosed", 'root ::= "a"{2,3\n', "root", "\n", "expected '}'"),
    ("repeat-bad-sep", 'root ::= "a"{2;3}\n', "root", ";3}", "expected ',' or '}'"),
    ("repeat-min-too-big", 'root ::= "a"{2001}\n', "root", "{2001}", "limit of 2000"),
    (
        "repeat-expansion-too-big",
        "root ::= (((([^x]*){0,99}){0,99}){0,99})\n",
        "root",
        "{0,99}){0,99})\n",
        "more than llama.cpp's limit",
    ),
    ("repeat-nothing", 'root ::= * "a"\n', "root", "*", "no preceding item"),
    ("repeat-after-alt", 'root ::= "a" | +\n', "root", "+", "no preceding item"),
    ("repeat-empty-literal", 'root ::= ""*\n', "root", "*", "no preceding item"),
    ("empty-class", "root ::= []\n", "root", "[]", "empty character class"),
    ("reversed-range", "root ::= [z-a]\n", "root", "z-a", "reversed"),
    ("undefined-rule", 'root ::= "a" item\n', "root", "item", "undefined rule 'item'"),
    (
        "undefined-rule-in-other-rule",
        'root ::= greeting\ngreeting ::= "hi" name\n',
        "greeting",
        "name",
        "undefined rule 'name'",
    ),
    ("missing-root", 'expr ::= "a"\n', "root", 0, "missing root rule 'root'"),
    ("empty-grammar", "", "root", 0, "missing root rule"),
    ("only-comments", "# nothing here\n\n", "root", 0, "missing root rule"),
    ("duplicate-rule", 'root ::= "a"\nroot ::= "b"\n', "root", 'root ::= "b"', "defined twice"),
    ("two-rules-one-line", 'root ::= "a" b ::= "c"\n', "root", '::= "c"', "expected end of line"),
    ("rule-name-bad-char", 'root ::= "a"\nmy_rule ::= "b"\n', "my", "_rule", "expected '::='"),
    ("no-rule-name", '::= "a"\n', None, 0, "expected a rule name"),
    ("token-unterminated", 'root ::= <think "x"\n', "root", "<think", "missing '>'"),
    ("token-bad-id", "root ::= <[12a]>\n", "root", "a]>", "expected ']'"),
    ("token-negation-without-token", 'root ::= !"a"\n', "root", '"a"', "expected '<'"),
    ("nul-character", 'root ::= "a\x00"\n', None, "\x00", "NUL character"),
    ("left-recursion-direct", 'root ::= "a" | root "a"\n', "root", 'root "a"', "left recursion"),
    (
        "left-recursion-indirect",
        'root ::= expr\nexpr ::= term "+" expr | term\nterm ::= "x" | expr "*"\n',
        "expr",
        'term "+"',
        "left recursion",
    ),
    (
        "left-recursion-nullable-prefix",
        'root ::= asdf\nasdf ::= "a" | foo "b"\nfoo ::= "c" | empty asdf "d" | "e"\nempty ::= "blah" | \n',
        "asdf",
        'foo "b"',
        "left recursion",
    ),
    (
        # llama.cpp only notices rules with a directly empty alternative; this one hides it
        "left-recursion-indirectly-nullable-prefix",
        'root ::= maybe root "x" | "y"\nmaybe ::= opt\nopt ::= "z"?\n',
        "root",
        'root "x"',
        "left recursion",
    ),
    (
        "left-recursion-optional-group",
        'root ::= ("a"?) root "b" | "c"\n',
        "root",
        'root "b"',
        "left recursion",
    ),
    ("left-recursion-star-star", 'root ::= "a"**\n', "root", "*\n", "left recursion"),
    ("left-recursion-nullable-star", 'root ::= ("a"?)*\n', "root", "*", "left recursion"),
    ("left-recursion-empty-alt-star", 'root ::= ("a" | )+ "b"\n', "root", "+", "left recursion"),
    (
        "left-recursion-unreachable-rule",
        'root ::= "a"\nlist ::= list "," item | item\nitem ::= [0-9]\n',
        "list",
        'list ","',
        "left recursion",
    ),
]


@pytest.mark.parametrize(
    ("text", "rule", "where", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_grammar_is_rejected_with_position_and_rule(
    text: str, rule: str | None, where: str | int, fragment: str
) -> None:
    pos = where if isinstance(where, int) else text.index(where)
    with pytest.raises(GrammarError) as info:
        validate_gbnf(text)
    err = info.value
    assert isinstance(err, LlamabindError)
    assert isinstance(err, ValueError)
    assert fragment in str(err)
    assert err.position == pos, str(err)
    assert err.rule == rule, str(err)
    assert f"line {_line_col(text, pos)}" in str(err)
    if rule is not None:
        assert f"rule '{rule}'" in str(err)


def test_error_position_on_later_line() -> None:
    text = 'root ::= item+\n\n# the item\nitem ::= [a-z] "x\\y"\n'
    with pytest.raises(GrammarError) as info:
        validate_gbnf(text)
    assert info.value.position == text.index("\\y")
    assert "line 4:18" in str(info.value)
    assert info.value.rule == "item"


def test_custom_root_and_bad_root_name() -> None:
    text = 'start ::= "a"\n'
    validate_gbnf(text, root="start")
    with pytest.raises(GrammarError, match="missing root rule 'root'"):
        validate_gbnf(text)
    with pytest.raises(GrammarError, match="not a valid rule name") as info:
        validate_gbnf(text, root="my_root")
    assert info.value.rule == "my_root"


VALID = [
    'root ::= "a"',
    'root ::= "a"\n',
    'root ::= "a"\r\nb ::= "b"\r\n',
    'root ::=\n  "a" |\n  "b"\n',
    '# leading comment\nroot ::= ( # comment in group\n  "a"\n  "b" # trailing\n) # after\n',
    'root ::= "x" | ',
    "root ::= ",
    'root ::= ( | "a" )',
    'root ::= [^\\n]+ "\\n"',
    "root ::= [a-zA-Z0-9_\\-\\]\\[] [-a] [a-] [\\x41-\\x5A] [\\u00e9] [\\U0001F600]",
    'root ::= "\\t\\r\\n\\\\\\"\\[\\]\\-"',
    'root ::= "a"{3} "b"{2,} "c"{0,2} "d"{1,1} "e"{ 2 , 4 } "f"{0}',
    'root ::= "a"{0,5000}',
    "root ::= .*",
    "root ::= <[1000]> !<[1001]>* <think> !</think>",
    'root ::= "héllo" [ぁ-ゟ]+',
    'root ::= list\nlist ::= item ("," item)*\nitem ::= [0-9]+',
    'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= num | "(" expr ")"\nnum ::= [0-9]+',
    'root ::= "a" root | "b"',
    'root ::= opt "x"\nopt ::= "y" | ',
    'root ::= x-1\nx-1 ::= X2\nX2 ::= "2"\n3 ::= "3"',
    'root ::= "a" [^"]*  # comment " [ ( unbalanced inside a comment\n',
]


@pytest.mark.parametrize("text", VALID)
def test_valid_grammar_is_accepted(text: str) -> None:
    assert validate_gbnf(text) is None  # no GrammarError
    g = Grammar.from_string(text)
    assert g.text == text and g.root == "root"


def test_parse_mirrors_llama_cpp_rule_expansion() -> None:
    g = parse_gbnf('root ::= ( "a" | b ){2,4}\nb ::= "b"\n')
    names = list(g.symbols)
    # root, its group, b (first seen inside the group), then the two optional repeats
    assert names[0] == "root"
    assert names[1] == "root_1"
    assert names[2] == "b"
    assert names[3:] == ["root_3", "root_4"]
    assert [r.origin for r in g.rules] == ["root", "root", "b", "root", "root"]
    assert g.root_index == 0
    assert g.nullable() == frozenset({3, 4})


# (GBNF body, equivalent Python regex) pairs checked on every string over an alphabet
EQUIVALENT = [
    ('( "a" | "b"{2,3} )* "c"?', r"(?:a|b{2,3})*c?"),
    ('"a"{2} "b"{1,} "c"{0,2}', r"a{2}b+c{0,2}"),
    ('[^a]+ "a"', r"[^a]+a"),
    ('[a-b]? . "c"', r"[ab]?.c"),
    ('( "ab" | "a" ) ( "c" | "bc" )', r"(?:ab|a)(?:c|bc)"),
    ('( ( "a" "b"? ){1,2} "c" )+', r"(?:(?:ab?){1,2}c)+"),
    ('"a"{0} "b"', r"b"),
    ('( "a" | ) "b"', r"a?b"),
]


@pytest.mark.parametrize(("body", "regex"), EQUIVALENT)
def test_matcher_agrees_with_regex(body: str, regex: str) -> None:
    m = GbnfMatcher(f"root ::= {body}\n")
    rx = re.compile(regex, re.DOTALL)
    for n in range(7):
        for chars in itertools.product("abc", repeat=n):
            s = "".join(chars)
            assert m(s) == bool(rx.fullmatch(s)), s


def test_matcher_with_recursion_and_upper_bound_over_limit() -> None:
    balanced = GbnfMatcher('root ::= "(" root ")" root | \n')
    assert balanced("") and balanced("()") and balanced("(()())()")
    assert not balanced("(") and not balanced("())(")
    # llama.cpp treats an upper bound above 2000 as unbounded: one self-recursive rule, not 4999
    over = parse_gbnf('root ::= "a"{1,5000}')
    assert len(over.rules) == 2 and over.rules[1].alternatives[0][-1] == RuleRef(1)
    assert len(parse_gbnf('root ::= "a"{1,2000}').rules) == 2000
    assert matches(over, "a" * 50) and not matches(over, "")


JSON_VALID = [
    "{}",
    "[]",
    '{"a": 1}',
    '{\n  "a": [1, -2.5, 3e10, 0.25E-3],\n  "b": {"c": null, "d": true, "e": false}\n}',
    '"\\u00e9\\n\\"\\\\ \\/"',
    "-0",
    '"😀"',
]
JSON_INVALID = ["", "{", '{"a" 1}', "[1,]", "01", "1.", "+1", '"\x01"', '"\\x"', "nul", '{"a": 1} ', "  {}"]


def test_json_grammars() -> None:
    value = GbnfMatcher(JSON_GBNF)
    obj = GbnfMatcher(JSON_OBJECT_GBNF)
    arr = GbnfMatcher(JSON_ARRAY_GBNF)
    for s in JSON_VALID:
        json.loads(s)
        assert value(s), s
        assert obj(s) == s.startswith("{"), s
        assert arr(s) == s.startswith("["), s
    for s in JSON_INVALID:
        assert not value(s), s
    # whitespace between tokens is bounded
    assert obj('{"a":' + "\n" + " " * 20 + "1}")
    assert not obj('{"a":' + "\n" + " " * 21 + "1}")
    assert not obj('{"a":' + "  " + "1}")


def test_json_grammar_samples_are_json() -> None:
    rng = random.Random(1234)
    g = parse_gbnf(JSON_OBJECT_GBNF)
    for _ in range(100):
        text = sample(g, rng, budget=80)
        assert isinstance(json.loads(text), dict), text


def test_grammar_dataclass(tmp_path: Path) -> None:
    g = Grammar.from_string('root ::= "yes" | "no"')
    assert g.text == 'root ::= "yes" | "no"' and g.root == "root"
    with pytest.raises(FrozenInstanceError):
        g.text = "x"  # type: ignore[misc]
    assert g == Grammar('root ::= "yes" | "no"')
    with pytest.raises(GrammarError):
        Grammar("root ::= (")
    with pytest.raises(GrammarError):
        Grammar('start ::= "a"')
    assert Grammar('start ::= "a"', root="start").root == "start"

    path = tmp_path / "g.gbnf"
    path.write_text('root ::= "é" other\nother ::= [0-9]\n', encoding="utf-8")
    assert Grammar.from_file(path).text.startswith('root ::= "é"')
    assert Grammar.from_file(str(path)).root == "root"
    path.write_text("root ::= undefined\n", encoding="utf-8")
    with pytest.raises(GrammarError, match="undefined rule"):
        Grammar.from_file(path)

    assert Grammar.json_object().text == JSON_OBJECT_GBNF
    assert Grammar.json().text == JSON_GBNF
    assert Grammar.json_array().text == JSON_ARRAY_GBNF
    schema_grammar = Grammar.from_json_schema({"type": "boolean"})
    assert matches(schema_grammar.text, "true") and not matches(schema_grammar.text, "1")


def test_non_str_grammar_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        validate_gbnf(b'root ::= "a"')  # type: ignore[arg-type]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    text = "root ::= " + "(" * 3000 + '"a"' + ")" * 3000
    with pytest.raises(GrammarError, match="nested too deeply"):
        validate_gbnf(text)
