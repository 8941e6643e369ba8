"""`Grammar`: a validated GBNF grammar and its start rule, from text, a file, a JSON Schema or the
built-in JSON grammars."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from llamabind.grammar.gbnf import JSON_ARRAY_GBNF, JSON_GBNF, JSON_OBJECT_GBNF, validate_gbnf

__all__ = ["Grammar"]


@dataclass(frozen=True)
class Grammar:
    """A validated GBNF grammar and its start rule; constructing one validates it."""

    text: str
    root: str = "root"

    def __post_init__(self) -> None:
        validate_gbnf(self.text, self.root)

    @classmethod
    def from_string(cls, text: str, root: str = "root") -> Grammar:
        return cls(text, root)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], root: str = "root") -> Grammar:
        with open(path, encoding="utf-8") as f:
            return cls(f.read(), root)

    @classmethod
    def from_json_schema(
        cls,
        schema: dict[str, Any] | bool,
        *,
        strict_properties: bool = True,
        whitespace: Literal["bounded", "compact"] = "bounded",
    ) -> Grammar:
        """Exactly the documents valid against `schema` (strict: see `json_schema_to_gbnf`; use
        `compile_json_schema` for schemas with keywords a grammar cannot enforce)."""
        from llamabind.grammar.json_schema import compile_json_schema  # it builds Grammars

        compiled = compile_json_schema(
            schema, strict=True, strict_properties=strict_properties, whitespace=whitespace
        )
        return compiled.grammar if cls is Grammar else cls(compiled.gbnf)

    @classmethod
    def json(cls) -> Grammar:
        """Any JSON value."""
        return cls(JSON_GBNF)

    @classmethod
    def json_object(cls) -> Grammar:
        """Any JSON object."""
        return cls(JSON_OBJECT_GBNF)

    @classmethod
    def json_array(cls) -> Grammar:
        """Any JSON array."""
        return cls(JSON_ARRAY_GBNF)
