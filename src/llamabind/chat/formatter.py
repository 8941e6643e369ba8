"""Chat request → prompt text, prompt tokens and sampler constraints: :class:`ChatFormatter`.

The one place where a chat is rendered and tokenized. It renders OpenAI-style ``messages`` (and
``tools``) with the model's own chat template (or a user override), decides *once* whether a BOS
token must be added (:meth:`ChatFormatter.needs_bos`: the model wants one and the rendered text does
not already start with it), and maps ``response_format`` (``json_object`` / ``json_schema``), a raw
GBNF ``grammar`` and ``tool_choice`` (``required`` / named: a grammar; ``auto``: a lazy grammar with
trigger patterns) onto the sampler. The result is a :class:`PreparedChat`, which also makes the
:class:`~.stream_parser.ChatStreamParser` for the model's output.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import Model
from ..generation.sampling import SamplingParams
from ..grammar import CompiledSchema, Grammar
from .messages import ChatRequestError
from .native_output import (
    arguments_as_text,
    native_answer_grammar,
    native_output_format,
    prompt_opens_native,
)
from .reasoning import detect_reasoning_tags, prompt_opens_reasoning
from .response_format import response_format_schema, tool_arguments_gbnf
from .stream_parser import ChatMessage, ChatStreamParser
from .template import ChatTemplate, render_chat, select_chat_template
from .tool_blocks import BLOCK_FORMATS, describe_tools_natively
from .tool_call_grammar import tool_call_grammar
from .tool_calls import ToolCallFormat, ToolChoiceError, detect_tool_call_format
from .tool_harmony import harmony_messages, harmony_tools

__all__ = ["ChatFormatter", "PreparedChat", "model_chat_template"]


def _template_metadata(model: Model) -> dict[str, str]:
    return {
        ("tokenizer.chat_template" if k == "default" else f"tokenizer.chat_template.{k}"): v
        for k, v in model.chat_templates().items()
    }


def model_chat_template(
    model: Model, *, template: str | None = None, template_file: str | None = None, use_tools: bool = False
) -> ChatTemplate:
    """The model's template (GGUF metadata), or the user's override (string, file or builtin name)."""
    return select_chat_template(
        _template_metadata(model), template=template, template_file=template_file, use_tools=use_tools
    )


_TOOLS_SYSTEM_PROMPT = (
    "You can call the following tools (JSON schemas of their parameters):\n{tools}\n\n"
    "To call one or more tools, reply with only a JSON object of the form "
    '{{"tool_calls": [{{"name": "<tool name>", "arguments": {{<arguments>}}}}]}} and nothing else. '
    "Otherwise answer normally."
)


def _inline_tools(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """For templates that know nothing of tools: describe them in the system message and turn earlier
    assistant tool calls into the JSON the model is asked to write."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg = dict(m)
        calls = msg.get("tool_calls") if msg.get("role") == "assistant" else None
        if calls:
            items: list[dict[str, Any]] = []
            for c in calls:
                fn = c.get("function", c) if isinstance(c, Mapping) else {}
                args: Any = fn.get("arguments") if isinstance(fn, Mapping) else None
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        pass
                name = fn.get("name") if isinstance(fn, Mapping) else None
                items.append({"name": name, "arguments": args if args is not None else {}})
            text = msg.get("content")
            prefix = text if isinstance(text, str) and text else ""
            msg["content"] = (prefix + "\n" if prefix else "") + json.dumps(
                {"tool_calls": items}, ensure_ascii=False
            )
            msg.pop("tool_calls", None)
        out.append(msg)
    if tools:
        described = json.dumps([t.get("function", t) for t in tools], ensure_ascii=False, indent=1)
        note = _TOOLS_SYSTEM_PROMPT.format(tools=described)
        if out and out[0].get("role") in ("system", "developer") and isinstance(out[0].get("content"), str):
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + note}
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


_formatter_lock = threading.Lock()


