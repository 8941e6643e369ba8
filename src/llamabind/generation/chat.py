"""Chat requests → prompt tokens + sampling constraints, and model output → an assistant message.

Shared by the OpenAI-compatible server, the library-level :func:`chat` and the CLI chat REPL:

* :class:`ChatFormatter` renders OpenAI-style ``messages`` (and ``tools``) with the model's own
  chat template (or a user override) through :mod:`llamabind.chat`, tokenizes the prompt without
  a double BOS, and maps ``response_format`` (``json_object`` / ``json_schema``), a raw GBNF
  ``grammar`` and ``tool_choice`` (``required`` / named: a grammar; ``auto``: a lazy grammar with
  trigger patterns) onto the sampler. The result is a :class:`PreparedChat`.
* :class:`ChatStreamParser` turns generated text deltas into :class:`ChatDelta` s — content,
  ``reasoning_content`` and tool-call deltas by index — and gives the final ``finish_reason``
  (``tool_calls`` when the turn called tools). :meth:`PreparedChat.parse` is the same parser fed once.
* :func:`chat` / :func:`chat_stream`: single-user chat on top of :class:`Generator`, with KV prefix
  reuse across turns.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..chat import (
    ChatTemplate,
    ReasoningStreamSplitter,
    ToolCall,
    ToolCallFormat,
    ToolCallStreamParser,
    ToolChoiceError,
    detect_reasoning_tags,
    detect_tool_call_format,
    prompt_opens_reasoning,
    render_chat,
    select_chat_template,
    tool_call_grammar,
)
from ..core import Context, Model
from ..errors import LlamabindError
from ..grammar import Grammar
from .generator import Generator, Timings
from .logprobs import TokenLogprob
from .prompt import tokenize_rendered

if TYPE_CHECKING:
    from .draft import Drafter
from .sampling import SamplingParams

__all__ = [
    "ChatChunk",
    "ChatDelta",
    "ChatFormatter",
    "ChatMessage",
    "ChatRequestError",
    "ChatResult",
    "ChatStreamParser",
    "PreparedChat",
    "ToolCallDelta",
    "chat",
    "chat_stream",
    "closed_schema",
    "response_format_grammar",
]


class ChatRequestError(LlamabindError, ValueError):
    """A chat request is inconsistent (``param`` names the offending request field)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# ------------------------------------------------------------------------------------------------
