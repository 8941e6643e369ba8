"""llama.cpp's built-in (non-Jinja) chat templates: ``llama_chat_builtin_templates`` and
``llama_chat_apply_template``. Needs no model and no backend initialisation."""

from __future__ import annotations

import ctypes
from typing import Any

from ..errors import TemplateError

__all__ = ["apply_builtin_template", "builtin_template_names"]


def _ll() -> Any:
    # Imported lazily: loading libllama is deferred until a built-in template is actually used.
    from .lib import ll

    return ll()


def builtin_template_names() -> list[str]:
    """Names of the templates llama.cpp implements natively (``chatml``, ``llama3``, …)."""
    lib = _ll()
    count = int(lib.llama_chat_builtin_templates(None, 0))
    if count <= 0:
        return []
    names = (ctypes.c_char_p * count)()
    got = int(lib.llama_chat_builtin_templates(names, count))
    out: list[str] = []
    for i in range(min(count, got)):
        raw = names[i]
        if raw is not None:
            out.append(raw.decode("utf-8", errors="replace"))
    return out


def apply_builtin_template(name: str, messages: list[tuple[str, str]], add_assistant: bool) -> str:
    """Format ``(role, content)`` pairs with the built-in template ``name``.

    ``name`` is a built-in template name; llama.cpp also accepts a template's source text, which it
    matches heuristically against its built-ins. Raises TemplateError when it matches none.
    """
    lib = _ll()
    encoded: list[tuple[bytes, bytes]] = []
    total = 0
    for role, content in messages:
        if "\0" in role or "\0" in content:
            raise TemplateError("chat messages must not contain NUL characters")
        pair = (role.encode("utf-8"), content.encode("utf-8"))
        total += len(pair[0]) + len(pair[1])
        encoded.append(pair)
    chat = (lib.llama_chat_message * max(1, len(encoded)))()
    for i, (role_b, content_b) in enumerate(encoded):
        chat[i].role = role_b
        chat[i].content = content_b
    tmpl = name.encode("utf-8")
    size = max(256, 2 * total + 256)
    for _ in range(3):
        buf = ctypes.create_string_buffer(size)
        n = int(lib.llama_chat_apply_template(tmpl, chat, len(encoded), bool(add_assistant), buf, size))
        if n < 0:
            raise TemplateError(f"unknown built-in chat template {name!r}")
        if n <= size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n + 1
    raise TemplateError(f"built-in chat template {name!r}: output size kept changing")  # pragma: no cover