@dataclass
class PreparedChat:
    """A rendered, tokenized chat request and the constraints its sampler needs.

    ``tokens``: the prompt's token ids (empty when prepared with ``tokenize=False``: a prompt with
    media, which libmtmd tokenizes); ``add_bos``: whether a BOS token had to be added in front of
    ``prompt`` (:meth:`ChatFormatter.needs_bos`; pass it as ``add_special`` to libmtmd).
    """

    prompt: str
    tokens: list[int]
    grammar: Any = None  # Grammar | GBNF text | None
    grammar_lazy: bool = False
    grammar_trigger_patterns: tuple[str, ...] = ()
    tool_format: ToolCallFormat | None = None  # None: no tool-call parsing
    tool_names: tuple[str, ...] = ()
    reasoning_tags: tuple[str, str] | None = None
    reasoning_started: bool = False
    add_bos: bool = False
    schema: CompiledSchema | None = None  # response_format's schema: the output is validated against it
    native_format: ToolCallFormat | None = None  # harmony / functionary_v3_2 output, tools or not
    native_started: bool = False  # the prompt opened the format's first segment (Functionary's >>>)
    native_reasoning: bool = True  # harmony's analysis channel is reasoning_content (else content)

    @property
    def render_special(self) -> bool:
        """Whether the output must keep special-token text: tool-call markers can be special tokens."""
        return self.tool_format is not None or self.native_format is not None

    def sampling(self, base: SamplingParams | None = None) -> SamplingParams:
        """``base`` with this request's grammar (if any)."""
        sp = base if base is not None else SamplingParams()
        if self.grammar is None:
            return sp
        return sp.replace(
            grammar=self.grammar,
            grammar_lazy=self.grammar_lazy,
            grammar_trigger_patterns=self.grammar_trigger_patterns,
        )

    def parser(self, id_factory: Callable[[], str] | None = None) -> ChatStreamParser:
        return ChatStreamParser(
            tool_format=self.tool_format,
            tool_names=self.tool_names or None,
            reasoning_tags=self.reasoning_tags,
            reasoning_started=self.reasoning_started,
            id_factory=id_factory,
            schema=self.schema,
            native_format=self.native_format,
            native_started=self.native_started,
            native_reasoning=self.native_reasoning,
        )

    def parse(self, text: str, finish_reason: str = "stop", *, closed: bool = False) -> ChatMessage:
        """Non-streaming: the whole output as one assistant message (``closed``: see
        :meth:`ChatStreamParser.finish`)."""
        p = self.parser()
        p.feed(text)
        return p.message(finish_reason, closed=closed)