# output types
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallDelta:
    """A tool call in a stream: ``index`` counts the calls of the turn; ``id``/``name`` come once."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        fn: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
            out["type"] = "function"
        if self.name is not None:
            fn["name"] = self.name
        fn["arguments"] = self.arguments
        out["function"] = fn
        return out


@dataclass(frozen=True)
class ChatDelta:
    """One piece of a streamed assistant turn (fields that did not change are None / empty)."""

    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()

    def to_openai(self) -> dict[str, Any]:
        """The ``delta`` object of a ``chat.completion.chunk`` choice."""
        out: dict[str, Any] = {}
        if self.content is not None:
            out["content"] = self.content
        if self.reasoning_content is not None:
            out["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            out["tool_calls"] = [t.to_openai() for t in self.tool_calls]
        return out


@dataclass
class ChatMessage:
    """A parsed assistant turn."""

    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"

    def to_openai(self) -> dict[str, Any]:
        """The ``message`` object of a chat completion choice."""
        out: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning_content is not None:
            out["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return out


class ChatStreamParser:
    """Generated text deltas → :class:`ChatDelta` s: reasoning split first, then tool calls.

    ``tool_format=None`` disables tool-call parsing (a request without tools, or
    ``tool_choice="none"``). ``reasoning_tags=None`` disables the reasoning split.
    """

    def __init__(
        self,
        *,
        tool_format: ToolCallFormat | str | None = None,
        tool_names: Sequence[str] | None = None,
        reasoning_tags: tuple[str, str] | None = None,
        reasoning_started: bool = False,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self._reasoning = (
            ReasoningStreamSplitter(reasoning_tags[0], reasoning_tags[1], started=reasoning_started)
            if reasoning_tags is not None
            else None
        )
        self._tools = (
            ToolCallStreamParser(tool_format, tool_names=tool_names, id_factory=id_factory)
            if tool_format is not None
            else None
        )
        self._content: list[str] = []
        self._reasoning_text: list[str] = []
        self._calls: list[ToolCall] = []
        self._finished = False

    @property
    def content(self) -> str:
        return "".join(self._content)

    @property
    def reasoning_content(self) -> str | None:
        text = "".join(self._reasoning_text)
        return text or None

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, text: str) -> list[ChatDelta]:
        if self._finished:
            raise RuntimeError("ChatStreamParser.feed() after finish()")
        if not text:
            return []
        if self._reasoning is not None:
            d = self._reasoning.feed(text)
            return self._route(d.reasoning, d.content, final=False)
        return self._route("", text, final=False)

    def finish(self, finish_reason: str = "stop") -> tuple[list[ChatDelta], str]:
        """The deltas still held back, and the turn's finish reason (``tool_calls`` if it called any)."""
        out: list[ChatDelta] = []
        if not self._finished:
            self._finished = True
            if self._reasoning is not None:
                d = self._reasoning.finish()
                out = self._route(d.reasoning, d.content, final=True)
            else:
                out = self._route("", "", final=True)
        reason = finish_reason
        if self._calls and finish_reason == "stop":
            reason = "tool_calls"
        return out, reason

    def _route(self, reasoning: str, content: str, *, final: bool) -> list[ChatDelta]:
        out: list[ChatDelta] = []
        if reasoning:
            self._reasoning_text.append(reasoning)
            out.append(ChatDelta(reasoning_content=reasoning))
        if self._tools is None:
            if content:
                self._content.append(content)
                out.append(ChatDelta(content=content))
            return out
        events = self._tools.feed(content) if content else []
        if final:
            events = events + self._tools.finish()
        for ev in events:
            if isinstance(ev, str):
                if ev:
                    self._content.append(ev)
                    out.append(ChatDelta(content=ev))
            else:
                index = len(self._calls)
                self._calls.append(ev)
                out.append(ChatDelta(tool_calls=(ToolCallDelta(index, ev.id, ev.name, ev.arguments),)))
        return out

    def message(self, finish_reason: str = "stop") -> ChatMessage:
        """Finish (if not yet) and return the whole parsed message."""
        _, reason = self.finish(finish_reason)
        content: str | None = self.content
        if self._calls and not content:
            content = None
        return ChatMessage(
            content=content,
            reasoning_content=self.reasoning_content,
            tool_calls=self.tool_calls,
            finish_reason=reason,
        )


# ------------------------------------------------------------------------------------------------
# request → prompt
# ------------------------------------------------------------------------------------------------


