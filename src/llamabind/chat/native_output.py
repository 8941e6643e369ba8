"""Output formats whose every turn is structured, tools or not: gpt-oss harmony, Functionary v3.2.

A model with such a template never writes plain content: gpt-oss writes channels (reasoning in
``analysis``, the answer in ``final``), Functionary v3.2 addresses every segment (``all`` for the
answer). So their parsers (:mod:`.tool_harmony`, :mod:`.tool_functionary`) read the whole output,
also for a request without tools (calls are then dropped), and take the place of the reasoning
split; the formatter detects them from the template (:func:`native_output_format`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeAlias

from ..grammar import Grammar
from ._gbnf_compose import prefix_rules
from .tool_calls import ToolCall, ToolCallFormat, detect_tool_call_format
from .tool_functionary import (
    FunctionaryStreamParser,
    functionary_answer_head,
    functionary_grammar,
    prompt_opens_functionary,
)
from .tool_harmony import HarmonyStreamParser, ReasoningText, harmony_answer_head, harmony_grammar

__all__ = [
    "NATIVE_OUTPUT_FORMATS",
    "NativeEvent",
    "NativeOutputParser",
    "ReasoningText",
    "arguments_as_text",
    "native_answer_grammar",
    "native_grammar",
    "native_output_format",
    "native_output_parser",
    "prompt_opens_native",
]

NATIVE_OUTPUT_FORMATS = frozenset({ToolCallFormat.HARMONY, ToolCallFormat.FUNCTIONARY_V3_2})

NativeEvent: TypeAlias = "str | ToolCall | ReasoningText"


class NativeOutputParser(Protocol):
    def feed(self, text: str) -> Sequence[NativeEvent]: ...

    def finish(self, truncated: bool = False) -> Sequence[NativeEvent]: ...


def native_output_format(template: str | None) -> ToolCallFormat | None:
    """The template's structured output format (harmony, functionary_v3_2), or None."""
    fmt = detect_tool_call_format(template)
    return fmt if fmt in NATIVE_OUTPUT_FORMATS else None


def arguments_as_text(template: str | None) -> bool:
    """Whether the template prints tool-call arguments as they came (a JSON string), not a dict:
    Functionary v3.2's appends them to a string."""
    return detect_tool_call_format(template) is ToolCallFormat.FUNCTIONARY_V3_2


def prompt_opens_native(fmt: ToolCallFormat, prompt: str) -> bool:
    """Whether the rendered prompt already opened the model's first segment (Functionary's ``>>>``)."""
    return fmt is ToolCallFormat.FUNCTIONARY_V3_2 and prompt_opens_functionary(prompt)


def native_output_parser(
    fmt: ToolCallFormat | str,
    *,
    tools: bool,
    tool_names: Iterable[str] | None = None,
    id_factory: Callable[[], str] | None = None,
    reasoning: bool = True,
    started: bool = True,
) -> NativeOutputParser:
    """The streaming parser of a structured output format."""
    fmt = ToolCallFormat(fmt)
    if fmt is ToolCallFormat.HARMONY:
        return HarmonyStreamParser(
            tools=tools, tool_names=tool_names, id_factory=id_factory, reasoning=reasoning
        )
    if fmt is ToolCallFormat.FUNCTIONARY_V3_2:
        return FunctionaryStreamParser(started=started, tools=tools, id_factory=id_factory)
    raise ValueError(f"{fmt.value} is not a structured output format")


def native_grammar(
    fmt: ToolCallFormat,
    functions: Sequence[tuple[str, Any]],
    *,
    lazy: bool,
    parallel: bool,
    schema_to_gbnf: Callable[[Any], str],
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(GBNF, trigger patterns, trigger words) forcing calls in a structured output format."""
    if fmt is ToolCallFormat.HARMONY:
        return harmony_grammar(functions, lazy=lazy, schema_to_gbnf=schema_to_gbnf)
    return functionary_grammar(functions, lazy=lazy, parallel=parallel, schema_to_gbnf=schema_to_gbnf)


def native_answer_grammar(fmt: ToolCallFormat, answer: Grammar, *, started: bool) -> Grammar:
    """``answer`` (a ``response_format`` grammar) inside the format's answer envelope.

    A structured-output model writes its answer in a message of its own: gpt-oss in the ``final``
    channel (after an optional ``analysis`` message, so it may still reason first), Functionary
    v3.2 in the ``all`` segment. Forcing the bare answer from the first token would push the model
    off its format; the envelope keeps it on, and the parser hands the answer over as content.
    ``started``: the prompt already opened the first segment (Functionary's ``>>>``).
    """
    body = prefix_rules(answer.text, "rf-").strip()
    if fmt is ToolCallFormat.HARMONY:
        head = harmony_answer_head("rf-" + answer.root)
    else:
        head = functionary_answer_head("rf-" + answer.root, started=started)
    return Grammar("\n".join([*head, body]) + "\n", "root")
