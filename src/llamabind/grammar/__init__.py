"""GBNF grammars for llama.cpp's grammar sampler: validation, JSON grammars and JSON Schema conversion.

Pure Python: nothing here touches the native library, so every grammar handed to it is
already known to be one llama.cpp accepts.
"""

from __future__ import annotations

from llamabind.grammar.completion import Completion, GrammarRecognizer, recognizer_for
from llamabind.grammar.gbnf import (
    JSON_ARRAY_GBNF,
    JSON_GBNF,
    JSON_OBJECT_GBNF,
    ParsedGrammar,
    parse_gbnf,
    validate_gbnf,
)
from llamabind.grammar.grammar import Grammar
from llamabind.grammar.json_schema import CompiledSchema, compile_json_schema, json_schema_to_gbnf

__all__ = [
    "JSON_ARRAY_GBNF",
    "JSON_GBNF",
    "JSON_OBJECT_GBNF",
    "CompiledSchema",
    "Completion",
    "Grammar",
    "GrammarRecognizer",
    "ParsedGrammar",
    "compile_json_schema",
    "json_schema_to_gbnf",
    "parse_gbnf",
    "recognizer_for",
    "validate_gbnf",
]
