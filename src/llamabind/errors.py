"""The llamabind exception hierarchy: every error the library raises derives from LlamabindError."""

from __future__ import annotations

__all__ = [
    "AbortedError",
    "BatchFullError",
    "ClosedError",
    "ConcurrentUseError",
    "ContextCreateError",
    "ContextOverflowError",
    "DecodeError",
    "EngineCrashedError",
    "GrammarError",
    "HubError",
    "LlamabindError",
    "LoraError",
    "ModelLoadError",
    "NativeLibraryError",
    "NoKvSlotError",
    "QuantizeError",
    "RpcError",
    "SchemaError",
    "StateError",
    "TemplateError",
    "TokenizeError",
    "UnsupportedError",
]


class LlamabindError(Exception):
    """Base class of every llamabind error."""


class NativeLibraryError(LlamabindError):
    """The llama.cpp libraries are missing or of the wrong revision."""


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


class BatchFullError(LlamabindError, ValueError):
    """More tokens or sequence ids were added to a Batch than it was allocated for."""


class DecodeError(LlamabindError):
    """llama_decode / llama_encode returned an error code."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class NoKvSlotError(DecodeError):
    """The KV cache has no room for the batch (decode returned 1)."""


class AbortedError(DecodeError):
    """A decode was aborted by the abort callback."""


class ContextOverflowError(LlamabindError, ValueError):
    """A prompt does not fit in the context window."""

    def __init__(self, message: str, n_tokens: int = 0, n_ctx: int = 0) -> None:
        super().__init__(message)
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


class StateError(LlamabindError):
    """Saving or loading a context/sequence state failed."""


class LoraError(LlamabindError):
    """A LoRA adapter or control vector could not be loaded or applied."""


class GrammarError(LlamabindError, ValueError):
    """A GBNF grammar is invalid. `position` is the byte offset and `rule` the rule name, when known."""

    def __init__(self, message: str, position: int | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.position = position
        self.rule = rule


class SchemaError(GrammarError):
    """A JSON schema uses something that cannot be turned into a grammar."""


class TemplateError(LlamabindError):
    """A chat template failed to render."""


class QuantizeError(LlamabindError):
    """Quantization parameters are invalid or quantization failed."""


class HubError(LlamabindError):
    """A Hugging Face Hub repository or file could not be resolved or downloaded."""


class RpcError(LlamabindError):
    """An RPC worker could not be reached or failed."""


class UnsupportedError(LlamabindError):
    """The model or build does not support the requested feature."""


class EngineCrashedError(LlamabindError):
    """The engine process died (crash, kill, out of memory) or was restarted by the watchdog while
    the request was running in it; the request is not retried (it may be what killed the engine)."""
