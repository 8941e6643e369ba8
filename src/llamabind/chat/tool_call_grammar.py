"""GBNF grammars that force a model to write tool calls in its native format (:mod:`.tool_calls`).

``tool_choice="required"`` / a named function: a grammar for the whole turn; ``"auto"``: a lazy
grammar with trigger patterns (free text until the model starts a call).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._gbnf_compose import gbnf_literal, json_string_literal, prefix_rules
from .native_output import NATIVE_OUTPUT_FORMATS, native_grammar
from .tool_blocks import BLOCK_FORMATS, block_grammar
from .tool_calls import (
    _FUNC_NAME,
    _HERMES_CLOSE,
    _HERMES_OPEN,
    _MISTRAL_OPEN,
    _PYTHON_TAG,
    ToolCallFormat,
    ToolChoiceError,
)
from .tool_xml import xml_call_rule

__all__ = ["ToolGrammar", "tool_call_grammar"]


@dataclass(frozen=True)
class ToolGrammar:
    """A GBNF grammar (root rule ``root``) that forces tool calls in one format.

    ``lazy``: the grammar must only be enforced once a trigger fires (``tool_choice="auto"``): use
    ``llama_sampler_init_grammar_lazy_patterns`` with ``trigger_patterns``. Those are llama.cpp
    lazy-grammar patterns: each must match the *whole* text generated so far, and the grammar is
    applied from the start of the first non-empty capture group. ``trigger_words`` are the literal
    markers the patterns look for (informational; the patterns already include them).
    """

    grammar: str
    lazy: bool
    trigger_patterns: tuple[str, ...] = ()
    trigger_words: tuple[str, ...] = ()
    root: str = "root"


def _tool_function(tool: Any, index: int) -> tuple[str, Any]:
    if not isinstance(tool, Mapping):
        raise ToolChoiceError(f"tools[{index}] must be an object", param="tools")
    if tool.get("type", "function") != "function":
        raise ToolChoiceError(f"tools[{index}].type must be 'function'", param="tools")
    fn = tool.get("function", tool)
    if not isinstance(fn, Mapping):
        raise ToolChoiceError(f"tools[{index}].function must be an object", param="tools")
    name = fn.get("name")
    if not isinstance(name, str) or not _FUNC_NAME.match(name):
        raise ToolChoiceError(
            f"tools[{index}].function.name must be a name of [A-Za-z0-9_.:-]", param="tools"
        )
    params = fn.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, (Mapping, bool)):
        raise ToolChoiceError(
            f"tools[{index}].function.parameters must be a JSON schema object", param="tools"
        )
    return name, params if isinstance(params, bool) else dict(params)


def _chosen_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function", tool_choice)
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str):
            raise ToolChoiceError(
                "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', ...}",
                param="tool_choice",
            )
        return name
    return None


_SP = "tc-ws"
_WS_RE = "[ \\t\\r\\n]{0,20}"


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]],
    tool_choice: Any = "required",
    fmt: ToolCallFormat | str = ToolCallFormat.GENERIC,
    *,
    parallel_tool_calls: bool = True,
    schema_to_gbnf: Callable[[Any], str] | None = None,
) -> ToolGrammar | None:
    """A grammar forcing tool calls in ``fmt``, each call's arguments matching its JSON schema.

    ``tool_choice``: ``"required"`` (a non-lazy grammar: the turn must be one or more calls),
    ``{"type": "function", "function": {"name": …}}`` (exactly one call of that function),
    ``"auto"`` (a lazy grammar with trigger patterns: free text until the model starts a call) or
    ``"none"`` (returns None). ``schema_to_gbnf`` converts one schema to a GBNF grammar with a
    ``root`` rule; it defaults to compact JSON with only the named properties
    (:func:`llamabind.chat.response_format.tool_arguments_gbnf`).
    """
    fmt = ToolCallFormat(fmt)
    if tool_choice is None:
        tool_choice = "auto"
    if tool_choice == "none" or not tools:
        if tool_choice not in ("none", "auto"):
            raise ToolChoiceError("tool_choice requires a non-empty tools list", param="tool_choice")
        return None
    functions = [_tool_function(tool, i) for i, tool in enumerate(tools)]
    seen: set[str] = set()
    for name, _ in functions:
        if name in seen:
            raise ToolChoiceError(f"duplicate tool name {name!r}", param="tools")
        seen.add(name)
    chosen = _chosen_name(tool_choice)
    if chosen is not None:
        functions = [f for f in functions if f[0] == chosen]
        if not functions:
            raise ToolChoiceError(
                f"tool_choice names {chosen!r}, which is not among the tools", param="tool_choice"
            )
        parallel_tool_calls = False
        lazy = False
    elif tool_choice == "required":
        lazy = False
    elif tool_choice == "auto":
        lazy = True
    else:
        raise ToolChoiceError(f"unsupported tool_choice {tool_choice!r}", param="tool_choice")

    if schema_to_gbnf is None:
        from .response_format import tool_arguments_gbnf

        schema_to_gbnf = tool_arguments_gbnf

    if fmt in BLOCK_FORMATS:  # marked-block formats build their own (tool_blocks)
        text, block_words, block_patterns = block_grammar(fmt, functions, parallel_tool_calls, schema_to_gbnf)
        if not lazy:
            return ToolGrammar(grammar=text, lazy=False)
        return ToolGrammar(text, lazy=True, trigger_patterns=block_patterns, trigger_words=block_words)
    if fmt in NATIVE_OUTPUT_FORMATS:  # harmony, functionary_v3_2: their own modules
        text, triggers, markers = native_grammar(
            fmt, functions, lazy=lazy, parallel=parallel_tool_calls, schema_to_gbnf=schema_to_gbnf
        )
        if not lazy:
            return ToolGrammar(grammar=text, lazy=False)
        return ToolGrammar(grammar=text, lazy=True, trigger_patterns=triggers, trigger_words=markers)

    args_key = "parameters" if fmt is ToolCallFormat.LLAMA3 else "arguments"
    # The generic format is JSON the model is only told about: compact, so a small model spends its
    # tokens on the call. Native formats keep the one space or newline their templates show.
    sp_rule = f'{_SP} ::= ""' if fmt is ToolCallFormat.GENERIC else f'{_SP} ::= ( " " | "\\n" )?'

    rules: list[str] = []
    alternatives: list[str] = []
    for i, (name, schema) in enumerate(functions):
        if fmt is ToolCallFormat.QWEN3_CODER:
            call_rule, xml_rules = xml_call_rule(i, name, schema, schema_to_gbnf)
            rules.extend(xml_rules)
            alternatives.append(call_rule)
            continue
        prefix = f"t{i}-"
        sub = prefix_rules(schema_to_gbnf(schema), prefix)
        rules.append(sub.strip())
        call_rule = f"tc-call-{i}"
        alternatives.append(call_rule)
        rules.append(
            f'{call_rule} ::= "{{" {_SP} {json_string_literal("name")} {_SP} ":" {_SP} '
            f'{json_string_literal(name)} {_SP} "," {_SP} {json_string_literal(args_key)} {_SP} ":" {_SP} '
            f'{prefix}root {_SP} "}}"'
        )
    rules.append("tc-call ::= " + " | ".join(alternatives))
    rules.append(sp_rule)

    words: tuple[str, ...]
    patterns: tuple[str, ...]
    if fmt is ToolCallFormat.QWEN3_CODER:
        one = f"{gbnf_literal(_HERMES_OPEN + chr(10))} tc-call {gbnf_literal(chr(10) + _HERMES_CLOSE)}"
        root = 'root ::= tc-one ("\\n" tc-one)*' if parallel_tool_calls else "root ::= tc-one"
        head = [root, f"tc-one ::= {one}"]
        words = (_HERMES_OPEN,)
        patterns = (r"[\s\S]*?(" + re.escape(_HERMES_OPEN) + r")[\s\S]*",)
    elif fmt is ToolCallFormat.HERMES:
        one = f"{gbnf_literal(_HERMES_OPEN)} {_SP} tc-call {_SP} {gbnf_literal(_HERMES_CLOSE)}"
        root = f"root ::= tc-one ({_SP} tc-one)*" if parallel_tool_calls else "root ::= tc-one"
        head = [root, f"tc-one ::= {one}"]
        words = (_HERMES_OPEN,)
        patterns = (r"[\s\S]*?(" + re.escape(_HERMES_OPEN) + r")[\s\S]*",)
    elif fmt is ToolCallFormat.MISTRAL:
        calls = f'tc-call ({_SP} "," {_SP} tc-call)*' if parallel_tool_calls else "tc-call"
        head = [f'root ::= {gbnf_literal(_MISTRAL_OPEN)} "[" {_SP} {calls} {_SP} "]"']
        words = (_MISTRAL_OPEN,)
        patterns = (r"[\s\S]*?(" + re.escape(_MISTRAL_OPEN) + r")[\s\S]*",)
    elif fmt is ToolCallFormat.LLAMA3:
        more = f'({_SP} ";" {_SP} tc-call)*' if parallel_tool_calls else ""
        tag = f"({gbnf_literal(_PYTHON_TAG)} {_SP})? " if lazy else ""
        head = [f"root ::= {tag}tc-call {more}".rstrip()]
        words = (_PYTHON_TAG,)
        patterns = (
            r"[\s\S]*?(" + re.escape(_PYTHON_TAG) + r")[\s\S]*",
            # inside the capture only what the grammar's tc-ws takes: the grammar replays it
            _WS_RE + r'(\{[ \n]?"name"[ \n]?:)[\s\S]*',
        )
    else:
        calls = f'tc-call ({_SP} "," {_SP} tc-call)*' if parallel_tool_calls else "tc-call"
        head = [
            f'root ::= "{{" {_SP} {json_string_literal("tool_calls")} {_SP} ":" {_SP} "[" {_SP} '
            f'{calls} {_SP} "]" {_SP} "}}"'
        ]
        words = ('{"tool_calls"',)
        patterns = (_WS_RE + r'(\{"tool_calls")[\s\S]*',)  # compact, as the grammar

    grammar = "\n".join(head + rules) + "\n"
    if not lazy:
        return ToolGrammar(grammar=grammar, lazy=False)
    return ToolGrammar(grammar=grammar, lazy=True, trigger_patterns=patterns, trigger_words=words)
