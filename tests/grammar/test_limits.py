"""Grammars llama.cpp cannot take safely are refused in Python, fast; legitimate ones still pass."""

from __future__ import annotations

import time

import pytest

from llamabind.errors import GrammarError
from llamabind.grammar import JSON_GBNF, json_schema_to_gbnf, parse_gbnf, validate_gbnf
from llamabind.grammar.gbnf import (
    MAX_EXPANSION_PATHS,
    MAX_LEFT_DEPTH,
    MAX_LEFT_RECURSION_WORK,
    MAX_RULES,
)


def alternation_tower(levels: int) -> str:
    """``a0 ::= a1 | a1``, ``a1 ::= a2 | a2``, ...: 2**levels calls of llama.cpp's left-recursion check."""
    body = "".join(f"a{i} ::= a{i + 1} | a{i + 1}\n" for i in range(levels))
    return f'root ::= a0\n{body}a{levels} ::= "x"\n'


def continuation_tower(levels: int, prefix: str = "") -> str:
    """``a0 ::= a1 "y" | a1 "z"``, ...: 2**levels distinct parse stacks, deduplicated pairwise."""
    body = "".join(f'a{i} ::= a{i + 1} "y" | a{i + 1} "z"\n' for i in range(levels))
    return f"root ::= {prefix}a0\n{body}a{levels} ::= " + '"x"\n'


def chain(n: int) -> str:
    return "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(n)) + f'r{n} ::= "x"\n'


def refused_fast(text: str, match: str, seconds: float = 5.0) -> GrammarError:
    t0 = time.perf_counter()
    with pytest.raises(GrammarError, match=match) as info:
        validate_gbnf(text)
    assert time.perf_counter() - t0 < seconds
    return info.value


def test_the_716_byte_alternation_tower_from_the_issue_is_refused_fast() -> None:
    text = alternation_tower(40)
    assert len(text.encode()) < 800
    err = refused_fast(text, "leftmost derivation paths", seconds=1.0)
    assert err.rule is not None and err.rule.startswith("a")
    assert "line " in str(err)


def test_alternation_towers_below_the_limit_pass() -> None:
    validate_gbnf(alternation_tower(12))


def test_continuation_tower_is_refused_also_behind_a_terminal() -> None:
    refused_fast(continuation_tower(13), "parse paths")
    # llama.cpp only expands it after "q" is accepted, so the check covers every position
    refused_fast(continuation_tower(13, prefix='"q" '), "parse paths")
    validate_gbnf(continuation_tower(8))


def test_the_100000_rule_chain_is_refused() -> None:
    err = refused_fast(chain(100_000), f"more than {MAX_RULES} rules", seconds=30.0)
    assert err.position is not None and err.position > 0


def test_leftmost_chains_deeper_than_the_bound_are_refused() -> None:
    refused_fast(chain(MAX_LEFT_DEPTH + 10), "chain of more than")
    validate_gbnf(chain(MAX_LEFT_DEPTH // 2))
    # a chain that consumes input at every step is not recursion in llama.cpp: it may be long
    long = "root ::= r0\n" + "".join(f'r{i} ::= "x" r{i + 1}\n' for i in range(3000)) + 'r3000 ::= "x"\n'
    validate_gbnf(long)


def test_deep_parentheses_and_huge_repetitions_are_refused() -> None:
    refused_fast("root ::= " + "(" * 150 + '"a"' + ")" * 150, "nested too deeply")
    validate_gbnf("root ::= " + "(" * 50 + '"a"' + ")" * 50)
    refused_fast('root ::= "' + "a" * 1000 + '"{2000}', "more than .* symbols")


def test_limits_are_sane() -> None:
    assert MAX_EXPANSION_PATHS >= 1024 and MAX_LEFT_RECURSION_WORK >= 1 << 16


# Grammars in the style of llama.cpp's examples (written here, not copied).
ARITHMETIC = """root ::= (expr "=" ws term "\\n")+
expr ::= term ([-+*/] term)*
term ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num ::= [0-9]+ ws
ws ::= [ \\t\\n]*
"""
C_LIKE = """root ::= (declaration)*
declaration ::= dataType identifier "(" parameter? ")" "{" statement* "}"
dataType ::= "int" ws | "float" ws | "char" ws
identifier ::= [a-zA-Z_] [a-zA-Z_0-9]*
parameter ::= dataType identifier
statement ::= (
    ( dataType identifier ws "=" ws expression ";" ) | ( identifier ws "=" ws expression ";" )
  | ( identifier ws "(" argList? ")" ";" ) | ( "return" ws expression ";" )
  | ( "while" "(" condition ")" "{" statement* "}" ) | ( "for" "(" forInit ";" ws condition ";" ws forUpdate ")" "{" statement* "}" )
  | ( "if" "(" condition ")" "{" statement* "}" ("else" "{" statement* "}")? ) | ( singleLineComment ) | ( multiLineComment ) )
forInit ::= dataType identifier ws "=" ws expression | identifier ws "=" ws expression
forUpdate ::= identifier ws "=" ws expression
condition ::= expression relationOperator expression
relationOperator ::= ("<=" | "<" | "==" | "!=" | ">=" | ">")
expression ::= term (("+" | "-") term)*
term ::= factor(("*" | "/") factor)*
factor ::= identifier | number | unaryTerm | funcCall | parenExpression
unaryTerm ::= "-" factor
funcCall ::= identifier "(" argList? ")"
parenExpression ::= "(" ws expression ws ")"
argList ::= expression ("," ws expression)*
number ::= [0-9]+
singleLineComment ::= "//" [^\\n]* "\\n"
multiLineComment ::= "/*" ( [^*] | ("*" [^/]) )* "*/"
ws ::= ([ \\t\\n]+)
"""


@pytest.mark.parametrize("text", [JSON_GBNF, ARITHMETIC, C_LIKE])
def test_example_grammars_pass(text: str) -> None:
    parse_gbnf(text)


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": [f"value-{i}" for i in range(1000)]},
        {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(30)}},
        {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "integer"},
                    {"type": "string", "pattern": "^[a-z]{2,8}$"},
                    {"type": "object", "additionalProperties": {"type": "number"}},
                ]
            },
        },
    ],
)
def test_json_schema_grammars_pass(schema: dict[str, object]) -> None:
    validate_gbnf(json_schema_to_gbnf(schema))
