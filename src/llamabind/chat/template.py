"""Hugging Face-style Jinja chat templates, rendered exactly as ``transformers`` renders them.

The environment matches ``transformers.utils.chat_template_utils``: an
``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols``
extension (``{% break %}`` / ``{% continue %}``), a ``{% generation %}`` block (rendered as its
body), the globals ``raise_exception`` and ``strftime_now`` and a ``tojson`` filter that does not
HTML-escape (``ensure_ascii=False``, ``indent``, ``separators``, ``sort_keys``). The variables are
``messages``, ``tools``, ``documents``, ``add_generation_prompt``, ``bos_token``, ``eos_token`` and
any extra keyword (``enable_thinking``, ``date_string``, …).

When a model has no usable Jinja template, llama.cpp's built-in templates (``chatml``, ``llama3``, …)
are available through :meth:`ChatTemplate.builtin`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import ChatTemplateError
from .messages import normalize_messages

__all__ = [
    "CHAT_TEMPLATE_KEY",
    "DEFAULT_CHATML_TEMPLATE",
    "ChatTemplate",
    "ChatTemplateError",
    "chat_template_variants",
    "render_chat",
    "select_chat_template",
]

#: The GGUF metadata key of a model's default chat template; named variants are
#: ``tokenizer.chat_template.<name>`` (e.g. ``tool_use``).
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"

#: What llama.cpp uses when a model carries no template at all: plain ChatML.
DEFAULT_CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_TEMPLATE_FILENAME = "<template>"
_BUILTIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _GenerationExtension(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}``: transformers marks assistant tokens with it."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: Any) -> NoReturn:
    raise ChatTemplateError(str(message))


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Unlike Jinja's own tojson this does not HTML-escape, exactly like transformers; the lazy
    # sequences of Jinja's filters (``tools | map(attribute='function')``) are written as lists.
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        default=_json_sequence,
    )


def _json_sequence(value: Any) -> list[Any]:
    if isinstance(value, Iterator):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


@functools.lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationExtension, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _template_line(exc: BaseException) -> int | None:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    line: int | None = None
    tb = exc.__traceback__
    while tb is not None:
        # Jinja rewrites tracebacks so template frames carry the template's own line numbers.
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def _final_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        for part in reversed(content):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                return str(part["text"])
    raise ChatTemplateError("continue_final_message: the final message has no text content")


def _trim_after_final(rendered: str, final: str) -> str:
    # transformers' rule: cut the prompt right after the final message's text.
    stripped = final.strip()
    if stripped not in rendered:
        raise ChatTemplateError(
            "continue_final_message: the final message does not appear in the rendered prompt"
        )
    loc = rendered.rindex(stripped)
    if rendered[loc : loc + len(final.lstrip())] == final:
        return rendered[: loc + len(final.lstrip())]
    return rendered[: loc + len(stripped)]


class ChatTemplate:
    """A chat template: a Jinja source rendered in the sandbox, or one of llama.cpp's built-ins."""

    name: str

    def __init__(self, source: str, *, name: str = "custom") -> None:
        if not isinstance(source, str):
            raise TypeError("a chat template source must be a string")
        self.name = name
        self._source: str | None = source
        self._builtin: str | None = None
        try:
            self._compiled: jinja2.Template | None = _compile(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"chat template {name!r} does not compile: line {exc.lineno}: {exc.message}", exc.lineno
            ) from exc

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_string(cls, source: str, *, name: str = "custom") -> ChatTemplate:
        """A template from Jinja source text."""
        return cls(source, name=name)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ChatTemplate:
        """A template read from a Jinja file (UTF-8)."""
        try:
            with open(path, encoding="utf-8") as fh:
                source = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ChatTemplateError(f"cannot read chat template file {os.fspath(path)!r}: {exc}") from exc
        return cls(source, name=os.path.basename(os.fspath(path)))

    @classmethod
    def builtin(cls, name: str) -> ChatTemplate:
        """One of llama.cpp's built-in templates (``chatml``, ``llama3``, …; see :func:`builtin_names`)."""
        names = cls.builtin_names()
        if name not in names:
            raise ChatTemplateError(
                f"unknown built-in chat template {name!r}; llama.cpp knows: {', '.join(sorted(names))}"
            )
        obj = cls.__new__(cls)
        obj.name = name
        obj._source = None
        obj._builtin = name
        obj._compiled = None
        return obj

    @staticmethod
    def builtin_names() -> list[str]:
        """The names llama.cpp's ``llama_chat_apply_template`` implements (needs the native library)."""
        from .._native.chat import builtin_template_names

        return builtin_template_names()

    # -- properties ---------------------------------------------------------------------------

    @property
    def source(self) -> str | None:
        """The Jinja source, or None for a built-in template."""
        return self._source

    @property
    def is_builtin(self) -> bool:
        return self._builtin is not None

    @property
    def supports_tools(self) -> bool:
        """Whether the template refers to ``tools`` at all (built-ins never do)."""
        return self._source is not None and re.search(r"\btools\b", self._source) is not None

    def __repr__(self) -> str:
        kind = "builtin" if self.is_builtin else "jinja"
        return f"ChatTemplate({self.name!r}, {kind})"

    # -- rendering ----------------------------------------------------------------------------

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        bos_token: str = "",
        eos_token: str = "",
        **extra: Any,
    ) -> str:
        """Render template-ready ``messages`` (see :func:`~llamabind.chat.normalize_messages`).

        ``extra`` keywords become template variables (``enable_thinking=False``, …).
        ``continue_final_message`` cuts the prompt right after the last message, so the model
        continues it (transformers' semantics); it excludes ``add_generation_prompt``.
        """
        if add_generation_prompt and continue_final_message:
            raise ChatTemplateError("add_generation_prompt and continue_final_message are mutually exclusive")
        if continue_final_message and not messages:
            raise ChatTemplateError("continue_final_message needs at least one message")
        msgs = [dict(m) for m in messages]
        if self._builtin is not None:
            rendered = self._render_builtin(msgs, tools, documents, add_generation_prompt)
        else:
            rendered = self._render_jinja(
                msgs,
                tools=None if tools is None else list(tools),
                documents=None if documents is None else list(documents),
                add_generation_prompt=add_generation_prompt,
                variables={"bos_token": bos_token, "eos_token": eos_token, **extra},
            )
        if continue_final_message:
            rendered = _trim_after_final(rendered, _final_text(msgs[-1]))
        return rendered

    def _render_jinja(
        self,
        msgs: list[dict[str, Any]],
        *,
        tools: list[Any] | None,
        documents: list[Any] | None,
        add_generation_prompt: bool,
        variables: dict[str, Any],
    ) -> str:
        assert self._compiled is not None
        try:
            return self._compiled.render(
                messages=msgs,
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except ChatTemplateError as exc:
            # raise_exception(): keep the template's own message, add where it came from.
            if exc.line is None:
                exc.line = _template_line(exc)
            raise
        except Exception as exc:
            line = _template_line(exc)
            where = f" line {line}" if line is not None else ""
            raise ChatTemplateError(
                f"chat template {self.name!r}{where}: {type(exc).__name__}: {exc}", line
            ) from exc

    def _render_builtin(
        self,
        msgs: list[dict[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        documents: Sequence[Mapping[str, Any]] | None,
        add_generation_prompt: bool,
    ) -> str:
        from .._native.chat import apply_builtin_template

        assert self._builtin is not None
        if tools:
            raise ChatTemplateError(f"built-in chat template {self._builtin!r} cannot render tools")
        if documents:
            raise ChatTemplateError(f"built-in chat template {self._builtin!r} cannot render documents")
        pairs: list[tuple[str, str]] = []
        for i, msg in enumerate(msgs):
            role = msg.get("role")
            content = msg.get("content")
            if content is None:
                content = ""
            if not isinstance(role, str) or not isinstance(content, str):
                raise ChatTemplateError(
                    f"messages[{i}]: built-in templates need string role and content (normalise first)"
                )
            pairs.append((role, content))
        return apply_builtin_template(self._builtin, pairs, add_generation_prompt)


def chat_template_variants(metadata: Mapping[str, str]) -> dict[str, str]:
    """The chat templates in GGUF metadata: ``{"default": …, "tool_use": …, …}``."""
    variants: dict[str, str] = {}
    default = metadata.get(CHAT_TEMPLATE_KEY)
    if isinstance(default, str) and default:
        variants["default"] = default
    prefix = CHAT_TEMPLATE_KEY + "."
    for key, value in metadata.items():
        if key.startswith(prefix) and isinstance(value, str) and value:
            variants[key[len(prefix) :]] = value
    return variants


def select_chat_template(
    metadata: Mapping[str, str],
    *,
    template: str | None = None,
    template_file: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    use_tools: bool = False,
) -> ChatTemplate:
    """Pick the chat template for a model.

    Order: ``template_file``; ``template`` (a built-in name such as ``chatml`` when it looks like
    one, otherwise Jinja source); the GGUF variant ``variant`` (an error when missing); the
    ``tool_use`` variant when ``use_tools`` and the model has one; ``tokenizer.chat_template``;
    finally plain ChatML, as llama.cpp does for models without a template.
    """
    if template is not None and template_file is not None:
        raise ChatTemplateError("give either a chat template string or a chat template file, not both")
    if template_file is not None:
        return ChatTemplate.from_file(template_file)
    if template is not None:
        if "{" not in template and _BUILTIN_NAME.match(template.strip()):
            return ChatTemplate.builtin(template.strip())
        return ChatTemplate(template, name="custom")
    variants = chat_template_variants(metadata)
    if variant is not None:
        if variant not in variants:
            known = ", ".join(sorted(variants)) or "none"
            raise ChatTemplateError(f"the model has no chat template variant {variant!r} (it has: {known})")
        return ChatTemplate(variants[variant], name=f"gguf:{variant}")
    if use_tools and "tool_use" in variants:
        return ChatTemplate(variants["tool_use"], name="gguf:tool_use")
    if "default" in variants:
        return ChatTemplate(variants["default"], name="gguf")
    return ChatTemplate(DEFAULT_CHATML_TEMPLATE, name="chatml (default)")


def render_chat(
    template: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    media_marker: str | None = None,
    arguments_as_dict: bool = True,
    **extra: Any,
) -> str:
    """Normalise OpenAI-style ``messages`` and render them with the model's bos/eos token strings.

    The result may start with ``bos_token``: tokenize it with special-token parsing on and without
    adding another BOS.
    """
    normalized = normalize_messages(messages, media_marker=media_marker, arguments_as_dict=arguments_as_dict)
    return template.render(
        normalized,
        tools=tools,
        documents=documents,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        bos_token=bos_token,
        eos_token=eos_token,
        **extra,
    )
