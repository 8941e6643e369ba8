"""The llamabind exception hierarchy: every error the library raises derives from LlamabindError,
and every exception class of the package is defined here (the modules that raise them re-export
them under their old names).

Each class says how an HTTP server should answer it: ``http_status`` and ``error_code`` (the OpenAI
error object's ``code``), looked up along the class's MRO, so a subclass inherits its parent's
answer unless it sets its own; ``default_param`` names the request field usually at fault. A
status of 500 means "a bug or a server-side failure": the server answers with a generic message
and logs the details. This module imports nothing, so every layer (``_native`` included) may use it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "APIError",
    "AbortedError",
    "BatchFullError",
    "ChatRequestError",
    "ChatTemplateError",
    "ClosedError",
    "ConcurrentUseError",
    "ContextCreateError",
    "ContextOverflowError",
    "DecodeError",
    "EmbeddingError",
    "EngineCrashedError",
    "FatalNativeError",
    "FileStoreError",
    "GGUFToolError",
    "GrammarError",
    "HubError",
    "HubUnreachableError",
    "LlamabindError",
    "LoraError",
    "MediaError",
    "MessageError",
    "ModelLoadError",
    "MultimodalError",
    "NativeLibraryError",
    "NoKvSlotError",
    "NoProjectorError",
    "ProjectorError",
    "QuantizeError",
    "QueueFullError",
    "RpcError",
    "SchemaError",
    "SlotActionError",
    "StateError",
    "TemplateError",
    "TokenizeError",
    "ToolChoiceError",
    "UnsupportedError",
]


class LlamabindError(Exception):
    """Base class of every llamabind error."""

    #: the HTTP status to answer with (500: an internal failure, its message is not shown)
    http_status: int = 500
    #: the OpenAI error object's ``code``
    error_code: str = "internal_error"
    #: the request field usually at fault, when the raiser did not name one
    default_param: ClassVar[str | None] = None

    def client_message(self) -> str:
        """The message an API client sees (only used for statuses below 500)."""
        return str(self)


# ------------------------------------------------------------------------------------------------
# native library and core objects
# ------------------------------------------------------------------------------------------------


class NativeLibraryError(LlamabindError):
    """The llama.cpp libraries are missing or of the wrong revision."""


class FatalNativeError(LlamabindError, RuntimeError):
    """llama.cpp hit a fatal error in a worker thread; the objects it was using are unusable."""


class ClosedError(LlamabindError):
    """A method was called on an object after close()."""


class ConcurrentUseError(LlamabindError):
    """A single-threaded object (a Context) was used from two threads at once."""


class ModelLoadError(LlamabindError):
    """A model file could not be loaded (missing, a directory, not GGUF, truncated, …)."""


class ContextCreateError(LlamabindError):
    """llama.cpp refused to create a context with the given parameters."""


class TokenizeError(LlamabindError, ValueError):
    """Tokenization failed or a token id is out of the vocabulary's range."""

    http_status = 400
    error_code = "invalid_value"


class BatchFullError(LlamabindError, ValueError):
    """More tokens or sequence ids were added to a Batch than it was allocated for."""


class DecodeError(LlamabindError):
    """llama_decode / llama_encode returned an error code (``code``: llama.cpp's return value)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class NoKvSlotError(DecodeError):
    """The KV cache has no room for the batch (decode returned 1)."""

    http_status = 503
    error_code = "kv_cache_full"


class AbortedError(DecodeError):
    """A decode was aborted by the abort callback."""


class ContextOverflowError(LlamabindError, ValueError):
    """A prompt does not fit in the context window."""

    http_status = 400
    error_code = "context_length_exceeded"

    def __init__(self, message: str, n_tokens: int = 0, n_ctx: int = 0) -> None:
        super().__init__(message)
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


class StateError(LlamabindError):
    """Saving or loading a context/sequence state failed."""


class SlotActionError(StateError):
    """A refused slot save / restore / erase (``POST /slots/{id}``): a bad file name (400), an
    unknown slot or file (404), a busy slot (409), no ``--slot-save-path`` (501)."""

    http_status = 400
    error_code = "invalid_slot_action"
    default_param = "filename"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status


class LoraError(LlamabindError):
    """A LoRA adapter or control vector could not be loaded or applied."""


class UnsupportedError(LlamabindError):
    """The model or build does not support the requested feature."""

    http_status = 400
    error_code = "unsupported"


# ------------------------------------------------------------------------------------------------
# grammars, chat
# ------------------------------------------------------------------------------------------------


class GrammarError(LlamabindError, ValueError):
    """A GBNF grammar is invalid. `position` is the byte offset and `rule` the rule name, when known."""

    http_status = 400
    error_code = "invalid_grammar"
    default_param = "grammar"

    def __init__(self, message: str, position: int | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.position = position
        self.rule = rule

    def client_message(self) -> str:
        return f"invalid grammar: {self}"


class SchemaError(GrammarError):
    """A JSON schema uses something that cannot be turned into a grammar."""

    error_code = "invalid_schema"
    default_param = "response_format"

    def client_message(self) -> str:
        return f"invalid JSON schema: {self}"


class TemplateError(LlamabindError):
    """A chat template failed to render."""

    http_status = 400
    error_code = "invalid_value"
    default_param = "messages"


class ChatTemplateError(TemplateError):
    """A chat template failed to compile or render. ``line`` is the template line, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class MessageError(LlamabindError, ValueError):
    """A chat message list is malformed. ``index`` is the offending message's position, when known."""

    http_status = 400
    error_code = "invalid_value"
    default_param = "messages"

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message if index is None else f"messages[{index}]: {message}")
        self.index = index