def response_format_grammar(response_format: Mapping[str, Any] | None) -> Grammar | None:
    """The grammar an OpenAI ``response_format`` asks for (None for ``text`` / absent).

    ``{"type": "json_object"}`` (optionally with a llama.cpp-style ``schema``) and
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``. Raises
    :class:`ChatRequestError` for a malformed value and ``SchemaError`` for an unsupported schema.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ChatRequestError("response_format must be an object", "response_format")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        if schema is None:
            return Grammar.json_object()
        return _schema_grammar(schema)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if spec is None:
            spec = {"schema": response_format.get("schema")}
        if not isinstance(spec, Mapping):
            raise ChatRequestError("response_format.json_schema must be an object", "response_format")
        schema = spec.get("schema")
        if schema is None:
            return Grammar.json_object()
        return _schema_grammar(schema)
    raise ChatRequestError(
        f"response_format.type must be 'text', 'json_object' or 'json_schema', not {kind!r}",
        "response_format",
    )


def _schema_grammar(schema: Any) -> Grammar:
    if not isinstance(schema, (Mapping, bool)):
        raise ChatRequestError("the JSON schema must be an object", "response_format")
    return Grammar.from_json_schema(closed_schema(schema))


_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalItems", "contains", "not", "if", "then", "else")


def closed_schema(schema: Any) -> Any:
    """A copy of a JSON schema in which objects that do not mention ``additionalProperties`` (or
    ``patternProperties``) allow no extra keys, as llama.cpp's converter reads them.

    Every document valid against the result is valid against the original; small models otherwise
    tend to keep inventing keys. ``allOf`` members are left open (closing each would conflict).
    """
    if isinstance(schema, list):
        return [closed_schema(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        sub = out.get(key)
        if isinstance(sub, Mapping):
            out[key] = {k: closed_schema(v) for k, v in sub.items()}
    for key in _SUBSCHEMA_LISTS:
        sub = out.get(key)
        if isinstance(sub, list):
            out[key] = [closed_schema(v) for v in sub]
    for key in _SUBSCHEMA_ONE:
        if key in out:
            out[key] = closed_schema(out[key])
    kind = out.get("type")
    is_object = (
        kind == "object"
        or (isinstance(kind, list) and "object" in kind)
        or (kind is None and "properties" in out)
    )
    if (
        is_object
        and "additionalProperties" not in out
        and "patternProperties" not in out
        and "unevaluatedProperties" not in out
        and "allOf" not in out
    ):
        out["additionalProperties"] = False
    return out


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


@dataclass
class PreparedChat:
    """A rendered, tokenized chat request and the constraints its sampler needs."""

    prompt: str
    tokens: list[int]
    grammar: Any = None  # Grammar | GBNF text | None
    grammar_lazy: bool = False
    grammar_trigger_patterns: tuple[str, ...] = ()
    tool_format: ToolCallFormat | None = None  # None: no tool-call parsing
    tool_names: tuple[str, ...] = ()
    reasoning_tags: tuple[str, str] | None = None
    reasoning_started: bool = False

    @property
    def render_special(self) -> bool:
        """Whether the output must keep special-token text: tool-call markers can be special tokens."""
        return self.tool_format is not None

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
        )

    def parse(self, text: str, finish_reason: str = "stop") -> ChatMessage:
        """Non-streaming: the whole output as one assistant message."""
        p = self.parser()
        p.feed(text)
        return p.message(finish_reason)


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
        self.add_bos = vocab.add_bos
        self.reasoning = reasoning
        if isinstance(template, ChatTemplate):
            self.template = template
            self._tool_template = template
        else:
            meta = {
                ("tokenizer.chat_template" if k == "default" else f"tokenizer.chat_template.{k}"): v
                for k, v in model.chat_templates().items()
            }
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
        if not tpl.supports_tools:
            return ToolCallFormat.GENERIC
        return detect_tool_call_format(tpl.source)

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
            msgs = _inline_tools(messages, tools)
            pass_tools = None
        return render_chat(
            tpl,
            msgs,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            tools=list(pass_tools) if pass_tools else None,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            media_marker=media_marker,
            **dict(template_kwargs or {}),
        )

    def tokenize(self, prompt: str) -> list[int]:
        """Tokenize a rendered prompt: special tokens parsed, BOS added only if the text lacks it."""
        return tokenize_rendered(self.model, prompt)

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
    ) -> PreparedChat:
        """Render and tokenize a request and work out its sampler constraints.

        ``add_generation_prompt=None``: on, unless the last message is a non-empty assistant
        message without tool calls, which the model then continues (assistant prefill, as
        llama.cpp's server does).
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
        fmt_grammar = response_format_grammar(response_format)
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
                    schema_to_gbnf=_closed_gbnf,
                )
            except ToolChoiceError as exc:
                param = "tool_choice" if "tool_choice" in str(exc) else "tools"
                raise ChatRequestError(str(exc), param) from exc
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
        tokens = self.tokenize(prompt)
        tags: tuple[str, str] | None = None
        started = False
        if self.reasoning if reasoning is None else reasoning:
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
        )


def _closed_gbnf(schema: Any) -> str:
    from ..grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(closed_schema(schema))


def _tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for t in tools:
        fn = t.get("function", t)
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


# ------------------------------------------------------------------------------------------------
# library-level chat on a Generator
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatChunk:
    """One step of :func:`chat_stream`: parsed deltas, the token ids and logprobs behind them;
    the last chunk carries ``finish_reason`` (``stop`` | ``length`` | ``tool_calls`` | ``cancelled``)."""

    deltas: tuple[ChatDelta, ...]
    tokens: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None

    @property
    def content(self) -> str:
        return "".join(d.content or "" for d in self.deltas)


@dataclass
class ChatResult:
    """A whole assistant turn from :func:`chat`."""

    message: ChatMessage
    tokens: list[int]
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    @property
    def content(self) -> str | None:
        return self.message.content

    @property
    def reasoning_content(self) -> str | None:
        return self.message.reasoning_content

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls

    @property
    def finish_reason(self) -> str:
        return self.message.finish_reason


