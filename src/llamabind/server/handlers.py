"""Plain, testable functions behind the routes: request fields → sampling settings, and results →
OpenAI response objects (chat completions, text completions, chunks, logprobs, usage)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..batching import Usage
from ..core import Model
from ..generation.logprobs import TokenLogprob
from ..generation.sampling import SamplingParams
from .errors import APIError
from .schemas import SamplingFields

__all__ = [
    "ChoiceOutput",
    "ChunkEncoder",
    "ResponseMeta",
    "chat_logprobs",
    "closed_field",
    "completion_logprobs",
    "logit_bias_from_request",
    "max_tokens_from_request",
    "sampling_from_request",
    "stop_from_request",
    "usage_dict",
]

# request field → SamplingParams field, for llama.cpp names that differ
_ALIASES = {
    "penalty_last_n": "repeat_last_n",
    "dynatemp_exp": "dynatemp_exponent",
    "mirostat_lr": "mirostat_eta",
    "mirostat_ent": "mirostat_tau",
    "typical": "typical_p",
    "top_nsigma": "top_n_sigma",
}
# set from dedicated request logic, never from a same-named extra field
_NOT_FROM_EXTRAS = {
    "grammar",
    "grammar_root",
    "grammar_lazy",
    "grammar_trigger_patterns",
    "grammar_trigger_tokens",
    "logits_processors",
    "logit_bias",
    "seed",
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not float(value).is_integer():
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            v = float(value)
            if math.isnan(v):
                raise TypeError
            return v
        if isinstance(default, tuple):
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise TypeError
            if not all(isinstance(x, str) for x in value):
                raise TypeError
            return tuple(value)
    except (TypeError, ValueError):
        kind = type(default).__name__ if not isinstance(default, tuple) else "list of strings"
        raise APIError(
            400, f"{name} must be a {kind}, got {value!r}", param=name, code="invalid_type"
        ) from None
    return value


def logit_bias_from_request(raw: Any, model: Model) -> dict[int, float]:
    """``{"15043": -100}`` (OpenAI: token ids as strings), ``{"Hello": 5}`` (llama.cpp: text, each of
    its tokens), or ``[[15043, -100], ["Hello", false]]``; ``false`` bans a token."""
    if raw is None:
        return {}
    items: list[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = []
        for pair in raw:
            if not isinstance(pair, list) or len(pair) != 2:
                raise APIError(400, "logit_bias list entries must be [token, bias] pairs", param="logit_bias")
            items.append((pair[0], pair[1]))
    else:
        raise APIError(400, "logit_bias must be an object", param="logit_bias")
    out: dict[int, float] = {}
    n_vocab = model.n_vocab
    for key, value in items:
        if value is False:
            bias = -math.inf
        elif value is True:
            continue
        elif isinstance(value, (int, float)):
            bias = float(value)
        else:
            raise APIError(400, f"logit_bias value for {key!r} must be a number", param="logit_bias")
        tokens: list[int]
        if isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit()):
            tokens = [int(key)]
        elif isinstance(key, str):
            tokens = model.tokenize(key, add_special=False, parse_special=False)
        else:
            raise APIError(400, "logit_bias keys must be token ids or text", param="logit_bias")
        for t in tokens:
            if not 0 <= t < n_vocab:
                raise APIError(
                    400, f"logit_bias token id {t} is out of range [0, {n_vocab})", param="logit_bias"
                )
            out[t] = bias
    return out


def stop_from_request(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    return [s for s in stop if s]


def max_tokens_from_request(body: SamplingFields, default: int | None, *extra: int | None) -> int | None:
    """``max_completion_tokens`` / ``max_tokens`` / ``n_predict`` (first given wins); -1 = unlimited."""
    for v in (*extra, body.max_tokens, body.n_predict):
        if v is not None:
            return None if v < 0 else v
    return default


def sampling_from_request(
    body: SamplingFields, defaults: SamplingParams, model: Model, *, seed_offset: int = 0
) -> SamplingParams:
    """The server defaults overridden by the request's OpenAI fields and llama.cpp extras."""
    changes: dict[str, Any] = {}
    names = SamplingParams.field_names()
    extras = body.model_extra or {}
    for key, value in extras.items():
        name = _ALIASES.get(key, key)
        if name in names and name not in _NOT_FROM_EXTRAS and value is not None:
            changes[name] = _coerce(key, value, getattr(defaults, name))
    for name in (
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "repeat_last_n",
        "mirostat",
        "close_on_budget",
    ):
        value = getattr(body, name)
        if value is not None:
            changes[name] = value
    bias = logit_bias_from_request(body.logit_bias, model)
    if bias:
        changes["logit_bias"] = bias
    if body.seed is not None:
        changes["seed"] = body.seed + seed_offset
    sp = dataclasses.replace(defaults, **changes)
    try:
        sp.validate()
    except ValueError as exc:
        raise APIError(400, str(exc), code="invalid_value") from None
    return sp


# ------------------------------------------------------------------------------------------------
# responses
# ------------------------------------------------------------------------------------------------