class ToolChoiceError(LlamabindError, ValueError):
    """``tools`` or ``tool_choice`` is malformed or names an unknown function.

    ``param``: the request field at fault (``"tools"`` or ``"tool_choice"``), set by the raiser.
    """

    http_status = 400
    error_code = "invalid_value"
    default_param = "tools"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class ChatRequestError(LlamabindError, ValueError):
    """A chat request is inconsistent (``param`` names the offending request field)."""

    http_status = 400
    error_code = "invalid_value"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# ------------------------------------------------------------------------------------------------
# multimodal, embeddings, batching
# ------------------------------------------------------------------------------------------------


class MultimodalError(LlamabindError):
    """Base class of multimodal (mtmd) errors."""


class ProjectorError(MultimodalError):
    """A multimodal projector (mmproj) could not be loaded or does not fit the text model."""


class NoProjectorError(UnsupportedError, MultimodalError):
    """Images or audio were given to a text-only model (no multimodal projector is loaded)."""

    error_code = "unsupported_media"
    default_param = "messages"


class MediaError(MultimodalError, ValueError):
    """An image or audio input is invalid: undecodable, too large, of the wrong kind for the
    projector, or the number of media does not match the number of markers in the prompt.

    ``status`` is the HTTP status a server should answer with (400, 413 or 415).
    """

    http_status = 400
    error_code = "invalid_media"
    default_param = "messages"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status  # this instance's answer


class EmbeddingError(LlamabindError, ValueError):
    """Bad input to an embedder (no inputs, an empty input, a model/pooling mismatch)."""

    http_status = 400
    error_code = "invalid_value"


class QueueFullError(LlamabindError):
    """More requests are waiting than the queue bound allows (the server answers 503)."""

    http_status = 503
    error_code = "server_busy"


# ------------------------------------------------------------------------------------------------
# tools: quantize, GGUF, hub, RPC
# ------------------------------------------------------------------------------------------------


class QuantizeError(LlamabindError):
    """Quantization parameters are invalid or quantization failed."""


class GGUFToolError(LlamabindError, ValueError):
    """Invalid arguments to a GGUF tool, or GGUF inputs that do not fit together (e.g. inconsistent shards)."""

    http_status = 400
    error_code = "invalid_value"


class HubError(LlamabindError):
    """A Hugging Face Hub repository or file could not be resolved or downloaded."""


class HubUnreachableError(HubError):
    """The Hub could not be reached (network failure, timeout): a cached copy may still serve."""


class RpcError(LlamabindError):
    """An RPC worker could not be reached or failed."""


# ------------------------------------------------------------------------------------------------
# server
# ------------------------------------------------------------------------------------------------


class FileStoreError(LlamabindError):
    """A refused file-store operation; ``status`` is the HTTP status to answer with."""

    http_status = 400
    default_param = "file"

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.http_status = status
        if code is not None:
            self.error_code = code


_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class APIError(LlamabindError):
    """An answer the server decided on itself: HTTP status and the OpenAI error object's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status
        self.message = message
        self.type = type or _HTTP_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class EngineCrashedError(LlamabindError):
    """The engine process died (crash, kill, out of memory) or was restarted by the watchdog while
    the request was running in it; the request is not retried (it may be what killed the engine)."""

    http_status = 500
    error_code = "engine_crashed"
    #: a 500 whose message is safe and useful to show (it names the crash, not internals)
    public = True
