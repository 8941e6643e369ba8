"""Request bodies (pydantic v2). Unknown fields are kept: llama.cpp's extras (``top_k``, ``min_p``,
``repeat_penalty``, ``dry_*``, ``xtc_*``, ``mirostat*``, ``grammar``, ``cache_prompt`` …) arrive as
extra fields and are read by :func:`llamabind.server.handlers.sampling_from_request`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "DetokenizeRequest",
    "EmbeddingRequest",
    "InfillRequest",
    "RerankRequest",
    "SamplingFields",
    "StreamOptions",
    "TokenizeRequest",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: bool = False


#: the SamplingFields another API's request (Anthropic Messages, Responses) carries over into the
#: chat request when the client set them
SAMPLING_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "repeat_last_n",
        "mirostat",
        "grammar",
        "cache_prompt",
        "ignore_eos",
        "logit_bias",
        "frequency_penalty",
        "presence_penalty",
    }
)


class SamplingFields(_Open):
    """The fields chat and text completions share."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=-1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float | bool] | list[list[Any]] | None = None
    user: str | None = None
    # llama.cpp extras with a type worth checking (others are read loosely)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    typical_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    repeat_last_n: int | None = Field(default=None, ge=-1)
    mirostat: Literal[0, 1, 2] | None = None
    grammar: str | None = None
    #: close a grammar's (response_format's) document validly when max_tokens would cut it
    #: (default on; the choice then says "closed_on_budget": true)
    close_on_budget: bool | None = None
    cache_prompt: bool = True
    ignore_eos: bool = False
    n_predict: int | None = Field(default=None, ge=-1)


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=-1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_format: str | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None


class InfillRequest(SamplingFields):
    """llama.cpp's /infill: the model writes what goes between ``input_prefix`` and ``input_suffix``."""

    input_prefix: str = ""
    input_suffix: str = ""
    prompt: str = ""  # the start of the middle, if any


class RerankRequest(_Open):
    """Rerank (Jina/Cohere shape, as llama.cpp's server): score ``documents`` against ``query``."""

    model: str | None = None
    query: str
    documents: list[str] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = True


class EmbeddingRequest(_Open):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class TokenizeRequest(_Open):
    model: str | None = None  # a router server: whose vocabulary
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(_Open):
    model: str | None = None
    tokens: list[int]