@dataclass
class ResponseMeta:
    """What every object of one response shares (the same id and created on every chunk)."""

    model: str
    prefix: str = "chatcmpl"
    id: str = ""
    created: int = 0
    system_fingerprint: str = "llamabind"

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"{self.prefix}-{uuid.uuid4().hex[:24]}"
        if not self.created:
            self.created = int(time.time())

    def chunk(
        self,
        obj: str,
        choices: list[dict[str, Any]],
        *,
        usage: dict[str, Any] | None = None,
        with_usage: bool = False,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "choices": choices,
        }
        if with_usage:
            out["usage"] = usage
        return out

    def chat_chunk(
        self, choices: list[dict[str, Any]], *, usage: dict[str, Any] | None = None, with_usage: bool = False
    ) -> dict[str, Any]:
        return self.chunk("chat.completion.chunk", choices, usage=usage, with_usage=with_usage)

    def text_chunk(
        self, choices: list[dict[str, Any]], *, usage: dict[str, Any] | None = None, with_usage: bool = False
    ) -> dict[str, Any]:
        return self.chunk("text_completion", choices, usage=usage, with_usage=with_usage)


class ChunkEncoder:
    """SSE ``data:`` lines for one streamed response: the envelope (id, created, model …) is encoded
    once; the common chunk — a text/content delta without logprobs — only JSON-encodes its text
    (this runs once per token per stream)."""

    def __init__(self, meta: ResponseMeta, *, chat: bool, include_usage: bool) -> None:
        self.meta = meta
        self.chat = chat
        self.include_usage = include_usage
        envelope = {
            "id": meta.id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": meta.system_fingerprint,
        }
        head = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))[:-1]
        self._head = b"data: " + head.encode() + b',"choices":[{"index":'
        usage = b',"usage":null' if include_usage else b""
        self._mid = b',"delta":{"content":' if chat else b',"text":'
        self._tail = (b"}" if chat else b"") + b',"logprobs":null,"finish_reason":null}]' + usage + b"}\n\n"

    def text(self, index: int, text: str) -> bytes:
        """A content (chat) or text (completions) delta without logprobs."""
        return (
            self._head
            + str(index).encode()
            + self._mid
            + json.dumps(text, ensure_ascii=False).encode()
            + self._tail
        )

    def chunk(
        self,
        index: int,
        *,
        delta: dict[str, Any] | None = None,
        text: str = "",
        finish_reason: str | None = None,
        logprobs: Any = None,
        closed: bool = False,
    ) -> bytes:
        """Any chunk: chat ``delta`` (with ``logprobs.content``), or completions ``text`` (legacy logprobs).
        ``closed``: the choice gets ``"closed_on_budget": true`` (see :func:`closed_field`)."""
        choice: dict[str, Any]
        if self.chat:
            choice = {
                "index": index,
                "delta": delta or {},
                "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
                "finish_reason": finish_reason,
            }
            obj = self.meta.chat_chunk([choice], with_usage=self.include_usage)
        else:
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
            obj = self.meta.text_chunk([choice], with_usage=self.include_usage)
        choice.update(closed_field(closed))
        return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The final ``choices: []`` chunk of ``stream_options.include_usage``."""
        if self.chat:
            obj = self.meta.chat_chunk([], usage=usage, with_usage=True)
        else:
            obj = self.meta.text_chunk([], usage=usage, with_usage=True)
        return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class ChoiceOutput:
    """Everything one choice produced (collected from the scheduler's events)."""

    index: int
    text_parts: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    stop: str | None = None  # the stop string that ended it, if one did
    closed: bool = False  # its grammar's document was closed before the budget ran out

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def closed_field(closed: bool) -> dict[str, bool]:
    """What a choice says when budget closing ended it: ``{"closed_on_budget": true}`` beside
    ``finish_reason: "length"`` (the output is a complete document of the request's grammar or
    schema, shortened to fit ``max_tokens``); nothing otherwise."""
    return {"closed_on_budget": True} if closed else {}


def usage_dict(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def _piece(model: Model, token: int) -> tuple[str, list[int]]:
    raw = model.vocab.token_to_piece(token, special=True)
    return raw.decode("utf-8", "replace"), list(raw)


def chat_logprobs(lps: Sequence[TokenLogprob], model: Model, top_n: int) -> list[dict[str, Any]]:
    """``choices[].logprobs.content`` entries (token, logprob, bytes, top_logprobs)."""
    out: list[dict[str, Any]] = []
    for lp in lps:
        text, raw = _piece(model, lp.token)
        top = []
        for tok, val in lp.top[:top_n]:
            t_text, t_raw = _piece(model, tok)
            top.append({"token": t_text, "logprob": val, "bytes": t_raw})
        out.append({"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": top})
    return out


def completion_logprobs(
    lps: Sequence[TokenLogprob], model: Model, top_n: int, text_offset: int = 0
) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object (tokens, token_logprobs, top_logprobs, text_offset)."""
    tokens: list[str] = []
    token_lps: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    pos = text_offset
    for lp in lps:
        text, _ = _piece(model, lp.token)
        tokens.append(text)
        token_lps.append(lp.logprob)
        tops.append({_piece(model, t)[0]: v for t, v in lp.top[:top_n]})
        offsets.append(pos)
        pos += len(text)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}
