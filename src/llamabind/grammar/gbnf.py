"""A parser and validator for GBNF, the grammar format of llama.cpp's grammar sampler.

`validate_gbnf` accepts exactly the grammars that llama.cpp's parser and its
grammar initialisation accept, except for a few constructs that llama.cpp takes
but that are almost certainly mistakes or would hang it; those are rejected too
(see `validate_gbnf`). Every error is a `GrammarError` whose `position` is a
character offset into the text (an index into the Python string, which equals
the byte offset for ASCII text), whose `rule` is the name of the rule where the
error was found (None before the first rule name), and whose message names the
line:column and the rule.

`parse_gbnf` returns the grammar in the same shape llama.cpp builds internally:
repetitions and parenthesised groups become generated rules named
``<rule>_<id>``, so the structure is what the sampler will walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llamabind.errors import GrammarError
from llamabind.grammar._gbnf_checks import (
    FORBIDDEN_CHAR,
    MAX_EXPANSION_PATHS,
    MAX_LEFT_DEPTH,
    MAX_LEFT_RECURSION_WORK,
    MAX_NESTING,
    MAX_REPETITION,
    MAX_RULES,
    MAX_SYMBOLS,
    check_grammar,
    nullable_rules,
)
from llamabind.grammar._gbnf_fast import fast_accepts
from llamabind.grammar._gbnf_types import (
    AnyChar,
    CharClass,
    Element,
    Rule,
    RuleRef,
    TokenRef,
)
from llamabind.grammar._gbnf_types import (
    describe as _describe,
)
from llamabind.grammar._gbnf_types import (
    grammar_error as _error,
)
from llamabind.grammar._gbnf_types import (
    line_col as _line_col,
)

__all__ = [
    "JSON_ARRAY_GBNF",
    "JSON_GBNF",
    "JSON_OBJECT_GBNF",
    "MAX_EXPANSION_PATHS",
    "MAX_LEFT_DEPTH",
    "MAX_LEFT_RECURSION_WORK",
    "MAX_NESTING",
    "MAX_REPETITION",
    "MAX_RULES",
    "MAX_SYMBOLS",
    "AnyChar",
    "CharClass",
    "Element",
    "ParsedGrammar",
    "Rule",
    "RuleRef",
    "TokenRef",
    "parse_gbnf",
    "validate_gbnf",
]

_MAX_CODE_POINT = 0x10FFFF
_MAX_TOKEN_ID = 0xFFFFFFFF


@dataclass(frozen=True)
class ParsedGrammar:
    """A validated grammar. `rules[i]` is the rule with llama.cpp symbol id `i`."""

    text: str
    root: str
    rules: tuple[Rule, ...]
    symbols: dict[str, int] = field(hash=False)

    @property
    def root_index(self) -> int:
        return self.symbols[self.root]

    def nullable(self) -> frozenset[int]:
        """Indices of the rules that can match the empty string."""
        return frozenset(nullable_rules(self.rules))


# --------------------------------------------------------------------------------------------
# The parser (mirrors llama.cpp's recursive-descent parser, symbol ids included)
# --------------------------------------------------------------------------------------------

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _is_word_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "-"


def _is_name(name: str) -> bool:
    return bool(name) and all(_is_word_char(c) for c in name)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.symbols: dict[str, int] = {}
        self.rules: dict[int, list[list[Element]]] = {}
        self.meta: dict[int, tuple[str, str, int]] = {}  # id -> (name, origin, position)
        self.defined: dict[str, int] = {}
        self.refs: list[tuple[str, int, str]] = []  # (referenced name, position, referencing rule)
        self.rule: str | None = None
        self.nesting = 0
        self.expanded = 0  # elements repetitions have copied so far

    # -- helpers ------------------------------------------------------------------------------

    def at(self, pos: int) -> str:
        return self.text[pos] if pos < self.n else ""

    def fail(self, message: str, pos: int) -> GrammarError:
        return _error(self.text, message, pos, self.rule)

    def symbol_id(self, name: str, position: int) -> int:
        if name not in self.symbols and len(self.symbols) >= MAX_RULES:
            raise self.fail(f"grammar has more than {MAX_RULES} rules (generated ones included)", position)
        return self.symbols.setdefault(name, len(self.symbols))

    def generate_symbol(self, base: str, position: int) -> int:
        new_id = len(self.symbols)
        if new_id >= MAX_RULES:
            raise self.fail(f"grammar has more than {MAX_RULES} rules (generated ones included)", position)
        name = f"{base}_{new_id}"
        self.symbols[name] = new_id
        self.meta[new_id] = (name, base, position)
        return new_id

    def parse_space(self, pos: int, newline_ok: bool) -> int:
        text, n = self.text, self.n
        while pos < n:
            c = text[pos]
            if c == "#":
                while pos < n and text[pos] not in "\r\n":
                    pos += 1
            elif c in " \t" or (newline_ok and c in "\r\n"):
                pos += 1
            else:
                break
        return pos

    def parse_name(self, pos: int) -> int:
        end = pos
        while end < self.n and _is_word_char(self.text[end]):
            end += 1
        if end == pos:
            raise self.fail(f"expected a rule name, found {_describe(self.text, pos)}", pos)
        return end

    def parse_int(self, pos: int) -> int:
        end = pos
        while end < self.n and self.text[end].isascii() and self.text[end].isdigit():
            end += 1
        if end == pos:
            raise self.fail(f"expected an integer, found {_describe(self.text, pos)}", pos)
        return end

    def parse_char(self, pos: int) -> tuple[int, int]:
        if pos >= self.n:
            raise self.fail("unexpected end of input", pos)
        c = self.text[pos]
        if c != "\\":
            return ord(c), pos + 1
        e = self.at(pos + 1)
        if e in _HEX_ESCAPES:
            size = _HEX_ESCAPES[e]
            digits = self.text[pos + 2 : pos + 2 + size]
            if len(digits) != size or not all(d in _HEX_DIGITS for d in digits):
                raise self.fail(f"escape '\\{e}' needs exactly {size} hex digits", pos)
            value = int(digits, 16)
            if value > _MAX_CODE_POINT:
                raise self.fail(f"escape '\\{e}{digits}' is beyond U+10FFFF", pos)
            return value, pos + 2 + size
        if e in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[e], pos + 2
        if not e:
            raise self.fail("unexpected end of input after '\\'", pos)
        raise self.fail(f"unknown escape '\\{e}'", pos)

    # -- grammar structure --------------------------------------------------------------------

    def parse(self) -> None:
        pos = self.parse_space(0, True)
        while pos < self.n:
            pos = self.parse_rule(pos)

    def parse_rule(self, pos: int) -> int:
        self.rule = None
        name_end = self.parse_name(pos)
        name = self.text[pos:name_end]
        self.rule = name
        if name in self.defined:
            line, col = _line_col(self.text, self.defined[name])
            raise self.fail(f"rule '{name}' is defined twice (first at line {line}:{col})", pos)
        self.defined[name] = pos
        rule_id = self.symbol_id(name, pos)
        self.meta[rule_id] = (name, name, pos)
        p = self.parse_space(name_end, False)
        if self.text[p : p + 3] != "::=":
            raise self.fail(f"expected '::=' after rule name '{name}', found {_describe(self.text, p)}", p)
        p = self.parse_space(p + 3, True)
        p = self.parse_alternates(p, name, rule_id, False)
        c = self.at(p)
        if c == "\r":
            p += 2 if self.at(p + 1) == "\n" else 1
        elif c == "\n":
            p += 1
        elif c:
            if c == ")":
                raise self.fail("unbalanced ')' (no matching '(')", p)
            raise self.fail(f"expected end of line, found {_describe(self.text, p)}", p)
        return self.parse_space(p, True)

    def parse_alternates(self, pos: int, rule_name: str, rule_id: int, nested: bool) -> int:
        alternatives: list[list[Element]] = [[]]
        pos = self.parse_sequence(pos, rule_name, alternatives[-1], nested)
        while self.at(pos) == "|":
            alternatives.append([])
            pos = self.parse_space(pos + 1, True)
            pos = self.parse_sequence(pos, rule_name, alternatives[-1], nested)
        self.rules[rule_id] = alternatives
        return pos

    def parse_sequence(self, pos: int, rule_name: str, seq: list[Element], nested: bool) -> int:
        text = self.text
        last_sym_start = len(seq)
        n_prev_rules = 1

        def repeat(op_pos: int, min_times: int, max_times: int | None) -> None:
            nonlocal n_prev_rules
            if last_sym_start == len(seq):
                raise self.fail("repetition operator has no preceding item to repeat", op_pos)
            if max_times is not None and max_times < min_times:
                raise self.fail(
                    f"bad repetition bounds {{{min_times},{max_times}}}: minimum exceeds maximum", op_pos
                )
            prev = seq[last_sym_start:]
            if max_times is not None and max_times > 0:
                total = max_times
            elif min_times > 0:
                total = min_times
            else:
                total = 1
            if n_prev_rules * total > MAX_REPETITION:
                raise self.fail(
                    f"repetition would expand to {n_prev_rules * total} rules, more than llama.cpp's "
                    f"limit of {MAX_REPETITION}; reduce the repetition count or the nesting",
                    op_pos,
                )
            n_opt = 1 if max_times is None else max_times - min_times
            self.expanded += len(prev) * (max(min_times, 1) + n_opt)
            if self.expanded > MAX_SYMBOLS:
                raise self.fail(f"repetitions expand the grammar to more than {MAX_SYMBOLS} symbols", op_pos)
            if min_times == 0:
                del seq[last_sym_start:]
            else:
                for _ in range(1, min_times):
                    seq.extend(prev)
            last_rec = -1
            for i in range(n_opt):
                rec_id = self.generate_symbol(rule_name, op_pos)
                body: list[Element] = list(prev)
                if max_times is None:
                    body.append(RuleRef(rec_id, op_pos))
                elif i > 0:
                    body.append(RuleRef(last_rec, op_pos))
                self.rules[rec_id] = [body, []]
                last_rec = rec_id
            if n_opt > 0:
                seq.append(RuleRef(last_rec, op_pos))
            n_prev_rules *= total

        while pos < self.n:
            c = text[pos]
            if c == '"':
                start = pos
                pos += 1
                last_sym_start = len(seq)
                n_prev_rules = 1
                while self.at(pos) != '"':
                    if pos >= self.n:
                        raise self.fail("unterminated string literal", start)
                    cp, pos = self.parse_char(pos)
                    seq.append(CharClass(((cp, cp),)))
                pos = self.parse_space(pos + 1, nested)
            elif c == "[":
                start = pos
                pos += 1
                negated = False
                if self.at(pos) == "^":
                    negated = True
                    pos += 1
                last_sym_start = len(seq)
                n_prev_rules = 1
                ranges: list[tuple[int, int]] = []
                while self.at(pos) != "]":
                    if pos >= self.n:
                        raise self.fail("unterminated character class", start)
                    range_pos = pos
                    lo, pos = self.parse_char(pos)
                    hi = lo
                    if self.at(pos) == "-" and self.at(pos + 1) != "]":
                        if pos + 1 >= self.n:
                            raise self.fail("unterminated character class", start)
                        hi, pos = self.parse_char(pos + 1)
                        if hi < lo:
                            raise self.fail(
                                f"character range U+{lo:04X}-U+{hi:04X} is reversed (matches nothing)",
                                range_pos,
                            )
                    ranges.append((lo, hi))
                if not ranges:
                    raise self.fail("empty character class", start)
                seq.append(CharClass(tuple(ranges), negated))
                pos = self.parse_space(pos + 1, nested)
            elif c in "<!":
                start = pos
                negated = c == "!"
                if negated:
                    pos += 1
                    if self.at(pos) != "<":
                        raise self.fail("expected '<' after '!'", pos)
                token, pos = self.parse_token(pos)
                last_sym_start = len(seq)
                n_prev_rules = 1
                seq.append(TokenRef(token[0], token[1], negated))
                pos = self.parse_space(pos, nested)
            elif _is_word_char(c):
                end = self.parse_name(pos)
                name = text[pos:end]
                ref_id = self.symbol_id(name, pos)
                self.refs.append((name, pos, rule_name))
                last_sym_start = len(seq)
                n_prev_rules = 1
                seq.append(RuleRef(ref_id, pos))
                pos = self.parse_space(end, nested)
            elif c == "(":
                start = pos
                if self.nesting >= MAX_NESTING:
                    raise self.fail(
                        f"grammar is nested too deeply (more than {MAX_NESTING} levels of parentheses)", start
                    )
                self.nesting += 1
                pos = self.parse_space(pos + 1, True)
                n_before = len(self.symbols)
                sub_id = self.generate_symbol(rule_name, start)
                pos = self.parse_alternates(pos, rule_name, sub_id, True)
                self.nesting -= 1
                n_prev_rules = max(1, len(self.symbols) - n_before)
                last_sym_start = len(seq)
                seq.append(RuleRef(sub_id, start))
                if self.at(pos) != ")":
                    raise self.fail(f"unbalanced '(': missing ')', found {_describe(text, pos)}", start)
                pos = self.parse_space(pos + 1, nested)
            elif c == ".":
                last_sym_start = len(seq)
                n_prev_rules = 1
                seq.append(AnyChar())
                pos = self.parse_space(pos + 1, nested)
            elif c in "*+?":
                op_pos = pos
                pos = self.parse_space(pos + 1, nested)
                repeat(op_pos, 1 if c == "+" else 0, 1 if c == "?" else None)
            elif c == "{":
                op_pos = pos
                pos = self.parse_space(pos + 1, nested)
                int_end = self.parse_int(pos)
                min_times = int(text[pos:int_end])
                pos = self.parse_space(int_end, nested)
                max_times: int | None
                if self.at(pos) == "}":
                    max_times = min_times
                    pos = self.parse_space(pos + 1, nested)
                elif self.at(pos) == ",":
                    pos = self.parse_space(pos + 1, nested)
                    max_times = None
                    if self.at(pos).isascii() and self.at(pos).isdigit():
                        int_end = self.parse_int(pos)
                        max_times = int(text[pos:int_end])
                        pos = self.parse_space(int_end, nested)
                    if self.at(pos) != "}":
                        raise self.fail(f"expected '}}' in repetition, found {_describe(text, pos)}", pos)
                    pos = self.parse_space(pos + 1, nested)
                else:
                    raise self.fail(f"expected ',' or '}}' in repetition, found {_describe(text, pos)}", pos)
                if min_times > MAX_REPETITION:
                    raise self.fail(
                        f"repetition minimum {min_times} exceeds llama.cpp's limit of {MAX_REPETITION}",
                        op_pos,
                    )
                if max_times is not None and max_times > MAX_REPETITION:
                    max_times = None  # what llama.cpp does with an upper bound above its limit
                repeat(op_pos, min_times, max_times)
            else:
                break
        return pos

    def parse_token(self, pos: int) -> tuple[tuple[int | None, str | None], int]:
        start = pos
        pos += 1  # '<'
        if self.at(pos) == "[":
            pos += 1
            end = self.parse_int(pos)
            token_id = int(self.text[pos:end])
            if token_id > _MAX_TOKEN_ID:
                raise self.fail(f"token id {token_id} is too big", pos)
            if self.at(end) != "]":
                raise self.fail(f"expected ']' in token id, found {_describe(self.text, end)}", end)
            if self.at(end + 1) != ">":
                raise self.fail(
                    f"expected '>' after token id, found {_describe(self.text, end + 1)}", end + 1
                )
            return (token_id, None), end + 2
        end = self.text.find(">", pos)
        if end < 0:
            raise self.fail("unterminated token: missing '>'", start)
        return (None, self.text[start : end + 1]), end + 1


def parse_gbnf(text: str, root: str = "root") -> ParsedGrammar:
    """Parse and validate a GBNF grammar; raises `GrammarError` (see `validate_gbnf`)."""
    if not isinstance(text, str):
        raise TypeError(f"grammar text must be a str, not {type(text).__name__}")
    if not _is_name(root):
        raise GrammarError(
            f"GBNF error: root rule name {root!r} is not a valid rule name ([a-zA-Z0-9-]+)",
            position=0,
            rule=root,
        )
    bad = FORBIDDEN_CHAR.search(text)
    if bad:
        what = "NUL character" if bad.group() == "\x00" else f"lone surrogate U+{ord(bad.group()):04X}"
        raise _error(text, f"{what} is not allowed in a grammar", bad.start(), None)

    parser = _Parser(text)
    try:
        parser.parse()
    except RecursionError:
        raise _error(text, "grammar is nested too deeply", 0, parser.rule) from None

    for name, position, in_rule in parser.refs:
        if name not in parser.defined:
            raise _error(text, f"undefined rule '{name}' referenced", position, in_rule)
    if root not in parser.defined:
        have = ", ".join(sorted(parser.defined)) or "none"
        raise _error(text, f"missing root rule '{root}' (rules defined: {have})", 0, root)

    rules: list[Rule] = []
    for index in range(len(parser.symbols)):
        name, origin, position = parser.meta[index]
        alternatives = tuple(tuple(alt) for alt in parser.rules[index])
        rules.append(Rule(name, alternatives, origin, position))
    frozen = tuple(rules)
    check_grammar(text, frozen)
    return ParsedGrammar(text=text, root=root, rules=frozen, symbols=dict(parser.symbols))


def validate_gbnf(text: str, root: str = "root") -> None:
    """Raise `GrammarError` unless `text` is a GBNF grammar llama.cpp can use with start rule `root`.

    Rejected, as llama.cpp rejects them: syntax errors (missing ``::=``, unterminated strings,
    character classes or tokens, unknown escapes, unbalanced parentheses, bad ``{m,n}``
    repetitions, anything after a rule on its line), references to undefined rules, a missing
    root rule, an empty grammar, repetitions over llama.cpp's expansion limits, and left recursion.

    Also rejected although llama.cpp accepts them: left recursion hidden behind a rule that only
    derives the empty string indirectly (llama.cpp misses it and then loops forever), any other
    rule that can reach itself without consuming input (such as ``("a"?)*``; write ``"a"*``),
    ``{m,n}`` with m > n (llama.cpp loops), empty ``[]`` classes and reversed ranges like
    ``[z-a]``, a rule defined twice (llama.cpp silently keeps the last definition), NUL
    characters (C would cut the text there), lone surrogates, and escapes beyond U+10FFFF.
    An upper bound above 2000 (``x{0,5000}``) is accepted and, as in llama.cpp, means unbounded.

    Also rejected, because llama.cpp would take exponential time or overflow its stack on them
    (see `llamabind.grammar._gbnf_checks` for the measures): more than `MAX_RULES` rules or
    `MAX_SYMBOLS` symbols, parentheses nested deeper than `MAX_NESTING`, chains of leftmost rule
    references longer than `MAX_LEFT_DEPTH` (``r0 ::= r1``, ``r1 ::= r2``, ...), rules with more
    than `MAX_LEFT_RECURSION_WORK` leftmost derivation paths (``a0 ::= a1 | a1``,
    ``a1 ::= a2 | a2``, ...), and any place where a rule reference expands into more than
    `MAX_EXPANSION_PATHS` parse stacks at once (``a0 ::= a1 "y" | a1 "z"``, ...).

    Token terminals (``<[123]>``, ``<think>``, ``!<...>``) are checked for syntax only: whether a
    ``<text>`` token is a single token of the model's vocabulary can only be known with the model.

    Most grammars are accepted by a fast check (`_gbnf_fast`) that builds no parse tree; the
    rest, refused ones included, go through `parse_gbnf`, which names the error.
    """
    if not fast_accepts(text, root):
        parse_gbnf(text, root)


# --------------------------------------------------------------------------------------------
# JSON grammars
# --------------------------------------------------------------------------------------------

_JSON_COMMON = r"""value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"
array ::= "[" ws ( value ( ws "," ws value )* ws )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?
ws ::= ( " " | "\n" [ \t]{0,20} )?
"""

#: Any JSON value. Whitespace between tokens is bounded (one space, or a newline and up to 20
#: spaces/tabs), numbers have at most 16 integer and 16 fraction digits and a 3-digit exponent.
JSON_GBNF = "root ::= value\n" + _JSON_COMMON

#: Any JSON object.
JSON_OBJECT_GBNF = "root ::= object\n" + _JSON_COMMON

#: Any JSON array.
JSON_ARRAY_GBNF = "root ::= array\n" + _JSON_COMMON
