"""The ``llamabind serve`` flags of the request limits (``llamabind.server.limits.Limits``): one flag
per field, its default shown in ``--help``. Kept free of server imports so ``--help`` stays fast;
``DEFAULTS`` mirrors ``Limits()`` (a test keeps the two equal)."""

from __future__ import annotations

import argparse
from typing import Any

from ..common import UsageError

__all__ = ["DEFAULTS", "LIMIT_FLAGS", "add_limit_args", "byte_size", "limits_from_args"]

_UNITS = {"": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}
_UNITS |= {"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def byte_size(text: str) -> int:
    """``1048576``, ``512K``, ``16M``, ``1G`` (binary units) → bytes (> 0)."""
    s = text.strip().lower()
    digits = s.rstrip("kmgib")
    unit = s[len(digits) :]
    if not digits.isdigit() or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a size like 1048576, 512K or 16M, got {text!r}")
    value = int(digits) * _UNITS[unit]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# (Limits field, flag, is a byte size, help)
LIMIT_FLAGS: tuple[tuple[str, str, bool, str], ...] = (
    ("max_body", "--max-body", True, "largest request body (413 above; /v1/files has --files-max-bytes)"),
    ("max_json_depth", "--max-json-depth", False, "deepest JSON nesting in a body or tool-call arguments"),
    ("max_messages", "--max-messages", False, "messages per chat request"),
    (
        "max_input_chars",
        "--max-input-chars",
        False,
        "characters of text per request (messages, prompts, inputs)",
    ),
    ("max_inputs", "--max-inputs", False, "prompts, embeddings inputs or rerank documents per request"),
    ("max_input_tokens", "--max-input-tokens", False, "token ids per request (token prompts, /detokenize)"),
    ("max_stop", "--max-stop", False, "stop strings per request"),
    ("max_stop_chars", "--max-stop-chars", False, "characters of one stop string"),
    ("max_logit_bias", "--max-logit-bias", False, "logit_bias entries per request"),
    ("max_logit_bias_key_chars", "--max-logit-bias-key-chars", False, "characters of a logit_bias text key"),
    ("max_dry_breakers", "--max-dry-breakers", False, "dry_sequence_breakers per request"),
    ("max_dry_breaker_chars", "--max-dry-breaker-chars", False, "characters of one DRY sequence breaker"),
    ("max_grammar_bytes", "--max-grammar-bytes", True, "largest GBNF grammar"),
    ("max_tools", "--max-tools", False, "tools per request"),
    ("max_tools_bytes", "--max-tools-bytes", True, "largest tools list (its JSON)"),
    (
        "max_template_kwargs_bytes",
        "--max-template-kwargs-bytes",
        True,
        "largest chat_template_kwargs (its JSON)",
    ),
)

#: the defaults of ``llamabind.server.limits.Limits``
DEFAULTS: dict[str, int] = {
    "max_body": 16 << 20,
    "max_json_depth": 64,
    "max_messages": 1024,
    "max_input_chars": 4_000_000,
    "max_inputs": 2048,
    "max_input_tokens": 1_000_000,
    "max_stop": 16,
    "max_stop_chars": 256,
    "max_logit_bias": 1024,
    "max_logit_bias_key_chars": 256,
    "max_dry_breakers": 8,
    "max_dry_breaker_chars": 40,
    "max_grammar_bytes": 128 << 10,
    "max_tools": 128,
    "max_tools_bytes": 1 << 20,
    "max_template_kwargs_bytes": 64 << 10,
}


def _shown(value: int, is_bytes: bool) -> str:
    if is_bytes:
        for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
            if value % size == 0:
                return f"{value // size}{unit}"
    return str(value)


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    """The ``request limits`` flag group."""
    g = parser.add_argument_group(
        "request limits (violations are answered 400/413 naming the field, before any work is queued)"
    )
    for name, flag, is_bytes, text in LIMIT_FLAGS:
        g.add_argument(
            flag,
            dest=f"limit_{name}",
            type=byte_size if is_bytes else _count,
            default=DEFAULTS[name],
            metavar="BYTES" if is_bytes else "N",
            help=f"{text} (default {_shown(DEFAULTS[name], is_bytes)})",
        )


def limits_from_args(args: argparse.Namespace) -> Any:
    """The ``Limits`` the flags describe."""
    from ...server.limits import Limits

    try:
        return Limits(**{name: getattr(args, f"limit_{name}") for name, *_ in LIMIT_FLAGS})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
