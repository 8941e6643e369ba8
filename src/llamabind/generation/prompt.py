"""Turning chat messages into prompt tokens with the model's own template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..chat import ChatTemplate, render_chat, select_chat_template
from ..core import Model

__all__ = ["chat_prompt_tokens", "model_chat_template", "special_token_text", "tokenize_rendered"]


def special_token_text(model: Model, token: int | None) -> str:
    if token is None:
        return ""
    return model.vocab.token_to_piece(token, special=True).decode("utf-8", "replace")


def model_chat_template(
    model: Model, *, template: str | None = None, template_file: str | None = None, use_tools: bool = False
) -> ChatTemplate:
    """The model's template (GGUF metadata), or the user's override (string, file or builtin name)."""
    return select_chat_template(
        model.metadata, template=template, template_file=template_file, use_tools=use_tools
    )


def tokenize_rendered(model: Model, text: str) -> list[int]:
    """Tokenize a rendered chat prompt: special tokens parsed, BOS added only if the template did not."""
    bos = model.vocab.bos
    bos_text = special_token_text(model, bos)
    add_bos = model.vocab.add_bos and not (bos_text and text.startswith(bos_text))
    tokens = model.tokenize(text, add_special=False, parse_special=True)
    if add_bos and bos is not None:
        tokens.insert(0, bos)
    return tokens


def chat_prompt_tokens(
    model: Model,
    template: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    **kwargs: Any,
) -> tuple[str, list[int]]:
    """Render ``messages`` with ``template`` and tokenize; returns (text, tokens)."""
    text = render_chat(
        template,
        messages,
        bos_token=special_token_text(model, model.vocab.bos),
        eos_token=special_token_text(model, model.vocab.eos),
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )
    return text, tokenize_rendered(model, text)