class ChatFormatter:
    """Renders chat requests for one model. Thread-safe (it holds no mutable state).

    ``template``: a :class:`ChatTemplate`, Jinja source or a llama.cpp built-in name (``chatml``);
    ``template_file``: a Jinja file. By default the model's own template (its ``tool_use`` variant
    for requests with tools, when it has one), else ChatML.
    ``reasoning``: split ``<think>`` blocks off into ``reasoning_content`` (when the template uses them).
    """

    def __init__(
        self,
        model: Model,
        template: ChatTemplate | str | None = None,
        *,
        template_file: str | None = None,
        reasoning: bool = True,
    ) -> None:
        self.model = model
        vocab = model.vocab
        self.bos_token = vocab.token_text(vocab.bos) if vocab.bos is not None else ""
        self.eos_token = vocab.token_text(vocab.eos) if vocab.eos is not None else ""
        self.reasoning = reasoning
        if isinstance(template, ChatTemplate):
            self.template = template
            self._tool_template = template
        else:
            meta = _template_metadata(model)
            self.template = select_chat_template(meta, template=template, template_file=template_file)
            self._tool_template = (
                self.template
                if template is not None or template_file is not None
                else select_chat_template(meta, use_tools=True)
            )

    def template_for(self, tools: bool) -> ChatTemplate:
        return self._tool_template if tools else self.template

    def tool_format(self, tools: bool = True) -> ToolCallFormat:
        tpl = self.template_for(tools)
        fmt = detect_tool_call_format(tpl.source)
        # a template that renders native calls but no tool list keeps its format (see render)
        return fmt if tpl.supports_tools or fmt in BLOCK_FORMATS else ToolCallFormat.GENERIC

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: Mapping[str, Any] | None = None,
        media_marker: str | None = None,
    ) -> str:
        """The prompt text (may start with the BOS string: see :meth:`tokenize`)."""
        tpl = self.template_for(bool(tools))
        msgs: Sequence[Mapping[str, Any]] = messages
        pass_tools = tools
        if not tpl.supports_tools and (tools or any(m.get("tool_calls") for m in messages)):
            fmt = detect_tool_call_format(tpl.source)
            # native calls rendered by the template; the tools described in the system message
            native = fmt in BLOCK_FORMATS
            msgs = describe_tools_natively(messages, tools, fmt) if native else _inline_tools(messages, tools)
            pass_tools = None
        elif native_output_format(tpl.source) is ToolCallFormat.HARMONY:
            msgs = harmony_messages(messages)
            pass_tools = harmony_tools(tools) if tools else None
        return render_chat(
            tpl,
            msgs,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            tools=list(pass_tools) if pass_tools else None,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            media_marker=media_marker,
            arguments_as_dict=not arguments_as_text(tpl.source),
            **dict(template_kwargs or {}),
        )

    def needs_bos(self, prompt: str) -> bool:
        """The one BOS decision for a rendered prompt: the model adds a BOS token and the template did
        not already write it (so the tokenizer — ours or libmtmd's — must add it)."""
        vocab = self.model.vocab
        if not vocab.add_bos or vocab.bos is None:
            return False
        return not (self.bos_token and prompt.startswith(self.bos_token))

    def tokenize(self, prompt: str) -> list[int]:
        """Tokenize a rendered prompt: special tokens parsed, BOS added only if :meth:`needs_bos`."""
        tokens = self.model.tokenize(prompt, add_special=False, parse_special=True)
        bos = self.model.vocab.bos
        if bos is not None and self.needs_bos(prompt):
            tokens.insert(0, bos)
        return tokens

    @classmethod
    def for_model(cls, model: Model, template: ChatTemplate | str | None = None) -> ChatFormatter:
        """One cached formatter per (model, template): its setup reads the GGUF metadata once."""
        key = template if isinstance(template, (str, type(None))) else id(template)
        with _formatter_lock:
            cache: dict[Any, ChatFormatter] | None = getattr(model, "_lb_chat_formatters", None)
            if cache is None:
                cache = {}
                model._lb_chat_formatters = cache  # type: ignore[attr-defined]
            f = cache.get(key)
            if f is None:  # the formatter keeps ``template`` alive, so its id stays unique
                f = cls(model, template)
                cache[key] = f
            return f

    def prepare(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = True,
        response_format: Mapping[str, Any] | None = None,
        grammar: Any = None,
        add_generation_prompt: bool | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        reasoning: bool | None = None,
        media_marker: str | None = None,
        tokenize: bool = True,
    ) -> PreparedChat:
        """Render and tokenize a request and work out its sampler constraints.

        ``add_generation_prompt=None``: on, unless the last message is a non-empty assistant
        message without tool calls, which the model then continues (assistant prefill, as
        llama.cpp's server does). ``media_marker``: what media parts render as (the projector's
        marker); ``tokenize=False`` leaves ``tokens`` empty (the prompt has media: libmtmd tokenizes it).
        """
        if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
            raise ChatRequestError("messages must be a non-empty list", "messages")
        if tools is not None and not isinstance(tools, Sequence):
            raise ChatRequestError("tools must be a list", "tools")
        tools = list(tools or [])
        if tool_choice is None:
            tool_choice = "auto"
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            raise ChatRequestError(
                f"tool_choice must be 'auto', 'none', 'required' or a function, not {tool_choice!r}",
                "tool_choice",
            )
        if tool_choice != "none" and tool_choice != "auto" and not tools:
            raise ChatRequestError("tool_choice requires a non-empty tools list", "tool_choice")
        use_tools = bool(tools) and tool_choice != "none"

        constraint: Any = None
        if grammar is not None:
            if isinstance(grammar, Grammar):
                constraint = grammar
            elif isinstance(grammar, str):
                constraint = Grammar.from_string(grammar)
            else:
                raise ChatRequestError("grammar must be a GBNF string", "grammar")
        fmt_grammar, schema = response_format_schema(response_format)
        if fmt_grammar is not None:
            if constraint is not None:
                raise ChatRequestError("give either grammar or response_format, not both", "response_format")
            constraint = fmt_grammar

        fmt = self.tool_format(use_tools) if use_tools else None
        lazy = False
        patterns: tuple[str, ...] = ()
        names: tuple[str, ...] = ()
        if use_tools:
            assert fmt is not None
            try:
                tg = tool_call_grammar(
                    tools,
                    tool_choice,
                    fmt,
                    parallel_tool_calls=parallel_tool_calls,
                    schema_to_gbnf=tool_arguments_gbnf,
                )
            except ToolChoiceError as exc:
                raise ChatRequestError(str(exc), exc.param) from exc
            names = tuple(_tool_names(tools))
            if tg is not None:
                if not tg.lazy:
                    if constraint is not None:
                        raise ChatRequestError(
                            "tool_choice 'required' or a named function cannot be combined with "
                            "response_format or grammar",
                            "tool_choice",
                        )
                    constraint = Grammar(tg.grammar, tg.root)
                elif constraint is None:
                    constraint = Grammar(tg.grammar, tg.root)
                    lazy = True
                    patterns = tg.trigger_patterns

        last = messages[-1]
        prefill = (
            isinstance(last, Mapping)
            and last.get("role") == "assistant"
            and isinstance(last.get("content"), str)
            and bool(last.get("content"))
            and not last.get("tool_calls")
        )
        if add_generation_prompt is None:
            add_generation_prompt = not prefill
        continue_final = not add_generation_prompt and prefill
        prompt = self.render(
            messages,
            tools=tools if use_tools else None,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final,
            template_kwargs=template_kwargs,
            media_marker=media_marker,
        )
        tokens = self.tokenize(prompt) if tokenize else []
        tags: tuple[str, str] | None = None
        started = False
        native = native_output_format(self.template_for(use_tools).source)
        native_started = native is not None and prompt_opens_native(native, prompt)
        if native is not None and fmt_grammar is not None and constraint is fmt_grammar:
            # the answer goes in the format's own message (gpt-oss's final channel, Functionary's all)
            constraint = native_answer_grammar(native, fmt_grammar, started=native_started)
        split = self.reasoning if reasoning is None else reasoning
        if split and native is None:
            tags = detect_reasoning_tags(self.template_for(use_tools).source)
            if tags is not None:
                started = prompt_opens_reasoning(prompt, tags)
        return PreparedChat(
            prompt=prompt,
            tokens=tokens,
            grammar=constraint,
            grammar_lazy=lazy,
            grammar_trigger_patterns=patterns,
            tool_format=fmt,
            tool_names=names,
            reasoning_tags=tags,
            reasoning_started=started,
            add_bos=self.needs_bos(prompt),
            schema=schema,
            native_format=native,
            native_started=native_started,
            native_reasoning=split,
        )


def _tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for t in tools:
        fn = t.get("function", t)
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names