_formatter_lock = threading.Lock()


def _formatter(model: Model, template: ChatTemplate | str | None) -> ChatFormatter:
    # one cached formatter per (model, template) — rendering setup reads GGUF metadata
    key = template if isinstance(template, (str, type(None))) else id(template)
    with _formatter_lock:
        cache: dict[Any, ChatFormatter] | None = getattr(model, "_lb_chat_formatters", None)
        if cache is None:
            cache = {}
            model._lb_chat_formatters = cache  # type: ignore[attr-defined]
        f = cache.get(key)
        if f is None:
            f = ChatFormatter(model, template)
            cache[key] = f
        return f


def _generator(target: Context | Generator) -> Generator:
    if isinstance(target, Generator):
        return target
    gen: Generator | None = getattr(target, "_lb_chat_generator", None)
    if gen is None:
        gen = Generator(target)
        target._lb_chat_generator = gen  # type: ignore[attr-defined]
    return gen


def chat_stream(
    target: Context | Generator,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
    response_format: Mapping[str, Any] | None = None,
    grammar: Any = None,
    template: ChatTemplate | str | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
    max_tokens: int | None = 256,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    logprobs: int | None = None,
    cancel: threading.Event | None = None,
    draft: Drafter | None = None,
) -> Iterator[ChatChunk]:
    """Stream one assistant turn for ``messages`` on a context (or a :class:`Generator`).

    Repeated calls on the same context reuse the KV cache of the common prompt prefix (a growing
    conversation decodes only its new messages). ``draft``: a speculative drafter
    (``llamabind.speculative``), as for :meth:`Generator.stream`.
    """
    gen = _generator(target)
    prepared = _formatter(gen.model, template).prepare(
        messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        response_format=response_format,
        grammar=grammar,
        template_kwargs=template_kwargs,
    )
    parser = prepared.parser()
    for chunk in gen.stream(
        prepared.tokens,
        max_tokens=max_tokens,
        sampling=prepared.sampling(sampling),
        stop=stop,
        logprobs=logprobs,
        cancel=cancel,
        render_special=prepared.render_special,
        draft=draft,
    ):
        deltas = parser.feed(chunk.text)
        if chunk.finish_reason is not None:
            tail, reason = parser.finish(chunk.finish_reason)
            yield ChatChunk(tuple(deltas + tail), tuple(chunk.tokens), tuple(chunk.logprobs), reason)
            return
        if deltas or chunk.tokens:
            yield ChatChunk(tuple(deltas), tuple(chunk.tokens), tuple(chunk.logprobs))


def chat(
    target: Context | Generator,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
    response_format: Mapping[str, Any] | None = None,
    grammar: Any = None,
    template: ChatTemplate | str | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
    max_tokens: int | None = 256,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    logprobs: int | None = None,
    cancel: threading.Event | None = None,
    draft: Drafter | None = None,
) -> ChatResult:
    """One assistant turn: content, ``reasoning_content``, parsed ``tool_calls`` and usage.

    >>> r = chat(ctx, [{"role": "user", "content": "Hi!"}], sampling=SamplingParams(temperature=0))
    >>> r.content, r.finish_reason
    """
    gen = _generator(target)
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    tokens: list[int] = []
    lps: list[TokenLogprob] = []
    finish = "stop"
    for chunk in chat_stream(
        gen,
        messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        response_format=response_format,
        grammar=grammar,
        template=template,
        template_kwargs=template_kwargs,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=stop,
        logprobs=logprobs,
        cancel=cancel,
        draft=draft,
    ):
        tokens.extend(chunk.tokens)
        lps.extend(chunk.logprobs)
        for d in chunk.deltas:
            if d.content:
                content.append(d.content)
            if d.reasoning_content:
                reasoning.append(d.reasoning_content)
            for tc in d.tool_calls:
                if tc.id is not None and tc.name is not None:
                    calls.append(ToolCall(tc.name, tc.arguments, tc.id))
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
    text: str | None = "".join(content)
    if calls and not text:
        text = None
    t = gen.last_timings
    return ChatResult(
        message=ChatMessage(text, "".join(reasoning) or None, calls, finish),
        tokens=tokens,
        prompt_tokens=t.prompt_tokens + t.cached_tokens,
        completion_tokens=t.generated_tokens,
        logprobs=lps,
        timings=t,
    )
